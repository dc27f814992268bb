# One entry point for people and CI. Everything installs from pinned files into .venv and
# node_modules, so a fresh clone needs only Python 3.11, Node.js and npm.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast lint format typecheck check run bench infra-check clean

setup: $(STAMP) node_modules/.package-lock.json examples/typescript/node_modules/.package-lock.json

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

# The TypeScript producer example; the test suite runs it against keyless Azurite.
examples/typescript/node_modules/.package-lock.json: examples/typescript/package.json examples/typescript/package-lock.json
	npm ci --prefix examples/typescript --no-audit --no-fund --loglevel=error

# The suite runs on pytest-xdist workers, each a process with its own local Azure (Azurite, the emulators and
# worker hosts on free ports, its own temporary directory, the network guard). Most e2e tests wait (on hosts,
# outages, retry delays), so for the whole suite more workers than cores pays; the fast tier is CPU-bound, and a
# worker costs a few CPU seconds to start, so it takes one per core. tests/conftest.py starts the slow tests first
# and --maxschedchunk 1 hands out the rest one at a time. A count of 0 runs in one process.
TEST_WORKERS ?= 4
FAST_TEST_WORKERS ?= 2
XDIST := --dist load --maxschedchunk 1

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) $(XDIST)

# Unit and infra tests only: no Azurite, Node.js or worker host (tests marked e2e are left out).
test-fast: setup
	$(PY) -m pytest -m "not e2e" -n $(FAST_TEST_WORKERS) $(XDIST)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: setup
	$(PY) -m mypy

check: lint typecheck test

run: setup
	$(PY) -m emulators.run

bench: setup
	$(PY) -m bench

infra-check:
	bash .ci/checkov.sh

clean:
	rm -rf $(VENV) .venv-infra node_modules .local-azure .pytest_cache .mypy_cache .ruff_cache
