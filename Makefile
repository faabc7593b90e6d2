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
	$(BIN)/mypy dial --ignore-missing-imports

bench: $(STAMP)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# The offline demo: exchange simulator, three ticker readers, SQLite; ends by itself.
demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Brokers and databases for the examples: Docker when an engine answers, else local daemons.
services: $(STAMP)
	@if docker info >/dev/null 2>&1; then \
		docker compose -f docker/docker-compose.yml up -d --wait; \
	else \
		echo "no Docker engine answers: starting local daemons instead"; \
		$(BIN)/python -m tests.servers.start_all; \
	fi
