# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Run the product on its embedded default (SQLite, in-process queue, outbox folder): no servers needed.
demo: $(STAMP)
	$(BIN)/loyalty demo

## Lint and types: ruff (pyflakes, imports, bugbear, pyupgrade) and mypy, as configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## Lint, types, then the whole test suite (chaos tests included) against the real PostgreSQL, Redis
## and local stand-in servers, on two processes (pytest-xdist); PYTEST_ARGS="-n 0" runs it in one.
test: lint
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

## A developer's loop, under two minutes: lint, types, the unit tests and the integration tests not
## marked slow (real processes, servers, large data and every chaos test are left to `make test`).
check: lint
	$(BIN)/python -m pytest -n 2 -m "not slow" tests/unit tests/integration $(PYTEST_ARGS)

## Benchmark against the bare stack: a small size by default; make bench BENCH_ARGS="--members 1000000"
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .loyalty .pytest_cache
