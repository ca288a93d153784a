# Two entry points for a newcomer: `make run` (the main job on the embedded digits data)
# and `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The set-up pins torch 2.13.0 (pyproject.toml allows a range). On this project's machines pip
# finds the CPU wheel on local disk;
# elsewhere pass e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" so
# that pip does not fetch the multi-GB CUDA build.
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup run test lint bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

run: setup
	$(BIN)/deepstdp train --clusterer stdp --out $(RUN_DIR)

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_pipeline.py
