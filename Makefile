# The README's commands. `make demo` and `make test` set everything up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedmq-installed

.PHONY: setup demo test unit bench lint

setup: $(STAMP)

# torch is pinned to the local CPU build first: any looser range would fetch GBs of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/fedmq demo

test: setup
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest -m "not rabbitmq"

bench: setup
	$(BIN)/python -m benchmarks

lint: setup
	$(BIN)/mypy
	$(BIN)/ruff check protocol broker worker coordinator
