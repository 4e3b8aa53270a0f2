# perseid-jobs — developer entry points. Every target sets itself up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: the demo needs only the runtime dependencies (seconds on a cold clone);
# the tests and linters add the dev tools (pytest, moto, mypy, ...) on top.
RUNTIME := $(VENV)/.runtime
STAMP   := $(VENV)/.installed

.PHONY: install test lint demo chaos bench clean

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## venv + package + dev tools

test: $(STAMP) ## the whole test suite, against private redis-server processes
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check perseid_jobs tests jobs
	$(BIN)/mypy

DEMO_ARGS ?=
demo: $(RUNTIME) ## example jobs on an embedded default (DEMO_ARGS="--duration 30" to stop by itself)
	$(BIN)/perseid-jobs demo $(DEMO_ARGS)

chaos: $(STAMP) ## fault-injection tests only
	$(BIN)/pytest -q -m chaos

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
