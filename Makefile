# squall: two commands for a fresh machine.
#   make run   create .venv if missing, install, migrate, start the platform (embedded SQLite)
#   make test  same install, then every gate CI runs: ruff, ruff format, mypy, alembic check, pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.squall-installed

.PHONY: install run test lint typecheck migrations-check pytest bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/squall up

test: install lint typecheck migrations-check pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# alembic check: the models and the migrations describe the same schema (fresh SQLite file).
migrations-check: install
	mkdir -p var && rm -f var/alembic-check.db
	SQUALL_DATABASE_URL=sqlite:///var/alembic-check.db $(BIN)/alembic upgrade head
	SQUALL_DATABASE_URL=sqlite:///var/alembic-check.db $(BIN)/alembic check
	rm -f var/alembic-check.db*

pytest: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.bench_upsert
	$(BIN)/python -m benchmarks.bench_api

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
