"""The audit log chained by hashes: a BEFORE INSERT trigger gives each record its id and
chain_hash = sha256(previous record's chain_hash || this record's content), and moves the one-row
chain head on. The records already there are chained here, in id order.

The content is each column as text in a fixed way, whatever the session's settings (TimeZone,
DateStyle): the time as seconds since the epoch, the JSON columns by the sha256 of their jsonb
text (which PostgreSQL writes canonically), each field as `<bytes>:<text>` or `-` for NULL,
joined by commas. queues/selectors/audit_chain.py recomputes the same in Python.

The functions name every table with its schema and run with search_path = pg_catalog, pg_temp:
the link function is SECURITY DEFINER (README: the audit table owned by a role of its own), so
nothing the dashboard's role can create may stand in for what it calls.
"""

from django.db import migrations, models
from psycopg import sql

CONTENT = """
CREATE FUNCTION audit_chain_content(entry {entry_type}) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT string_agg(coalesce(octet_length(field)::text || ':' || field, '-'), ',' ORDER BY position)
FROM unnest(ARRAY[
    entry.id::text, entry.chain_prev_id::text, extract(epoch FROM entry.at)::text, entry.database,
    entry.user_id::text, entry.username, entry.action, entry.queue_name,
    encode(sha256(convert_to(entry.target::text, 'UTF8')), 'hex'),
    entry.requested::text, entry.affected::text, entry.already_gone::text, entry.skipped::text, entry.outcome,
    encode(sha256(convert_to(entry.details::text, 'UTF8')), 'hex'),
    encode(sha256(convert_to(entry.deleted_payloads::text, 'UTF8')), 'hex'),
    entry.deleted_count::text, entry.request_token::text
]) WITH ORDINALITY AS fields(field, position)
$$;
"""

LINK = """
CREATE FUNCTION audit_chain_link() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head {head_type};
BEGIN
    -- The head's row lock is held until commit: appends go one at a time, none takes another's
    -- predecessor, and ids (given here, under the lock) follow the chain.
    SELECT * INTO head FROM {head} WHERE id = 1 FOR UPDATE;
    IF NOT FOUND THEN
        -- Only after both tables were emptied (the tests' TRUNCATE): the chain starts again.
        INSERT INTO {head} (id, last_id, last_hash) VALUES (1, NULL, NULL) ON CONFLICT (id) DO NOTHING;
        SELECT * INTO head FROM {head} WHERE id = 1 FOR UPDATE;
    END IF;
    NEW.id := nextval({sequence}::regclass);
    NEW.chain_prev_id := head.last_id;
    NEW.chain_hash := encode(sha256(convert_to(coalesce(head.last_hash, '') || {content}(NEW), 'UTF8')), 'hex');
    UPDATE {head} SET last_id = NEW.id, last_hash = NEW.chain_hash WHERE id = 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_chain_link BEFORE INSERT ON {entries} FOR EACH ROW EXECUTE FUNCTION audit_chain_link();
"""

# The records written before this migration, chained in id order (the append-only trigger is
# off for the length of this transaction only; the ALTER TABLE's lock keeps writers out).
CHAIN_EXISTING = """
SET LOCAL statement_timeout = 0;
ALTER TABLE {entries} DISABLE TRIGGER audit_log_is_append_only;
DO $$
DECLARE
    entry {entry_type};
    prev_id bigint;
    prev_hash text := '';
BEGIN
    FOR entry IN SELECT * FROM {entries} ORDER BY id LOOP
        entry.chain_prev_id := prev_id;
        entry.chain_hash := encode(sha256(convert_to(prev_hash || {content}(entry), 'UTF8')), 'hex');
        UPDATE {entries} SET chain_prev_id = entry.chain_prev_id, chain_hash = entry.chain_hash WHERE id = entry.id;
        prev_id := entry.id;
        prev_hash := entry.chain_hash;
    END LOOP;
    INSERT INTO {head} (id, last_id, last_hash) VALUES (1, prev_id, nullif(prev_hash, ''));
END
$$;
ALTER TABLE {entries} ENABLE TRIGGER audit_log_is_append_only;
"""

UNCHAIN = """
DROP TRIGGER audit_chain_link ON {entries};
DROP FUNCTION audit_chain_link();
DROP FUNCTION audit_chain_content({entry_type});
"""


def _statements(schema_editor, template: str) -> str:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT current_schema(), pg_get_serial_sequence('queues_auditentry', 'id')")
        schema, sequence = cursor.fetchone()
        names = {
            "entries": sql.Identifier(schema, "queues_auditentry"),
            "entry_type": sql.Identifier(schema, "queues_auditentry"),
            "head": sql.Identifier(schema, "queues_auditchainhead"),
            "head_type": sql.Identifier(schema, "queues_auditchainhead"),
            "content": sql.Identifier(schema, "audit_chain_content"),
            "sequence": sql.Literal(sequence),
        }
        return sql.SQL(template).format(**names).as_string(cursor.connection)


def chain(apps, schema_editor) -> None:
    for template in (CONTENT, LINK, CHAIN_EXISTING):
        schema_editor.execute(_statements(schema_editor, template), params=None)


def unchain(apps, schema_editor) -> None:
    schema_editor.execute(_statements(schema_editor, UNCHAIN), params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0007_database_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditentry",
            name="chain_hash",
            field=models.CharField(
                default="",
                editable=False,
                max_length=64,
                help_text="sha256 over the previous record's hash and this record's content",
            ),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="chain_prev_id",
            field=models.BigIntegerField(editable=False, null=True, help_text="the record chained before this one"),
        ),
        migrations.CreateModel(
            name="AuditChainHead",
            fields=[
                ("id", models.SmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("last_id", models.BigIntegerField(null=True)),
                ("last_hash", models.CharField(max_length=64, null=True)),
            ],
            options={
                "constraints": [models.CheckConstraint(condition=models.Q(("id", 1)), name="one_audit_chain_head")],
            },
        ),
        migrations.RunPython(chain, unchain),
    ]
