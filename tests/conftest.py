"""Test databases: one template built from the canonical sql/ per session, cloned per test module.

DATABASE_URL names the server (any database on it); tests create and drop their own databases.
pgTAP files (tests/sql/**/test_*.sql) run through pytest-pgtap on a clone of the template; a skip
anywhere fails the run, so a test that never ran cannot pass silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import conninfo, sql
from pytest_postgresql.janitor import DatabaseJanitor

from lowcap_learning.db import canonical_sql

SERVER_URL = os.environ.get("DATABASE_URL") or "postgresql://root@127.0.0.1:5432/postgres"
_SERVER = conninfo.conninfo_to_dict(SERVER_URL)
RUN_ID = uuid.uuid4().hex[:8]


def url_for(dbname: str) -> str:
    return conninfo.make_conninfo(**dict(_SERVER, dbname=dbname))


def janitor(dbname: str, template: str | None = None, as_template: bool = False) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=_SERVER.get("user") or os.environ.get("PGUSER") or "root",
        host=_SERVER.get("host") or "127.0.0.1",
        port=_SERVER.get("port") or 5432,
        password=_SERVER.get("password"),
        dbname=dbname,
        template_dbname=template,
        as_template=as_template,
        maintenance_dbname=_SERVER.get("dbname") or "postgres",
    )


def build_schema(url: str) -> None:
    """Load the canonical SQL (and pgTAP) into the database at url."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        conn.execute(canonical_sql().encode())


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    name = f"ll_tmpl_{RUN_ID}"
    jan = janitor(name, as_template=True)
    jan.drop()
    jan.init()
    try:
        build_schema(url_for(name))
        yield name
    finally:
        jan.drop()


@contextmanager
def clone_of(template: str, label: str) -> Iterator[str]:
    """A fresh database cloned from template for the duration of the block; yields its URL."""
    name = f"ll_{label}_{RUN_ID}_{uuid.uuid4().hex[:6]}"[:63]
    jan = janitor(name, template=template)
    jan.init()
    try:
        yield url_for(name)
    finally:
        jan.drop()


@contextmanager
def empty_db(label: str) -> Iterator[str]:
    """A fresh empty database (for migration tests); yields its URL."""
    name = f"ll_{label}_{RUN_ID}_{uuid.uuid4().hex[:6]}"[:63]
    jan = janitor(name)
    jan.init()
    try:
        yield url_for(name)
    finally:
        jan.drop()


@pytest.fixture(scope="module")
def db_url(template_db, request) -> Iterator[str]:
    """A database of this test module's own, cloned from the template."""
    label = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:20]
    with clone_of(template_db, label) as url:
        yield url


@pytest.fixture
def conn(db_url) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the module's database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def pgtap_connection(template_db) -> Iterator[psycopg.Connection]:
    """pytest-pgtap's connection, to a clone of the template; each file rolls itself back."""
    with clone_of(template_db, "pgtap") as url, psycopg.connect(url) as connection:
        yield connection


def pytest_runtest_logreport(report):
    """A skipped test is a failed test here: CI starts every service the tests need."""
    if report.skipped and report.when in ("setup", "call") and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests are not allowed: {report.longrepr}"


def reset_learning(connection: psycopg.Connection) -> None:
    """Back to the state after migration (closed_trades is append-only, so it is disabled briefly)."""
    connection.execute(
        sql.SQL(
            """
            ALTER TABLE public.closed_trades DISABLE TRIGGER _100_append_only;
            TRUNCATE public.closed_trades, public.pattern_trade_events, public.lowcap_positions,
                learning.allocation_history, learning.learning_log, learning.pending_redistribution,
                learning.allocation_state;
            ALTER TABLE public.closed_trades ENABLE TRIGGER _100_append_only;
            DELETE FROM public.learning_configs;
            SELECT learning.ensure_decision_maker_config();
            TRUNCATE learning.learning_log;  -- a non-default tau's delete logs a ROI RECOMPUTE line
            """
        )
    )


def use_allocation_rule(connection: psycopg.Connection, rule: str) -> None:
    """Select the allocation rule (design §5): 'plan' for the plan rule's oracles, or 'evidence'."""
    connection.execute("SELECT learning.set_tunable('allocation_rule', to_jsonb(%s::text))", (rule,))
