# The README's two commands, each doing everything on a fresh machine:
#   make test   create .venv, install, lint, run the whole suite
#   make lab    create .venv, install, build the notebooks' demo store if missing, start JupyterLab on notebooks/
#   make demo   create .venv, install, build a demo store with worker processes and query it
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := test,widgets,browser-test,scan,dask,s3,neuroglancer
INSTALLED := $(VENV)/.installed

.PHONY: install test test-duckdb15 lint browser azurite lab demo bench bench-scan bench-compact bench-executors bench-queries bench-requests bench-widgets bench-export bench-scale bench-consolidate bench-versions bench-rescan clean

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

# The Azure tests run against Azurite, Microsoft's storage emulator, from the npm registry.
azurite:
	test -x node_modules/.bin/azurite-blob || npm install --no-save --no-audit --no-fund --loglevel=error azurite@3.37.0

test: lint browser azurite
	$(BIN)/python -c "import duckdb; print('DuckDB', duckdb.__version__)"
	$(BIN)/python -m pytest

# The oldest DuckDB we support, 1.5.x, in a venv of its own (a fresh make test resolves the newest, 2.x).
# The browser and Binder tests stay with make test: Binder's pinned venv runs 1.5 already.
VENV15 := .venv-duckdb15
test-duckdb15: azurite
	test -x $(VENV15)/bin/python || $(PYTHON) -m venv $(VENV15)
	$(VENV15)/bin/python -m pip install --quiet --upgrade pip
	$(VENV15)/bin/python -m pip install --quiet -e ".[$(EXTRAS)]" "duckdb>=1.5,<1.6"
	$(VENV15)/bin/python -c "import duckdb; print('DuckDB', duckdb.__version__)"
	$(VENV15)/bin/python -m pytest --ignore=tests/browser --ignore=tests/test_binder.py

# JupyterLab on loopback by default (LAB_IP=0.0.0.0 to reach it from other machines), with Jupyter's token;
# served from the repository root so the notebooks sit under notebooks/. --allow-root: containers run as root.
LAB_IP ?= 127.0.0.1
LAB_PORT ?= 8888
DEMO_STORE := notebooks/demo_store/unified_index.duckdb

$(DEMO_STORE): | $(INSTALLED)
	$(BIN)/python notebooks/demo_data.py

lab: install $(DEMO_STORE)
	$(BIN)/jupyter lab --no-browser --allow-root --ServerApp.ip=$(LAB_IP) --ServerApp.port=$(LAB_PORT) \
		--ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks/01_quick_start.ipynb

demo: install
	$(BIN)/python -m pocaduck.demo demo_store

# Each bench target rewrites its own section of docs/benchmarks.md (bench adds the README's figures);
# BENCH_ARGS=--no-docs keeps an exploratory run out of them, BENCH_ARGS=--quick too (reduced sizes).
BENCH_ARGS ?=

bench: install
	$(BIN)/python bench/bench_store.py $(BENCH_ARGS)

bench-scan: install
	$(BIN)/python bench/bench_scan.py $(BENCH_ARGS)

bench-compact: install
	$(BIN)/python bench/bench_compact.py $(BENCH_ARGS)

bench-queries: install
	$(BIN)/python bench/bench_queries.py $(BENCH_ARGS)

bench-executors: install
	$(BIN)/python bench/bench_executors.py

bench-requests: install
	$(BIN)/python bench/bench_requests.py $(BENCH_ARGS)

bench-widgets: install browser
	$(BIN)/python bench/bench_widgets.py $(BENCH_ARGS)

bench-export: install
	$(BIN)/python bench/bench_export.py $(BENCH_ARGS)

bench-scale: install
	$(BIN)/python bench/bench_scale.py $(BENCH_ARGS)

bench-consolidate: install
	$(BIN)/python bench/bench_consolidate.py $(BENCH_ARGS)

bench-versions: install
	$(BIN)/python bench/bench_versions.py $(BENCH_ARGS)

bench-rescan: install
	$(BIN)/python bench/bench_rescan.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV15) demo_store notebooks/*_store notebooks/your_data node_modules .pytest_cache test-artifacts
