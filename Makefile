# Everyday commands; CI (.ci/run) calls `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: browser secrets install serve test test-fast fuzz-long lint format openapi bench gpu-check clean

# A venv with the CPU build of torch installed first (an open range would pull a CUDA build).
$(BIN)/odeserve: pyproject.toml
	command -v $(PY) >/dev/null || { echo "needs $(PY)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q --index-url https://download.pytorch.org/whl/cpu "torch>=2.5,<3"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/odeserve

# Node.js for the TypeScript contract test (tests/test_typescript_client.py), Chromium for the
# playground's browser test (tests/test_playground.py): installed when missing (apt, as root).
TS_DIR := clients/typescript
APT := $(shell [ "$$(id -u)" = 0 ] || echo sudo) apt-get

$(TS_DIR)/node_modules/.bin/tsc: $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	command -v npm >/dev/null || { $(APT) update -q && $(APT) install -y -q nodejs npm; }
	cd $(TS_DIR) && npm ci --no-audit --no-fund --silent
	touch $@

browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(APT) update -q && $(APT) install -y -q chromium chromium-driver; }

install: $(BIN)/odeserve $(TS_DIR)/node_modules/.bin/tsc browser

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

SECRETS_DIR ?= secrets

secrets:  ## docker compose's secrets: a random Redis password, an API-key file (empty: keys off)
	install -d -m 0700 $(SECRETS_DIR)
	test -s $(SECRETS_DIR)/redis_password || python3 -c "import secrets; print(secrets.token_hex(32))" > $(SECRETS_DIR)/redis_password
	test -e $(SECRETS_DIR)/api_keys || : > $(SECRETS_DIR)/api_keys
	chmod 0444 $(SECRETS_DIR)/redis_password $(SECRETS_DIR)/api_keys

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
