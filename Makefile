# Everyday commands; CI (.ci/run) calls `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install serve test test-fast fuzz-long lint format openapi bench gpu-check clean

# A venv with the CPU build of torch installed first (an open range would pull a CUDA build).
$(BIN)/odeserve: pyproject.toml
	command -v $(PY) >/dev/null || { echo "needs $(PY)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q --index-url https://download.pytorch.org/whl/cpu "torch>=2.5,<3"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/odeserve

install: $(BIN)/odeserve

serve: install  ## start Redis (embedded), a worker and the API; solve the example
	$(BIN)/odeserve serve --example

test: install  ## the whole suite, slow tests included (what CI runs)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install  ## ruff (lint + format) and the type checker
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

fuzz-long: install  ## the fuzz properties with 10x the CI-sized example counts
	ODESERVE_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest tests/test_fuzz.py $(PYTEST_ARGS)

openapi: install
	$(BIN)/python scripts/write_openapi.py

bench: install  ## peers are optional: pip install -e .[bench]
	$(BIN)/python -m bench.run

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
