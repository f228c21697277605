"""Hostile and bad input: every query parameter and form field fuzzed, every payload escaped.

Whatever arrives in a URL or a form, the dashboard answers without a server error: a 4xx says
what was wrong, and a POST it refuses changes nothing in pgmq's tables. Whatever a queue's name,
a message or its headers hold is shown as text wherever it appears, never run as markup, and a
CSV export never hands a spreadsheet a formula.

The properties are checked by hypothesis. Each example is mostly valid, with up to two fields
spoiled by a hostile value (unicode of every kind, NUL characters, huge and negative numbers,
floats, broken JSON, SQL and HTML snippets, long strings): a bad value is then refused for its
own sake, and the valid rest goes on into the queries, where the deep server errors live.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from queues.management.commands.sample_metrics import take_sample
from queues.models import AuditEntry, BulkJob
from queues.templatetags.queue_format import DISPLAY_LIMIT_CHARS
from queues.views.audit import FORMULA_STARTS
from tests.conftest import action_records, uses_databases
from tests.pages import body, message_rows, parse

pytestmark = uses_databases

# Each property's fixtures (queues with messages, a signed-in admin) are made once per test and
# shared by its examples: the examples either only read, or are checked against a fingerprint of
# pgmq's tables taken just before them, so sharing is safe. Bounded to keep the module near a minute.
fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
fuzz_more = settings(fuzz, max_examples=100)

QUEUE = "fuzzed"
OTHER = "fuzzed_other"

# Hostile values: each has broken a web application somewhere.
SNIPPETS = [
    "",
    " ",
    "' OR '1'='1",
    "'; DROP TABLE pgmq.meta; --",
    "$$",
    "\\",
    "%",
    "%%",
    "_",
    "*",
    "|",
    "||",
    "%s",
    "%(x)s",
    "{}",
    "[]",
    "{{ request }}",
    "{% debug %}",
    "</script><script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "x' onmouseover='alert(1)",
    "javascript:alert(1)",
    "\u202e",
    "\ufeff",
    "😀",
    "İ",
    "ß",
    "../",
    "%2F",
    "%00",
    "\r\n",
    "\t",
    "=1+1",
    "true",
    "null",
    "None",
    "on",
    "live",
    "archive",
]
NUMBERS = [0, -1, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]
# Past Python's 4,300 digits int() refuses to read a number at all; other scripts' digits it reads.
NUMBER_TEXTS = [str(number) for number in NUMBERS] + [
    "9" * 5000,
    "-" + "9" * 5000,
    "1e5",
    "0x10",
    "1_000",
    "٣",
    "+5",
    " 5 ",
    "5.0",
    "nan",
    "-inf",
]
JSON_FRAGMENTS = [
    "{",
    "}",
    "[1,",
    '{"a":}',
    "{'a': 1}",
    '{"a": 1} x',
    "NaN",
    "-Infinity",
    "1e400",
    '"\\u0000"',
    '{"\\u0000": 1}',
    '"\\ud800"',
    "[" * 5000,
    "[" * 99 + "]" * 99,
    "-0",
    "1_000",
    "0x10",
    '"\t"',
    '{"a": 1, "a": 2}',
]
DATES = [
    "0001-01-01",
    "0000-01-01",
    "9999-12-31T23:59:59",
    "10000-01-01",
    "2024-02-30",
    "2024-13-01T00:00",
    "2024-01-01T24:00",
    "2024-01-01 00:00:00.999999999",
    "2024-01-01T00:00:00+14:00",
    "yesterday",
]
CURSORS = [
    "5",
    "-5",
    "|5",
    "x|5",
    "5|",
    "2024-01-01|5",
    "2024-01-01T00:00:00+00:00|5",
    "0001-01-01T00:00:00+14:00|1",
    "9999-12-31T23:59:59-14:00|1",
    "99999999999999999999|1",
    "-99999999999999999999|1",
    f"1|{2**63}",
    f"1|{2**63 - 1}",
    str(2**63 - 1),
    str(2**63),
    "0",
    "nan|1",
    "inf|1",
    "|",
    "||",
    "1|2|3",
]


def _repeated(piece: str) -> st.SearchStrategy[str]:
    return st.integers(min_value=300, max_value=30_000).map(lambda count: piece * count)


hostile = st.one_of(
    st.text(max_size=30),  # every kind of unicode (not lone surrogates: no client can encode those)
    st.sampled_from(SNIPPETS + JSON_FRAGMENTS + DATES + CURSORS + NUMBER_TEXTS),
    st.integers().map(str),
    st.floats().map(str),  # nan, inf, -0.0, 1e+300
    st.text(max_size=10).map(lambda text: text + "\x00" + text),  # PostgreSQL refuses NUL in text and jsonb
    st.sampled_from(["x", "é", "[", '{"a":', "%", "😀", "\x00"]).flatmap(_repeated),
)
spoiler = st.one_of(hostile, st.lists(hostile, min_size=2, max_size=3))  # a field sent two or three times

# JSON documents written as text, so that they can hold what no JSON encoder writes: numbers at and
# past the limits of PostgreSQL's numeric (16,383 digits after the point) and of Python's int()
# (4,300 digits), escaped NULs and half surrogate pairs, deep nesting.
# Values at and just past the limits: PostgreSQL's numeric scale, Python's int(), and what jsonb
# cannot hold in a string (an escaped NUL, half a surrogate pair).
JSON_AT_LIMITS = [
    "1e-16383",
    "1e-16384",
    "0." + "0" * 16382 + "1",
    "0." + "0" * 16383 + "1",
    "0e-99999",
    "0e99999999999",
    "1e309",
    "9" * 4300,
    "9" * 4301,
    '"\\u0000"',
    '"a\\u0000"',
    '"\\udfff"',
]
json_numbers = st.one_of(
    st.sampled_from(JSON_AT_LIMITS),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.builds("{}e{}".format, st.integers(-9, 9), st.integers(-20_000, 20_000)),
    st.integers(min_value=1, max_value=20_000).map(lambda digits: "0." + "1" * digits),
)
json_scalars = st.one_of(
    st.sampled_from(
        [
            "null",
            "true",
            "false",
            '"\\u0000"',
            '"\\ud800"',
            '"</script>"',
            '"{{ x }}"',
            "-0",
            "1.10",
            "12345678901234567890",
            "1e308",
            "-1E+400",
        ]
    ),
    json_numbers,
    st.text(max_size=20).map(json.dumps),
)
json_documents = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.dictionaries(st.text(max_size=6).map(json.dumps), children, max_size=3).map(
            lambda members: "{" + ", ".join(f"{key}: {value}" for key, value in members.items()) + "}"
        ),
    ),
    max_leaves=6,
)
json_texts = st.one_of(json_numbers, json_documents, st.sampled_from(JSON_FRAGMENTS))

# The search box: `text`, `headers:text`, `message.a.b:value*`, paths of any length, keys of any text.
search_terms = st.builds(
    lambda column, path, value: (column + "".join("." + key for key in path) + ":" if column else "") + value,
    st.sampled_from(["", "message", "headers"]),
    st.one_of(
        st.lists(st.sampled_from(["n", "customer", "id", "x-pgmq-group", "trace"]), max_size=3),
        st.lists(st.text(st.characters(codec="utf-8", exclude_characters=".: "), min_size=1, max_size=3), max_size=8),
        st.integers(min_value=20, max_value=120).map(lambda keys: ["k"] * keys),
    ),
    st.one_of(st.text(min_size=1, max_size=10), st.sampled_from(["1", "t*", "*", "*" * 300, "a*" * 100, '"', "\\"])),
)
# ... or one term alone, with a path up to as deep as the box's 500 characters allow.
searches = st.one_of(
    st.lists(search_terms, min_size=1, max_size=3).map(" ".join),
    st.sampled_from(range(100, 246)).map(lambda keys: "message" + ".k" * keys + ":x"),
)

moments = st.one_of(
    st.sampled_from(["2024-01-01T00:00", "2999-01-01", "2024-01-01 00:00:00", "0001-01-01", "9999-12-31T23:59:59"]),
    st.datetimes().map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%f")),
)
msg_id_texts = st.one_of(st.integers(min_value=0, max_value=2**63 + 10).map(str), st.sampled_from(NUMBER_TEXTS))
cursors = st.one_of(
    st.sampled_from(CURSORS),
    st.integers(min_value=0, max_value=2**63 - 1).map(str),
    st.builds(
        "{}|{}".format,
        st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        st.integers(min_value=0, max_value=2**63 - 1),
    ),
    st.builds("{}|{}".format, st.integers(), st.integers()),
)


def query(
    valid: dict[str, st.SearchStrategy], *, together: st.SearchStrategy | None = None, spoilable: tuple[str, ...] = ()
) -> st.SearchStrategy[dict]:
    """Valid (or nearly valid) values for any of the fields and for fields that go `together`;
    in about half the examples one or two fields spoiled with hostile values; maybe a parameter
    nobody expects."""
    names = sorted(set(valid) | set(spoilable))
    return st.builds(
        lambda unexpected, base, grouped, spoiled: {**unexpected, **base, **grouped, **spoiled},
        st.dictionaries(st.text(min_size=1, max_size=8), hostile, max_size=1),
        st.fixed_dictionaries({}, optional=valid),
        together if together is not None else st.just({}),
        st.one_of(st.just({}), st.dictionaries(st.sampled_from(names), spoiler, min_size=1, max_size=2)),
    )


# Query strings no form encoder writes: bad percent-escapes, invalid UTF-8 (a lone surrogate, an
# overlong NUL), empty keys.
RAW_QUERIES = [
    "q=%FF",
    "q=%ED%A0%80",
    "q=%C0%80",
    "sort=%",
    "message=%7B%00",
    "=",
    "&&&",
    "q",
    "a=1&a=2",
    "from=%2B5",
    "from=%EF%BC%95",
    "page=%D9%A5",
    "range=1h%00",
    "source=%00live",
    "q=%25%00",
]

# The htmx request asking for one live region; headers only carry latin-1.
htmx = st.one_of(
    st.just({}),
    st.builds(
        lambda target: {"HX-Request": "true", "HX-Target": target},
        st.one_of(
            st.sampled_from(["overview-live", "queue-live", "messages-live", "job-live"]),
            st.text(st.characters(max_codepoint=255), max_size=20),
        ),
    ),
)


# Checking an answer


COMPLAINTS = "ul.errors li, p.error, .notice h1 + p, .dialog-body h2 + p, .banner.critical[role=alert]"


def complaint(response) -> str:
    """What a 4xx page tells the person who made the request."""
    page = parse(response)
    return " ".join(element.get_text(" ", strip=True) for element in page.select(COMPLAINTS)).strip()


def assert_answered(response, what: str) -> None:
    """Never a server error; a refusal says why, in words."""
    if currently_in_test_context():  # how many got past the forms: pytest --hypothesis-show-statistics
        event(f"answered {response.status_code}")
    assert response.status_code < 500, f"{what}: {response.status_code}"
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("text/html"), what
        assert complaint(response), f"{what}: a {response.status_code} that does not say what is wrong"
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)  # a streamed body fails while it is read, if at all


def fingerprint(pgmq_sql: psycopg.Connection) -> dict[str, tuple]:
    """Every table in pgmq's schema (meta, each queue and archive): its row count and a checksum
    of its rows, vt and read_ct included."""
    tables = [
        row[0]
        for row in pgmq_sql.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'pgmq'::regnamespace AND relkind IN ('r', 'p') "
            "ORDER BY relname"
        ).fetchall()
    ]
    return {
        table: pgmq_sql.execute(
            sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM pgmq.{} t"
            ).format(sql.Identifier(table))
        ).fetchone()
        for table in tables
    }


def post_and_check(client, pgmq_sql, url: str, data: dict, what: str, headers: dict | None = None):
    """POST, and check the answer: a refusal (4xx) must leave every pgmq table as it was."""
    before = fingerprint(pgmq_sql)
    response = client.post(url, data, headers=headers or {})
    assert_answered(response, what)
    if response.status_code >= 400:
        assert fingerprint(pgmq_sql) == before, (
            f"{what}: refused with {response.status_code}, yet pgmq's tables changed"
        )
    return response


# The admin every test acts as


SERVER_HEADROOM = 980  # Python's default recursion limit, less the frames a server spends before Django's handler


def stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


@pytest.fixture
def admin(admin_client):
    """Signed in as an admin, so that every form is there to fuzz. Each request runs with the stack
    a server's request has: hypothesis raises Python's recursion limit while it runs a test, which
    would hide a query nested too deep to build in production."""
    request = admin_client.request

    def with_server_stack(**kwargs):
        raised = sys.getrecursionlimit()
        sys.setrecursionlimit(stack_depth() + SERVER_HEADROOM)
        try:
            return request(**kwargs)
        finally:
            sys.setrecursionlimit(raised)

    admin_client.request = with_server_stack
    return admin_client


# The queues every property works on


def send(pgmq_sql, queue: str, message: dict, headers: dict | None = None) -> int:
    return pgmq_sql.execute(
        "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb)",
        [queue, json.dumps(message), json.dumps(headers) if headers else None],
    ).fetchone()[0]


def replenish(pgmq_sql) -> None:
    """Fuzzed actions that succeed use messages up: keep some live and some archived."""
    live, archived = pgmq_sql.execute(
        sql.SQL("SELECT (SELECT count(*) FROM pgmq.{}), (SELECT count(*) FROM pgmq.{})").format(
            sql.Identifier("q_" + QUEUE), sql.Identifier("a_" + QUEUE)
        )
    ).fetchone()
    for n in range(max(0, 6 - live)):
        send(pgmq_sql, QUEUE, {"n": n}, {"trace": f"t{n}", "x-pgmq-group": "g"})
    if archived < 3:
        pgmq_sql.execute("SELECT pgmq.archive(%s, %s::bigint)", [QUEUE, send(pgmq_sql, QUEUE, {"archived": True})])


@pytest.fixture
def fuzzed(admin, make_queue, pgmq_sql) -> dict[str, int]:
    """A queue with visible, in-flight, poison and archived messages, a queue to move to, an audit
    entry and a bulk job: something behind every page and every form."""
    make_queue(QUEUE)
    make_queue(OTHER, messages=2)
    for n in range(1, 9):
        send(pgmq_sql, QUEUE, {"n": n, "customer": {"id": n % 3}}, {"trace": f"t{n}", "x-pgmq-group": "g"})
    for _ in range(6):
        pgmq_sql.execute("SELECT * FROM pgmq.read(%s, 0, 1)", [QUEUE])  # message 1 becomes poison
    pgmq_sql.execute("SELECT * FROM pgmq.read(%s, 600, 1)", [QUEUE])  # one in flight
    pgmq_sql.execute("SELECT pgmq.archive(%s, ARRAY[7, 8]::bigint[])", [QUEUE])
    admin.post(
        reverse("message-action", args=[QUEUE]),
        {"action": "retry", "source": "live", "scope": "selected", "msg_id": ["6"], "confirmed": "1"},
    )
    admin.post(
        reverse("message-action", args=[QUEUE]),
        {
            "action": "archive",
            "source": "live",
            "scope": "matching",
            "filter_query": "q=nothing-matches",
            "confirmed": "1",
        },
    )
    return {"entry": action_records().latest("id").pk, "job": BulkJob.objects.latest("id").pk}


# Every page, every query parameter


MESSAGE_FILTERS = {
    "source": st.sampled_from(["live", "archive", "both"]),
    "state": st.sampled_from(["", "visible", "in_flight", "delayed"]),
    "read_ct_min": st.sampled_from(["0", "1", "5", str(2**31 - 1)]),
    "read_ct_max": st.sampled_from(["0", "10", str(2**31 - 1)]),
    "enqueued_after": moments,
    "enqueued_before": moments,
    "archived_after": moments,
    "archived_before": moments,
    "message": st.one_of(
        st.sampled_from(['{"n": 1}', '{"customer": {"id": 1}}', "{}"]),
        json_texts,
        st.sampled_from(JSON_AT_LIMITS),
        st.sampled_from(JSON_AT_LIMITS).map('{{"n": {}}}'.format),
    ),
    "headers": st.one_of(
        st.sampled_from(['{"trace": "t1"}', '{"x-pgmq-group": "g"}']),
        json_texts,
        st.sampled_from(JSON_AT_LIMITS).map('{{"trace": {}}}'.format),
    ),
    "q": searches,
    "sort": st.sampled_from(
        [
            "msg_id",
            "-msg_id",
            "enqueued_at",
            "-enqueued_at",
            "read_ct",
            "-read_ct",
            "vt",
            "-vt",
            "archived_at",
            "-archived_at",
        ]
    ),
}
# One place in the list at a time (more than one is refused before anything is read), and the
# search box more often than the rest: it is where the parsing is.
MESSAGE_PLACES = st.builds(
    lambda place, search: {**place, **search},
    st.one_of(
        st.just({}),
        st.fixed_dictionaries({"after": cursors}),
        st.fixed_dictionaries({"before": cursors}),
        st.fixed_dictionaries({"from": msg_id_texts}),
        st.just({"last": "1"}),
    ),
    st.one_of(st.just({}), st.fixed_dictionaries({"q": searches})),
)


@fuzz_more
@given(
    params=query(MESSAGE_FILTERS, together=MESSAGE_PLACES, spoilable=("after", "before", "from", "last", "jump")),
    headers=htmx,
)
def test_the_message_list_answers_any_filter_without_a_server_error(admin, fuzzed, params, headers):
    response = admin.get(reverse("messages", args=[QUEUE]), params, headers=headers)
    assert_answered(response, f"message list {params!r}")


@fuzz
@given(
    params=query(
        {
            "q": st.one_of(st.sampled_from(["fuzz", "zz", QUEUE]), st.text(max_size=20)),
            "sort": st.sampled_from(["name", "-name", "-backlog", "oldest", "-poison", "sent", "-health"]),
            "page": st.sampled_from(["1", "2", "1000000"]),
        },
        spoilable=("order",),
    ),
    headers=htmx,
)
def test_the_overview_answers_any_query_without_a_server_error(admin, fuzzed, params, headers):
    assert_answered(admin.get(reverse("overview"), params, headers=headers), f"overview {params!r}")


@fuzz
@given(
    page=st.sampled_from(["queue", "queue-archive-history", "queue-poison", "queue-diagnostics"]),
    params=query({"range": st.sampled_from(["15m", "1h", "24h", "7d"])}),
    headers=htmx,
)
def test_the_queue_page_and_its_panels_answer_any_range(admin, fuzzed, page, params, headers):
    assert_answered(admin.get(reverse(page, args=[QUEUE]), params, headers=headers), f"{page} {params!r}")


msg_ids_in_paths = st.one_of(
    st.integers(min_value=0, max_value=12), st.sampled_from(NUMBERS).map(abs), st.integers(min_value=0)
)


@fuzz
@given(
    page=st.sampled_from(["message", "message-raw", "edit-message"]),
    msg_id=msg_ids_in_paths,
    params=query({"source": st.sampled_from(["live", "archive"])}),
)
def test_a_message_answers_any_msg_id_and_source(admin, fuzzed, page, msg_id, params):
    assert_answered(admin.get(reverse(page, args=[QUEUE, msg_id]), params), f"{page} {msg_id} {params!r}")


@fuzz
@given(
    raw_id=st.one_of(st.sampled_from(NUMBER_TEXTS), st.text(max_size=12)),
    page=st.sampled_from(["messages/{}/", "messages/{}/raw/", "messages/{}/edit/"]),
)
def test_a_msg_id_typed_into_the_address_is_never_a_server_error(admin, fuzzed, raw_id, page):
    """Negative ids, signs, other scripts' digits, text: what a person may type in the address bar."""
    url = reverse("queue", args=[QUEUE]) + page.format(quote(raw_id, safe=""))
    assert_answered(admin.get(url), url)


