# Two commands for a fresh clone: `make serve` (set up, export, serve on :8000) and
# `make test` (set up with dev tools, run the whole suite). `make help` lists the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The service's own variables win when set, so that make and the service agree.
MODELS_DIR ?= $(or $(NMT_MODELS_DIR),models)
ARTIFACTS_DIR ?= $(or $(NMT_ARTIFACTS_DIR),artifacts)
HOST ?= 0.0.0.0
PORT ?= 8000
PYTEST_ARGS ?=
# The directions `make train` trains (configs/<pair>.json), e.g. TRAIN_PAIRS="en-fr fr-en".
TRAIN_PAIRS ?= en-de de-en en-fr fr-en en-cs cs-en
# Empty: pip's own configuration finds torch. Elsewhere, point it at PyTorch's CPU wheels:
#   make serve TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=

# Set-up runs again only when pyproject.toml changes.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

# One export stamp per shipped model (models/en-de -> artifacts/.exported/en-de). The graphs
# themselves go where the engine looks for them: artifacts/<pair>-<model hash>/<precision>/.
MODEL_DIRS := $(patsubst %/config.json,%,$(wildcard $(MODELS_DIR)/*/config.json))
EXPORTS := $(patsubst $(MODELS_DIR)/%,$(ARTIFACTS_DIR)/.exported/%,$(MODEL_DIRS))

.PHONY: help setup setup-dev export serve test test-fast lint bench train clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# torch first and exactly pinned, so that pip takes the CPU wheel (from pip's configured
# find-links, or TORCH_INDEX_URL) rather than resolving the multi-GB CUDA build from PyPI.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

setup: $(STAMP) ## create .venv and install the project

setup-dev: $(DEV_STAMP) ## setup plus the dev tools (pytest, ruff, mypy, hadolint, locust)

$(ARTIFACTS_DIR)/.exported/%: $(MODELS_DIR)/%/model.safetensors $(MODELS_DIR)/%/config.json \
		$(MODELS_DIR)/%/tokenizer.model | $(STAMP)
	NMT_ARTIFACTS_DIR=$(ARTIFACTS_DIR) $(BIN)/python -m export --model $(MODELS_DIR)/$*
	mkdir -p $(@D) && touch $@

export: $(EXPORTS) ## export the ONNX graphs of every models/* not yet exported

serve: $(STAMP) export ## set up, export, and serve the shipped models on port 8000
	NMT_MODELS_DIR=$(MODELS_DIR) NMT_ARTIFACTS_DIR=$(ARTIFACTS_DIR) \
		$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: $(DEV_STAMP) export ## set up with dev tools and run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit-test loop: `pytest -m "not slow"` leaves out every test that starts a server.
test-fast: $(DEV_STAMP) ## the tests that start no server (pytest -m "not slow")
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## ruff (lint and format) over the repository, mypy over the typed packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy model service export loadtest

bench: $(DEV_STAMP) export ## engine and service benchmarks (results under bench/results)
	$(BIN)/python -m bench.engines
	$(BIN)/python -m bench.service

# One after another: each run takes every core it is given. A killed run resumes from its
# runs/<pair>/last.pt when started again with the same command.
train: $(STAMP) ## train every direction in TRAIN_PAIRS into models/ (hours on CPU)
	for pair in $(TRAIN_PAIRS); do $(BIN)/python -m model.train --config configs/$$pair.json; done

clean: ## remove exported graphs and tool caches (keeps .venv and models)
	rm -rf $(ARTIFACTS_DIR) .pytest_cache .mypy_cache .ruff_cache
