# The README's two commands, each doing everything on a fresh machine:
#   make test   create .venv, install, lint, run the whole suite
#   make demo   create .venv, install, build a demo store with worker processes and query it
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test
INSTALLED := $(VENV)/.installed-$(EXTRAS)

.PHONY: install test lint demo bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m pocaduck.demo demo_store

bench: install
	$(BIN)/python bench/bench_store.py

clean:
	rm -rf $(VENV) demo_store .pytest_cache
