PY ?= python3
MODEL ?=

.PHONY: setup setup-dev demo test lint fmt

setup:
	$(PY) -m pip install -q -e .

setup-dev:
	$(PY) -m pip install -q -e ".[dev]"

demo: setup
	$(PY) -m granite_asr.demo $(if $(MODEL),--model $(MODEL),)

test: setup-dev
	$(PY) -m pytest -q

lint:
	ruff check . && ruff format --check .

fmt:
	ruff check --fix . && ruff format .