AUDIT_FILTERS = {
    "queue": st.sampled_from([QUEUE, OTHER, "gone"]),
    "user": st.sampled_from(["admin-user", "nobody"]),
    "action": st.sampled_from(["retry", "archive", "send"]),
    "outcome": st.sampled_from(["", "done", "partial", "failed", "cancelled"]),
    "since": moments,
    "until": moments,
    "before": st.one_of(st.sampled_from(["1", "2"]), msg_id_texts),
}


@fuzz
@given(page=st.sampled_from(["audit", "audit-csv"]), params=query(AUDIT_FILTERS))
def test_the_audit_log_and_its_csv_answer_any_filter(admin, fuzzed, page, params):
    assert_answered(admin.get(reverse(page), params), f"{page} {params!r}")


@fuzz
@given(
    params=query(
        {
            "key": st.one_of(
                st.sampled_from(["orders.eu.created", "orders.#", "orders..eu", ".orders", "a" * 255, "a" * 256]),
                st.text(max_size=300),
            )
        }
    )
)
def test_the_topics_page_answers_any_routing_key(admin, fuzzed, pgmq_sql, params):
    pgmq_sql.execute("SELECT pgmq.bind_topic('orders.*.created', %s)", [QUEUE])
    assert_answered(admin.get(reverse("topics"), params), f"topics {params!r}")


@fuzz
@given(kind=st.sampled_from(["job", "audit-entry"]), known=st.booleans(), other_id=msg_ids_in_paths, headers=htmx)
def test_a_job_or_an_audit_entry_answers_any_id(admin, fuzzed, kind, known, other_id, headers):
    pk = (fuzzed["job"] if kind == "job" else fuzzed["entry"]) if known else other_id
    response = admin.get(reverse(kind, args=[pk]), headers=headers)
    assert_answered(response, f"{kind} {pk}")
    assert response.status_code == 200 if known else response.status_code in (200, 404)


@fuzz
@given(
    page=st.sampled_from(["overview", "messages", "queue", "audit", "audit-csv", "topics"]),
    raw=st.sampled_from(RAW_QUERIES),
)
def test_query_strings_no_encoder_writes_are_never_a_server_error(admin, fuzzed, page, raw):
    url = reverse(page, args=[QUEUE] if page in ("messages", "queue") else [])
    assert_answered(admin.get(f"{url}?{raw}"), f"{url}?{raw}")


# Every POST form


# "@live" and "@archived" stand for a message there now (earlier examples may have acted on others).
selected_ids = st.lists(
    st.one_of(st.sampled_from(["@live", "@archived", "1", "999"]), msg_id_texts), min_size=1, max_size=3
)
filter_queries = query(MESSAGE_FILTERS).map(lambda params: urlencode(params, doseq=True))
ACTION_FIELDS = {
    "scope": st.sampled_from(["selected", "matching"]),
    "msg_id": selected_ids,
    "filter_query": filter_queries,
    "destination": st.sampled_from([OTHER, QUEUE, "no-such-queue"]),
    "original": st.sampled_from(["archive", "delete"]),
    "remove_archived": st.sampled_from(["1", ""]),
    "until": st.one_of(moments, st.just((timezone.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))),
    "include_in_flight": st.sampled_from(["1", "on", ""]),
    "confirmed": st.sampled_from(["1", ""]),
    "request_token": st.uuids().map(str),
}


