# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

demo: $(STAMP)  ## a local cluster doing real work, then its stories and events
	$(BIN)/python examples/demo.py

test: $(STAMP)  ## the whole test suite, lint included
	$(BIN)/ruff check storied tests bench examples
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check storied tests bench examples
	$(BIN)/ruff format --check storied tests bench examples

clean:
	rm -rf $(VENV) .bench .pytest_cache .ruff_cache

BENCH_PROJECT_PYTHON := $(STAMP)
-include bench/Makefile.inc
