"""An audit log that PostgreSQL itself keeps append-only. (The roles are ensured after every
migrate by queues.apps, which also brings them back after a test flush.)"""

from django.db import migrations

APPEND_ONLY = """
CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % is refused', TG_OP;
END
$$;
CREATE TRIGGER audit_log_is_append_only BEFORE UPDATE OR DELETE ON queues_auditentry
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_is_not_truncated BEFORE TRUNCATE ON queues_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
"""

NOT_APPEND_ONLY = """
DROP TRIGGER audit_log_is_not_truncated ON queues_auditentry;
DROP TRIGGER audit_log_is_append_only ON queues_auditentry;
DROP FUNCTION audit_log_is_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0003_audit_and_jobs"),
    ]

    operations = [
        migrations.RunSQL(APPEND_ONLY, NOT_APPEND_ONLY),
    ]
