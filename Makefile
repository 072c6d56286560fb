# The commands people type. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format install install-dev messages bench bench-pos bench-jobs clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(BIN)/activate
	$(PY) -m pip install --quiet -e .

install-dev: $(BIN)/activate
	$(PY) -m pip install --quiet -e '.[dev]'

messages:
	$(PY) manage.py compilemessages --ignore=.venv -v0

run: install messages
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py seed_demo
	$(PY) manage.py runserver $(HOST):$(PORT)

test: install-dev messages
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run -v0
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

# Both cases, one after the other (see bench/README.md):
# POS purchase load on gunicorn + PostgreSQL (wrk, pgbench ceiling, batch sync), then the
# nightly jobs over 1,000,000 members and 10,000,000 postings against hand-written SQL.
bench: install-dev
	bash bench/run.sh
	bash bench/jobs.sh

bench-pos: install-dev
	bash bench/run.sh

bench-jobs: install-dev
	bash bench/jobs.sh

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) staticfiles db.sqlite3 .pytest_cache .hypothesis test-artifacts
