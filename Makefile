# One toolchain for people and CI alike. `make test` and `make demo` work on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# Addresses the services script wrote, unless the caller set them already.
WITH_ENV := scripts/with-services-env
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
	@start=$$(date +%s); \
	status=0; $(WITH_ENV) $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	echo "== tests took $$(( $$(date +%s) - start ))s"; exit $$status

demo: install services
	@$(WITH_ENV) $(BIN)/projectionist demo

# One run of every benchmark part (bench/README.md); BENCH_ARGS="--quick" for a smoke run.
BENCH_ARGS ?=
bench: install services
	@$(WITH_ENV) $(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
