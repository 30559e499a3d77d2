"""Issue 2 / SPEC 12: every function in schema learning pins search_path (to '').

The only exceptions are IMMUTABLE, non-SECURITY-DEFINER helpers in SQL with a SQL-standard body
(RETURN / BEGIN ATOMIC): a SET clause would stop them being inlined. They are listed here by name,
so a new exception shows up in review as a change to this file.
"""

from __future__ import annotations

INLINABLE_EXCEPTIONS = {
    # sql/020_allocation.sql
    "_decay",
    "_scaled",
    "ewma_fold",
    "ewma_long",
    "ewma_short",
    "starting_allocation",
    "tracked_timeframes",
    "trade_roi",
    # sql/020_allocation.sql, on the closed_trades trigger's hot path (bench helper, issue 6)
    "_fmt",
    "_fmt_allocation",
    "_series_state",
    # sql/025_slices.sql (strength helper)
    "scope_dimensions",
    # sql/050_strength.sql: a table function inlined into the builder's statement (bench, issue 6)
    "strength_stats_of",
    "strength_outcome",
    # sql/030_episodes.sql (tuning helper)
    "_flag",
    "_num",
    "_num_close",
}

FUNCTIONS = """
SELECT
    p.oid::regprocedure::text,
    p.proname,
    p.provolatile,
    l.lanname,
    p.prosqlbody IS NOT NULL,
    p.prosecdef,
    coalesce(p.proconfig, '{}')
FROM pg_proc AS p
INNER JOIN pg_language AS l ON l.oid = p.prolang
WHERE p.pronamespace = 'learning'::regnamespace AND p.prokind IN ('f', 'p')
ORDER BY 1
"""


def test_every_learning_function_pins_search_path(conn):
    rows = conn.execute(FUNCTIONS).fetchall()
    assert len(rows) > 20  # the schema is really there
    unpinned, exceptions, bad_value = [], set(), []
    for signature, name, volatility, language, standard_body, definer, config in rows:
        settings = [c for c in config if c.startswith("search_path=")]
        if settings:
            if settings != ['search_path=""']:
                bad_value.append(f"{signature}: {settings}")
            continue
        if volatility == "i" and language == "sql" and standard_body and not definer:
            exceptions.add(name)
        else:
            unpinned.append(signature)
    assert unpinned == [], f"functions without SET search_path = '': {unpinned}"
    assert bad_value == [], f"functions pinning search_path to something other than '': {bad_value}"
    assert exceptions == INLINABLE_EXCEPTIONS, (
        f"inlinable exceptions changed: new {sorted(exceptions - INLINABLE_EXCEPTIONS)}, "
        f"gone {sorted(INLINABLE_EXCEPTIONS - exceptions)}; review them and update INLINABLE_EXCEPTIONS"
    )


def test_inlinable_exceptions_do_not_depend_on_the_callers_search_path(conn):
    """The exceptions name every object with its schema: they work with an empty search_path."""
    conn.execute("SET search_path = ''")
    try:
        assert conn.execute("SELECT learning.trade_roi(5)").fetchone()[0] == 0.05
        assert conn.execute("SELECT learning.tracked_timeframes()").fetchone()[0] == ["15m", "1h", "4h"]
        state = conn.execute("SELECT learning.ewma_fold(NULL, 0.1, 0, 86400, 86400)").fetchone()[0]
        assert conn.execute("SELECT learning.ewma_short(%(s)s::float8[])", {"s": state}).fetchone()[0] == 0.1
        assert conn.execute("SELECT learning._decay(86400, 86400)").fetchone()[0] > 0.36
    finally:
        conn.execute("RESET search_path")
