#!/usr/bin/env python3
"""Fetch the pinned front-end files the dashboard serves itself (no CDN at page load).

Chart.js comes from the npm registry as the exact release below; the tarball is checked
against the registry's published sha512 before anything is unpacked into static/vendor/.
Run by `make run`, `make test` and the Dockerfile; does nothing when the files are there.
htmx needs no fetching: django-htmx ships it in its own static files.
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


def stamp_path(package: dict) -> Path:
    return VENDOR_DIR / f".{package['name']}-{package['version']}"


def fetch(package: dict) -> None:
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
            (VENDOR_DIR / target_name).write_bytes(member.read())
    stamp_path(package).touch()


def main() -> None:
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        if not stamp_path(package).exists():
            fetch(package)


if __name__ == "__main__":
    main()
