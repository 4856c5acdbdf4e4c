PY ?= python3
MODEL ?=

.PHONY: setup setup-dev setup-data demo test lint fmt

setup:
	$(PY) -m pip install -q -e .

setup-dev:
	$(PY) -m pip install -q -e ".[dev]"

demo: setup
	$(PY) -m granite_asr.demo $(if $(MODEL),--model $(MODEL),)

# Offline TTS engines and voices (apt, incl. contrib/non-free) used by the corpus builder and its tests.
.setup-data.stamp: scripts/setup_data.sh
	EXTRA_TEXT=$${EXTRA_TEXT:-0} bash scripts/setup_data.sh && touch $@

setup-data: .setup-data.stamp

test: setup-dev setup-data
	$(PY) -m pytest -q

lint:
	ruff check . && ruff format --check .

fmt:
	ruff check --fix . && ruff format .
