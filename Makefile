# make demo   start the sandbox topology and show kmc at work
# make test   run the test suite against real sandbox Kafka clusters (all but the benchmark pipeline tests)
# make test-all   the same with the benchmark pipeline tests (quick MirrorMaker 2 and perf-tool runs)
# make test-fast   without the slow and bench tests (markers in tests/conftest.py)
# make chaos  long fault runs (kill -9 of kmc and brokers under load) and a table of what arrived
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test test-all test-fast lint docs bench bench-quick bench-archive bench-failover chaos clean-sandbox

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

# two pytest processes, each test file in one of them (its module fixtures, and the session's clusters per
# process): the tests wait on brokers much of the time, so two at once take about half as long on 2 cores
XDIST := -n 2 --dist loadfile

test: $(VENV)/.installed
	$(PY) -m pytest $(XDIST) -m 'not bench and not known_failure'

test-all: $(VENV)/.installed
	$(PY) -m pytest $(XDIST)

test-fast: $(VENV)/.installed
	$(PY) -m pytest $(XDIST) -m 'not slow and not bench and not known_failure'

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check kmc tests bench scripts

docs: $(VENV)/.installed
	$(PY) -m kmc.cli.docs .

bench: $(VENV)/.installed
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

bench-archive: $(VENV)/.installed
	$(PY) bench/archive_throughput.py
# consumer-group failover, kmc --sync-groups against MirrorMaker 2's checkpoint connector (docs/failover.md)
bench-failover: $(VENV)/.installed
	$(PY) bench/failover.py

# the long chaos runs (KMC_CHAOS_SECONDS each, default 180; KMC_CHAOS_ONLY=at-least-once/batches for one of the
# four combinations): kill -9 of kmc and brokers, then count
chaos: $(VENV)/.installed
	$(PY) -m tests.chaos

clean-sandbox: $(VENV)/.installed
	$(VENV)/bin/kmc sandbox down