# What makes an action whole: an action with its table, and the messages chosen or a filter.
ACTIONS_AND_SOURCES = st.builds(
    lambda pair, messages: {"action": pair[0], "source": pair[1], **messages},
    st.sampled_from(
        [(action, "live") for action in ("retry", "delay", "archive", "delete", "move")]
        + [(action, "archive") for action in ("requeue", "delete_archived")]
    ),
    st.one_of(
        st.fixed_dictionaries({"scope": st.just("selected"), "msg_id": selected_ids}),
        st.fixed_dictionaries({"scope": st.just("matching"), "filter_query": filter_queries}),
    ),
)


def present_ids(pgmq_sql) -> dict[str, str]:
    """The newest live and the newest archived msg_id, as "@live" and "@archived" stand for."""
    live, archived = pgmq_sql.execute(
        sql.SQL("SELECT (SELECT max(msg_id) FROM pgmq.{}), (SELECT max(msg_id) FROM pgmq.{})").format(
            sql.Identifier("q_" + QUEUE), sql.Identifier("a_" + QUEUE)
        )
    ).fetchone()
    return {"@live": str(live), "@archived": str(archived)}


@fuzz_more
@given(
    data=query(ACTION_FIELDS, together=ACTIONS_AND_SOURCES, spoilable=("action", "source")),
    headers=st.sampled_from([{}, {"HX-Request": "true"}]),
)
def test_an_action_refused_for_any_reason_changes_nothing(admin, fuzzed, pgmq_sql, data, headers):
    replenish(pgmq_sql)
    if isinstance(data.get("msg_id"), list):
        ids = present_ids(pgmq_sql)
        data["msg_id"] = [ids.get(msg_id, msg_id) for msg_id in data["msg_id"]]
    post_and_check(admin, pgmq_sql, reverse("message-action", args=[QUEUE]), data, f"action {data!r}", headers)


# A JSON field: valid, any JSON text, or a value at the limits alone or inside an object.
json_fields = st.one_of(
    st.sampled_from(['{"ok": true}', '{"n": 1.10}', "[]", "42", '"text"']),
    json_texts,
    st.sampled_from(JSON_AT_LIMITS),
    st.sampled_from(JSON_AT_LIMITS).map('{{"a": {}}}'.format),
)


@fuzz_more
@given(
    data=query(
        {"headers": json_fields, "delay_s": st.sampled_from(["0", "5", ""]), "request_token": st.uuids().map(str)},
        together=st.fixed_dictionaries({"message": json_fields}),
        spoilable=("message", "destination"),
    )
)
def test_a_send_refused_for_any_reason_sends_nothing(admin, fuzzed, pgmq_sql, data):
    post_and_check(admin, pgmq_sql, reverse("send-message", args=[QUEUE]), data, f"send {data!r}")


@fuzz
@given(
    which=st.sampled_from(["@live", "@archived", "999", str(2**63 - 1)]),
    data=query(
        {
            "headers": json_fields,
            "destination": st.sampled_from([QUEUE, OTHER, "gone"]),
            "source": st.sampled_from(["live", "archive"]),
            "request_token": st.uuids().map(str),
        },
        together=st.fixed_dictionaries({"message": json_fields}),
        spoilable=("message", "delay_s"),
    ),
)
def test_an_edit_and_resend_refused_for_any_reason_changes_nothing(admin, fuzzed, pgmq_sql, which, data):
    replenish(pgmq_sql)
    msg_id = int(present_ids(pgmq_sql).get(which, which))
    post_and_check(admin, pgmq_sql, reverse("edit-message", args=[QUEUE, msg_id]), data, f"edit {msg_id} {data!r}")


