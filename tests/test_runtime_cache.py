"""The single call's cache of a pattern's overrides never answers differently from PostgreSQL.

apply_strength_overrides keeps each pattern's active overrides per connection under the generation
of pm_overrides (learning.pm_overrides_generation, moved by a statement trigger in the writer's own
transaction). The oracle here is the uncached indexed query (`scope_subset <@ scope` in PostgreSQL),
run after every write: inserts, updates, deletes, TRUNCATE, writes by another connection, writes
that are rolled back, and requests the cache must hand to PostgreSQL (nested or numeric values,
NaN, NUL characters, lone surrogates).
"""

from __future__ import annotations

import json

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
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM public.pm_overrides")
        for o in start:
            _write(conn, "insert", o)
        for (kind, arg), requests in steps:
            _write(conn, kind, arg)
            _assert_same(conn, requests)
            _assert_same(conn, requests)  # the second time from the cache


def test_a_write_committed_by_another_connection_is_seen_by_the_next_call(conn, db_url):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        assert apply_strength_overrides(conn, "pm.x", {"chain": "sol"}, 0.5, 0.5).matches == []
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute(INSERT, {"p": "pm.x", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        hit = apply_strength_overrides(conn, "pm.x", {"chain": "sol"}, 0.5, 0.5)
        assert len(hit.matches) == 1 and hit.a_final > 0.5
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute("UPDATE public.pm_overrides SET dira = -1.0 WHERE pattern_key = 'pm.x'")
        assert apply_strength_overrides(conn, "pm.x", {"chain": "sol"}, 0.5, 0.5).a_final < 0.5
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute("UPDATE public.pm_overrides SET status = 'inactive' WHERE pattern_key = 'pm.x'")
        assert apply_strength_overrides(conn, "pm.x", {"chain": "sol"}, 0.5, 0.5).matches == []
    finally:
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


def test_the_generation_moves_only_with_changed_rows(conn):
    def generation():
        return conn.execute("SELECT generation FROM learning.pm_overrides_generation").fetchone()[0]

    with conn.transaction(force_rollback=True):
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
            _write(conn, kind, arg)
            seen.append(generation())
        assert len(set(seen)) == len(seen)  # every change a new value
        assert seen == sorted(seen)


def test_the_cache_is_per_connection_and_a_hit_reads_no_override(conn, db_url):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.c", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        apply_strength_overrides(conn, "pm.c", {"chain": "sol"}, 0.5, 0.5)
        entry = runtime._CACHES[conn]["pm.c"]
        apply_strength_overrides(conn, "pm.c", {"chain": "sol"}, 0.5, 0.5)
        assert runtime._CACHES[conn]["pm.c"] is entry  # not read again
        with psycopg.connect(db_url, autocommit=True) as other:
            assert other not in runtime._CACHES
            assert len(apply_strength_overrides(other, "pm.c", {"chain": "sol"}, 0.5, 0.5).matches) == 1
            assert runtime._CACHES[other]["pm.c"] is not entry
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


@pytest.mark.parametrize(
    "scope",
    [
        {"chain": float("nan")},
        {"chain": "so\x00l"},
        {"chain": "\ud800"},
        {"ch\x00ain": "sol"},
        {"chain": float("inf")},
    ],
)
def test_a_scope_jsonb_refuses_is_refused_as_before(conn, scope):
    with conn.transaction(force_rollback=True):
        conn.execute(INSERT, {"p": "pm.e", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        apply_strength_overrides(conn, "pm.e", {"chain": "sol"}, 0.5, 0.5)  # the pattern is cached
        with pytest.raises((psycopg.DataError, ValueError)), conn.transaction():
            apply_strength_overrides(conn, "pm.e", scope, 0.5, 0.5)


def test_overrides_with_numeric_or_nested_values_are_matched_by_postgresql(conn):
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM public.pm_overrides")
        for s in ['{"k": 1}', '{"k": [1]}', '{"k": 0.1000000000000000055511151231257827}', '{"k": "1"}']:
            conn.execute(INSERT, {"p": "pm.n", "s": s, "c": 0.8, "a": 1.0, "e": -1.0})
        requests = [("pm.n", {"k": 1.0}), ("pm.n", {"k": [1, 2]}), ("pm.n", {"k": 0.1}), ("pm.n", {"k": "1"})]
        _assert_same(conn, requests)
        _assert_same(conn, requests)
        assert [len(apply_strength_overrides(conn, p, s, 0.5, 0.5).matches) for p, s in requests] == [1, 1, 0, 1]
