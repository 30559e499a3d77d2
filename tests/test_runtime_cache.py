"""The connection's cache of a pattern's overrides never answers differently from PostgreSQL (design §13).

apply_strength_overrides keeps each pattern's active overrides per connection under the generation
of pm_overrides (the sum of learning.pm_overrides_changes' weights: one row per committed changing
transaction, merged from time to time). The oracle here is the uncached indexed query
(`scope_subset <@ scope` in PostgreSQL), run after every write: inserts, updates, deletes, TRUNCATE,
writes by another connection, writes that are rolled back, and requests the cache must hand to
PostgreSQL (nested or numeric values, NaN, NUL characters, lone surrogates).
"""

from __future__ import annotations

import inspect
import json
import sys

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.runtime import STRENGTH_MATCHES, _fetch, apply_strength_overrides

INSERT = """
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score,
    dira, dire, edge_raw_roi, n, status)
VALUES (%(p)s, 'pm_strength', %(s)s::jsonb, 1, %(c)s, %(a)s, %(e)s, 0.01, 40, 'active')
ON CONFLICT DO NOTHING
"""

KEYS = st.sampled_from(["chain", "tf", "mcap"])
PLAIN = st.sampled_from(["sol", "eth", "1", "true", ""])
ANY_VALUE = st.one_of(PLAIN, st.sampled_from([1, 1.0, True, None, [1], {"x": 1}]))
OVERRIDE = st.tuples(
    st.sampled_from(["pm.a", "pm.b"]),
    st.dictionaries(KEYS, PLAIN, max_size=3),
    st.floats(0.0, 1.0),
    st.floats(-1.0, 1.0),
    st.floats(-1.0, 1.0),
)
WRITE = st.one_of(
    st.tuples(st.just("insert"), OVERRIDE),
    st.tuples(st.just("deactivate"), st.integers(0, 30)),
    st.tuples(st.just("reactivate"), st.integers(0, 30)),
    st.tuples(st.just("retune"), st.integers(0, 30)),
    st.tuples(st.just("delete"), st.integers(0, 30)),
    st.tuples(st.just("nothing"), st.just(None)),
    st.tuples(st.just("truncate"), st.just(None)),
)
REQUEST = st.tuples(st.sampled_from(["pm.a", "pm.b", "pm.c"]), st.dictionaries(KEYS, ANY_VALUE, max_size=3))


def _oracle(conn, pattern_key, scope):
    """Override ids PostgreSQL's containment finds (the uncached query)."""
    _, found = _fetch(conn, STRENGTH_MATCHES, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    return found.ids


def _write(conn, kind, arg):
    nth = "id = (SELECT id FROM public.pm_overrides ORDER BY id OFFSET %(k)s LIMIT 1)"
    if kind == "insert":
        p, s, c, a, e = arg
        conn.execute(INSERT, {"p": p, "s": json.dumps(s), "c": c, "a": a, "e": e})
    elif kind == "deactivate":
        conn.execute(f"UPDATE public.pm_overrides SET status = 'inactive' WHERE {nth}", {"k": arg})
    elif kind == "reactivate":
        conn.execute(f"UPDATE public.pm_overrides SET status = 'active' WHERE {nth}", {"k": arg})
    elif kind == "retune":
        conn.execute(f"UPDATE public.pm_overrides SET dira = -dira, confidence_score = 0.9 WHERE {nth}", {"k": arg})
    elif kind == "delete":
        conn.execute(f"DELETE FROM public.pm_overrides WHERE {nth}", {"k": arg})
    elif kind == "nothing":
        conn.execute("UPDATE public.pm_overrides SET n = n WHERE false")
    elif kind == "truncate":
        conn.execute("TRUNCATE public.pm_overrides")


def _assert_same(conn, requests):
    for pattern_key, scope in requests:
        got = apply_strength_overrides(conn, pattern_key, scope, 0.5, 0.5)
        assert [m.override_id for m in got.matches] == _oracle(conn, pattern_key, scope), (pattern_key, scope)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.lists(OVERRIDE, max_size=20),
    steps=st.lists(st.tuples(WRITE, st.lists(REQUEST, min_size=1, max_size=4)), min_size=1, max_size=8),
)
def test_cached_calls_equal_postgresql_after_every_write(conn, start, steps):
    # Writes commit (autocommit), so the calls between them are answered from the cache.
    conn.execute("DELETE FROM public.pm_overrides")
    for o in start:
        _write(conn, "insert", o)
    for (kind, arg), requests in steps:
        _write(conn, kind, arg)
        _assert_same(conn, requests)
        _assert_same(conn, requests)  # the second time from the cache
        assert runtime._CACHES[conn].patterns  # the cache answered
    conn.execute("DELETE FROM public.pm_overrides")