@fuzz
@given(
    page=st.sampled_from(["purge-queue", "drop-queue"]),
    data=query(
        {
            "confirm_name": st.sampled_from(
                [QUEUE.upper(), QUEUE + " ", " " + QUEUE, QUEUE + "\x00", QUEUE[:-1], "fuzzеd"]
            ),  # a Cyrillic е
            "request_token": st.uuids().map(str),
        }
    ),
)
def test_a_purge_or_drop_without_the_exact_name_changes_nothing(admin, fuzzed, pgmq_sql, page, data):
    response = post_and_check(admin, pgmq_sql, reverse(page, args=[QUEUE]), data, f"{page} {data!r}")
    assert response.status_code == 400, "only the queue's exact name purges or drops it"


# Names pgmq takes (47 characters at most), many of them past 47 bytes in UTF-8.
queue_names = st.one_of(
    hostile,
    st.text(min_size=1, max_size=47),
    st.text(st.characters(codec="utf-8", min_codepoint=0x80), min_size=12, max_size=47),
    st.builds(
        lambda start, letter, count: (start + letter * count)[:47],
        st.sampled_from(["", "q_"]),
        st.sampled_from(["é", "ж", "😀", "İ", "ẞ", "€"]),
        st.sampled_from(range(10, 48)),
    ),
)


@fuzz
@given(
    data=st.one_of(
        queue_names.flatmap(
            lambda name: st.fixed_dictionaries(
                {"name": st.just(name), "confirm_name": st.just(name)},
                optional={"unlogged": st.sampled_from(["1", ""]), "request_token": st.uuids().map(str)},
            )
        ),
        query({"name": st.just("fine_name"), "confirm_name": st.just("fine_name")}, spoilable=("unlogged",)),
    )
)
def test_creating_a_queue_refused_for_any_reason_changes_nothing(admin, fuzzed, pgmq_sql, data):
    try:
        response = post_and_check(admin, pgmq_sql, reverse("create-queue"), data, f"create {data!r}")
        if response.status_code == 302:
            # Created: a queue of its own whose page opens, not one sharing another's cut-off table name.
            page = admin.get(response["Location"])
            assert page.status_code == 200, f"created {data['name']!r}, then: {complaint(page)}"
    finally:
        for (name,) in pgmq_sql.execute(
            "SELECT queue_name FROM pgmq.meta WHERE queue_name NOT IN (%s, %s)", [QUEUE, OTHER]
        ).fetchall():
            pgmq_sql.execute("SELECT pgmq.drop_queue(%s)", [name])


@fuzz
@given(job_id=st.one_of(st.just(None), msg_ids_in_paths))
def test_cancelling_any_job_id_is_never_a_server_error(admin, fuzzed, pgmq_sql, job_id):
    job_id = fuzzed["job"] if job_id is None else job_id
    post_and_check(admin, pgmq_sql, reverse("cancel-job", args=[job_id]), {}, f"cancel job {job_id}")


# The cases named in the issue, each said once more by hand


BAD_JSON = {
    "{not json": "not valid JSON",
    "[1,": "not valid JSON",
    "{'a': 1}": "not valid JSON",
    "NaN": "NaN",
    '{"a": 1e400}': "too large",
    '{"a": "\\u0000"}': "NUL",
    '"\\ud800"': "surrogate",
    "[" * 5000: "nested",
    '{"a": 1e-16384}': "16,383 digits after the decimal point",
    '{"a": 0e99999999999}': "exponent",
    "9" * 4301: "4,300 digits",
    '{"a": 1.5e-16383}': "16,383 digits after the decimal point",
}


@pytest.mark.parametrize("text, reason", BAD_JSON.items(), ids=[text[:20] for text in BAD_JSON])
def test_malformed_json_is_refused_saying_why_wherever_it_is_typed(admin, fuzzed, pgmq_sql, text, reason):
    for field in ("message", "headers"):
        response = admin.get(reverse("messages", args=[QUEUE]), {field: text})
        assert response.status_code == 400 and reason in complaint(response), (field, complaint(response))
    action = post_and_check(
        admin,
        pgmq_sql,
        reverse("message-action", args=[QUEUE]),
        {
            "action": "archive",
            "source": "live",
            "scope": "matching",
            "confirmed": "1",
            "filter_query": urlencode({"message": text}),
        },
        "action",
    )
    assert action.status_code == 400 and reason in complaint(action)
    for field in ("message", "headers"):
        sent = post_and_check(
            admin, pgmq_sql, reverse("send-message", args=[QUEUE]), {"message": '{"ok": 1}', field: text}, "send"
        )
        assert sent.status_code == 400 and reason in complaint(sent), (field, complaint(sent))
        edited = post_and_check(
            admin, pgmq_sql, reverse("edit-message", args=[QUEUE, 2]), {"message": '{"ok": 1}', field: text}, "edit"
        )
        assert edited.status_code == 400 and reason in complaint(edited), (field, complaint(edited))


def test_numbers_at_the_limits_postgresql_stores_are_sent_exactly(admin, fuzzed, pgmq_sql):
    """Just inside what is refused above: accepted, and stored as written."""
    for text in ("1e-16383", "0e99999", "9" * 4300):
        sent = admin.post(reverse("send-message", args=[QUEUE]), {"message": f'{{"a": {text}}}'})
        assert sent.status_code == 302, complaint(sent)
        stored = pgmq_sql.execute(
            f"SELECT (message -> 'a')::numeric = %s::numeric, jsonb_typeof(message -> 'a') "
            f"FROM pgmq.q_{QUEUE} ORDER BY msg_id DESC LIMIT 1",
            [text],
        ).fetchone()
        assert stored == (True, "number"), (text, stored)


MSG_ID_EDGES = [str(2**63), str(2**63 - 1) + "0", "-1", str(-(2**63))]


def test_msg_ids_out_of_range_are_a_clear_404_or_400(admin, fuzzed, pgmq_sql):
    messages = reverse("messages", args=[QUEUE])
    for page in ("", "raw/"):
        response = admin.get(f"{messages}{2**63}/{page}")
        assert response.status_code == 404 and f"Message {2**63} is not in queue" in complaint(response)
        assert admin.get(f"{messages}-1/{page}").status_code == 404
    assert admin.get(f"{messages}{2**63}/edit/").status_code == 302  # back to the list, saying it is gone
    for name in ("from", "after", "before"):
        for value in MSG_ID_EDGES:
            response = admin.get(messages, {name: value})
            assert response.status_code == 400 and complaint(response), (name, value)
    for value in MSG_ID_EDGES:
        response = post_and_check(
            admin,
            pgmq_sql,
            reverse("message-action", args=[QUEUE]),
            {"action": "delete", "source": "live", "scope": "selected", "msg_id": ["2", value], "confirmed": "1"},
            f"msg_id {value}",
        )
        assert response.status_code == 400 and "msg_id" in complaint(response)
        audit = admin.get(reverse("audit"), {"before": value})
        assert audit.status_code == 400 and "before" in complaint(audit)
    for url in (f"/jobs/{2**63}/", f"/audit/{2**63}/", f"/jobs/{10**30}/"):
        response = admin.get(url)
        assert response.status_code == 404 and str(int(url.split("/")[2])) in complaint(response)
    assert post_and_check(admin, pgmq_sql, f"/jobs/{2**63}/cancel/", {}, "cancel").status_code == 404


