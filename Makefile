# lowcap-learning: `make demo` runs the whole system on a local PostgreSQL, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PG_VERSION ?= 15
TEST_DATABASE_URL ?= $(or $(DATABASE_URL),postgresql://root@127.0.0.1:5432/postgres)
DEMO_DATABASE_URL ?= $(or $(DATABASE_URL),postgresql://root@127.0.0.1:5432/lowcap_learning_demo)
BENCH_DATABASE_URL ?= $(or $(DATABASE_URL),postgresql://root@127.0.0.1:5432/postgres)

.PHONY: help deps constraints postgres test-extensions lint migration test demo bench evaluate clean

help:
	@echo "make demo   - set up .venv and PostgreSQL, run the whole system on synthetic history"
	@echo "make test   - install what tests need, lint, run every test (pgTAP + pytest)"
	@echo "make bench  - performance figures (writes BENCHMARKS.md)"
	@echo "make evaluate - learning quality on seeded null and planted-signal scenarios (writes EVALUATION.md)"
	@echo "make migration - draft the head revision's delta migration from sql/"

# pyproject.toml gives compatible ranges; constraints.txt pins the exact versions tests and the demo use.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

deps: $(VENV)/.installed

# Re-pin constraints.txt to what .venv holds now (after a deliberate upgrade of a dependency).
constraints: deps
	{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --all --exclude-editable | grep -iv '^pip=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# PostgreSQL running (all the demo needs).
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $(PG_VERSION) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	  echo "PostgreSQL did not start" >&2; exit 1

# What only the tests need, from Debian packages: pgTAP and plpgsql_check, and PgBouncer (the
# transaction-pooler tests start their own on a free port).
test-extensions:
	@if [ ! -f /usr/share/postgresql/$(PG_VERSION)/extension/pgtap.control ] || \
	    [ ! -f /usr/share/postgresql/$(PG_VERSION)/extension/plpgsql_check.control ] || \
	    [ ! -x /usr/sbin/pgbouncer ]; then \
	  echo "installing postgresql-$(PG_VERSION)-pgtap, plpgsql-check and pgbouncer"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql-$(PG_VERSION)-pgtap postgresql-$(PG_VERSION)-plpgsql-check pgbouncer) >/dev/null; \
	fi

lint: deps
	$(VENV)/bin/sqlfluff lint sql
	# Frozen copies of sql/: sqlfluff's grammar cannot parse a BEGIN ATOMIC function followed by a
	# statement other than CREATE FUNCTION, as a delta revision may order them; sql/ is parsed above.
	$(VENV)/bin/sqlfluff lint --ignore parsing migrations/versions/sql
	$(VENV)/bin/ruff check pylib tests scripts migrations
	$(PY) scripts/freeze_migration.py --check

migration: deps postgres
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) scripts/freeze_migration.py --draft

test: deps test-extensions postgres lint
	DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest tests -q

demo: deps postgres
	DATABASE_URL=$(DEMO_DATABASE_URL) $(PY) scripts/demo.py

bench: deps postgres
	DATABASE_URL=$(BENCH_DATABASE_URL) $(PY) scripts/bench.py

evaluate: deps postgres
	DATABASE_URL=$(BENCH_DATABASE_URL) $(PY) scripts/evaluate.py

clean:
	rm -rf $(VENV) demo-output logs .pytest_cache .hypothesis
