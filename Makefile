# abacus: two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: run test install lint migrate seed bench loadtest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps "gbstats>=0.8"
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

run: migrate
	PORT=$(PORT) $(BIN)/python manage.py run_all --port $(PORT)

test: install
	$(BIN)/python -m pytest

bench: migrate
	$(BIN)/python manage.py benchmark all

# Sustained assignment + ingestion load with analyses running (docs/benchmarks.md "Load").
# Meant for PostgreSQL + Redis: set DATABASE_URL and CELERY_BROKER_URL. LOAD_SECONDS=300.
LOAD_SECONDS ?= 300
loadtest: migrate
	$(BIN)/python -m tests.load.loadtest --duration $(LOAD_SECONDS)

clean:
	rm -rf $(VENV) var/*.sqlite3 var/celery
