# make run   - set up .venv and start the service on the embedded store with demo data
# make test  - set up .venv (with test extras and headless Chromium) and run the whole suite
# make test-aerospike - run every Aerospike test against a real Aerospike (a server kit, or
#              SEGMENTS_TEST_AEROSPIKE=host:port/ns); PYTEST_ARGS=... passes pytest options;
#              AEROSPIKE_OPTIONAL=1: without either, say so and succeed (what .ci/run does)
# make bench - set up and run the benchmarks (BENCH_ARGS=--quick for a short run)

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 8000
STORE  ?= sqlite:///./data/segments.db
BENCH_ARGS ?=
AEROSPIKE_SERVER_KIT ?= ../shared/aerospike
PYTEST_ARGS ?= -q

.PHONY: run test test-aerospike bench setup lint typecheck chromium clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian chromium for the browser tests (Playwright drives it; no browser download)..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser tests will be skipped"; }

run: setup
	$(VENV)/bin/segments serve --store $(STORE) --host $(HOST) --port $(PORT) --demo

test: setup chromium
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q

test-aerospike: setup
	AEROSPIKE_SERVER_KIT="$(AEROSPIKE_SERVER_KIT)" $(PY) -m tests.support.aerospike_suite \
	  $(if $(AEROSPIKE_OPTIONAL),--skip-without-server) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis
