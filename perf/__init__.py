"""Tools for developers, outside the app and out of the Docker image (.dockerignore): the benchmarks
and the load test, each run as `python -m perf.<tool>` (the Makefile's bench, bench-export,
bench-memory and loadtest), and the ledger the load test and tests/test_ledger.py both check.

Importing the package sets Django up as manage.py would, because the tools import the app's models
at their top; under pytest it is set up already and this does nothing."""

from __future__ import annotations

import os

import django
from django.apps import apps

if not apps.ready:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    django.setup()
