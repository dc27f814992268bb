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
WHEELHOUSE := .wheelhouse

.PHONY: setup test test-fast test-fast-all lint format typecheck check run up bench simulate infra-check dist docs settings-table clean

setup: $(STAMP) $(WHEELHOUSE)/.downloaded node_modules/.package-lock.json examples/typescript/node_modules/.package-lock.json

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# The producer package's dependencies as wheels, at the app's pins: tests/producer/test_wheel.py installs
# the built package into a clean venv from here with --no-index, so the tests never leave loopback.
$(WHEELHOUSE)/.downloaded: $(STAMP) pyproject.toml
	rm -rf $(WHEELHOUSE)
	$(PY) -m pip download --quiet --no-build-isolation --dest $(WHEELHOUSE) -c requirements.txt ".[tracing]"
	touch $@

# The producer package (pyproject.toml: keyless-openai-jobs, import path shared.producer): a wheel and an
# sdist in dist/, built offline with the pinned hatchling. `pip install dist/*.whl` is all a service needs.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .

# The docs site's tools (requirements-docs.txt), on top of the dev install: only `make docs` needs them.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP) requirements-docs.txt
	$(PY) -m pip install --quiet -r requirements-docs.txt
	touch $@

# The docs site (mkdocs.yml) into site/, strict: a broken link or anchor, or a settings table that disagrees
# with shared/settings/, fails it. The build runs behind the tests' network guard (emulators/guarded), so
# anything in it that reaches past loopback fails the build too.
docs: $(DOCS_STAMP)
	$(PY) docs/settings_table.py --check
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=emulators/guarded $(PY) -m mkdocs build --strict --quiet

# Rewrites docs/settings.md's table from SETTINGS in shared/settings/ (what `make docs` asks for).
settings-table: $(STAMP)
	$(PY) docs/settings_table.py

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

# Unit and infra tests only: no Azurite, Node.js producer or worker host (tests marked e2e are left
# out); the infra tests run Node.js offline for the KQL check, so node_modules is set up too.
test-fast: setup
	$(PY) -m pytest -m "not e2e" -n $(FAST_TEST_WORKERS) $(XDIST)

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

# The same local stack as `run`, kept up until Ctrl-C for your own producers; its exports go to
# .local-azure/env.sh (source it in another shell).
up: setup
	$(PY) -m emulators.up

# BENCH_ARGS: e.g. --long-outage (figure 8's 10-minute outage of the pool's primary), --long-outage-alone (the only
# deployment down 10 minutes), --shared-budget (the quota runs with PACING_SHARED_BUDGET=true), --all-scales
# (figure 6's K = 4), --only scaleout (see python -m bench --help).
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

# Issue 23's simulation of 16, 64 and 256 instances on a virtual clock (seconds to a minute; no local Azure):
# prints the table and writes bench/simulation.md and bench/simulation.json.
simulate: setup
	$(PY) -m bench.simulate_table

infra-check:
	bash .ci/checkov.sh

clean:
	rm -rf $(VENV) .venv-3.* .venv-infra node_modules .local-azure .pytest_cache .mypy_cache .ruff_cache dist site $(WHEELHOUSE)
