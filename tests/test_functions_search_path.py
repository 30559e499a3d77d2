"""Every function in schema learning pins search_path to pg_catalog, pg_temp.

pg_temp is named last on purpose: a schema left off the path is still searched *first* for relation
and type names when it is the session's temporary schema, so `''` let a caller's temp domain named
`jsonb` stand in for the catalog's inside a SECURITY DEFINER function (design §2).

The exceptions are non-SECURITY-DEFINER helpers in SQL with a SQL-standard body (RETURN /
BEGIN ATOMIC), whose names are bound when they are created: a SET clause would stop them being
inlined. The IMMUTABLE ones are the design's exception; the STABLE ones (a body PostgreSQL marks
STABLE, such as jsonb_build_object or a text-to-array cast, is never inlined into an IMMUTABLE
function) are the "other exceptions" a test must list (design §2). Both are listed here by name, so
a new exception shows up in review as a change to this file, and each must really be inlined (three
of them were not, and were planned again in every trigger transaction). The two allocation rule
functions are the third kind: PL/pgSQL that names every type with a keyword or its schema (below).
"""

from __future__ import annotations

import re

INLINABLE_EXCEPTIONS = {
    # sql/020_allocation_fold.sql
    "_decay",
    "_scaled",
    "_ewma_fold_weighted",
    "ewma_long",
    "ewma_short",
    "starting_allocation",
    "tracked_timeframes",
    "trade_roi",
    # sql/022_allocation_positions.sql: a row's share of its token's total (design §6)
    "_position_share",
    # sql/023_allocation_trigger.sql, on the closed_trades trigger's hot path (design §1)
    "_fmt",
    "_fmt_allocation",
    # sql/025_slices.sql (strength helper)
    "scope_dimensions",
    # sql/026_lessons.sql: the lesson writer's number comparison
    "_num_close",
    # sql/050_strength.sql: table functions inlined into the builder's statements (design §11)
    "strength_stats_of",
    "strength_outcome",
    # sql/030_episodes.sql (tuning helper)
    "_flag",
    "_num",
}

# STABLE exceptions: the body calls something PostgreSQL marks STABLE, so only a STABLE declaration
# lets the planner inline it (all on the closed_trades trigger's hot path, design §1).
STABLE_INLINABLE_EXCEPTIONS = {
    "_series_json",  # jsonb_build_object (STABLE: timestamptz output follows TimeZone)
    "_decision_maker_config",  # jsonb_build_object, to_jsonb
    "_decision_maker_output",  # jsonb_build_object
}

# PL/pgSQL exceptions: the allocation rule functions and the EWMA fold, called at every trade
# (design §4, §5). A SET clause costs ~7,000 instructions a call in PostgreSQL 15 (restoring it
# visits every setting); instead they spell every type with a keyword (integer, double precision,
# boolean) or its schema (pg_catalog.text), so no caller's temp type can be bound when they are
# compiled, and PostgreSQL plans their expressions again whenever the caller's search_path differs.
# IMMUTABLE, not definers; tests/test_security_temp_hijack.py compiles them in an attacker's session
# before its trades.
QUALIFIED_PLPGSQL_EXCEPTIONS = {"allocation_step", "evidence_split", "ewma_fold"}

# Exceptions the planner does not inline, and why that is acceptable.
NOT_INLINED = {
    # A sub-select (jsonb_each) is never inlined; it runs once per distinct scope, not per row.
    "scope_dimensions",
}

PINNED = "search_path=pg_catalog, pg_temp"

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
            if settings != [PINNED]:
                bad_value.append(f"{signature}: {settings}")
            continue
        if volatility in ("i", "s") and language == "sql" and standard_body and not definer:
            exceptions.add((name, volatility))
        elif name in QUALIFIED_PLPGSQL_EXCEPTIONS and volatility == "i" and language == "plpgsql" and not definer:
            exceptions.add((name, "plpgsql"))
        else:
            unpinned.append(signature)
    assert unpinned == [], f"functions without SET search_path = pg_catalog, pg_temp: {unpinned}"
    assert bad_value == [], f"functions pinning search_path to something else: {bad_value}"
    expected = (
        {(n, "i") for n in INLINABLE_EXCEPTIONS}
        | {(n, "s") for n in STABLE_INLINABLE_EXCEPTIONS}
        | {(n, "plpgsql") for n in QUALIFIED_PLPGSQL_EXCEPTIONS}
    )
    assert exceptions == expected, (
        f"inlinable exceptions changed: new {sorted(exceptions - expected)}, "
        f"gone {sorted(expected - exceptions)}; review them and update INLINABLE_EXCEPTIONS, "
        "STABLE_INLINABLE_EXCEPTIONS or QUALIFIED_PLPGSQL_EXCEPTIONS"
    )


