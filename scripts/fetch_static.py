#!/usr/bin/env python3
"""Fetch the pinned front-end files the dashboard serves itself (no CDN at page load).

Chart.js comes from the npm registry as the exact release below; the tarball is checked
against the registry's published sha512 before anything is unpacked into static/vendor/.
Run by `make run`, `make test` and the Dockerfile; does nothing when the files are there.
htmx needs no fetching: django-htmx ships it in its own static files.

`--tests` also fetches what only the tests use (axe-core, which tests/test_accessibility.py
injects into every page) into tests/vendor/, outside what the dashboard serves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent.parent / "static" / "vendor"
TEST_VENDOR_DIR = Path(__file__).resolve().parent.parent / "tests" / "vendor"

PACKAGES = [
    {
        "name": "chart.js",
        "version": "4.6.1",
        "tarball": "https://registry.npmjs.org/chart.js/-/chart.js-4.6.1.tgz",
        "integrity": "sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g==",
        # file in the tarball -> file under static/vendor/
        "files": {
            "package/dist/chart.umd.min.js": "chart.umd.min.js",
            "package/dist/chart.umd.min.js.map": "chart.umd.min.js.map",
            "package/LICENSE.md": "chart.js-LICENSE.md",
        },
    },
]

# Only for the tests: never copied into static/, so never served to users.
TEST_PACKAGES = [
    {
        "name": "axe-core",
        "version": "4.14.1",
        "tarball": "https://registry.npmjs.org/axe-core/-/axe-core-4.14.1.tgz",
        # The tarball's SHA-256 (its registry sha512, FHfa+lmN...udVGtQ==, checked when pinned).
        "integrity": "sha256-5rDOArhNiS4uM+QDSF5/PWwp4r5t9l2vRNibpWQTl0U=",
        "files": {
            "package/axe.min.js": "axe.min.js",
            "package/LICENSE": "axe-core-LICENSE",
        },
    },
]


def stamp_path(package: dict, vendor_dir: Path) -> Path:
    return vendor_dir / f".{package['name']}-{package['version']}"


def fetch(package: dict, vendor_dir: Path) -> None:
    print(f"fetching {package['name']} {package['version']} from the npm registry")
    with urllib.request.urlopen(package["tarball"], timeout=60) as response:
        payload = response.read()
    algorithm, expected = package["integrity"].split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, payload).digest()).decode()
    if actual != expected:
        sys.exit(f"error: {package['tarball']} does not match its pinned {algorithm} checksum")
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        for member_name, target_name in package["files"].items():
            member = archive.extractfile(member_name)
            if member is None:
                sys.exit(f"error: {member_name} is missing from {package['tarball']}")
            (vendor_dir / target_name).write_bytes(member.read())
    stamp_path(package, vendor_dir).touch()


def main() -> None:
    wanted = [(PACKAGES, VENDOR_DIR)]
    if "--tests" in sys.argv[1:]:
        wanted.append((TEST_PACKAGES, TEST_VENDOR_DIR))
    for packages, vendor_dir in wanted:
        vendor_dir.mkdir(parents=True, exist_ok=True)
        for package in packages:
            if not stamp_path(package, vendor_dir).exists():
                fetch(package, vendor_dir)


if __name__ == "__main__":
    main()
