"""design §2: every function of schema learning pins search_path (except pure SQL-standard helpers),
none is callable by PUBLIC, and the roles reach only what design §2 gives them."""

from __future__ import annotations

import psycopg
import pytest

from lowcap_learning.db import SQL_DIR
from test_functions_search_path import QUALIFIED_PLPGSQL_EXCEPTIONS
from test_functions_search_path import STABLE_INLINABLE_EXCEPTIONS as STABLE_OK

UNPINNED = """
SELECT p.oid::regprocedure::text AS signature, p.prosecdef, p.provolatile, l.lanname,
    p.prosqlbody IS NOT NULL AS sql_body
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
WHERE p.pronamespace = 'learning'::regnamespace
  AND NOT EXISTS (
      SELECT FROM unnest(coalesce(p.proconfig, '{}')) AS c (setting)
      WHERE c.setting = 'search_path=pg_catalog, pg_temp'
  )
ORDER BY 1
"""

PUBLIC_EXECUTABLE = """
SELECT p.oid::regprocedure::text
FROM pg_catalog.pg_proc AS p
CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
WHERE p.pronamespace = 'learning'::regnamespace AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'
ORDER BY 1
"""

ROLE_EXECUTABLE = """
SELECT p.proname, p.prosecdef, p.provolatile
FROM pg_catalog.pg_proc AS p
WHERE p.pronamespace = 'learning'::regnamespace
  AND has_function_privilege(%(role)s::text, p.oid, 'EXECUTE')
ORDER BY 1
"""

WRITER_DEFINER_API = {"set_episode_outcome"}
READER_DEFINER_API = {
    "timeframe_allocation",
    "global_roi",
    "select_execution_overrides",
    "select_strength_overrides",
    "match_strength_overrides",
    "strength_overrides",
    "feature_flag",
    "tunables",
    "scope_dimensions",
    "recomputed_roi_state",
    "last_job_runs",
}


def allowed_unpinned(sig: str, secdef: bool, volatility: str, language: str, sql_body: bool) -> bool:
    """design §2's exceptions: IMMUTABLE SQL-standard helpers, the listed STABLE ones, and the two
    allocation rule functions, which qualify every type instead (tests/test_functions_search_path.py)."""
    name = sig.split("(")[0].removeprefix("learning.")
    if secdef:
        return False
    if language == "plpgsql":
        return volatility == "i" and name in QUALIFIED_PLPGSQL_EXCEPTIONS
    return language == "sql" and sql_body and (volatility == "i" or (volatility == "s" and name in STABLE_OK))


def test_every_function_pins_search_path_except_pure_sql_helpers(conn):
    rows = conn.execute(UNPINNED).fetchall()
    offenders = [row[0] for row in rows if not allowed_unpinned(*row)]
    assert offenders == [], f"functions without SET search_path = pg_catalog, pg_temp: {offenders}"
    # The allowed exceptions exist (tracked_timeframes and friends), so the filter is exercised.
    assert any(sig.startswith("learning.tracked_timeframes") for sig, *_ in rows)


def test_every_security_definer_function_pins_catalog_then_temp(conn):
    rows = conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.proconfig
        FROM pg_catalog.pg_proc AS p
        WHERE p.prosecdef AND p.pronamespace = 'learning'::regnamespace
        """
    ).fetchall()
    assert rows, "there are SECURITY DEFINER functions to check"
    bad = [sig for sig, config in rows if "search_path=pg_catalog, pg_temp" not in (config or [])]
    assert bad == []


def test_sql_files_declare_search_path_on_every_security_definer_function():
    """The same rule on the source text, for functions the database has not loaded yet."""
    bad = []
    for path in sorted(SQL_DIR.glob("*.sql")):
        text = path.read_text()
        for chunk in text.split("CREATE OR REPLACE FUNCTION")[1:]:
            header = chunk.split("$$", 1)[0].split("BEGIN ATOMIC", 1)[0].split("\nRETURN ", 1)[0]
            if "SECURITY DEFINER" in header and "SET search_path = pg_catalog, pg_temp" not in header:
                bad.append(f"{path.name}: {chunk.split('(', 1)[0].strip()}")
    assert bad == []


def test_no_learning_function_is_executable_by_public(conn):
    assert conn.execute(PUBLIC_EXECUTABLE).fetchall() == []


def test_public_has_no_usage_on_schema_learning(conn):
    usage = conn.execute(
        """
        SELECT count(*) FROM pg_catalog.pg_namespace AS n
        CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) AS a
        WHERE n.nspname = 'learning' AND a.grantee = 0
        """
    ).fetchone()[0]
    assert usage == 0


@pytest.mark.parametrize("role", ["learning_writer", "learning_reader", "learning_admin"])
def test_roles_exist_nologin(conn, role):
    row = conn.execute("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %(r)s", {"r": role}).fetchone()
    assert row == (False, False)


def test_writer_reaches_no_writer_function_but_set_episode_outcome(conn):
    rows = conn.execute(ROLE_EXECUTABLE, {"role": "learning_writer"}).fetchall()
    assert rows, "the writer can call the pure helpers"
    definers = {name for name, secdef, _ in rows if secdef}
    volatile = {name for name, _, vol in rows if vol == "v"}
    assert definers <= WRITER_DEFINER_API
    assert volatile <= WRITER_DEFINER_API


def test_reader_reaches_only_read_only_functions(conn):
    rows = conn.execute(ROLE_EXECUTABLE, {"role": "learning_reader"}).fetchall()
    names = {name for name, *_ in rows}
    assert {"timeframe_allocation", "global_roi", "tunables", "feature_flag"} <= names
    assert {name for name, secdef, _ in rows if secdef} <= READER_DEFINER_API
    assert {name for name, _, vol in rows if vol == "v"} == set()


def test_admin_reaches_every_function(conn):
    missing = conn.execute(
        """
        SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'learning'::regnamespace
          AND NOT has_function_privilege('learning_admin', p.oid, 'EXECUTE')
        """
    ).fetchall()
    assert missing == []


def test_roles_file_is_idempotent(conn):
    acl = """
        SELECT p.oid::regprocedure::text, p.proacl::text FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'learning'::regnamespace
        UNION ALL
        SELECT c.oid::regclass::text, c.relacl::text FROM pg_catalog.pg_class AS c
        WHERE c.relnamespace IN ('learning'::regnamespace, 'public'::regnamespace)
        ORDER BY 1
    """
    before = conn.execute(acl).fetchall()
    conn.execute((SQL_DIR / "090_roles.sql").read_bytes())
    assert conn.execute(acl).fetchall() == before


def test_writer_cannot_call_a_definer_function_directly(db_url):
    with psycopg.connect(db_url) as c:
        c.execute("SET ROLE learning_writer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT learning.ensure_decision_maker_config()")
