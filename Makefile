# squall: two commands for a fresh machine.
#   make run   create .venv if missing, install what running needs, migrate, start the platform
#   make test  also install the dev tools, then every gate CI runs, one banner each: lint
#              (ruff, ruff format), types (mypy), migrations (alembic check on SQLite and
#              Postgres), unit and integration tests (pytest without / with a real Ray), data
#              invariants (squall check on a database filled from ../shared/data)
#   make test-faults  the slow fault-injection tests (database outage, killed workers)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# One stamp per install: the runtime dependencies (make run), and the dev extras on top
# (make test); each is redone when pyproject.toml changes.
STAMP := $(VENV)/.squall-installed
DEV_STAMP := $(VENV)/.squall-installed-dev

.PHONY: install install-dev run test lint typecheck migrations-check pytest unit integration \
	data-invariants test-faults bench clean

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

# Each gate prints a banner; a failing gate names itself last.
gate = @printf '\n======== gate: %s ========\n' '$(1)'
failed = { printf '\n======== FAILED gate: %s ========\n' '$(1)'; exit 1; }
# Tests are split by marker so that each runs exactly once: unit = no real Ray, integration =
# a real Ray runtime; the slow fault tests run only in `make test-faults`.
UNIT_MARKERS := not ray and not slow
INTEGRATION_MARKERS := ray and not slow

test: install-dev lint typecheck migrations-check unit integration data-invariants
	@printf '\n======== every gate passed ========\n'

lint: install-dev
	$(call gate,lint)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . || $(call failed,lint)

typecheck: install-dev
	$(call gate,types)
	$(BIN)/mypy || $(call failed,types)

# alembic check: the models and the migrations describe the same schema, on a fresh SQLite
# file and in a fresh schema of the CI Postgres (skipped, saying so, when unreachable and not CI).
migrations-check: install
	$(call gate,migrations)
	mkdir -p var && rm -f var/alembic-check.db
	{ SQUALL_DATABASE_URL=sqlite:///var/alembic-check.db $(BIN)/alembic upgrade head && \
	  SQUALL_DATABASE_URL=sqlite:///var/alembic-check.db $(BIN)/alembic check; } || $(call failed,migrations (SQLite))
	rm -f var/alembic-check.db*
	$(BIN)/python .ci/migrations_postgres.py || $(call failed,migrations (Postgres))

unit: install-dev
	$(call gate,unit tests)
	$(BIN)/python -m pytest -m "$(UNIT_MARKERS)" $(PYTEST_ARGS) || $(call failed,unit tests)

integration: install-dev
	$(call gate,integration tests)
	$(BIN)/python -m pytest -m "$(INTEGRATION_MARKERS)" $(PYTEST_ARGS) || $(call failed,integration tests)

data-invariants: install-dev
	$(call gate,data invariants)
	BIN=$(BIN) .ci/data_invariants || $(call failed,data invariants)

# every test but the slow ones, in one run (what `unit` and `integration` split)
pytest: install-dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-faults: install-dev
	$(call gate,fault tests)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || $(call failed,fault tests)

bench: install-dev
	$(BIN)/python -m benchmarks.bench_upsert
	$(BIN)/python -m benchmarks.bench_api

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
