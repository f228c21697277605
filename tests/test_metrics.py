"""GET /metrics: Prometheus sees the overview's figures, true to the tables, and only with the token."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import prometheus_client
import pytest
import yaml
from django.core.cache import cache
from django.db import OperationalError, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from queues.management.commands.sample_metrics import take_sample
from queues.selectors import stats
from tests.conftest import AWKWARD_NAMES, BASE_DIR, drop_queues, prometheus_tool, uses_databases
from tests.pages import number, overview_rows, parse, seconds
from tests.test_numbers_under_load import SENDS_UNDER_WAY, busy_queue, counters  # noqa: F401 (a fixture)
from tests.test_overview import make_queue_in_every_state

pytestmark = uses_databases
TOKEN = "scrape-token-5f1d0c6e"
DEPLOY = BASE_DIR / "deploy"
# Every per-queue gauge, as (metric, the overview's column), where the overview has that column.
COLUMNS = {
    "pgmq_queue_backlog": "backlog",
    "pgmq_queue_visible": "visible",
    "pgmq_queue_in_flight": "in-flight",
    "pgmq_queue_delayed": "delayed",
    "pgmq_queue_poison": "poison",
    "pgmq_queue_messages_sent_total": "sent",
    "pgmq_queue_archived": "archived",
}


@pytest.fixture
def metrics_on():
    with override_settings(METRICS_TOKEN=TOKEN):
        yield


def scrape(client, token: str = TOKEN) -> dict[str, dict[tuple, float]]:
    """Sample name -> {labels as sorted (name, value) pairs -> value}, read by Prometheus's own parser."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def per_queue(found: dict[str, dict[tuple, float]], metric: str) -> dict[str, float]:
    return {dict(labels)["queue"]: value for labels, value in found.get(metric, {}).items()}


