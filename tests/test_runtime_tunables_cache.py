"""Both runtime calls keep the steering tunables per connection, and a cached call steers exactly as
one that reads learning.tunables() again.

The version they are kept under is what learning.tunables() reads: the learning row's (xmin, ctid)
and tunable_specs' count and sum of xmin. The oracle is the uncached path (the indexed query, which
reads learning.tunables() itself), run after every kind of change: set_tunable, the bot's own UPDATE
of the learning row, the row deleted, a changed default, another connection's commit, two changes in
one transaction, a change rolled back.
"""

from __future__ import annotations

import json
from dataclasses import astuple

import numpy as np
import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.runtime import (
    STRENGTH_MATCHES,
    SteeringTunables,
    _fetch,
    apply_strength_overrides,
    apply_strength_overrides_batch,
)

INSERT = """
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score,
    dira, dire, edge_raw_roi, n, status)
VALUES (%(p)s, 'pm_strength', %(s)s::jsonb, 1, %(c)s, %(a)s, %(e)s, %(edge)s, 40, 'active')
"""

# Both sides of conf_min (0.4 by default) for the overrides below, and every steering maths input.
VALUES = {
    "conf_min": [0.1, 0.4, 0.6, 0.95],
    "steer_base": [0.0, 0.03, 0.2],
    "steer_gain": [0.0, 0.2, 0.9],
    "steer_max_hard": [0.05, 0.22, 1.0],
    "base_bias": [-0.5, 0.0, 0.5],
}
SET = st.sampled_from(sorted(VALUES)).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(VALUES[k])))
CHANGE = st.one_of(
    st.tuples(st.just("set_tunable"), SET),
    st.tuples(st.just("bot_update"), SET),
    st.tuples(st.just("other_connection"), SET),
    st.tuples(st.just("default"), SET),
    st.tuples(st.just("twice_in_one_transaction"), st.tuples(SET, SET)),
    st.tuples(
        st.just("default_twice_in_one_transaction"),
        st.sampled_from(sorted(VALUES)).flatmap(
            lambda k: st.tuples(st.just(k), st.sampled_from(VALUES[k]), st.sampled_from(VALUES[k]))
        ),
    ),
    st.tuples(st.just("rolled_back"), SET),
    st.tuples(st.just("rolled_back_to_savepoint"), st.tuples(SET, SET)),
    st.tuples(st.just("delete_row"), st.just(None)),
    st.tuples(st.just("nothing"), st.just(None)),
)
REQUESTS = [("pm.t", {"chain": "sol", "tf": "1h"}), ("pm.t", {"chain": "eth"}), ("pm.u", {"chain": "sol"})]


def _set(conn, key, value):
    conn.execute("SELECT learning.set_tunable(%s, %s::jsonb)", (key, json.dumps(value)))


def _expected(conn, pattern_key, scope):
    """The uncached path: the indexed query reads the overrides and learning.tunables() itself."""
    raw, overrides = _fetch(conn, STRENGTH_MATCHES, {"pattern_key": pattern_key, "scope": json.dumps(scope)})
    return overrides.steer(np.arange(len(overrides)), 0.5, 0.5, SteeringTunables.from_json(raw))


def _fields(result):
    return (
        result.a_final,
        result.e_final,
        result.steer_max_eff,
        result.delta_a,
        result.weight_sum,
        [(m.override_id, m.kept, m.weight) for m in result.matches],
    )


def _assert_same(conn):
    tunables = SteeringTunables.from_json(conn.execute("SELECT learning.tunables()").fetchone()[0])
    batch = apply_strength_overrides_batch(conn, [(p, s, 0.5, 0.5) for p, s in REQUESTS])
    for (pattern_key, scope), from_batch in zip(REQUESTS, batch, strict=True):
        expected = _fields(_expected(conn, pattern_key, scope))
        assert _fields(apply_strength_overrides(conn, pattern_key, scope, 0.5, 0.5)) == expected
        assert _fields(from_batch) == expected
    assert astuple(runtime._TUNABLES[conn][1]) == astuple(tunables)


def _change(conn, db_url, kind, arg):
    if kind == "set_tunable":
        _set(conn, *arg)
    elif kind == "bot_update":  # the bot edits the row itself (no set_tunable)
        conn.execute(
            "UPDATE public.learning_configs SET config_data = config_data || jsonb_build_object(%s::text, %s::jsonb)"
            " WHERE module_id = 'learning'",
            (arg[0], json.dumps(arg[1])),
        )
    elif kind == "other_connection":
        with psycopg.connect(db_url, autocommit=True) as other:
            _set(other, *arg)
    elif kind == "default":  # a migration changing a default (seen where no value is stored)
        conn.execute(
            "UPDATE learning.tunable_specs SET default_value = %s::jsonb WHERE key = %s", (json.dumps(arg[1]), arg[0])
        )
    elif kind == "twice_in_one_transaction":  # the second version has the first one's xmin
        with conn.transaction():
            _set(conn, *arg[0])
            _assert_same(conn)
            _set(conn, *arg[1])
            _assert_same(conn)
    elif kind == "default_twice_in_one_transaction":  # the spec row's second version has the same xmin
        key, *values = arg
        with conn.transaction():
            conn.execute(
                "UPDATE public.learning_configs SET config_data = config_data - %s::text WHERE module_id = 'learning'",
                (key,),
            )
            for value in values:
                conn.execute(
                    "UPDATE learning.tunable_specs SET default_value = %s::jsonb WHERE key = %s",
                    (json.dumps(value), key),
                )
                _assert_same(conn)
    elif kind == "rolled_back":
        with conn.transaction(force_rollback=True):
            _set(conn, *arg)
            _assert_same(conn)
    elif kind == "rolled_back_to_savepoint":
        with conn.transaction():
            _set(conn, *arg[0])
            _assert_same(conn)
            with conn.transaction(force_rollback=True):  # a savepoint, rolled back
                _set(conn, *arg[1])
                _assert_same(conn)
            _assert_same(conn)
    elif kind == "delete_row":
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")


