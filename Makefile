# Two commands do all set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[all]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.demo-installed

## make demo: the demo on embedded defaults (no server, no API key)
demo: $(VENV)/.demo-installed
	$(BIN)/python -m llmstash demo

## make test: the whole test suite; the harness starts the servers it needs
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make bench [ONLY=name]: benchmarks, printed as a table and written to BENCHMARKS.md
bench: $(VENV)/.test-installed
	$(BIN)/python bench/run.py $(if $(ONLY),--only $(ONLY),)

## make lint: ruff (lint + format check) and mypy on the package
lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .llmstash_cache .mypy_cache .ruff_cache