def test_a_search_path_deeper_than_a_query_can_nest_is_a_400(admin, fuzzed):
    """Found by the fuzzing: each key of a path nests the query once more, and at about 150 keys
    Python ran out of stack building it (a server error)."""
    messages = reverse("messages", args=[QUEUE])
    assert admin.get(messages, {"q": "message" + ".k" * 50 + ":x"}).status_code == 200
    deep = admin.get(messages, {"q": "message" + ".k" * 245 + ":x"})
    assert deep.status_code == 400 and "a path of at most 50 keys (this one has 245)" in complaint(deep)


def test_a_queue_name_past_47_bytes_is_refused_before_postgresql_cuts_its_table_name(admin, fuzzed, pgmq_sql):
    """Found by the fuzzing: pgmq counts 47 characters, PostgreSQL cuts identifiers at 63 bytes, so
    "é" × 47 got a cut-off table (its pages said the table was gone) that "é" × 46 + "x" then shared."""
    refused = post_and_check(
        admin, pgmq_sql, reverse("create-queue"), {"name": "é" * 24, "confirm_name": "é" * 24}, "create"
    )
    assert refused.status_code == 400 and "at most 47 bytes in UTF-8 (this name has 48)" in complaint(refused)
    fits = "é" * 23 + "x"
    try:
        created = admin.post(reverse("create-queue"), {"name": fits, "confirm_name": fits})
        assert created.status_code == 302 and admin.get(created["Location"]).status_code == 200
    finally:
        pgmq_sql.execute("SELECT pgmq.drop_queue(%s)", [fits])


@pytest.mark.parametrize(
    "route, args",
    [
        ("send-message", [QUEUE]),
        ("edit-message", [QUEUE, 2]),
        ("purge-queue", [QUEUE]),
        ("drop-queue", [QUEUE]),
        ("create-queue", []),
    ],
)
def test_an_empty_or_damaged_form_says_what_is_wrong(admin, fuzzed, pgmq_sql, route, args):
    """Found by the fuzzing: an empty POST showed the blank form with a 400 and no word of why, and
    a damaged request token (a hidden field) was refused without a word either."""
    empty = post_and_check(admin, pgmq_sql, reverse(route, args=args), {}, f"{route} empty")
    assert empty.status_code == 400 and "This field is required." in complaint(empty)
    damaged = post_and_check(admin, pgmq_sql, reverse(route, args=args), {"request_token": "0"}, f"{route} token")
    assert damaged.status_code == 400 and "this form is damaged" in complaint(damaged)


UNKNOWN = '<b>no such</b> "queue" /%'


@pytest.mark.parametrize(
    "route, extra, method",
    [
        ("queue", [], "get"),
        ("queue-poison", [], "get"),
        ("queue-archive-history", [], "get"),
        ("queue-diagnostics", [], "get"),
        ("messages", [], "get"),
        ("message", [1], "get"),
        ("message-raw", [1], "get"),
        ("edit-message", [1], "get"),
        ("send-message", [], "get"),
        ("purge-queue", [], "get"),
        ("drop-queue", [], "get"),
        ("message-action", [], "post"),
        ("send-message", [], "post"),
        ("edit-message", [1], "post"),
        ("purge-queue", [], "post"),
        ("drop-queue", [], "post"),
    ],
)
def test_an_unknown_queue_is_a_404_naming_it(admin, fuzzed, route, extra, method):
    for name in (UNKNOWN, "\x00", QUEUE.upper()):
        response = getattr(admin, method)(reverse(route, args=[name, *extra]))
        assert response.status_code == 404
        shown = name.replace("\x00", "\ufffd")  # how an HTML parser shows a NUL
        assert f"no queue named “{shown}”" in complaint(response) or f"no queue named “{name}”" in complaint(response)


NUL = "a\x00b"
GET_TEXT_FIELDS = {
    "overview": (["q", "sort", "page"], []),
    "messages": ([name for name in MESSAGE_FILTERS] + ["after", "before", "from"], [QUEUE]),
    "queue": (["range"], [QUEUE]),
    "queue-archive-history": (["range"], [QUEUE]),
    "message": (["source"], [QUEUE, 2]),
    "message-raw": (["source"], [QUEUE, 2]),
    "edit-message": (["source"], [QUEUE, 2]),
    "audit": (list(AUDIT_FILTERS), []),
    "audit-csv": (list(AUDIT_FILTERS), []),
}


@pytest.mark.parametrize("route", GET_TEXT_FIELDS)
def test_a_nul_in_any_query_parameter_is_a_400(admin, fuzzed, route):
    names, args = GET_TEXT_FIELDS[route]
    for name in names:
        response = admin.get(reverse(route, args=args), {name: NUL})
        assert response.status_code == 400, (route, name)
        assert complaint(response), (route, name)


POST_FORMS = {
    # The form as a person would send it (it would succeed); each text field in turn gets a NUL.
    "message-action": (
        [QUEUE],
        {
            "action": "move",
            "source": "live",
            "scope": "selected",
            "msg_id": "2",
            "destination": OTHER,
            "original": "archive",
            "filter_query": "",
            "until": "",
            "confirmed": "1",
            "request_token": str(uuid.uuid4()),
        },
    ),
    "send-message": (
        [QUEUE],
        {"message": '{"a": 1}', "headers": '{"b": 2}', "delay_s": "0", "request_token": str(uuid.uuid4())},
    ),
    "edit-message": (
        [QUEUE, 2],
        {
            "message": '{"a": 1}',
            "headers": '{"b": 2}',
            "destination": OTHER,
            "source": "live",
            "request_token": str(uuid.uuid4()),
        },
    ),
    "purge-queue": ([QUEUE], {"confirm_name": QUEUE, "request_token": str(uuid.uuid4())}),
    "drop-queue": ([QUEUE], {"confirm_name": QUEUE, "request_token": str(uuid.uuid4())}),
    "create-queue": ([], {"name": "new_one", "confirm_name": "new_one", "request_token": str(uuid.uuid4())}),
}


@pytest.mark.parametrize("route", POST_FORMS)
def test_a_nul_in_any_form_field_is_a_400_that_changes_nothing(admin, fuzzed, pgmq_sql, route):
    args, form = POST_FORMS[route]
    for name, value in form.items():
        if name == "confirmed":
            continue  # a checkbox: any value ticks it
        for spoiled in (NUL, value + "\x00"):
            response = post_and_check(
                admin, pgmq_sql, reverse(route, args=args), {**form, name: spoiled}, f"{route} {name}={spoiled!r}"
            )
            assert response.status_code == 400, (route, name, spoiled)


