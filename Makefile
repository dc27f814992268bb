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

test: setup
	$(PY) -m pytest

# Unit and infra tests only: no Azurite, Node.js producer or worker host (tests marked e2e are left
# out); the infra tests run Node.js offline for the KQL check, so node_modules is set up too.
test-fast: setup
	$(PY) -m pytest -m "not e2e"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: setup
	$(PY) -m mypy

check: lint typecheck test

run: setup
	$(PY) -m emulators.run

# BENCH_ARGS: e.g. --long-outage (figure 8's 10-minute outage), --all-scales (figure 6's K = 4), --only scaleout
# (see python -m bench --help).
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

infra-check:
	bash .ci/checkov.sh

clean:
	rm -rf $(VENV) .venv-infra node_modules .local-azure .pytest_cache .mypy_cache .ruff_cache
