# make demo   start the sandbox topology and show kmc at work
# make test   run the test suite against real sandbox Kafka clusters
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test lint docs bench bench-quick clean-sandbox

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check kmc tests bench scripts

docs: $(VENV)/.installed
	$(PY) -m kmc.cli.docs .

bench: $(VENV)/.installed
	$(PY) bench/run.py

bench-quick: $(VENV)/.installed
	$(PY) bench/run.py --quick

clean-sandbox: $(VENV)/.installed
	$(VENV)/bin/kmc sandbox down
