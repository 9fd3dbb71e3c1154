# FreezeLab: the two commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501

.PHONY: run test lint pytest bundled screenshots clean

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
	$(BIN)/streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .

pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

test: lint pytest

# Re-creates models/bundled_digits_cnn.keras from scikit-learn's bundled digits (fixed seed).
bundled: $(VENV)/.runtime-installed
	$(BIN)/python scripts/train_bundled_model.py

# PNGs of the main steps for the README, taken in headless Chromium.
screenshots: $(VENV)/.dev-installed
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
