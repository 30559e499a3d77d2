"""The batch's cache of its overrides never answers differently from PostgreSQL (issue 6).

apply_strength_overrides_batch keeps, per connection and per set of patterns asked, its overrides
prepared for matching (_BatchIndex) under the generation of pm_overrides, as the single call keeps
each pattern's. The oracle is the uncached indexed query (`scope_subset <@ scope`), asked after every
write: committed ones (this or another connection), rolled-back ones, and a transaction's own
uncommitted ones, which must be seen by it and never kept.
"""

from __future__ import annotations

import json
from dataclasses import fields

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.runtime import (
    STRENGTH_MATCHES,
    StrengthResult,
    _fetch,
    apply_strength_overrides,
    apply_strength_overrides_batch,
)
from test_runtime_cache import INSERT, OVERRIDE, REQUEST, WRITE, _write


def _oracle(conn, pattern_key, scope):
    _, found = _fetch(conn, STRENGTH_MATCHES, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    return found.ids


def _batch_ids(conn, requests):
    return [[m.override_id for m in r.matches] for r in apply_strength_overrides_batch(conn, requests)]


def _assert_same(conn, requests):
    rows = [(p, s, 0.5, 0.5) for p, s in requests]
    assert _batch_ids(conn, rows) == [_oracle(conn, p, s) for p, s in requests]


def _entry(conn, patterns):
    return runtime._BATCH_CACHES.get(conn, {}).get(tuple(sorted(patterns)))


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


def test_results_carry_exactly_the_dataclass_fields(conn):
    """The batch sets each StrengthResult's fields as one dict (not through __init__): the names must
    be the dataclass' own, or a new field would be missing from batch results."""
    conn.execute("DELETE FROM public.pm_overrides")
    try:
        conn.execute(INSERT, {"p": "pm.f", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
        names = {f.name for f in fields(StrengthResult)}
        batch = apply_strength_overrides_batch(conn, [("pm.f", {"chain": "sol"}, 0.5, 0.5), ("pm.f", {}, 0.4, 0.6)])
        single = apply_strength_overrides(conn, "pm.f", {"chain": "sol"}, 0.5, 0.5)
        for result in [*batch, single]:
            assert set(vars(result)) == names
        assert batch[0] == single and batch[0].as_dict() == single.as_dict()
        assert batch[1].a_final == 0.4 and batch[1].matches == [] and not batch[1].applied
    finally:
        conn.execute("DELETE FROM public.pm_overrides")
