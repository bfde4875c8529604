# Two set-up commands: `make run` (install into .venv, start the hub on the embedded default)
# and `make test` (install dev tools, lint, type-check, run every test).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install install-dev run test lint pytest bench bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/ocpi-hub serve

lint: install-dev
	$(BIN)/ruff check hub routing tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: install-dev
	$(BIN)/pytest -q

test: lint pytest

bench: install-dev
	$(BIN)/python bench/run.py

bench-scale: install-dev
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) .hub-data .pytest_cache .mypy_cache .ruff_cache