# Escaping: whatever a name, a message or its headers hold is text wherever it is shown


SCRIPT = "</script><script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
QUOTE = "x' onmouseover='alert(1)"
TEMPLATE = "{{ request.user }}{% debug %}{{ }}"
# pgmq refuses ' in a queue name, and 47 characters is the most: two names carry the rest.
HOSTILE_NAMES = [SCRIPT, ATTRIBUTE + "{{ }}"]
HOSTILE_MESSAGE = {
    "script": SCRIPT,
    "attribute": ATTRIBUTE,
    "quote": QUOTE,
    "template": TEMPLATE,
    "formula": "=HYPERLINK(1)",
    "customer": {"id": 7},
}
HOSTILE_HEADERS = {"x-pgmq-group": SCRIPT, "trace": ATTRIBUTE, "quote": QUOTE, "template": TEMPLATE}


def assert_inert(response, *, shows: list[str] = (), status: int = 200) -> None:
    """Nothing in the page came from the data as markup: no element, no attribute, no script of
    its own; every embedded JSON parses; and `shows` is shown whole, as text."""
    assert response.status_code == status, (response.status_code, complaint(response))
    html = response.content.decode()
    for markup in ("<script>alert", "<img", "onerror=alert(1)>"):
        assert markup not in html, markup
    page = parse(html)
    for element in page.find_all(True):
        assert element.name not in ("img", "iframe", "object", "embed", "base"), element
        for attribute, value in element.attrs.items():
            assert not attribute.lower().startswith("on"), (element.name, attribute)
            values = value if isinstance(value, list) else [value]
            assert not any(str(text).strip().lower().startswith("javascript:") for text in values), element
        if element.name == "script":
            assert element.get("src") or element.get("type") == "application/json", element
            if element.get("type") == "application/json":
                json.loads(element.string)
    text = page.get_text()
    for shown in shows:
        assert shown in text, f"{shown!r} is not shown whole"


@pytest.fixture
def hostile_queues(admin, make_queue, pgmq_sql) -> dict:
    """Two queues named with markup, each with a hostile message live, one read into poison, one
    archived, one deleted through the dashboard, and a bulk job whose filter is markup too."""
    made = {}
    for name in HOSTILE_NAMES:
        make_queue(name)
        ids = [send(pgmq_sql, name, HOSTILE_MESSAGE, HOSTILE_HEADERS) for _ in range(4)]
        for _ in range(6):
            pgmq_sql.execute("SELECT * FROM pgmq.read(%s, 0, 1)", [name])  # the first becomes poison
        pgmq_sql.execute("SELECT pgmq.archive(%s, %s::bigint)", [name, ids[1]])
        admin.post(
            reverse("message-action", args=[name]),
            {"action": "delete", "source": "live", "scope": "selected", "msg_id": [str(ids[2])], "confirmed": "1"},
        )
        admin.post(
            reverse("message-action", args=[name]),
            {
                "action": "archive",
                "source": "live",
                "scope": "matching",
                "confirmed": "1",
                "filter_query": urlencode(
                    {"q": f"message.script:{SCRIPT}", "headers": json.dumps({"trace": ATTRIBUTE})}
                ),
            },
        )
        made[name] = {
            "live": ids[0],
            "archived": ids[1],
            "deleted": ids[2],
            "entry": AuditEntry.objects.filter(queue_name=name, action="delete").get().pk,
            "job": BulkJob.objects.filter(queue_name=name).get().pk,
        }
    take_sample(count_poison_everywhere=True)  # the charts' history
    return made


def test_names_payloads_and_headers_are_text_on_every_page(admin, pgmq_sql, hostile_queues):
    live_region = {"HX-Request": "true"}
    assert_inert(admin.get(reverse("overview")), shows=HOSTILE_NAMES)
    assert_inert(
        admin.get(reverse("overview"), headers={**live_region, "HX-Target": "overview-live"}), shows=HOSTILE_NAMES
    )
    for name, ids in hostile_queues.items():
        assert_inert(admin.get(reverse("overview"), {"q": name}), shows=[name])
        queue_page = admin.get(reverse("queue", args=[name]))
        assert_inert(queue_page, shows=[name])
        assert_inert(admin.get(reverse("queue", args=[name]), headers={**live_region, "HX-Target": "queue-live"}))
        assert_inert(admin.get(reverse("queue-poison", args=[name])), shows=[SCRIPT, QUOTE])
        assert_inert(admin.get(reverse("queue-archive-history", args=[name])))
        assert_inert(admin.get(reverse("queue-diagnostics", args=[name])))
        messages = reverse("messages", args=[name])
        for params in (
            {},
            {"source": "archive"},
            {"source": "both"},
            {"q": SCRIPT},
            {"headers": json.dumps({"trace": ATTRIBUTE}), "q": f'"{QUOTE}"'},
        ):
            assert_inert(admin.get(messages, params), shows=[name])
        assert_inert(admin.get(messages, headers={**live_region, "HX-Target": "messages-live"}))
        for msg_id, source in ((ids["live"], "live"), (ids["archived"], "archive")):
            assert_inert(admin.get(reverse("message", args=[name, msg_id])), shows=[name])
            assert_inert(
                admin.get(reverse("edit-message", args=[name, msg_id]), {"source": source}),
                shows=[name, SCRIPT, ATTRIBUTE, QUOTE],
            )
        for route in ("send-message", "purge-queue", "drop-queue"):
            assert_inert(admin.get(reverse(route, args=[name])), shows=[name])
        confirmation = admin.post(
            reverse("message-action", args=[name]),
            {"action": "delete", "source": "live", "scope": "matching", "filter_query": urlencode({"q": SCRIPT})},
        )
        assert_inert(confirmation, shows=[name, SCRIPT])
        assert_inert(admin.get(reverse("job", args=[ids["job"]])), shows=[name, SCRIPT, ATTRIBUTE])
        assert_inert(admin.get(reverse("audit-entry", args=[ids["entry"]])), shows=[name, SCRIPT, QUOTE])
        assert_inert(admin.get(reverse("audit"), {"queue": name}), shows=[name])
    assert_inert(admin.get(reverse("audit")), shows=HOSTILE_NAMES)


def test_refusals_show_what_was_typed_as_text(admin, hostile_queues):
    name = HOSTILE_NAMES[0]
    messages = reverse("messages", args=[name])
    for params in ({"state": ATTRIBUTE}, {"message": SCRIPT}, {"q": f'"{SCRIPT}'}, {"sort": QUOTE}):
        assert_inert(admin.get(messages, params), shows=[name], status=400)
    missing = admin.get(reverse("queue", args=[SCRIPT + "x"]))
    assert_inert(missing, shows=[SCRIPT + "x"], status=404)
    refused = admin.post(reverse("create-queue"), {"name": QUOTE, "confirm_name": QUOTE})
    assert_inert(refused, status=400)
    assert parse(refused).select_one("input[name=name]")["value"] == QUOTE


