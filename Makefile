# The README's two commands, each doing everything on a fresh machine:
#   make test   create .venv, install, lint, run the whole suite
#   make demo   create .venv, install, build a demo store with worker processes and query it
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test,widgets,browser-test,scan,dask,s3
INSTALLED := $(VENV)/.installed

.PHONY: install test lint browser demo bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The widget tests drive Debian's Chromium headless; install it when it is missing (needs root, as in CI).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: lint browser
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m pocaduck.demo demo_store

bench: install
	$(BIN)/python bench/bench_store.py

clean:
	rm -rf $(VENV) demo_store .pytest_cache
