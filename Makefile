# FreezeLab: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: run test lint pytest chromium nginx replicas bundled screenshots clean

# The virtual environment is created once with the current python3.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files make a second `make run` / `make test` skip pip when nothing changed.
$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime-installed
	$(BIN)/streamlit run serve.py --server.port $(PORT) --browser.gatherUsageStats false

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

# The browser tests drive the system Chromium (Playwright never downloads a browser). Install
# Debian's package when it is missing and we can (root with apt-get); otherwise those tests fail
# with a message that says how to install one.
chromium:
	@if [ -n "$$FREEZELAB_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 \
	  || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian's chromium for the browser tests..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || echo "Could not install chromium; the browser tests will say how."; \
	else echo "No Chromium found: the browser tests will fail; see README (Browser tests)."; fi

# The replicas test (tests/browser/test_replicas.py) puts nginx in front of two servers. Install
# Debian's package when it is missing and we can (root with apt-get); otherwise that test skips
# and says how to install it. Only the binary is used: no system nginx service is configured.
nginx:
	@if [ -n "$$FREEZELAB_NGINX" ] || command -v nginx >/dev/null 2>&1 \
	  || [ -x /usr/sbin/nginx ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Installing Debian's nginx for the replicas test..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null \
	  || echo "Could not install nginx; the replicas test will skip and say how."; \
	else echo "No nginx found: the replicas test will skip; see README (Replicas)."; fi

test: lint chromium nginx pytest

# The oldest allowed core: requirements.txt's lower bounds (scripts/minimum_versions.py pins
# the lowest allowed minor of each core package) in their own venv, running the tests that
# need only models/ (no Streamlit, no browser). `.ci/run` runs it after `make test`.
MIN_VENV := .venv-minimum
.PHONY: test-minimum
$(MIN_VENV)/.installed: requirements.txt scripts/minimum_versions.py | $(BIN)/python
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/python -m pip install --quiet \
	  $$($(BIN)/python scripts/minimum_versions.py pins) pytest pytest-timeout
	touch $@

test-minimum: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(tensorflow|keras|numpy|pandas|scikit-learn|pillow) '
	$(MIN_VENV)/bin/python -m pytest -o addopts="-ra" -p no:cacheprovider \
	  $$($(BIN)/python scripts/minimum_versions.py tests)

# Re-creates the bundled models (models/bundled_digits_cnn.keras, bundled_digits_attention.keras
# and their .json) from scikit-learn's bundled digits 0-4 (fixed seed, about a minute).
bundled: $(VENV)/.runtime-installed
	$(BIN)/python scripts/train_bundled_model.py

# PNGs of the main steps for the README, taken in headless Chromium.
screenshots: $(VENV)/.dev-installed
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache

# Performance ratios (benchmarks/*.py, each in its own process): prints a table and writes
# benchmarks/report.json. A report, never a test; about 12 minutes on 2 cores.
.PHONY: bench
bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/run_all.py

# Workshop load test (issue 12): 30 real sessions in one headless Chromium against
# `streamlit run serve.py` (10 train, 20 click; then reloads and closed pages mid-run; memory per
# 10k-image upload). Prints a table and writes benchmarks/loadtest.json; a report, never a test.
# About 6-10 minutes on 2 cores; `make loadtest LOADTEST_ARGS=--quick` for a 2-minute smoke run.
.PHONY: loadtest
loadtest: $(VENV)/.dev-installed chromium
	$(BIN)/python benchmarks/loadtest.py $(LOADTEST_ARGS)

# Replicas (README, Replicas behind a sticky proxy): REPLICAS Streamlit processes (ports 8501,
# 8502, ...) behind nginx on PROXY_PORT, sharing the runs folder; Ctrl-C stops everything.
# `make replicas REPLICAS_ARGS=--ray` also starts a Ray head (pip install -r requirements-ray.txt).
REPLICAS ?= 2
PROXY_PORT ?= 8080
replicas: $(VENV)/.runtime-installed nginx
	$(BIN)/python deploy/start_replicas.py --replicas $(REPLICAS) --port $(PROXY_PORT) $(REPLICAS_ARGS)
