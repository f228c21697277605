"""The `pgmq-dashboard` command (also `python -m dashboard`, and manage.py's Django commands).

Its options only set the environment variables the settings read (README "Configuration"), so
every one of them can be given either way, and the processes it starts inherit them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from urllib.parse import urlsplit

from dashboard import __version__, places

NAMED_URL = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)=(?P<url>.+)")


def parser() -> argparse.ArgumentParser:
    # The database options go on every subcommand too; SUPPRESS keeps a subcommand's missing option
    # from overwriting one given before it.
    databases = argparse.ArgumentParser(add_help=False)
    databases.add_argument(
        "--url",
        action="append",
        default=argparse.SUPPRESS,
        metavar="[NAME=]URL",
        help="a pgmq database, postgresql://...; again for more (named NAME, or by its database name); "
        "the first is PGMQ_DATABASE_URL",
    )
    databases.add_argument(
        "--name",
        action="append",
        default=argparse.SUPPRESS,
        metavar="LABEL",
        help="the label the header shows for the database of the --url before it (DASHBOARD_DATABASE_LABEL_<NAME>)",
    )
    databases.add_argument(
        "--readonly",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show, never change: every write hidden and refused (DASHBOARD_READ_ONLY=1)",
    )
    serving = argparse.ArgumentParser(add_help=False)
    serving.add_argument(
        "--bind",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="where to serve (GUNICORN_BIND; default 127.0.0.1:$PORT, PORT default 8000; serve: 0.0.0.0:8000)",
    )

    command = argparse.ArgumentParser(
        prog="pgmq-dashboard",
        parents=[databases, serving],
        description="A web dashboard for pgmq. Without a subcommand: migrate the dashboard's own schema, print "
        "a login the first time, and serve the dashboard with its metric sampler and job runner until Ctrl-C.",
    )
    command.add_argument("--version", action="version", version=f"pgmq-dashboard {__version__}")
    subcommands = command.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    subcommands.add_parser(
        "demo",
        parents=[serving],
        help="an embedded PostgreSQL with demo queues and their workload (pip install 'pgmq-dashboard[demo]')",
    )
    subcommands.add_parser("migrate", parents=[databases], help="create or update the dashboard's own schema")
    subcommands.add_parser("serve", parents=[databases, serving], help="serve the pages and the API (gunicorn)")
    subcommands.add_parser("sample", parents=[databases], help="the metric sampler and alerts, every few seconds")
    subcommands.add_parser("run-jobs", parents=[databases], help="the runner of bulk jobs")
    add_user = subcommands.add_parser("add-user", parents=[databases], help="create or update a login with a role")
    add_user.add_argument("username")
    add_user.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    subcommands.add_parser(
        "check",
        parents=[databases],
        help="the settings, every database reachable and the schema migrated (exit 1 naming what is not)",
    )
    manage = subcommands.add_parser("manage", help="any of Django's management commands (manage.py)")
    manage.add_argument("arguments", nargs=argparse.REMAINDER)
    return command


def usage_error(message: str) -> None:
    print(f"pgmq-dashboard: error: {message}", file=sys.stderr)
    sys.exit(2)


def environment(options: argparse.Namespace) -> dict[str, str]:
    """The environment variables the options stand for."""
    urls = getattr(options, "url", [])
    labels = getattr(options, "name", [])
    if len(labels) > max(len(urls), 1):
        usage_error("one --name per --url: the n-th --name labels the n-th --url")
    found: dict[str, str] = {}
    names: list[str] = []
    for index, given in enumerate(urls):
        named = NAMED_URL.fullmatch(given)
        name, url = (named["name"], named["url"]) if named and "://" not in named["name"] else (None, given)
        if not url.startswith(("postgresql://", "postgres://")):
            usage_error(f"--url must be a postgresql:// URL, optionally after NAME=; got {given.split('@')[-1]!r}")
        if index == 0:
            found["PGMQ_DATABASE_URL"] = url
            if name:
                found["PGMQ_DATABASE_NAME"] = name.lower()
            name = name or os.environ.get("PGMQ_DATABASE_NAME") or "main"
        else:
            name = name or urlsplit(url).path.strip("/") or "pgmq"
            found[f"PGMQ_DATABASE_URL_{name.upper().replace('-', '_')}"] = url
        name = name.lower().replace("_", "-")
        if name in names:
            usage_error(f"two databases named {name!r}: name one of them, --url NAME=postgresql://...")
        names.append(name)
    for index, label in enumerate(labels):
        name = names[index] if names else (os.environ.get("PGMQ_DATABASE_NAME") or "main").lower()
        found[f"DASHBOARD_DATABASE_LABEL_{name.upper().replace('-', '_')}"] = label
    if getattr(options, "readonly", False):
        found["DASHBOARD_READ_ONLY"] = "1"
    if getattr(options, "bind", None):
        found["GUNICORN_BIND"] = options.bind
    return found


def manage(argv: list[str]) -> None:
    """Django's command line (manage.py's), an unreachable database said in one line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(argv)
    except DatabaseError:
        # An unreachable database gets one line naming it, not a traceback from inside psycopg.
        from dashboard.databases import unreachable_databases

        problems = unreachable_databases()
        if not problems:
            raise
        sys.exit("error: " + "; ".join(problems))


def check() -> None:
    manage(["pgmq-dashboard check", "check"])
    from django.core.management import call_command

    from dashboard.databases import unreachable_databases

    problems = unreachable_databases()
    if problems:
        sys.exit("error: " + "; ".join(problems))
    try:
        call_command("migrate", "--check", "--plan", verbosity=0)
    except SystemExit:
        sys.exit(
            "error: the dashboard's schema is not up to date: run `pgmq-dashboard migrate` (CHANGELOG.md says why)"
        )
    print("ok: the settings, every database, and the dashboard's schema")


def serve() -> None:
    from dashboard import static_files

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    static_files.collect_static()
    gunicorn = [sys.executable, "-m", "gunicorn", "--config", str(places.PACKAGE_DIR / "gunicorn.conf.py")]
    os.execv(sys.executable, [*gunicorn, "dashboard.wsgi"])


def main(argv: list[str] | None = None) -> None:
    options = parser().parse_args(argv)
    os.environ.update(environment(options))
    subcommand = options.subcommand
    if subcommand in (None, "demo"):
        from dashboard import run

        run.main(embedded=subcommand == "demo", first_admin=subcommand is None)
    elif subcommand == "serve":
        serve()
    elif subcommand == "check":
        check()
    else:
        django_command = {
            "migrate": ["migrate", "--noinput"],
            "sample": ["sample_metrics"],
            "run-jobs": ["run_jobs"],
            "add-user": ["add_user", getattr(options, "username", ""), f"--role={getattr(options, 'role', '')}"],
            "manage": getattr(options, "arguments", []),
        }[subcommand]
        manage([f"pgmq-dashboard {subcommand}", *django_command])


if __name__ == "__main__":
    main()