def _overrides(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    for p, s, c, a, e, edge in [
        ("pm.t", {"chain": "sol"}, 0.5, 1.0, -0.5, 0.02),
        ("pm.t", {"tf": "1h"}, 0.3, -0.4, 0.8, -0.03),
        ("pm.t", {}, 0.9, 0.2, 0.1, 0.01),
        ("pm.u", {"chain": "sol"}, 0.7, -1.0, 1.0, 0.05),
    ]:
        conn.execute(INSERT, {"p": p, "s": json.dumps(s), "c": c, "a": a, "e": e, "edge": edge})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(CHANGE, min_size=1, max_size=8))
def test_cached_tunables_steer_as_a_fresh_read_after_every_change(conn, db_url, changes):
    defaults = conn.execute("SELECT key, default_value FROM learning.tunable_specs").fetchall()
    _overrides(conn)
    try:
        _assert_same(conn)
        for kind, arg in changes:
            _change(conn, db_url, kind, arg)
            _assert_same(conn)
            _assert_same(conn)  # the second time from the cache
    finally:
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")
        for key, value in defaults:
            conn.execute(
                "UPDATE learning.tunable_specs SET default_value = %s::jsonb WHERE key = %s", (json.dumps(value), key)
            )


def test_an_unchanged_version_reads_no_tunables(conn, monkeypatch):
    """A hit's row carries no tunables (learning.tunables() did not run); a change brings them."""
    _overrides(conn)
    rows = []
    one_row = runtime._one_row

    def recording(conn, query, params):
        row = one_row(conn, query, params)
        rows.append(row)
        return row

    monkeypatch.setattr(runtime, "_one_row", recording)
    try:
        for _ in range(2):
            apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
            apply_strength_overrides_batch(conn, [("pm.t", {"chain": "sol"}, 0.5, 0.5)])
        assert [r["tunables"] is None for r in rows[1:]] == [True, True, True]
        _set(conn, "steer_base", 0.1)
        rows.clear()
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        assert rows[0]["tunables"]["steer_base"] == 0.1
        assert runtime._TUNABLES[conn][1].steer_base == 0.1
    finally:
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")


def test_a_new_definition_of_learning_tunables_is_seen_by_the_next_call(conn):
    """A migration that replaces learning.tunables() and changes no row: the version has the
    function's pg_proc row too."""
    _overrides(conn)
    definition = conn.execute("SELECT pg_get_functiondef('learning.tunables()'::regprocedure)").fetchone()[0]
    try:
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        assert runtime._TUNABLES[conn][1].steer_base == 0.03
        assert definition.count("s.default_value") == 1
        conn.execute(
            definition.replace(
                "s.default_value", "CASE s.key WHEN 'steer_base' THEN '0.2'::jsonb ELSE s.default_value END"
            )
        )
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        assert runtime._TUNABLES[conn][1].steer_base == 0.2
    finally:
        conn.execute(definition)


def test_a_call_steers_with_the_tunables_of_the_version_it_sent(conn, monkeypatch):
    """Another thread on the same connection may store a newer version between this call's query
    and its reading of the row: the row's NULL tunables still mean the entry this call sent."""
    _overrides(conn)
    _set(conn, "steer_base", 0.1)  # not the Python default: a NULL read as defaults would show
    try:
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        sent = runtime._TUNABLES[conn]
        one_row = runtime._one_row

        def interleaved(conn_, query, params):
            row = one_row(conn_, query, params)
            runtime._TUNABLES[conn_] = ("another version", SteeringTunables(steer_base=0.5))
            return row

        monkeypatch.setattr(runtime, "_one_row", interleaved)
        got = apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        monkeypatch.undo()
        assert _fields(got) == _fields(_expected(conn, "pm.t", {"chain": "sol"}))
        assert sent[1].steer_base == 0.1
    finally:
        runtime._TUNABLES.pop(conn, None)
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")


def test_the_tunables_are_per_connection(conn, db_url):
    _overrides(conn)
    try:
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        with psycopg.connect(db_url, autocommit=True) as other:
            assert other not in runtime._TUNABLES
            _set(other, "conf_min", 0.95)
            apply_strength_overrides(other, "pm.t", {"chain": "sol"}, 0.5, 0.5)
            assert runtime._TUNABLES[other][1].conf_min == 0.95
        assert runtime._TUNABLES[conn][1].conf_min == 0.4  # read again by its next call
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        assert runtime._TUNABLES[conn][1].conf_min == 0.95
    finally:
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")


def test_a_repeatable_read_transaction_keeps_its_snapshots_tunables(conn, db_url):
    """Another connection's change committed during a REPEATABLE READ transaction is not seen in it
    (the version is read in the transaction's snapshot), and is seen by the first call after it."""
    _overrides(conn)
    try:
        _set(conn, "steer_base", 0.1)
        apply_strength_overrides(conn, "pm.t", {"chain": "sol"}, 0.5, 0.5)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            assert conn.execute("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
            _assert_same(conn)
            with psycopg.connect(db_url, autocommit=True) as other:
                _set(other, "steer_base", 0.2)
            _assert_same(conn)
            assert runtime._TUNABLES[conn][1].steer_base == 0.1
        _assert_same(conn)
        assert runtime._TUNABLES[conn][1].steer_base == 0.2
    finally:
        conn.isolation_level = None
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")
