"""The connection's cache of a batch's overrides never answers differently from PostgreSQL (design §13).

apply_strength_overrides_batch keeps, per connection and per set of patterns asked, its overrides
prepared for matching (_MatchIndex) under the generation of pm_overrides, in the cache that keeps
each pattern's for the single call. The oracle is the uncached indexed query (`scope_subset <@
scope`), asked after every write: committed ones (this or another connection), rolled-back ones,
and a transaction's own uncommitted ones, which must be seen by it and never kept.
"""

from __future__ import annotations

import json

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.runtime import apply_strength_overrides, apply_strength_overrides_batch
from test_runtime_cache import INSERT, OVERRIDE, REQUEST, WRITE, _oracle, _write


def _batch_ids(conn, requests):
    return [[m.override_id for m in r.matches] for r in apply_strength_overrides_batch(conn, requests)]


def _assert_same(conn, requests):
    rows = [(p, s, 0.5, 0.5) for p, s in requests]
    assert _batch_ids(conn, rows) == [_oracle(conn, p, s) for p, s in requests]


def _entry(conn, patterns):
    cache = runtime._CACHES.get(conn)
    return cache.get(tuple(sorted(patterns)))[1] if cache is not None else None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.lists(OVERRIDE, max_size=20),
    steps=st.lists(st.tuples(WRITE, st.lists(REQUEST, min_size=1, max_size=6)), min_size=1, max_size=8),
)
def test_cached_batches_equal_postgresql_after_every_write(conn, start, steps):
    conn.execute("DELETE FROM public.pm_overrides")
    for o in start:
        _write(conn, "insert", o)
    for (kind, arg), requests in steps:
        _write(conn, kind, arg)
        _assert_same(conn, requests)
        entry = _entry(conn, {p for p, _ in requests})
        assert entry is not None  # kept under the generation it was read in
        _assert_same(conn, requests)  # the second time from the cache
        assert _entry(conn, {p for p, _ in requests}) is entry
    conn.execute("DELETE FROM public.pm_overrides")


