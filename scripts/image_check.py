#!/usr/bin/env python3
"""Build the Dockerfile's image and run what was built, as .ci/run does (README "Docker").

1. A base image: by default a local Debian bookworm made with debootstrap, with Python 3.11 and
   this machine's CA bundle (no container registry can be reached here), kept between runs;
   `--base IMAGE` uses another (e.g. python:3.11-slim-bookworm where a registry is reachable).
2. `podman build --isolation=chroot --build-arg BASE_IMAGE=...` of the Dockerfile.
3. The built image's filesystem run with `chroot --userspec=<the image's user>` (`podman run`
   cannot set its limits in this sandbox), with the image's environment: `pgmq-dashboard
   migrate`, `add-user`, then the image's command against the PostgreSQL of --database-url (by
   default this machine's PostgreSQL 15, in a database made for the check and dropped after it),
   and over HTTP: /healthz 200, a sign-in, the overview with the check's queue, a static file.

Needs root, podman and debootstrap (apt-get install podman debootstrap); exits non-zero saying what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from tests.http_client import HttpSession  # noqa: E402
from tests.pages import overview_rows, parse  # noqa: E402

LOCAL_BASE = "localhost/pgmq-dashboard-base:bookworm-python3.11"
IMAGE = "localhost/pgmq-dashboard:check"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def step(message: str) -> None:
    print(f"== {message}", flush=True)


def podman(*arguments: str, capture: bool = False) -> str:
    result = subprocess.run(["podman", *arguments], text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode:
        sys.exit(f"error: podman {' '.join(arguments[:2])} failed (exit {result.returncode})")
    return (result.stdout or "").strip()


def local_base_image() -> str:
    """Debian bookworm with python3.11 as `python`, venv, and this machine's CA bundle (pip and
    urllib then trust what this machine trusts)."""
    if subprocess.run(["podman", "image", "exists", LOCAL_BASE]).returncode == 0:
        return LOCAL_BASE
    step(f"making {LOCAL_BASE} with debootstrap (once)")
    with tempfile.TemporaryDirectory(prefix="pgmq-dashboard-base-") as root:
        packages = "python3,python3-venv,python-is-python3,ca-certificates"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", root, DEBIAN_MIRROR],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        shutil.copyfile(CA_BUNDLE, Path(root) / "etc/ssl/certs/ca-certificates.crt")
        shutil.rmtree(Path(root) / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--change", f"ENV SSL_CERT_FILE={CA_BUNDLE}", "--change", f"ENV PIP_CERT={CA_BUNDLE}"]
            + ["-", LOCAL_BASE],
            stdin=tar.stdout,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.wait()
    return LOCAL_BASE


def wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"error: timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


def healthz(url: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--base", help="the base image (default: a local Debian bookworm made with debootstrap)")
    arguments.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    arguments.add_argument("--port", type=int, default=8765)
    options = arguments.parse_args()

    base = options.base or local_base_image()
    step(f"podman build --isolation=chroot (BASE_IMAGE={base})")
    started = time.monotonic()
    podman("build", "--isolation=chroot", "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE, str(BASE_DIR))
    print(f"built {IMAGE} in {time.monotonic() - started:.0f} s", flush=True)
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", IMAGE, capture=True))
    user = config["User"]

    # The database the image is pointed at: a new one with pgmq and a queue, dropped at the end.
    import psycopg

    from dashboard.embedded_postgres import install_pgmq

    name = f"image_check_{secrets.token_hex(4)}"
    with psycopg.connect(options.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = urlunsplit(urlsplit(options.database_url)._replace(path=f"/{name}"))
    container = podman("create", IMAGE, capture=True)
    root = tempfile.mkdtemp(prefix="pgmq-dashboard-image-")
    os.chmod(root, 0o755)  # the image's / as the image has it: its user must get through
    server = None
    try:
        install_pgmq(database_url)
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("SELECT pgmq.create('image_check')")

        step("the image's filesystem (podman export)")
        export = subprocess.Popen(["podman", "export", container], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-C", root, "-x"], stdin=export.stdout, check=True)
        export.wait()
        uid = subprocess.run(
            ["chroot", root, "id", "-u", user], text=True, capture_output=True, check=True
        ).stdout.strip()
        assert uid != "0", "the image runs as root"
        base_url = f"http://127.0.0.1:{options.port}"
        environment = {
            **dict(pair.split("=", 1) for pair in config["Env"]),
            "HOME": "/nonexistent",
            "PGMQ_DATABASE_URL": database_url,
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DASHBOARD_HTTPS": "0",
            "GUNICORN_BIND": f"127.0.0.1:{options.port}",
            "WEB_CONCURRENCY": "1",
        }

        def in_image(*command: str, **extra: str) -> list[str]:
            workdir = config.get("WorkingDir") or "/"
            inner = f'cd {workdir} && exec "$@"'
            return (
                ["chroot", f"--userspec={uid}:{uid}", root, "/usr/bin/env", "-i"]
                + [f"{key}={value}" for key, value in {**environment, **extra}.items()]
                + ["/bin/sh", "-c", inner, "sh", *command]
            )

        step(f"pgmq-dashboard migrate, as user {user} ({uid})")
        subprocess.run(in_image("pgmq-dashboard", "migrate"), check=True)
        password = secrets.token_urlsafe(16)
        subprocess.run(
            in_image("pgmq-dashboard", "add-user", "checker", "--role", "viewer", PASSWORD=password), check=True
        )

        step(f"the image's command: {' '.join(config['Cmd'])}")
        server = subprocess.Popen(in_image(*config["Cmd"]), start_new_session=True)
        wait_for(lambda: healthz(base_url) is not None or server.poll() is not None, timeout=60, what="/healthz")
        if server.poll() is not None:
            sys.exit(f"error: the image's command stopped with exit code {server.returncode}")
        assert healthz(base_url) == 200, f"/healthz answered {healthz(base_url)}"
        session = HttpSession(base_url)
        session.sign_in("checker", password)
        overview = session.get("/")
        assert overview.status == 200 and "image_check" in overview_rows(parse(overview.text)), overview.text[:2000]
        stylesheet = parse(overview.text).select_one("link[rel=stylesheet]")["href"]
        served = session.get(stylesheet)
        assert served.status == 200 and ".topbar" in served.text, stylesheet
        print(f"ok: /healthz 200, signed in, the overview lists image_check, {stylesheet} 200", flush=True)
    finally:
        if server and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["podman", "rm", container], stdout=subprocess.DEVNULL)
        with psycopg.connect(options.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
