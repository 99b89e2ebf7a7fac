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

.PHONY: run test bench lint lock system-deps test-system-deps services deps dev-deps clean

run: system-deps deps
	@if [ "$$(id -u)" = 0 ]; then scripts/run-as-user.sh; fi
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

# Installs come from the lock files only: every transitive package pinned, with its hashes.
$(VENV)/.deps: requirements/base.lock | $(VENV)/bin/activate
	$(PY) -m pip install -q --require-hashes -r requirements/base.lock
	@touch $@

$(VENV)/.dev-deps: requirements/base.lock requirements/dev.lock | $(VENV)/bin/activate
	$(PY) -m pip install -q --require-hashes -r requirements/dev.lock
	@touch $@ $(VENV)/.deps

# After editing requirements/base.txt or dev.txt (or to take a merge of both sides' edits):
# `make lock` re-resolves both lock files, for every platform and Python >= 3.11, with hashes.
# Versions already in the lock files are kept unless a *.txt pin says otherwise.
UV_COMPILE = $(VENV)/bin/uv pip compile -q --universal --generate-hashes --python-version 3.11 --no-header
lock: dev-deps
	$(UV_COMPILE) requirements/base.txt -o requirements/base.lock
	$(UV_COMPILE) -c requirements/base.lock requirements/dev.txt -o requirements/dev.lock

deps: $(VENV)/.deps
dev-deps: $(VENV)/.dev-deps

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
