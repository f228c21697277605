"""The package as a user installs it: a wheel built from this checkout, installed into a virtualenv
of its own outside it, with nothing from PyPI (its dependencies are repacked from the wheels this
test run's own virtualenv installed), and its `pgmq-dashboard` command run against a database.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil
import psycopg
import pytest

import dashboard
from dashboard import cli
from tests.conftest import BASE_DIR, free_port, uses_databases, wait_for, with_database
from tests.http_client import HttpSession
from tests.pages import number, overview_rows, parse
from tests.test_make_run import your_own_database  # noqa: F401  (a fixture)

pytestmark = [uses_databases, pytest.mark.xdist_group("package")]  # one worker builds the wheel

# What a wheel is built from: the package's files, as a clone has them (static/vendor fetched).
SOURCES = ["pyproject.toml", "README.md", "requirements.txt", "requirements-demo.txt", "dashboard", "queues"]
SOURCES += ["templates", "static"]


def repacked_wheel(distribution: metadata.Distribution, wheelhouse: Path) -> Path:
    """An installed distribution packed back into a wheel (the files its RECORD lists inside
    site-packages; pip writes the console scripts again from entry_points.txt)."""
    site_packages = Path(distribution.locate_file(""))
    tags = [line.split(": ", 1)[1] for line in distribution.read_text("WHEEL").splitlines() if line.startswith("Tag:")]
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"])
    # A compressed tag set (py2.py3-none-any), as the wheel's own name had it.
    tag = "-".join(".".join(dict.fromkeys(parts)) for parts in zip(*(tag.split("-") for tag in tags), strict=True))
    target = wheelhouse / f"{name}-{distribution.version}-{tag}.whl"
    dist_info = next(path for path in distribution.files if path.parts[0].endswith(".dist-info")).parts[0]
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in distribution.files:
            if (
                path.parts[0] == ".."
                or "__pycache__" in path.parts
                or path.name in ("RECORD", "INSTALLER", "direct_url.json")
            ):
                continue
            content = (site_packages / path).read_bytes()
            archive.writestr(path.as_posix(), content)
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            writer.writerow([path.as_posix(), f"sha256={digest}", len(content)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        archive.writestr(f"{dist_info}/RECORD", record.getvalue())
    return target


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a new virtualenv with the wheel built from this checkout installed."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (BASE_DIR / name).is_dir() else shutil.copy2
        copy(
            BASE_DIR / name,
            source / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
        )
    offline = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", source],
        env=offline,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("pgmq_dashboard-*.whl")
    assert wheel.name.startswith(f"pgmq_dashboard-{dashboard.__version__}-")
    inside = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        path.relative_to(BASE_DIR).as_posix()
        for package in ("dashboard", "queues")
        for path in (BASE_DIR / package).rglob("*.py")
    }
    assert modules - inside == set(), "modules left out of the wheel (pyproject.toml lists the packages)"
    assert not any(name.startswith(("tests/", "perf/", "scripts/")) for name in inside)
    assert "dashboard/static/vendor/chart.umd.min.js" in inside

    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    for line in (BASE_DIR / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            repacked_wheel(metadata.distribution(line.split("==")[0]), wheelhouse)

    venv = work / "venv"
    # Installed by this pip into a virtualenv without one of its own (making one cost 4 s of CPU).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-index", "--no-compile"]
        + ["--find-links", wheelhouse, wheel],
        env=offline,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin"


@dataclass
class Command:
    process: subprocess.Popen
    base_url: str
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def processes(self) -> list[psutil.Process]:
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]


@pytest.fixture
def run_command(installed: Path, tmp_path: Path) -> Iterator[Callable[..., Command]]:
    """Start `pgmq-dashboard ...` from the installed package, in a directory outside the checkout,
    with nothing configured in the environment, and wait until it says it is ready."""
    started: list[Command] = []

    def start(*arguments: str) -> Command:
        port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PGMQ_", "DJANGO_", "DASHBOARD_", "PYTHON", "VIRTUAL_ENV"))
        }
        environment.update(XDG_STATE_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [installed / "pgmq-dashboard", *arguments, "--bind", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # as from a terminal of its own: the test's Ctrl-C is for it alone
        )
        command = Command(process, f"http://127.0.0.1:{port}")
        threading.Thread(target=lambda: command.output.extend(process.stdout), daemon=True).start()
        started.append(command)
        wait_for(
            lambda: "The dashboard is ready" in command.text() or process.poll() is not None,
            timeout=120,
            what="pgmq-dashboard to say the dashboard is ready",
        )
        assert process.poll() is None, command.text()
        return command

    yield start
    for command in started:
        if command.process.poll() is None:
            os.killpg(command.process.pid, signal.SIGKILL)


def printed_login(command: Command) -> tuple[str, str]:
    found = re.search(r"sign in as (\S+) / (\S+)", command.text())
    assert found, command.text()
    return found.group(1), found.group(2)


def stop_with_ctrl_c(command: Command) -> None:
    everything = command.processes()
    assert len(everything) >= 4, everything  # the command, gunicorn (and its workers), the sampler, the job runner
    command.process.send_signal(signal.SIGINT)
    assert command.process.wait(timeout=60) == 0, command.text()
    wait_for(
        lambda: not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in everything),
        timeout=30,
        what=lambda: f"every process to stop: {[p for p in everything if p.is_running()]}",
    )


def test_the_installed_command_serves_a_database_and_stops_on_ctrl_c(run_command, your_own_database):
    command = run_command("--url", your_own_database)
    username, password = printed_login(command)
    session = HttpSession(command.base_url)
    session.sign_in(username, password)

    overview = session.get("/")
    assert overview.status == 200
    rows = overview_rows(parse(overview.text))
    assert list(rows) == ["existing"]
    assert number(rows["existing"]["backlog"]) == 3
    queue = session.get("/queues/existing/")
    assert queue.status == 200
    page = parse(queue.text)
    assert page.select_one("h1").get_text(strip=True).endswith("existing")
    # The stylesheet and the pinned Chart.js come from inside the package.
    for asset in [page.select_one("link[rel=stylesheet]")["href"], *(s["src"] for s in page.select("script[src]"))]:
        assert session.get(asset).status == 200, asset
    assert any("chart.umd" in script["src"] for script in page.select("script[src]"))
    # The version in one place: the footer and /healthz say the wheel's.
    assert f"pgmq dashboard {dashboard.__version__}" in page.select_one("footer").get_text(" ", strip=True)
    assert json.loads(session.get("/healthz").text)["version"] == dashboard.__version__

    stop_with_ctrl_c(command)

    # The second time, no new login: the first one still signs in.
    again = run_command("--url", your_own_database)
    assert not re.search(r"sign in as \S+ / ", again.text()), again.text()
    HttpSession(again.base_url).sign_in(username, password)
    stop_with_ctrl_c(again)


@pytest.fixture
def second_database(pgmq_sql, pgmq_database_url) -> Iterator[str]:
    name = f"second_{secrets.token_hex(4)}"
    pgmq_sql.execute(f'CREATE DATABASE "{name}"')
    url = with_database(pgmq_database_url, name)
    from dashboard.embedded_postgres import install_pgmq

    install_pgmq(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pgmq.create('billing')")
    yield url
    pgmq_sql.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_the_installed_command_read_only_with_two_labelled_databases(run_command, your_own_database, second_database):
    command = run_command(
        "--readonly",
        "--url",
        your_own_database,
        "--name",
        "Orders (prod)",
        "--url",
        f"staging={second_database}",
        "--name",
        "Billing staging",
    )
    username, password = printed_login(command)
    session = HttpSession(command.base_url)
    session.sign_in(username, password)
    overview = parse(session.get("/").text)
    assert list(overview_rows(overview)) == ["existing"]
    assert "Orders (prod)" in overview.select_one("header").get_text(" ", strip=True)
    staging = parse(session.get("/db/staging/").text)
    assert list(overview_rows(staging)) == ["billing"]
    assert "Billing staging" in staging.select_one("header").get_text(" ", strip=True)
    # Read-only, even for the admin it printed: the header says so, nothing to act with is shown, and an
    # action sent anyway is refused, on a page and in the API, with every message still there.
    assert "read-only" in overview.select_one("header").get_text(" ", strip=True)
    messages = parse(session.get("/queues/existing/messages/").text)
    assert messages.select("tr[data-msg-id]") and not messages.select("#action-form, tbody input[type=checkbox]")
    refused = session.post(
        "/queues/existing/act/", {"action": "delete", "source": "live", "scope": "selected", "msg_id": "1"}
    )
    assert refused.status == 403, refused.text[:300]
    api = session.request(
        "/api/v1/queues/existing/actions/",
        json.dumps({"action": "delete", "msg_ids": [1]}).encode(),
        {"Content-Type": "application/json", "X-CSRFToken": session.csrf_token()},
    )
    assert api.status == 403 and "read-only" in json.loads(api.text)["detail"], api.text[:300]
    with psycopg.connect(your_own_database) as connection:
        assert connection.execute("SELECT count(*) FROM pgmq.q_existing").fetchone()[0] == 3
    # The switch reaches every process that serves or acts (the sampler, the job runner).
    for process in command.processes()[1:]:  # the command's own environment is what it was started with
        assert process.environ().get("DASHBOARD_READ_ONLY") == "1", process.cmdline()
    stop_with_ctrl_c(command)


def test_version_and_production_pieces_of_the_installed_command(installed, your_own_database):
    version = subprocess.run([installed / "pgmq-dashboard", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"pgmq-dashboard {dashboard.__version__}"
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("PGMQ_", "DJANGO_", "DASHBOARD_"))},
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    }

    def run(*arguments: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [installed / "pgmq-dashboard", *arguments],
            env={**environment, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    unmigrated = run("check", "--url", your_own_database)
    assert unmigrated.returncode == 1 and "pgmq-dashboard migrate" in unmigrated.stderr, unmigrated
    assert run("migrate", "--url", your_own_database).returncode == 0
    added = run("add-user", "alice", "--role", "operator", PGMQ_DATABASE_URL=your_own_database, PASSWORD="x" * 20)
    assert added.returncode == 0 and "Created alice as operator" in added.stdout, added
    checked = run("check", PGMQ_DATABASE_URL=your_own_database)
    assert checked.returncode == 0, checked
    nowhere = run("check", "--url", "postgresql://nobody@127.0.0.1:1/nothing")
    assert nowhere.returncode == 1 and "cannot connect to PGMQ_DATABASE_URL" in nowhere.stderr, nowhere
    no_url = run("serve")
    assert no_url.returncode != 0 and "PGMQ_DATABASE_URL is not set" in no_url.stderr, no_url


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--url", "postgresql://h/a"], {"PGMQ_DATABASE_URL": "postgresql://h/a"}),
        (
            ["--url", "prod=postgresql://h/a?sslmode=require", "--url", "postgresql://h/b_2", "--name", "Prod"],
            {
                "PGMQ_DATABASE_URL": "postgresql://h/a?sslmode=require",
                "PGMQ_DATABASE_NAME": "prod",
                "PGMQ_DATABASE_URL_B_2": "postgresql://h/b_2",
                "DASHBOARD_DATABASE_LABEL_PROD": "Prod",
            },
        ),
        (["--readonly"], {"DASHBOARD_READ_ONLY": "1"}),
    ],
)
def test_command_line_options_become_the_environment_the_settings_read(arguments, expected):
    assert cli.environment(cli.parser().parse_args(arguments)) == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--url", "mysql://h/a"], "--url must be a postgresql:// URL"),
        (["--url", "x=postgresql://h/a", "--url", "x=postgresql://h/b"], "two databases named 'x'"),
        (["--url", "postgresql://h/a", "--name", "x", "--name", "y"], "one --name per --url"),
    ],
)
def test_bad_command_line_options_get_one_line(arguments, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.environment(cli.parser().parse_args(arguments))
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
