# `make test` is the one command CI runs: it builds the venv, installs every extra, starts any
# missing local server from the tests themselves, and runs the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint bench demo services clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dial tests benchmarks examples
	$(BIN)/ruff format --check dial tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/ws_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