EXCEPTION_SIGNATURES = """
SELECT p.proname, p.proretset, ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes) AS t)
FROM pg_proc AS p
WHERE p.pronamespace = 'learning'::regnamespace AND p.proname = ANY(%(names)s)
ORDER BY 1
"""


def test_every_exception_is_inlined_where_it_is_called(conn):
    """An unpinned helper exists to be inlined: EXPLAIN VERBOSE of a call on non-constant arguments
    must not show it. (An IMMUTABLE function whose body is STABLE is silently not inlined, and a
    helper PostgreSQL does not inline is planned again in each transaction of a plpgsql caller.)"""
    names = sorted(INLINABLE_EXCEPTIONS | STABLE_INLINABLE_EXCEPTIONS)
    rows = conn.execute(EXCEPTION_SIGNATURES, {"names": names}).fetchall()
    assert sorted(r[0] for r in rows) == names  # each listed helper exists, once
    inlined, not_inlined = set(), set()
    for name, returns_set, types in rows:
        # OFFSET 0 keeps the arguments as columns, so nothing is folded to a constant first.
        columns = ", ".join(f"NULL::{t} AS a{i}" for i, t in enumerate(types)) or "1 AS unused"
        args = ", ".join(f"v.a{i}" for i in range(len(types)))
        call = f"learning.{name}({args})"
        query = (
            f"SELECT * FROM (SELECT {columns} OFFSET 0) AS v, {call} AS f"
            if returns_set
            else f"SELECT {call} FROM (SELECT {columns} OFFSET 0) AS v"
        )
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {query}"))
        # Any learning function left in the plan (this one, or a helper it calls) was not inlined.
        (not_inlined if re.search(r"\blearning\.\w+\(", plan) else inlined).add(name)
    assert not_inlined == NOT_INLINED, f"not inlined: {sorted(not_inlined)} (expected only {sorted(NOT_INLINED)})"
    assert len(inlined) == len(names) - len(NOT_INLINED)


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


QUALIFIED_BODIES = """
SELECT p.proname, p.prosrc FROM pg_proc AS p
WHERE p.pronamespace = 'learning'::regnamespace AND p.proname = ANY(%(names)s)
"""
# Type names a body may spell unqualified: SQL keywords, which PostgreSQL maps to pg_catalog itself.
KEYWORD_TYPES = r"(?:integer|double precision|boolean)"


def test_qualified_plpgsql_exceptions_spell_no_type_by_a_bare_name(conn):
    """Every declaration and cast in their bodies is a keyword type or a schema-qualified one: a bare
    `text` would be looked up in the caller's temp schema first when the function is compiled."""
    rows = conn.execute(QUALIFIED_BODIES, {"names": sorted(QUALIFIED_PLPGSQL_EXCEPTIONS)}).fetchall()
    assert sorted(r[0] for r in rows) == sorted(QUALIFIED_PLPGSQL_EXCEPTIONS)
    for name, body in rows:
        body = re.sub(r"'(?:[^']|'')*'", "''", re.sub(r"--[^\n]*", "", body))
        casts = re.findall(r"::\s*([\w.]+(?: precision)?)", body)
        assert [c for c in casts if not re.fullmatch(KEYWORD_TYPES + r"|\w+\.\w+", c)] == [], name
        declare = body.split("BEGIN", 1)[0]
        declared = re.findall(
            r"^ {4}\w+ (?:CONSTANT )?([\w.]+(?: precision)?)(?: \[\])?\s*(?::=|;)", declare, re.MULTILINE
        )
        assert declared, name
        assert [t for t in declared if not re.fullmatch(KEYWORD_TYPES + r"|\w+\.\w+", t)] == [], name