def test_it_is_off_unless_a_token_is_set(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ünïcode",
    ],
)
def test_it_answers_401_without_the_right_token(client, metrics_on, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"pgmq_queue" not in response.content


def test_it_needs_no_sign_in_and_takes_the_scheme_in_any_case(client, metrics_on, make_queue):
    make_queue("plain", messages=2)
    response = client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200
    assert 'pgmq_queue_backlog{database="main",queue="plain"} 2.0' in response.content.decode()
    assert "no-cache" in response["Cache-Control"]


def test_it_rejects_post(client, metrics_on):
    assert client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


@pytest.mark.parametrize("one_scan_rows", [stats.ONE_SCAN_ROWS, 0], ids=["read in one scan", "probed by index"])
def test_every_figure_matches_the_overview_and_sql(
    client, signed_in_client, metrics_on, make_queue, pgmq_sql, monkeypatch, one_scan_rows
):
    monkeypatch.setattr(stats, "ONE_SCAN_ROWS", one_scan_rows)  # queues of a few rows, or of thousands
    make_queue_in_every_state(make_queue, pgmq_sql)
    make_queue("empty")
    truth_sql = """
        SELECT count(*), count(*) FILTER (WHERE vt <= now()), count(*) FILTER (WHERE vt > now() AND read_ct > 0),
               count(*) FILTER (WHERE vt > now() AND read_ct = 0), count(*) FILTER (WHERE read_ct >= 5),
               (SELECT last_value FROM pgmq.q_columns_msg_id_seq), (SELECT count(*) FROM pgmq.a_columns),
               extract(epoch FROM now() - min(enqueued_at)),
               extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE vt <= now()))
        FROM pgmq.q_columns"""
    before = pgmq_sql.execute(truth_sql).fetchone()
    found = scrape(client)
    after = pgmq_sql.execute(truth_sql).fetchone()
    rows = overview_rows(parse(signed_in_client.get("/")))

    scraped = tuple(per_queue(found, metric)["columns"] for metric in COLUMNS)
    assert scraped == tuple(number(rows["columns"][column]) for column in COLUMNS.values())
    assert scraped == before[:7] == (9, 6, 2, 1, 1, 11, 2)
    oldest = per_queue(found, "pgmq_queue_oldest_message_age_seconds")["columns"]
    assert before[7] <= oldest <= after[7]
    assert abs(oldest - seconds(rows["columns"]["oldest"])) <= 1
    assert before[8] <= per_queue(found, "pgmq_queue_oldest_visible_message_age_seconds")["columns"] <= after[8]

    # An empty queue: zeros, and an age of 0 where the overview shows a dash.
    assert {metric: per_queue(found, metric)["empty"] for metric in COLUMNS} == dict.fromkeys(COLUMNS, 0)
    assert per_queue(found, "pgmq_queue_oldest_message_age_seconds")["empty"] == 0
    assert rows["empty"]["oldest"] == "–"
    # Every count here was counted, not estimated.
    assert set(found["pgmq_queue_estimated"].values()) == {0}
    assert found["pgmq_up"] == {(("database", "main"),): 1}
    assert 0 < found["pgmq_dashboard_scrape_duration_seconds"][()] < 5


def test_big_queues_are_marked_estimated_and_their_poison_comes_from_the_sampler(
    client, signed_in_client, metrics_on, make_queue, pgmq_sql
):
    make_queue("big", messages=400)
    make_queue("small", messages=3)
    for _ in range(5):
        pgmq_sql.execute("SELECT * FROM pgmq.read('big', 0, 3)")
    pgmq_sql.execute("SELECT pgmq.archive('big', array_agg(i)) FROM generate_series(201, 400) i")
    pgmq_sql.execute("ANALYZE pgmq.q_big, pgmq.a_big")

    with override_settings(EXACT_COUNT_LIMIT=100):
        before_sampler = scrape(client)
        take_sample(count_poison_everywhere=True)
        found = scrape(client)
        row = overview_rows(parse(signed_in_client.get("/")))["big"]

    estimated = {
        (dict(labels)["queue"], dict(labels)["figure"]): value
        for labels, value in found["pgmq_queue_estimated"].items()
    }
    assert estimated == {
        ("big", "backlog"): 1,
        ("big", "visible"): 1,
        ("big", "archived"): 1,
        ("small", "backlog"): 0,
        ("small", "visible"): 0,
        ("small", "archived"): 0,
    }
    assert per_queue(found, "pgmq_queue_backlog")["big"] == number(row["backlog"]) == 200  # just analyzed
    assert per_queue(found, "pgmq_queue_archived")["big"] == number(row["archived"]) == 200
    assert "big" not in per_queue(before_sampler, "pgmq_queue_poison")  # unknown: absent, not 0
    assert per_queue(found, "pgmq_queue_poison")["big"] == number(row["poison"]) == 3


def test_figures_match_the_overview_and_sql_under_load(
    client,
    signed_in_client,
    metrics_on,
    busy_queue,  # noqa: F811
    pgmq_sql,
):
    for _ in range(10):
        sent_before, archived_before = counters(pgmq_sql)
        found = scrape(client)
        sent_after, archived_after = counters(pgmq_sql)

        sent = per_queue(found, "pgmq_queue_messages_sent_total")["busy"]
        archived = per_queue(found, "pgmq_queue_archived")["busy"]
        backlog = per_queue(found, "pgmq_queue_backlog")["busy"]
        assert sent_before <= sent <= sent_after
        assert archived_before <= archived <= archived_after
        assert backlog + archived <= sent <= backlog + archived + 2 * SENDS_UNDER_WAY
        states = ("pgmq_queue_visible", "pgmq_queue_in_flight", "pgmq_queue_delayed")
        assert sum(per_queue(found, metric)["busy"] for metric in states) == backlog

    # An overview and a scrape within DASHBOARD_STATS_CACHE_SECONDS share one computation, so in the
    # middle of the workload they show the very same numbers.
    for _ in range(5):
        cache.clear()
        with override_settings(STATS_CACHE_SECONDS=60):
            found = scrape(client)
            row = overview_rows(parse(signed_in_client.get("/")))["busy"]
        assert {metric: per_queue(found, metric)["busy"] for metric in COLUMNS} == {
            metric: number(row[column]) for metric, column in COLUMNS.items()
        }
    cache.clear()


def awkward_names(pgmq_sql) -> list[str]:
    """Names that break the exposition format if unescaped: quotes, backslashes, newlines, braces."""
    candidates = [
        *AWKWARD_NAMES,
        'q"} 1\nfake{a="',
        "back\\slash",
        'tail\\"',
        "line\nbreak",
        "cr\rtab\t",
        "{brace}",
        "#hash",
        "ünï\u2028sep",
    ]
    accepted = []
    for name in candidates:
        try:
            pgmq_sql.execute("SELECT pgmq.create(%s)", [name])
        except Exception:  # noqa: BLE001 (pgmq refuses some; those cannot reach the exposition at all)
            continue
        accepted.append(name)
    return accepted


def test_awkward_queue_names_are_escaped(client, metrics_on, pgmq_sql):
    names = awkward_names(pgmq_sql)
    try:
        assert {'q"} 1\nfake{a="', "back\\slash", "line\nbreak"} <= set(names)  # pgmq takes them: test them
        for count, name in enumerate(names, start=1):
            pgmq_sql.execute("SELECT pgmq.send_batch(%s, array_fill('{}'::jsonb, ARRAY[%s]))", [name, count])
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        text = response.content.decode()
        backlog = per_queue(scrape(client), "pgmq_queue_backlog")
    finally:
        for name in names:
            pgmq_sql.execute("SELECT pgmq.drop_queue(%s)", [name])

    assert backlog == {name: count for count, name in enumerate(names, start=1)}
    assert "fake{" not in [line.split("{")[0] for line in text.splitlines()]  # no line of a name's own
    assert r'pgmq_queue_backlog{database="main",queue="back\\slash"}' in text
    assert r'pgmq_queue_backlog{database="main",queue="line\nbreak"}' in text
    assert r'pgmq_queue_backlog{database="main",queue="q\"} 1\nfake{a=\""}' in text


def queries_per_scrape(client) -> tuple[int, int]:
    with CaptureQueriesContext(connections["pgmq"]) as pgmq, CaptureQueriesContext(connections["default"]) as own:
        scrape(client)
    return len(pgmq), len(own)


def test_a_scrape_costs_the_same_few_queries_for_3_or_30_queues(client, metrics_on, make_queue):
    for n in range(3):
        make_queue(f"fleet-{n:02d}", messages=n)
    with_3 = queries_per_scrape(client)
    for n in range(3, 30):
        make_queue(f"fleet-{n:02d}", messages=n % 4)
    with_30 = queries_per_scrape(client)
    assert with_3 == with_30
    assert sum(with_30) <= 4  # the queue names, the catalog, one statement of probes (+ the sampler's poison)


def test_a_dropped_queue_leaves_the_next_scrape_and_nothing_is_kept_between_scrapes(
    client, metrics_on, make_queue, pgmq_sql
):
    make_queue("going")
    make_queue("staying")
    assert set(per_queue(scrape(client), "pgmq_queue_backlog")) == {"going", "staying"}
    pgmq_sql.execute("SELECT pgmq.drop_queue('going')")
    assert set(per_queue(scrape(client), "pgmq_queue_backlog")) == {"staying"}
    assert not [name for name in prometheus_client.REGISTRY._names_to_collectors if name.startswith("pgmq")]


def test_a_database_that_does_not_answer_is_pgmq_up_0(client, metrics_on, make_queue, monkeypatch):
    make_queue("unseen", messages=1)

    def refuse():
        raise OperationalError("connection refused")

    monkeypatch.setattr("queues.selectors.overview.every_queue", refuse)
    found = scrape(client)
    assert found["pgmq_up"] == {(("database", "main"),): 0}
    assert "pgmq_queue_backlog" not in found


# deploy/: the sample Grafana dashboard and Prometheus files


def metric_names_used(text: str) -> set[str]:
    return set(re.findall(r"\bpgmq_[a-z_]+", text))


def test_the_grafana_dashboard_and_alerts_use_metrics_a_scrape_has(client, metrics_on, make_queue, pgmq_sql):
    make_queue("everything", messages=6)
    pgmq_sql.execute("SELECT pgmq.archive('everything', 1::bigint)")
    exposed = set(scrape(client))
    dashboard_text = (DEPLOY / "grafana" / "pgmq-dashboard.json").read_text()
    alerts_text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert metric_names_used(dashboard_text) and metric_names_used(alerts_text)
    assert metric_names_used(dashboard_text) | metric_names_used(alerts_text) <= exposed


def test_the_grafana_dashboard_is_json_with_database_and_queue_variables():
    dashboard = json.loads((DEPLOY / "grafana" / "pgmq-dashboard.json").read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert "label_values(pgmq_up, database)" in json.dumps(variables["database"]["query"])
    assert 'label_values(pgmq_queue_backlog{database=~\\"$database\\"}, queue)' in json.dumps(
        variables["queue"]["query"]
    )
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert any(re.search(r"\brate\(pgmq_queue_messages_sent_total\{[^}]*\}\[5m\]\)", expr) for expr in expressions)
    for metric in (
        "pgmq_queue_backlog",
        "pgmq_queue_visible",
        "pgmq_queue_in_flight",
        "pgmq_queue_oldest_message_age_seconds",
        "pgmq_queue_poison",
    ):
        assert any(metric in expr for expr in expressions), metric
    assert all('queue=~"$queue"' in expr for expr in expressions if "pgmq_queue_" in expr)
    assert all('database=~"$database"' in expr for expr in expressions)
    # Two databases may have a queue of the same name: nothing adds them up as one.
    assert not any(re.search(r"\bby \((?![^)]*\bdatabase\b)", expr) for expr in expressions)


def test_the_alert_rules_have_prometheus_structure():
    rules_file = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in rules_file["groups"] for rule in group["rules"]]
    assert all(
        set(group) <= {"name", "interval", "rules", "limit", "labels"} and group["name"]
        for group in rules_file["groups"]
    )
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
        assert rule["alert"] and rule["expr"] and re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], rule
    assert {rule["alert"] for rule in rules} >= {
        "PgmqOldestMessageTooOld",
        "PgmqBacklogGrowing",
        "PgmqPoisonMessages",
        "PgmqMetricsDown",
    }
    scrape_config = yaml.safe_load((DEPLOY / "prometheus" / "scrape.yml").read_text())
    job = scrape_config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"


def test_promtool_accepts_the_rules_the_scrape_config_and_the_rules_unit_tests(tmp_path):
    promtool = prometheus_tool("promtool")
    # promtool checks that the token file exists: a copy of scrape.yml naming one that does.
    (tmp_path / "token").write_text(TOKEN)
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path)
    config = (DEPLOY / "prometheus" / "scrape.yml").read_text()
    (tmp_path / "scrape.yml").write_text(
        re.sub(r"credentials_file: .*", f"credentials_file: {tmp_path / 'token'}", config)
    )
    for command, where in (
        (["check", "rules", "alerts.yml"], DEPLOY / "prometheus"),
        (["test", "rules", "alerts_test.yml"], DEPLOY / "prometheus"),
        (["check", "config", "scrape.yml"], tmp_path),
    ):
        result = subprocess.run([promtool, *command], cwd=where, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_scrape_is_byte_for_byte_what_prometheus_client_writes(client, metrics_on, pgmq_sql, make_queue):
    """The queues' series are written by the dashboard itself (10,000 queues' took the library's
    writer over a second): read back by Prometheus's parser and written again by prometheus_client,
    the scrape comes out the same, awkward names, names sharing a table, estimates and large
    numbers included."""
    names = awkward_names(pgmq_sql)
    try:
        for count, name in enumerate(names, start=1):
            pgmq_sql.execute("SELECT pgmq.send_batch(%s, array_fill('{}'::jsonb, ARRAY[%s]))", [name, count])
        pgmq_sql.execute("SELECT pgmq.create('Foo')")
        pgmq_sql.execute("SELECT pgmq.create('FOO')")  # the same table pair as Foo
        make_queue("busy", messages=3)
        pgmq_sql.execute("SELECT setval('pgmq.q_busy_msg_id_seq', 12345678901)")  # written 1.2345678901e+10
        with override_settings(EXACT_COUNT_LIMIT=2):  # busy's backlog and visible are then estimates
            response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    finally:
        drop_queues(pgmq_sql, [*names, "FOO", "Foo"])
    text = response.content.decode()
    families = list(text_string_to_metric_families(text))
    assert {"pgmq_queue_shared_tables", "pgmq_queue_estimated", "pgmq_queue_messages_sent"} <= {
        family.name for family in families
    }
    assert 'pgmq_queue_messages_sent_total{database="main",queue="busy"} 1.2345678901e+10' in text

    class Replayed(prometheus_client.registry.Collector):
        def collect(self):
            return families

    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(Replayed())
    assert prometheus_client.generate_latest(registry).decode() == text
