# One toolchain for people and CI alike. `make test` and `make demo` work on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
ENV_FILE := .local/services.env
# Addresses the services script wrote, unless the caller set them already.
LOAD_ENV := set -a; [ -f $(ENV_FILE) ] && . $(ENV_FILE); set +a
PYTEST_ARGS ?=

.PHONY: install services services-down check lint test test-unit demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "== install: python venv and dependencies"
	@start=$$(date +%s); \
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV); \
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip; \
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'; \
	rm -f $(VENV)/.installed-*; touch $@; \
	echo "== install took $$(( $$(date +%s) - start ))s"

services:
	@scripts/services up

services-down:
	@scripts/services down

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: install
	$(BIN)/pytest tests/unit -q

test: install services check
	@echo "== tests"
	@start=$$(date +%s); $(LOAD_ENV); \
	status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	echo "== tests took $$(( $$(date +%s) - start ))s"; exit $$status

demo: install services
	@$(LOAD_ENV); $(BIN)/projectionist demo

bench: install services
	@$(LOAD_ENV); for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