def test_a_hit_reads_no_override_and_another_connections_write_is_seen(conn, db_url):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.x", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        rows = [("pm.x", {"chain": "sol"}, 0.5, 0.5), ("pm.y", {"chain": "sol"}, 0.5, 0.5)]
        assert _batch_ids(conn, rows)[1] == []
        entry = _entry(conn, {"pm.x", "pm.y"})
        apply_strength_overrides_batch(conn, rows)
        assert _entry(conn, {"pm.x", "pm.y"}) is entry  # not read again
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute(INSERT, {"p": "pm.y", "s": '{"chain": "sol"}', "c": 0.8, "a": -1.0, "e": -1.0})
        after = apply_strength_overrides_batch(conn, rows)
        assert len(after[1].matches) == 1 and after[1].a_final < 0.5
        assert _entry(conn, {"pm.x", "pm.y"}) is not entry
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute("UPDATE public.pm_overrides SET status = 'inactive' WHERE pattern_key = 'pm.x'")
        assert _batch_ids(conn, rows)[0] == []
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_a_writing_transaction_sees_its_own_changes_and_never_fills_the_cache(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.w", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        rows = [("pm.w", {"chain": "sol", "tf": "1h"}, 0.5, 0.5)]
        assert len(_batch_ids(conn, rows)[0]) == 1
        entry = _entry(conn, {"pm.w"})
        with conn.transaction(force_rollback=True):
            conn.execute(INSERT, {"p": "pm.w", "s": '{"tf": "1h"}', "c": 0.8, "a": 1.0, "e": -1.0})
            assert len(_batch_ids(conn, rows)[0]) == 2  # its own insert
            assert len(_batch_ids(conn, rows)[0]) == 2
            conn.execute("UPDATE public.pm_overrides SET status = 'inactive' WHERE pattern_key = 'pm.w'")
            assert _batch_ids(conn, rows)[0] == []
            assert _entry(conn, {"pm.w"}) is entry  # nothing read here was kept
        assert len(_batch_ids(conn, rows)[0]) == 1  # rolled back: as before
        assert _entry(conn, {"pm.w"}) is entry
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_returned_nested_values_are_the_callers_to_change(conn):
    """Overrides with a list or object value are kept in the cache too (PostgreSQL matches them):
    what a batch returns must be the caller's copy, down to the nested values."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.n", "s": '{"k": [1], "m": {"a": "b"}}', "c": 0.8, "a": 1.0, "e": -1.0})
        rows = [("pm.n", {"k": [1, 2], "m": {"a": "b", "c": "d"}}, 0.5, 0.5)]
        first = apply_strength_overrides_batch(conn, rows)[0].matches[0]
        first.scope_subset["k"].append(9)
        first.scope_subset["m"]["x"] = "y"
        first.scope_subset["z"] = "added"
        again = apply_strength_overrides_batch(conn, rows)
        assert _entry(conn, {"pm.n"}) is not None  # answered from the cache
        assert [m.scope_subset for m in again[0].matches] == [{"k": [1], "m": {"a": "b"}}]
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_no_generation_is_never_cached(conn):
    """With learning.pm_overrides_changes emptied by hand there is no generation: every call and
    batch reads the overrides, and nothing is kept under it."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.g0", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        runtime._CACHES.pop(conn, None)
        with conn.transaction(force_rollback=True):
            conn.execute("DELETE FROM learning.pm_overrides_changes")
            for _ in range(2):
                got = _batch_ids(conn, [("pm.g0", {"chain": "sol"}, 0.5, 0.5)])
                assert got == [_oracle(conn, "pm.g0", {"chain": "sol"})] and len(got[0]) == 1
                assert len(apply_strength_overrides(conn, "pm.g0", {"chain": "sol"}, 0.5, 0.5).matches) == 1
            assert _entry(conn, {"pm.g0"}) is None
            assert runtime._CACHES[conn].get("pm.g0")[1] is None
    finally:
        conn.execute("DELETE FROM public.pm_overrides")


def test_every_lookup_path_and_the_eviction_agree_with_postgresql(conn, monkeypatch):
    """Dense tables, sorted keys (forced with _DENSE_KEYS = 0) and runs of one request (_MATCH_MATRIX_CELLS
    = 0) give the same matches; past _CACHE_PATTERN_SETS sets of patterns the cache starts again."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        for k, scope in enumerate(
            [{}, {"chain": "sol"}, {"chain": "sol", "tf": "1h"}, {"tf": "1h", "mcap": "micro", "chain": "eth"}]
        ):
            for p in ("pm.s0", "pm.s1"):
                conn.execute(INSERT, {"p": p, "s": json.dumps(scope), "c": 0.3 + 0.1 * k, "a": 0.5, "e": -0.5})
        requests = [
            (p, s)
            for p in ("pm.s0", "pm.s1", "pm.none")
            for s in ({"chain": "sol", "tf": "1h"}, {"tf": "1h", "mcap": "micro", "chain": "eth"}, {}, {"tf": "4h"})
        ]
        expected = [_oracle(conn, p, s) for p, s in requests]
        assert sum(map(len, expected)) > 10
        rows = [(p, s, 0.5, 0.5) for p, s in requests]
        settings_ = [(runtime._DENSE_KEYS, runtime._MATCH_MATRIX_CELLS), (0, runtime._MATCH_MATRIX_CELLS), (0, 0)]
        for dense, cells in settings_:
            monkeypatch.setattr(runtime, "_DENSE_KEYS", dense)
            monkeypatch.setattr(runtime, "_MATCH_MATRIX_CELLS", cells)
            runtime._CACHES.pop(conn, None)  # built again under these settings
            assert _batch_ids(conn, rows) == expected
            ks = _entry(conn, {"pm.s0", "pm.s1", "pm.none"}).key_sets
            assert all((k.table is None) == (dense == 0) for k in ks)
        for n in range(runtime._CACHE_PATTERN_SETS + 1):
            subset = [r for r in rows if r[0] == "pm.s0"] + [(f"pm.other{n}", {}, 0.5, 0.5)]
            assert _batch_ids(conn, subset)[:4] == expected[:4]
            assert len(runtime._CACHES[conn].pattern_sets) <= runtime._CACHE_PATTERN_SETS
    finally:
        conn.execute("DELETE FROM public.pm_overrides")
