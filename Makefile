# make run   - set up .venv and start the service on the embedded store with demo data
# make test  - set up .venv (with test extras and headless Chromium) and run the whole suite
# make test-aerospike - run every Aerospike test against a real Aerospike (a server kit, or
#              SEGMENTS_TEST_AEROSPIKE=host:port/ns); PYTEST_ARGS=... passes pytest options;
#              AEROSPIKE_OPTIONAL=1: without either, say so and succeed (what .ci/run does)
# make test-spark - set up the spark extra (PySpark; Java 17 if missing) and run tests/spark: PySpark in
#              local mode against the tansu broker and segments ingest (make test leaves them out)
# make bench - set up and run the benchmarks (BENCH_ARGS=--quick for a short run)

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SPARK_STAMP := $(VENV)/.installed-spark-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 8000
STORE  ?= sqlite:///./data/segments.db
BENCH_ARGS ?=
AEROSPIKE_SERVER_KIT ?= ../shared/aerospike
PYTEST_ARGS ?= -q

.PHONY: run test test-aerospike test-spark bench setup lint typecheck chromium java clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	@rm -f $(VENV)/.installed-[0-9]* && touch $@

$(SPARK_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench,spark]'
	@rm -f $(VENV)/.installed-spark-* && touch $@

setup: $(STAMP)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian chromium for the browser tests (Playwright drives it; no browser download)..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser tests will be skipped"; }

java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "Installing Java 17 for the Spark tests..."; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null) \
	  || echo "WARNING: could not install Java 17; the Spark tests will be skipped (failed in CI)"; }

run: setup
	$(VENV)/bin/segments serve --store $(STORE) --host $(HOST) --port $(PORT) --demo

test: setup chromium
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q --ignore=tests/spark

test-spark: $(SPARK_STAMP) java
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q tests/spark

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
