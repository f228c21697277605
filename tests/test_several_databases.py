"""Several pgmq databases watched by one dashboard: the test database as "main" and a PostgreSQL
server of this module's own as "staging", which the tests stop and start again.

One gunicorn serves both (PGMQ_DATABASE_URL and PGMQ_DATABASE_URL_STAGING), as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from dashboard import __version__
from queues.models import AuditEntry, QueueSample
from queues.tokens import issue_token
from tests.conftest import BASE_DIR, gunicorn, run_jobs_once, sign_in, uses_databases, wait_for
from tests.http_client import HttpSession
from tests.pages import overview_rows, parse
from tests.test_accessibility import Checker
from tests.test_configuration import assert_one_line_error, run_manage
from tests.test_faults import StoppableServer, create_queue, pgmq_server

# Its module-scoped servers are made once: every test of it runs in the same worker (pytest-xdist).
pytestmark = [uses_databases, pytest.mark.xdist_group("several_databases")]

PASSWORD = "a-long-test-password-42"
METRICS_TOKEN = "several-databases-metrics-token"


@pytest.fixture(scope="module")
def staging() -> Iterator[StoppableServer]:
    with pgmq_server("pgmq-dashboard-staging-") as server:
        yield server


@pytest.fixture(scope="module")
def both_databases(staging: StoppableServer, pgmq_database_url: str) -> dict[str, str]:
    return {"PGMQ_DATABASE_URL": pgmq_database_url, "PGMQ_DATABASE_URL_STAGING": staging.url}


@pytest.fixture(scope="module")
def dashboard(both_databases: dict[str, str], tmp_path_factory) -> Iterator[str]:
    with gunicorn(
        both_databases["PGMQ_DATABASE_URL"],
        tmp_path_factory.mktemp("gunicorn"),
        PGMQ_DATABASE_URL_STAGING=both_databases["PGMQ_DATABASE_URL_STAGING"],
        DASHBOARD_METRICS_TOKEN=METRICS_TOKEN,
        DASHBOARD_DATABASE_LABEL_MAIN="production",
        DASHBOARD_DATABASE_COLOUR_MAIN="red",
        DASHBOARD_DATABASE_LABEL_STAGING="staging copy",
        GUNICORN_THREADS="2",
    ) as base_url:
        yield base_url


@pytest.fixture
def staging_up(staging: StoppableServer) -> Iterator[StoppableServer]:
    """Staging running at the start and the end of the test, with no queue left over."""
    if not staging.is_running():
        staging.start()
    yield staging
    if not staging.is_running():
        staging.start()
    for (name,) in staging.sql("SELECT queue_name FROM pgmq.meta"):
        staging.sql("SELECT pgmq.drop_queue(%s)", [name])


@pytest.fixture
def scoped_roles(both_databases: dict[str, str]) -> None:
    """The per-database groups ("staging: Operator"...), made by migrate with both databases set."""
    done = run_manage("migrate", "--no-input", **both_databases)
    assert done.returncode == 0, done.stdout + done.stderr


def user_in(django_user_model, username: str, *groups: str):
    user = django_user_model.objects.create_user(username, password=PASSWORD)
    user.groups.add(*(Group.objects.get(name=group) for group in groups))
    return user


def signed_in(base_url: str, username: str) -> HttpSession:
    session = HttpSession(base_url)
    session.sign_in(username, PASSWORD)
    return session


def api(base_url: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def scrape(base_url: str) -> dict[str, dict[tuple, float]]:
    request = urllib.request.Request(base_url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = (sample.labels.get("database"), sample.labels.get("queue"))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def test_each_database_shows_its_own_queues_and_links_stay_in_it(
    dashboard, staging_up, make_queue, scoped_roles, django_user_model
):
    make_queue("orders", messages=3)
    create_queue(staging_up, "orders", messages=5)
    create_queue(staging_up, "staging-only", messages=1)
    user_in(django_user_model, "oncall", "Viewer")
    session = signed_in(dashboard, "oncall")

    main = parse(session.get("/").text)
    assert {name: row["backlog"] for name, row in overview_rows(main).items()} == {"orders": "3"}
    switcher = main.select_one(".database-switcher")
    assert switcher.select_one("summary strong").get_text() == "main"
    assert [(link.get_text(" ", strip=True).split()[0], link["href"]) for link in switcher.select("nav a")] == [
        ("staging", "/db/staging/")
    ]

    page = session.get("/db/staging/")
    assert page.status == 200
    rows = overview_rows(parse(page.text))
    assert {name: row["backlog"] for name, row in rows.items()} == {"orders": "5", "staging-only": "1"}
    assert rows["orders"]["href"] == "/db/staging/queues/orders/"
    staging_page = parse(page.text)
    assert staging_page.select_one(".database-switcher summary strong").get_text() == "staging"
    assert [link["href"] for link in staging_page.select(".database-switcher nav a")] == ["/"]
    assert staging_page.select_one(".topnav a")["href"] == "/db/staging/"

    messages = parse(session.get("/db/staging/queues/orders/messages/").text)
    assert len(messages.select("tbody tr[data-msg-id]")) == 5
    assert session.get("/queues/staging-only/").status == 404  # not in main
    assert session.get("/db/production/").status == 404  # not a watched database
    # Static files keep their one address whatever the database.
    stylesheet = staging_page.select_one("link[rel=stylesheet]")["href"]
    assert stylesheet.startswith("/static/") and session.get(stylesheet).status == 200


def switcher_links(session: HttpSession, path: str) -> dict[str, str]:
    page = session.get(path)
    assert page.status == 200, path
    return {
        link.get_text(" ", strip=True).split()[0]: link["href"]
        for link in parse(page.text).select(".database-switcher nav a")
    }


def test_switching_database_keeps_the_page_when_the_other_has_it(
    dashboard, staging_up, make_queue, scoped_roles, django_user_model
):
    make_queue("orders", messages=2)
    make_queue("main-only", messages=1)
    create_queue(staging_up, "orders", messages=4)
    user_in(django_user_model, "oncall", "Viewer")
    session = signed_in(dashboard, "oncall")

    assert switcher_links(session, "/queues/orders/") == {"staging": "/db/staging/queues/orders/"}
    assert switcher_links(session, "/queues/main-only/") == {"staging": "/db/staging/"}
    assert switcher_links(session, "/db/staging/queues/orders/messages/?state=visible") == {
        "main": "/queues/orders/messages/?state=visible"
    }
    assert switcher_links(session, "/alerts/") == {"staging": "/db/staging/alerts/"}
    assert switcher_links(session, "/db/staging/audit/") == {"main": "/audit/"}
    # The link leads to the page, in the other database.
    messages = parse(session.get("/db/staging/queues/orders/messages/").text)
    assert len(messages.select("tbody tr[data-msg-id]")) == 4

    # With staging down the queue page still shows, its switcher falling back to staging's overview.
    staging_up.stop()
    assert switcher_links(session, "/queues/orders/") == {"staging": "/db/staging/"}


def test_the_header_shows_each_databases_label_in_its_colour(dashboard, staging_up, scoped_roles, django_user_model):
    user_in(django_user_model, "oncall", "Viewer")
    session = signed_in(dashboard, "oncall")

    main = parse(session.get("/").text).select_one(".database-switcher")
    tag = main.select_one("summary .database-tag")
    assert tag.get_text(strip=True) == "production" and "colour-red" in tag["class"]
    other = main.select_one("nav a .database-tag")
    assert other.get_text(strip=True) == "staging copy" and "colour-grey" in other["class"]

    staging = parse(session.get("/db/staging/").text).select_one(".database-switcher summary .database-tag")
    assert staging.get_text(strip=True) == "staging copy"


def test_roles_are_per_database_and_so_is_the_audit_log(
    dashboard, staging_up, make_queue, scoped_roles, django_user_model, pgmq_sql
):
    make_queue("orders", messages=3)
    create_queue(staging_up, "orders", messages=3)
    oncall = user_in(django_user_model, "oncall", "Viewer", "staging: Operator")
    token = issue_token(oncall)[1]
    archive_two = {"action": "archive", "msg_ids": [1, 2]}

    status, body = api(dashboard, "/api/v1/queues/orders/actions/", token, archive_two)
    assert status == 403, body
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_orders").fetchone()[0] == 3

    status, body = api(dashboard, "/db/staging/api/v1/queues/orders/actions/", token, archive_two)
    assert status == 200, body
    assert staging_up.sql("SELECT msg_id FROM pgmq.q_orders") == [(3,)]
    assert staging_up.sql("SELECT msg_id FROM pgmq.a_orders ORDER BY 1") == [(1,), (2,)]
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_orders").fetchone()[0] == 3  # main untouched
    entry = AuditEntry.objects.get(pk=body["audit_id"])
    assert (entry.database, entry.action, entry.queue_name, entry.affected) == ("staging", "archive", "orders", 2)

    session = signed_in(dashboard, "oncall")
    # The pages say the same: tick boxes (acting) in staging only, the entry in staging's log only.
    assert parse(session.get("/queues/orders/messages/").text).select("tbody input[type=checkbox]") == []
    assert parse(session.get("/db/staging/queues/orders/messages/").text).select("tbody input[type=checkbox]")
    assert session.get(f"/db/staging/audit/{entry.pk}/").status == 200
    assert session.get(f"/audit/{entry.pk}/").status == 404
    staging_log = parse(session.get("/db/staging/audit/").text).get_text(" ")
    main_log = parse(session.get("/audit/").text).get_text(" ")
    assert "Archive" in staging_log and "orders" in staging_log
    # Main's log has the attempt its role refused, and nothing done.
    assert "refused" in main_log
    main_entries = AuditEntry.objects.exclude(database="staging").filter(queue_name="orders")
    assert [(e.action, e.outcome, e.affected) for e in main_entries] == [("archive", AuditEntry.REFUSED, 0)]


def test_a_job_on_everything_a_filter_matches_runs_in_its_own_database(
    dashboard, staging_up, make_queue, scoped_roles, django_user_model, pgmq_sql, both_databases
):
    make_queue("orders", messages=4)
    create_queue(staging_up, "orders", messages=6)
    token = issue_token(user_in(django_user_model, "oncall", "staging: Operator"))[1]
    status, job = api(dashboard, "/db/staging/api/v1/queues/orders/jobs/", token, {"action": "archive", "filter": {}})
    assert status == 201 and job["expected"] == 6, job

    run_jobs_once(**both_databases)
    status, finished = api(dashboard, f"/db/staging/api/v1/jobs/{job['id']}/", token)
    assert (status, finished["status"], finished["affected"]) == (200, "done", 6)
    assert staging_up.sql("SELECT count(*) FROM pgmq.q_orders") == [(0,)]
    assert staging_up.sql("SELECT count(*) FROM pgmq.a_orders") == [(6,)]
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_orders").fetchone()[0] == 4  # main untouched
    assert api(dashboard, f"/api/v1/jobs/{job['id']}/", token)[0] == 403  # no role in main: not even its jobs


def test_a_user_with_a_role_in_one_database_only_does_not_see_the_other(
    dashboard, staging_up, scoped_roles, django_user_model
):
    create_queue(staging_up, "orders", messages=1)
    user = user_in(django_user_model, "staging-viewer", "staging: Viewer")
    token = issue_token(user)[1]
    session = signed_in(dashboard, "staging-viewer")

    landed = session.get("/")  # where signing in leads: their database, not a refusal
    assert (landed.status, landed.url) == (200, dashboard + "/db/staging/")
    refused = session.get("/queues/orders/")
    assert refused.status == 403
    assert "no role in the database 'main'" in parse(refused.text).select_one(".notice").get_text(" ", strip=True)
    assert session.get("/audit/").status == 403
    assert api(dashboard, "/api/v1/queues/", token)[0] == 403

    page = session.get("/db/staging/")
    assert page.status == 200 and "orders" in overview_rows(parse(page.text))
    assert parse(page.text).select(".database-switcher nav a") == []  # main is not offered
    status, body = api(dashboard, "/db/staging/api/v1/queues/", token)
    assert status == 200 and [queue["name"] for queue in body["results"]] == ["orders"]


def test_a_stopped_database_leaves_the_others_working_and_comes_back_by_itself(
    dashboard, staging_up, make_queue, scoped_roles, django_user_model, both_databases
):
    make_queue("orders", messages=3)
    create_queue(staging_up, "orders", messages=5)
    user_in(django_user_model, "oncall", "Viewer")
    session = signed_in(dashboard, "oncall")
    assert session.get("/db/staging/").status == 200  # connections to staging are open
    assert scrape(dashboard)["pgmq_up"] == {("main", None): 1, ("staging", None): 1}

    staging_up.stop("immediate")  # as in a crash

    for _ in range(3):  # every thread, with its connections, keeps serving main
        main = session.get("/")
        assert main.status == 200
        assert overview_rows(parse(main.text))["orders"]["backlog"] == "3"
        assert session.get("/queues/orders/messages/").status == 200
    down = session.get("/db/staging/")
    assert down.status == 503
    notice = parse(down.text)
    assert "PGMQ_DATABASE_URL_STAGING" in notice.select_one(".banner").get_text(" ")
    assert [link["href"] for link in notice.select("nav[aria-label=Databases] a")] == ["/"]

    health = session.get("/healthz")
    assert health.status == 200  # ready: main is there to show
    body = json.loads(health.text)
    assert body["status"] == "degraded" and len(body["problems"]) == 1
    assert "PGMQ_DATABASE_URL_STAGING" in body["problems"][0]

    scraped = scrape(dashboard)
    assert scraped["pgmq_up"] == {("main", None): 1, ("staging", None): 0}
    assert scraped["pgmq_queue_backlog"] == {("main", "orders"): 3}

    # The sampler stores main's figures and says which database it could not sample.
    sampled = subprocess.run(
        [sys.executable, "manage.py", "sample_metrics", "--once"],
        cwd=BASE_DIR,
        env={**os.environ, **both_databases},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sampled.returncode == 1 and "could not sample staging" in sampled.stderr
    assert list(QueueSample.objects.values_list("database", "queue_name", "backlog")) == [("main", "orders", 3)]

    staging_up.start()
    back = wait_for(
        lambda: (response := session.get("/db/staging/")).status == 200 and response,
        timeout=30,
        what="staging's overview to answer again",
    )
    assert overview_rows(parse(back.text))["orders"]["backlog"] == "5"
    assert json.loads(session.get("/healthz").text) == {"status": "ok", "version": __version__}


def test_the_switcher_in_the_header_takes_you_to_the_other_database_and_back(
    dashboard, staging_up, make_queue, scoped_roles, django_user_model, page, axe_script
):
    make_queue("orders", messages=3)
    create_queue(staging_up, "staging-only", messages=2)
    user_in(django_user_model, "oncall", "Viewer")
    page.context.add_init_script(path=axe_script)
    sign_in(page, dashboard, "oncall", PASSWORD)
    switcher = page.locator(".database-switcher")
    expect(switcher.locator("summary")).to_contain_text("main")
    switcher.locator("summary").click()
    axe = Checker(page, "several databases")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        axe.check(f"the database switcher open, {scheme}")
    assert not axe.found, axe.report()
    switcher.get_by_role("link", name="staging").click()
    expect(page).to_have_url(f"{dashboard}/db/staging/")
    expect(switcher.locator("summary")).to_contain_text("staging")
    page.get_by_role("link", name="staging-only").click()
    expect(page).to_have_url(f"{dashboard}/db/staging/queues/staging-only/")
    page.go_back()
    page.go_back()
    expect(page).to_have_url(f"{dashboard}/")
    expect(page.locator("#overview-live")).to_contain_text("orders")
    expect(page.locator("#overview-live")).not_to_contain_text("staging-only")


@pytest.mark.browser
def test_switch_database_on_a_queue_page(dashboard, staging_up, make_queue, scoped_roles, django_user_model, page):
    """Issue 15's newcomer task: the switcher keeps the queue page, and shows the other database's figures."""
    make_queue("orders", messages=3)
    create_queue(staging_up, "orders", messages=7)
    user_in(django_user_model, "oncall", "Viewer")
    sign_in(page, dashboard, "oncall", PASSWORD)
    page.goto(f"{dashboard}/queues/orders/")
    switcher = page.locator(".database-switcher")
    backlog = page.locator("#queue-live [data-stat=backlog]")
    expect(backlog).to_have_text("3")

    switcher.locator("summary").click()
    switcher.get_by_role("link", name="staging").click()
    expect(page).to_have_url(f"{dashboard}/db/staging/queues/orders/")
    expect(page.get_by_role("heading", level=1)).to_have_text("orders")
    expect(switcher.locator("summary")).to_contain_text("staging")
    expect(backlog).to_have_text("7")
    page.get_by_role("navigation", name="This queue").get_by_role("link", name="Messages").click()
    expect(page.locator("#messages-live tbody tr[data-msg-id]")).to_have_count(7)

    switcher.locator("summary").click()
    switcher.get_by_role("link", name="main").click()
    expect(page).to_have_url(f"{dashboard}/queues/orders/messages/")
    expect(page.locator("#messages-live tbody tr[data-msg-id]")).to_have_count(3)
    expect(switcher.locator("summary")).to_contain_text("main")


@pytest.mark.parametrize(
    "environment, complaint",
    [
        ({"PGMQ_DATABASE_URL_STAGING": "mysql://root@localhost/test"}, "PGMQ_DATABASE_URL_STAGING"),
        ({"PGMQ_DATABASE_URL_BAD.NAME": "postgresql://postgres@127.0.0.1/x"}, "letters, digits or dashes"),
        ({"PGMQ_DATABASE_NAME": "staging", "PGMQ_DATABASE_URL_STAGING": "postgresql://postgres@127.0.0.1/x"}, "twice"),
    ],
)
def test_a_bad_database_setting_is_one_clear_line(environment, complaint):
    assert_one_line_error(run_manage("check", **environment), complaint)
