# squall: two commands for a fresh machine.
#   make run   create .venv if missing, install what running needs, migrate, start the platform
#   make test  also install the dev tools, then every gate CI runs: ruff, ruff format, mypy,
#              alembic check, pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per install: the runtime dependencies (make run), and the dev extras on top
# (make test); each is redone when pyproject.toml changes.
STAMP := $(VENV)/.squall-installed
DEV_STAMP := $(VENV)/.squall-installed-dev

.PHONY: install install-dev run test lint typecheck migrations-check pytest bench clean

install: $(STAMP)

install-dev: $(DEV_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

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
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
