# One entry point for people and CI. Everything installs from pinned files into .venv and
# node_modules, so a fresh clone needs only Python 3.11, Node.js and npm.
PYTHON ?= python3.11
VENV ?= .venv
# Another Python the app supports (README "Runtime"): `make test-fast PYVER=3.12` or `make test PYVER=3.13`
# builds .venv-<version> with that interpreter (.ci/find-python finds it, pyenv's first) and runs there.
ifdef PYVER
override PYTHON := $(shell .ci/find-python $(PYVER))
override VENV := .venv-$(PYVER)
ifeq ($(PYTHON),)
$(error no Python $(PYVER) found (see above))
endif
endif
# The versions test-fast-all covers besides the default interpreter's.
OTHER_PYVERS := 3.12 3.13
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast test-fast-all lint format typecheck check run bench infra-check clean

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

# The fast tier on every supported Python: the default interpreter's .venv, then .venv-3.12 and .venv-3.13.
test-fast-all: test-fast
	for version in $(OTHER_PYVERS); do $(MAKE) --no-print-directory test-fast PYVER=$$version || exit 1; done

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

bench: setup
	$(PY) -m bench

infra-check:
	bash .ci/checkov.sh

clean:
	rm -rf $(VENV) .venv-3.* .venv-infra node_modules .local-azure .pytest_cache .mypy_cache .ruff_cache
