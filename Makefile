# squall: two commands for a fresh machine.
#   make run   create .venv if missing, install what running needs, migrate, start the platform
#   make test  also install the dev tools, then every gate CI runs: ruff, ruff format, mypy,
#              alembic check, pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installs come from uv.lock (every package pinned, with hashes): the same versions on every
# machine. uv itself is pinned here and installed once into .tools/ (outside the venv, which
# `uv sync` keeps exactly as locked); `make UV=uv` uses one already on PATH.
UV_VERSION := 0.13.9
TOOLS ?= .tools
UV ?= $(TOOLS)/uv/bin/uv
# the pinned uv is installed on demand; one given on the command line is used as it is
UV_DEP := $(filter $(TOOLS)/uv/bin/uv,$(UV))
UV_ENV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never
# One stamp per install: the runtime dependencies (make run), and the dev extras on top
# (make test); each is redone when pyproject.toml or uv.lock changes.
STAMP := $(VENV)/.squall-installed
DEV_STAMP := $(VENV)/.squall-installed-dev

.PHONY: install install-dev lock lock-check cluster-check run test lint typecheck migrations-check pytest bench clean

install: $(STAMP)

install-dev: $(DEV_STAMP)

$(TOOLS)/uv/bin/uv:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/uv uv==$(UV_VERSION)

# Runtime dependencies only, exactly as locked (--inexact: dev tools already there stay).
$(STAMP): pyproject.toml uv.lock | $(UV_DEP)
	$(UV_ENV) $(UV) sync --frozen --inexact --python $(PYTHON) --quiet
	touch $(STAMP)

# Runtime + dev extras, exactly as locked (anything else in the venv is removed).
$(DEV_STAMP): $(STAMP)
	$(UV_ENV) $(UV) sync --frozen --extra dev --python $(PYTHON) --quiet
	touch $(DEV_STAMP)

# Refresh the lock: newest versions within pyproject.toml's bounds (`make lock UPGRADE=` keeps
# every version that still fits and only resolves what changed). Then run `make test`.
UPGRADE ?= --upgrade
lock: | $(UV_DEP)
	$(UV) lock $(UPGRADE)

# The lock matches pyproject.toml (no network needed; CI runs it through pytest too).
lock-check: | $(UV_DEP)
	$(UV) lock --check --offline

# A real two-node Ray cluster on this host with Postgres (docs/operations.md, "Running on a
# cluster"); not part of `make test`.
cluster-check: install-dev
	$(BIN)/python -m benchmarks.cluster_check $(CLUSTER_CHECK_ARGS)

run: install
	$(BIN)/squall up

test: install-dev lint typecheck migrations-check pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

# alembic check: the models and the migrations describe the same schema (fresh SQLite file).
migrations-check: install
	mkdir -p var && rm -f var/alembic-check.db
	SQUALL_DATABASE_URL=sqlite:///var/alembic-check.db $(BIN)/alembic upgrade head
	SQUALL_DATABASE_URL=sqlite:///var/alembic-check.db $(BIN)/alembic check
	rm -f var/alembic-check.db*

pytest: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python -m benchmarks.bench_upsert
	$(BIN)/python -m benchmarks.bench_api

clean:
	rm -rf $(VENV) $(TOOLS) var .mypy_cache .ruff_cache .pytest_cache
