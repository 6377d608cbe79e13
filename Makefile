# Every target creates or reuses .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

DEMO_SIZE ?= 300MB
BENCH_ARGS ?=

# Clients of the local store that nobody here wrote, for its tests: the AWS CLI v1 in a venv of its own (it pins
# an exact botocore that the main venv's boto3 and aiobotocore do not want), and the AWS SDK for JavaScript v3
# where npm exists. Both live inside $(VENV), so they go with it.
AWSCLI_VERSION ?= 1.46.2
JS_SDK_VERSION ?= 3.1048.0
AWSCLI_VENV := $(VENV)/awscli
JS_SDK_DIR := $(VENV)/js-sdk

.PHONY: demo test test-quick check lint imports floors bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# One stamp per set of extras, rebuilt when pyproject.toml changes.
$(VENV)/.stamp-base: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[fast]'
	touch $@

# The tests include a quick smoke run of the benchmark harness against the peers, so they install the bench extra.
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[fast,test,bench]'
	touch $@

$(AWSCLI_VENV)/.stamp: Makefile | $(BIN)/python
	$(PYTHON) -m venv $(AWSCLI_VENV)
	$(AWSCLI_VENV)/bin/python -m pip --disable-pip-version-check -q install 'awscli==$(AWSCLI_VERSION)'
	touch $@

$(JS_SDK_DIR)/.stamp: Makefile | $(BIN)/python
	@if ! command -v npm >/dev/null 2>&1; then echo "npm not found: the JavaScript SDK tests of the store are skipped"; \
	elif npm install --silent --no-audit --no-fund --prefix $(JS_SDK_DIR) '@aws-sdk/client-omics@$(JS_SDK_VERSION)'; \
	then touch $@; else echo "npm install failed: the JavaScript SDK tests of the store are skipped"; fi

demo: $(VENV)/.stamp-base
	$(BIN)/python -m async_uploader.cli.demo --size $(DEMO_SIZE)

# The layers and the acyclic import graph are contracts in pyproject.toml ([tool.importlinter]); the test venv's
# requirements must agree with each other (pip check).
imports: $(VENV)/.stamp-test
	$(BIN)/python -m pip check
	$(BIN)/lint-imports --no-cache

# The declared floors are true: .venv-min holds exactly the lowest version of each runtime dependency that
# pyproject.toml allows (name==floor, resolved by pip with their own dependencies), and the package imports, prints
# its version and uploads into the local store there (tests/floors.py).
VENV_MIN := .venv-min
$(VENV_MIN)/.stamp: pyproject.toml tests/floors.py
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip --disable-pip-version-check -q install -U pip
	$(VENV_MIN)/bin/python -m pip --disable-pip-version-check -q install $$($(PYTHON) tests/floors.py requirements)
	$(VENV_MIN)/bin/python -m pip --disable-pip-version-check -q install --no-deps -e .
	touch $@

floors: $(VENV_MIN)/.stamp
	$(VENV_MIN)/bin/python -m pip check
	$(VENV_MIN)/bin/python tests/floors.py smoke

test: imports floors $(AWSCLI_VENV)/.stamp $(JS_SDK_DIR)/.stamp
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Everything but the tests marked slow (real clusters, crash-and-resume loops, peers' tools): a minute or two.
test-quick: imports $(AWSCLI_VENV)/.stamp $(JS_SDK_DIR)/.stamp
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

# ruff and mypy --strict over the package and the tests (the tests are not a package: their modules are named from
# the checkout's root, tests.helpers and the like, as they import each other).
lint: $(VENV)/.stamp-test
	$(BIN)/ruff check async_uploader tests benchmarks
	$(BIN)/ruff format --check async_uploader tests benchmarks
	$(BIN)/mypy --strict --explicit-package-bases async_uploader tests

check: lint test

bench: $(VENV)/.stamp-test
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

bench-quick: $(VENV)/.stamp-test
	$(BIN)/python benchmarks/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV_MIN) build *.egg-info .mypy_cache .ruff_cache