def test_json_embedded_in_pages_parses_back_to_exactly_what_is_stored(admin, pgmq_sql, hostile_queues):
    for name, ids in hostile_queues.items():
        page = parse(admin.get(reverse("message", args=[name, ids["live"]])))
        stored = pgmq_sql.execute(
            sql.SQL("SELECT jsonb_pretty(message), jsonb_pretty(headers) FROM pgmq.{} WHERE msg_id = %s").format(
                sql.Identifier("q_" + name)
            ),
            [ids["live"]],
        ).fetchone()
        embedded = [json.loads(page.select_one(f"script#{kind}-json").string) for kind in ("message", "headers")]
        assert embedded == list(stored)
        assert json.loads(embedded[0]) == HOSTILE_MESSAGE and json.loads(embedded[1]) == HOSTILE_HEADERS
        raw = admin.get(reverse("message-raw", args=[name, ids["live"]]))
        assert raw["Content-Type"] == "application/json"
        assert json.loads(body(raw)) == HOSTILE_MESSAGE
        raw_headers = admin.get(reverse("message-raw", args=[name, ids["live"]]) + "?part=headers")
        assert json.loads(body(raw_headers)) == HOSTILE_HEADERS

        # The charts read these: they parse back, every label is a string, and no "</" ends the script early.
        queue_page = parse(admin.get(reverse("queue", args=[name])))
        archive_panel = parse(admin.get(reverse("queue-archive-history", args=[name])))
        charts = json.loads(queue_page.select_one("script#queue-chart-data").string)
        archive = json.loads(archive_panel.select_one("script#archive-chart-data").string)
        labels = [
            *charts["history"]["labels"],
            *charts["age"]["labels"],
            *charts["read_ct"]["labels"],
            *archive["labels"],
        ]
        assert charts["history"]["labels"] and charts["age"]["labels"] and charts["read_ct"]["labels"]
        assert all(isinstance(label, str) for label in labels)
        for script in (
            queue_page.select_one("script#queue-chart-data"),
            archive_panel.select_one("script#archive-chart-data"),
        ):
            assert "</" not in script.string


def test_the_csv_export_neutralises_every_formula(admin, make_queue, pgmq_sql, django_user_model):
    names = ["=HYPERLINK(1)", "+1+2", "-1", "@SUM(1)", "\tx", "\rx", "plain"]
    for name in names:
        make_queue(name, messages=1)
    user = django_user_model.objects.create_user("@evil", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name="Admin"))
    admin.force_login(user)
    for name in names:
        admin.post(
            reverse("message-action", args=[name]),
            {"action": "delete", "source": "live", "scope": "selected", "msg_id": ["1"], "confirmed": "1"},
        )
    export = b"".join(admin.get(reverse("audit-csv")).streaming_content).decode()
    rows = list(csv.reader(io.StringIO(export, newline="")))
    # The account "@evil" was made and given a role: records of no queue, with a formula in a cell too.
    assert len([row for row in rows[1:] if row[4]]) == len(names)
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), cell
    by_queue = {row[4] for row in rows[1:] if row[4]}
    assert by_queue == {"'" + name if name != "plain" else name for name in names}
    assert {row[2] for row in rows[1:] if row[4]} == {"'@evil"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(
        st.one_of(
            st.builds(
                "{}{}".format,
                st.sampled_from(FORMULA_STARTS + (" ", "'", "\n", "＝")),
                st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
            ),
            st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
        ),
        min_size=3,
        max_size=3,
    )
)
def test_no_csv_cell_starts_a_formula_whatever_the_record_holds(admin, texts):
    queue_name, username, error = texts
    AuditEntry.objects.create(
        username=username,
        action="send",
        queue_name=queue_name,
        target={"queue": queue_name},
        requested=1,
        affected=0,
        outcome="failed",
        details={"error": error},
    )
    rows = list(
        csv.reader(io.StringIO(b"".join(admin.get(reverse("audit-csv")).streaming_content).decode(), newline=""))
    )
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), cell
    newest = rows[1]
    for column, text in ((4, queue_name), (2, username)):
        assert newest[column] in (text, "'" + text), (newest[column], text)


# A payload of a megabyte and more


def test_a_message_of_more_than_a_megabyte_is_shown_cut_and_given_whole(admin, make_queue, pgmq_sql):
    make_queue("megabyte")
    # Written by hand so the exact text (spacing, a number's digits) can be compared with what comes back.
    blob = "x" * 1_200_000
    text = f'{{"blob": "{blob}", "price": 1.10, "note": "{SCRIPT}"}}'
    headers = json.dumps({"trace": "y" * 1_100_000})  # pgmq sets no limit on headers either
    msg_id = pgmq_sql.execute("SELECT pgmq.send('megabyte', %s::jsonb, %s::jsonb)", [text, headers]).fetchone()[0]
    stored, stored_headers = pgmq_sql.execute("SELECT message::text, headers::text FROM pgmq.q_megabyte").fetchone()

    listing = admin.get(reverse("messages", args=["megabyte"]))
    assert listing.status_code == 200 and len(listing.content) < 100_000  # the list never carries the payload
    row = message_rows(parse(listing))[0]
    assert row["preview"].endswith("…") and len(row["preview"]) <= 160
    whole = parse(listing).select_one(f"tr[data-msg-id='{msg_id}'] .payload a")
    assert whole.get_text() == "Open the whole message" and "MB of JSON" in whole.parent.get_text()

    detail = admin.get(whole["href"])
    page = parse(detail)
    assert detail.status_code == 200 and len(detail.content) < 3 * DISPLAY_LIMIT_CHARS
    assert "the page shows its beginning" in page.get_text() and "the page shows their beginning" in page.get_text()
    for shown in page.select("pre.json"):  # the message and the headers
        assert len(shown.get_text().rstrip("\n")) <= DISPLAY_LIMIT_CHARS
    for copy in ("message-json", "headers-json"):  # no copy of the whole hidden in the page either
        assert page.select_one(f"script#{copy}") is None

    raw = admin.get(page.select_one("a[href*='/raw/']:not([href*='part=headers'])")["href"])
    assert raw.status_code == 200 and body(raw).decode() == stored  # exactly as PostgreSQL writes it
    assert json.loads(stored)["blob"] == blob and "1.10" in stored
    raw_headers = admin.get(page.select_one("a[href*='part=headers']")["href"])
    assert body(raw_headers).decode() == stored_headers and json.loads(stored_headers) == json.loads(headers)
