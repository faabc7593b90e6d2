# `make check` is what CI runs (.ci/run): lint and type checks, then the whole suite. It builds
# the venv, installs every extra, and the tests start any missing local server themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: venv check test test-fast lint bench demo services clean fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

check: lint test

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The tests worth running after each edit: everything but the `slow` ones, well under a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m 'not slow' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dial tests benchmarks examples
	$(BIN)/ruff format --check dial tests benchmarks examples
	$(BIN)/mypy

# The long fuzz campaign (tests/fuzz/, never part of `make test`, whose tests/test_fuzz_smoke.py
# runs a small slice): FUZZ_SECONDS per target and engine (default 120), FUZZ_EXAMPLES per
# property (default 200000), FUZZ_ENGINES=hypothesis,atheris, FUZZ_TARGETS="address codecs ...".
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz $(FUZZ_TARGETS)

bench: $(STAMP)
	@for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The offline demo: exchange simulator, three ticker readers, SQLite; ends by itself. Installs
# only what it needs (websockets, aiosqlite); `make venv` or `make check` add the rest later.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/demo.py

# Brokers and databases for the examples: Docker when an engine answers, else local daemons.
services: $(STAMP)
	@if docker info >/dev/null 2>&1; then \
		docker compose -f docker/docker-compose.yml up -d --wait; \
	else \
		echo "no Docker engine answers: starting local daemons instead"; \
		$(BIN)/python -m tests.servers.start_all; \
	fi