def test_a_rolled_back_write_never_comes_back_from_the_cache(conn, db_url):
    """The cache filled inside a transaction that rolls back is keyed by a generation no committed
    state will ever have (sequence values are not reused)."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(INSERT, {"p": "pm.r", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
            assert len(apply_strength_overrides(conn, "pm.r", {"chain": "sol"}, 0.5, 0.5).matches) == 1
        assert apply_strength_overrides(conn, "pm.r", {"chain": "sol"}, 0.5, 0.5).matches == []
        with psycopg.connect(db_url, autocommit=True) as other:  # the next committed change
            other.execute(INSERT, {"p": "pm.r", "s": '{"tf": "1h"}', "c": 0.8, "a": 1.0, "e": -1.0})
        assert apply_strength_overrides(conn, "pm.r", {"chain": "sol"}, 0.5, 0.5).matches == []
        assert len(apply_strength_overrides(conn, "pm.r", {"tf": "1h"}, 0.5, 0.5).matches) == 1
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


GENERATION = "SELECT sum(weight)::bigint FROM learning.pm_overrides_changes"


def test_the_generation_moves_with_each_committed_change_only(conn):
    def generation():
        return conn.execute(GENERATION).fetchone()[0]

    seen = [generation()]
    conn.execute("UPDATE public.pm_overrides SET n = n WHERE false")
    conn.execute("DELETE FROM public.pm_overrides WHERE false")
    assert generation() == seen[-1]  # statements that changed nothing
    for kind, arg in [
        ("insert", ("pm.g", {"chain": "sol"}, 0.5, 0.5, 0.5)),
        ("retune", 0),
        ("delete", 0),
        ("truncate", None),
    ]:
        with conn.transaction():
            _write(conn, kind, arg)
            _write(conn, "retune", 0)
        seen.append(generation())
    with conn.transaction(force_rollback=True):
        _write(conn, "insert", ("pm.g", {"chain": "eth"}, 0.5, 0.5, 0.5))
    assert generation() == seen[-1]  # a rolled-back change moves nothing
    assert [b - a for a, b in zip(seen, seen[1:], strict=False)] == [1, 1, 1, 1]  # one per transaction


def test_the_change_rows_are_merged_and_the_cache_stays_exact(conn, db_url):
    """More than 32 rows: a READ COMMITTED writer merges the others into its own; the generation goes
    on counting one per committed change, and cached answers follow every change."""
    conn.execute("DELETE FROM public.pm_overrides")
    before = conn.execute(GENERATION).fetchone()[0]
    with psycopg.connect(db_url, autocommit=True) as writer:
        for k in range(80):
            writer.execute(INSERT, {"p": "pm.c2", "s": json.dumps({"k": str(k)}), "c": 0.8, "a": 1.0, "e": -1.0})
            got = apply_strength_overrides(conn, "pm.c2", {"k": str(k)}, 0.5, 0.5)
            assert [m.override_id for m in got.matches] == _oracle(conn, "pm.c2", {"k": str(k)})
            assert len(got.matches) == 1
    assert conn.execute(GENERATION).fetchone()[0] == before + 80  # one per committed insert
    assert conn.execute("SELECT count(*) FROM learning.pm_overrides_changes").fetchone()[0] <= 33
    conn.execute("DELETE FROM public.pm_overrides")


def test_repeatable_read_writers_of_different_rows_both_commit(conn, db_url):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        with psycopg.connect(db_url) as t1, psycopg.connect(db_url, autocommit=True) as t2:
            t1.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            t1.execute("SELECT 1")  # the snapshot is taken
            t2.execute(INSERT, {"p": "pm.rr", "s": '{"k": "a"}', "c": 0.8, "a": 1.0, "e": -1.0})
            t1.execute(INSERT, {"p": "pm.rr", "s": '{"k": "b"}', "c": 0.8, "a": 1.0, "e": -1.0})
            t1.commit()
        assert len(apply_strength_overrides(conn, "pm.rr", {"k": "b"}, 0.5, 0.5).matches) == 1
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_writers_of_different_override_rows_neither_wait_nor_deadlock(conn, db_url):
    """T1 changes row A and stays open; T2 changes row B in one statement and commits; T1 then
    changes row B too. With a generation moved at statement time, T2 waited on T1's generation row
    lock while holding row B, and T1's next statement closed the cycle (a deadlock)."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        for s in ('{"chain": "a"}', '{"chain": "b"}'):
            conn.execute(INSERT, {"p": "pm.d", "s": s, "c": 0.5, "a": 0.1, "e": 0.1})
        ids = [r[0] for r in conn.execute("SELECT id FROM public.pm_overrides ORDER BY id").fetchall()]
        with psycopg.connect(db_url) as t1, psycopg.connect(db_url, autocommit=True) as t2:
            t2.execute("SET lock_timeout = '2s'")
            t1.execute("UPDATE public.pm_overrides SET n = n + 1 WHERE id = %s", (ids[0],))
            t2.execute("UPDATE public.pm_overrides SET n = n + 1 WHERE id = %s", (ids[1],))  # no wait
            t1.execute("UPDATE public.pm_overrides SET n = n + 1 WHERE id = %s", (ids[1],))
            t1.commit()
        assert conn.execute("SELECT n FROM public.pm_overrides WHERE id = %s", (ids[1],)).fetchone()[0] == 42
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_a_transaction_sees_its_own_uncommitted_changes(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.o", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        assert len(apply_strength_overrides(conn, "pm.o", {"chain": "sol"}, 0.5, 0.5).matches) == 1  # cached
        with conn.transaction(force_rollback=True):
            conn.execute("UPDATE public.pm_overrides SET status = 'inactive' WHERE pattern_key = 'pm.o'")
            assert apply_strength_overrides(conn, "pm.o", {"chain": "sol"}, 0.5, 0.5).matches == []
        assert len(apply_strength_overrides(conn, "pm.o", {"chain": "sol"}, 0.5, 0.5).matches) == 1
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_an_override_python_cannot_parse_leaves_the_pattern_to_postgresql(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    conn.execute(INSERT, {"p": "pm.h", "s": '{"k": "a"}', "c": 0.8, "a": 1.0, "e": -1.0})
    conn.execute(INSERT, {"p": "pm.h", "s": '{"z": 1' + "0" * 5000 + "}", "c": 0.8, "a": 1.0, "e": -1.0})
    for _ in range(2):
        assert len(apply_strength_overrides(conn, "pm.h", {"k": "a"}, 0.5, 0.5).matches) == 1
    assert runtime._CACHES[conn].get("pm.h")[1].nested == [1]  # the number Python cannot hold: PostgreSQL's
    conn.execute("DELETE FROM public.pm_overrides")


def test_an_override_nested_deeper_than_python_reads_leaves_the_pattern_to_postgresql(conn):
    """jsonb can hold nesting Python's json refuses (RecursionError; here at a lowered recursion limit,
    as a btree index row caps what the table holds): the pattern is answered by the indexed query."""
    conn.execute("DELETE FROM public.pm_overrides")
    limit = sys.getrecursionlimit()
    try:
        conn.execute(INSERT, {"p": "pm.dp", "s": '{"k": "a"}', "c": 0.8, "a": 1.0, "e": -1.0})
        deep = '{"z": ' + "[" * 600 + "]" * 600 + "}"
        conn.execute(INSERT, {"p": "pm.dp", "s": deep, "c": 0.8, "a": 1.0, "e": -1.0})
        sys.setrecursionlimit(len(inspect.stack()) + 400)
        for _ in range(2):
            got = apply_strength_overrides(conn, "pm.dp", {"k": "a"}, 0.5, 0.5)
            assert [m.override_id for m in got.matches] == _oracle(conn, "pm.dp", {"k": "a"})
            assert len(got.matches) == 1
        assert runtime._CACHES[conn].get("pm.dp")[1] is runtime._UNPARSED  # kept: the indexed query answers
    finally:
        sys.setrecursionlimit(limit)
        conn.execute("DELETE FROM public.pm_overrides")


def test_the_cache_is_per_connection_and_a_hit_reads_no_override(conn, db_url):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.c", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        apply_strength_overrides(conn, "pm.c", {"chain": "sol"}, 0.5, 0.5)
        entry = runtime._CACHES[conn].get("pm.c")[1]
        apply_strength_overrides(conn, "pm.c", {"chain": "sol"}, 0.5, 0.5)
        assert runtime._CACHES[conn].get("pm.c")[1] is entry  # not read again
        with psycopg.connect(db_url, autocommit=True) as other:
            assert other not in runtime._CACHES
            assert len(apply_strength_overrides(other, "pm.c", {"chain": "sol"}, 0.5, 0.5).matches) == 1
            assert runtime._CACHES[other].get("pm.c")[1] is not entry
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


@pytest.mark.parametrize(
    "scope",
    [
        {"chain": "sol", "z": 10**5000},
        {"chain": float("nan")},
        {"chain": "so\x00l"},
        {"chain": "\ud800"},
        {"ch\x00ain": "sol"},
        {"chain": float("inf")},
    ],
)
def test_a_scope_jsonb_refuses_is_refused_as_before(conn, scope):
    conn.execute("DELETE FROM public.pm_overrides WHERE pattern_key = 'pm.e'")
    conn.execute(INSERT, {"p": "pm.e", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
    apply_strength_overrides(conn, "pm.e", {"chain": "sol"}, 0.5, 0.5)  # the pattern is cached
    assert runtime._CACHES[conn].get("pm.e")[1] is not None
    with pytest.raises((psycopg.DataError, ValueError)), conn.transaction():
        apply_strength_overrides(conn, "pm.e", scope, 0.5, 0.5)


def test_overrides_with_numeric_or_nested_values_match_as_in_postgresql(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    for s in ['{"k": 1}', '{"k": [1]}', '{"k": 0.1000000000000000055511151231257827}', '{"k": "1"}']:
        conn.execute(INSERT, {"p": "pm.n", "s": s, "c": 0.8, "a": 1.0, "e": -1.0})
    requests = [("pm.n", {"k": 1.0}), ("pm.n", {"k": [1, 2]}), ("pm.n", {"k": 0.1}), ("pm.n", {"k": "1"})]
    _assert_same(conn, requests)
    _assert_same(conn, requests)
    assert [len(apply_strength_overrides(conn, p, s, 0.5, 0.5).matches) for p, s in requests] == [1, 1, 0, 1]
    assert runtime._CACHES[conn].get("pm.n")[1].nested == [1, 2]  # [1] and the inexact number: PostgreSQL's
    conn.execute("DELETE FROM public.pm_overrides")


def test_a_writing_transaction_never_fills_the_cache(conn, db_url):
    """A transaction's own row counts once however many statements it runs, and it may roll back:
    what a call reads inside it must not be kept under a generation others will see."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.w", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        scope = {"chain": "sol", "tf": "1h"}
        with conn.transaction():
            conn.execute(INSERT, {"p": "pm.w", "s": json.dumps(scope), "c": 0.8, "a": 1.0, "e": -1.0})
            assert len(apply_strength_overrides(conn, "pm.w", scope, 0.5, 0.5).matches) == 2
            conn.execute(
                "UPDATE public.pm_overrides SET status = 'inactive' WHERE scope_subset = %s::jsonb",
                ('{"chain": "sol"}',),
            )
            assert len(apply_strength_overrides(conn, "pm.w", scope, 0.5, 0.5).matches) == 1
        assert len(apply_strength_overrides(conn, "pm.w", scope, 0.5, 0.5).matches) == 1
        with conn.transaction(force_rollback=True):
            conn.execute(INSERT, {"p": "pm.w", "s": '{"x": "1"}', "c": 0.8, "a": 1.0, "e": -1.0})
            assert len(apply_strength_overrides(conn, "pm.w", {"x": "1"}, 0.5, 0.5).matches) == 1
        with psycopg.connect(db_url, autocommit=True) as other:  # the same count of changes, committed
            other.execute(INSERT, {"p": "pm.w", "s": '{"y": "1"}', "c": 0.8, "a": 1.0, "e": -1.0})
        assert apply_strength_overrides(conn, "pm.w", {"x": "1"}, 0.5, 0.5).matches == []
    finally:
        conn.execute("DELETE FROM public.pm_overrides")
