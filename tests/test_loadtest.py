"""The load test (perf/loadtest.py, `make loadtest`), run briefly on the test database: producers,
consumers and a few users against gunicorn, then its ledger check. The full run's figures are in
README "Speed"."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import BASE_DIR, uses_databases

pytestmark = uses_databases


def test_a_short_load_test_passes_with_the_ledger_holding(pgmq_database_url, tmp_path):
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf.loadtest",
            "--seconds",
            "10",
            "--warmup",
            "3",
            "--users",
            "4",
            "--messages",
            "200",
            "--rate",
            "20",
            "--log",
            str(tmp_path / "server.log"),
            "--json",
            str(figures),
        ],
        cwd=BASE_DIR,
        env={**os.environ, "PGMQ_DATABASE_URL": pgmq_database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^ledger: holds: \d+ msg_ids", result.stdout, re.MULTILINE), result.stdout
    results = json.loads(figures.read_text())
    # Every role signed in, and the operators' actions and the job reached pgmq.
    assert results["setup"]["roles"] == {"viewer": 1, "operator": 2, "admin": 1}
    assert results["requests"]["kinds"]["sign in: post"]["statuses"] == {"302": 4}
    assert sum(counts.get("affected", 0) for counts in results["actions"].values()) > 0
    assert results["job"]["status"] == "done"
    assert results["ledger"]["found"]["live"] > 0
