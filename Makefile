# abacus: two commands for a newcomer: `make run` and `make test` (every target: README "Make targets").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test test-fast install lint migrate seed bench loadtest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Also the client library for services, editable (clients/python, docs/clients.md; its tests are
# tests/clients/, so `make test` runs them).
$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "gbstats>=0.8"
	$(BIN)/pip install --quiet -e clients/python
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# What CI's lint step runs (.ci/run calls this target).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/lint-imports  # the layer contract (pyproject.toml [tool.importlinter])

run: migrate
	PORT=$(PORT) $(BIN)/python manage.py run_all --port $(PORT)

# In two parts, both always run (the exit code is the first failure's): the in-process tests on
# TEST_WORKERS pytest-xdist workers (each with a test database and cache-key prefix of its own,
# tests/conftest.py), then the tests that start real processes, drive a browser, kill processes
# or measure throughput, one at a time (they need the machine's cores to themselves).
TEST_WORKERS ?= 2
PROCESS_MARKERS := e2e or browser or fault or load
test: install
	@status=0; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20 -m "not ($(PROCESS_MARKERS))" || status=$$?; \
	$(BIN)/python -m pytest --durations=20 -m "$(PROCESS_MARKERS)" || status=$$((status ? status : $$?)); \
	exit $$status

# The unit tests only (about 2 CPU-minutes): no real processes, browser, fault injection, load,
# fuzzing, long simulations or the heaviest checks (marker `slow`). `make test` runs everything.
FAST_MARKERS := not e2e and not browser and not fault and not load and not slow and not fuzz
test-fast: install
	$(BIN)/python -m pytest -q -m "$(FAST_MARKERS)"

# The demo login, project and experiment with simulated traffic, in the configured database
# (the embedded default; with DATABASE_URL set, only with ABACUS_DEMO=1). Idempotent.
seed: migrate
	$(BIN)/python manage.py seed_demo

bench: migrate
	$(BIN)/python manage.py benchmark all

# Sustained assignment + ingestion load with analyses running (docs/benchmarks.md "Load").
# Meant for PostgreSQL + Redis: set DATABASE_URL and CELERY_BROKER_URL. LOAD_SECONDS=300.
LOAD_SECONDS ?= 300
loadtest: migrate
	$(BIN)/python -m bench.load --duration $(LOAD_SECONDS)

clean:
	rm -rf $(VENV) var/*.sqlite3 var/celery
