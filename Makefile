# The two commands a newcomer needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint format bench bench-export bench-memory bench-scale loadtest static prometheus clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: the dashboard needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: requirements.txt requirements-demo.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-demo.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-demo.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Chart.js, pinned and checksummed, from the npm registry (does nothing once fetched).
static: | $(BIN)/python
	$(BIN)/python scripts/fetch_static.py

# Debian's Prometheus and promtool, for the tests that run them (tests/test_prometheus_scrape.py,
# test_deploy.py): the package's files unpacked into var/prometheus, so no service starts and no
# root is needed (apt-get update first on a machine without package lists).
prometheus: var/prometheus/usr/bin/prometheus

var/prometheus/usr/bin/prometheus:
	rm -rf var/prometheus && mkdir -p var/prometheus/deb
	cd var/prometheus/deb && apt-get download prometheus
	dpkg-deb -x var/prometheus/deb/prometheus_*.deb var/prometheus
	rm -rf var/prometheus/deb

run: $(VENV)/.demo-installed static
	PORT=$(PORT) $(BIN)/python -m dashboard.run

# The code's shape and lint rules first (pyproject.toml's [tool.ruff]; `make format` fixes most),
# then the suite. --tests: also axe-core, for tests/test_accessibility.py only (never served).
# TEST_WORKERS: test processes at once (pytest-xdist); most tests wait on a browser, a gunicorn or
# PostgreSQL, so more than the cores help: 4 halve the suite's time on 2 cores. 0: one process.
TEST_WORKERS ?= 4

test: lint
	$(BIN)/python scripts/fetch_static.py --tests
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed static
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The benchmark (see README "Speed"): an embedded PostgreSQL of its own in var/bench.
bench: $(VENV)/.dev-installed static
	$(BIN)/python -m dashboard.embedded_postgres var/bench -- $(BIN)/python -m perf.bench $(BENCH_ARGS)

# A 1M-row export streamed with flat memory (see README "Speed"), on the benchmark's database.
bench-export: $(VENV)/.dev-installed static
	$(BIN)/python -m dashboard.embedded_postgres var/bench -- $(BIN)/python -m perf.bench_export $(BENCH_EXPORT_ARGS)

# A worker's peak memory with 8 readers at once of each endpoint on a 50 MB and a 40 MB message
# (see README "Speed"), on the benchmark's database.
bench-memory: $(VENV)/.dev-installed static
	$(BIN)/python -m dashboard.embedded_postgres var/bench -- $(BIN)/python -m perf.bench_memory $(BENCH_MEMORY_ARGS)

# Many queues (1,000 to 10,000) and one 50M-row queue (see README "Speed"), on an embedded PostgreSQL of
# its own in var/bench-scale (the giant queue would otherwise be in `make bench`'s overview).
bench-scale: $(VENV)/.dev-installed static
	$(BIN)/python -m dashboard.embedded_postgres var/bench-scale -- $(BIN)/python -m perf.bench_scale $(BENCH_SCALE_ARGS)

# The load test (see README "Speed"): producers, consumers and 20 dashboard users against gunicorn,
# on an embedded PostgreSQL of its own in var/loadtest. LOADTEST_ARGS="--seconds 120" for longer.
loadtest: $(VENV)/.demo-installed static
	$(BIN)/python -m dashboard.embedded_postgres var/loadtest -- $(BIN)/python -m perf.loadtest $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) staticfiles static/vendor tests/vendor
