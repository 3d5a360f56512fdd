# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

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

## Run the whole test suite against the real PostgreSQL, Redis and a local SMTP server.
test: $(STAMP)
	$(BIN)/python -m pytest

## Benchmark against the bare stack: a small size by default; make bench BENCH_ARGS="--members 1000000"
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .loyalty .pytest_cache
