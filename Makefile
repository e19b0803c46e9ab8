# secret-injector: every target installs what it needs (CI runs on a clean clone).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# The servers under `make bench` and `make soak` run here: runtime dependencies only, as
# the image installs them (the tree's own code still comes first on their PYTHONPATH).
RUNTIME_VENV ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
RUN_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint certs check bench soak clean

help:  ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

$(RUNTIME_STAMP): pyproject.toml
	@test -x $(RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install -q --upgrade pip
	$(RUNTIME_VENV)/bin/pip install -q .
	@rm -f $(RUNTIME_VENV)/.installed-*; touch $@

install: $(STAMP)  ## Create the virtualenv with the package, test tools, bao and moto

certs: $(STAMP)  ## Make a development CA and serving certificate under certs/dev/
	$(BIN)/secret-injector certs --out certs/dev

run: $(STAMP) certs  ## Run the webhook with local OpenBao and moto servers and show an injection
	$(BIN)/python -m webhook.devrun $(RUN_ARGS)

test: $(STAMP)  ## Run the whole test suite (starts its own OpenBao and moto servers)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff and mypy --strict
	$(BIN)/ruff check webhook tests bench
	$(BIN)/ruff format --check webhook tests bench
	$(BIN)/mypy webhook bench

check: lint test  ## What CI runs, and lint

bench: $(STAMP) $(RUNTIME_STAMP)  ## Benchmark the webhook against the bare aiohttp floor (BENCH_QUICK=1: 1-minute smoke run)
	BENCH_QUICK=$(BENCH_QUICK) BENCH_SERVER_PYTHON=$(abspath $(RUNTIME_VENV))/bin/python $(BIN)/python -m bench

soak: $(STAMP) $(RUNTIME_STAMP)  ## Soak test: 10 min at half the max throughput, mixed reviews, then a 5x burst
	BENCH_SERVER_PYTHON=$(abspath $(RUNTIME_VENV))/bin/python $(BIN)/python -m bench.soak

clean:  ## Remove the virtualenv and caches
	rm -rf $(VENV) $(RUNTIME_VENV) .mypy_cache .ruff_cache .pytest_cache certs/dev
