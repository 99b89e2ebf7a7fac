# Dropserver: `make run` brings the platform up on embedded defaults; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Two workers: the suite is mostly waiting on subprocesses (Deno, Daphne, Chromium).
PYTEST_ARGS ?= -n 2

.PHONY: run test bench lint system-deps test-system-deps services deps dev-deps clean

run: system-deps deps
	$(PY) manage.py migrate --noinput
	$(PY) manage.py install_examples
	$(PY) manage.py serve --port $(PORT)

# The suite runs against this machine's PostgreSQL and Redis, plus one serve smoke test on
# the embedded defaults (SQLite, filesystem broker, in-memory channel layer).
test: test-system-deps dev-deps services
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	PY=$(PY) scripts/check-test-ids.sh
	set -a && source scripts/test-env.sh && set +a && $(PY) -m pytest $(PYTEST_ARGS)

bench: test-system-deps dev-deps services
	set -a && source scripts/test-env.sh && set +a && $(PY) -m bench $(BENCH_ARGS)

lint: dev-deps
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m ruff format --check .

system-deps:
	@scripts/system-deps.sh run

test-system-deps:
	@scripts/system-deps.sh test

services:
	@scripts/services.sh

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)"; exit 1; }
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.deps: requirements/base.txt | $(VENV)/bin/activate
	$(PY) -m pip install -q -r requirements/base.txt
	@touch $@

$(VENV)/.dev-deps: requirements/base.txt requirements/dev.txt | $(VENV)/bin/activate
	$(PY) -m pip install -q -r requirements/dev.txt
	@touch $@ $(VENV)/.deps

deps: $(VENV)/.deps
dev-deps: $(VENV)/.dev-deps

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
