PY ?= python3
MODEL ?=

.PHONY: setup setup-dev setup-data setup-browser demo test lint fmt

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

# Headless browser for tests/test_web.py (issue 5): Playwright cannot download its own Chromium build
# offline, so the test drives Debian's.
setup-browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: setup-dev setup-data setup-browser
	$(PY) -m pytest -q

lint:
	ruff check . && ruff format --check .

fmt:
	ruff check --fix . && ruff format .
