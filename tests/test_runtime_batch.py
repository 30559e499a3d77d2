"""The batch form of strength steering equals the single call, on random overrides and scopes.

Both match cached overrides in numpy (_MatchIndex: grouped by key set, equal values found by lookup)
instead of PostgreSQL's `scope_subset <@ scope`; here PostgreSQL's containment (the uncached query,
STRENGTH_MATCHES) is the oracle, including the
jsonb equality corner cases (true is not 1, 1 equals 1.0, "1" is not 1, unknown keys and values),
array and object values (containment, not equality: [1] <@ [1, 2]) and legacy non-object scopes.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.runtime import STRENGTH_MATCHES, _fetch, apply_strength_overrides, apply_strength_overrides_batch

VALUES = st.sampled_from(["sol", "eth", "1", 1, 1.0, 2, True, False, "true", [1], [1, 2], {"x": 1}, {"x": 1, "y": 2}])
KEYS = st.sampled_from(["chain", "tf", "mcap", "regime"])
SCOPES = st.dictionaries(KEYS, VALUES, max_size=4)
OVERRIDE = st.tuples(
    st.sampled_from(["pm.a", "pm.b"]),
    st.one_of(st.dictionaries(KEYS, VALUES, max_size=3), st.sampled_from([[], ["chain"], "chain", None])),
    st.floats(0.0, 1.0),
    st.floats(-1.0, 1.0),
    st.floats(-1.0, 1.0),
    st.floats(-0.2, 0.2),
    st.sampled_from(["active", "active", "inactive"]),
)
INSERT = """
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score,
    dira, dire, edge_raw_roi, n, status)
VALUES (%(p)s, 'pm_strength', %(s)s::jsonb, 1, %(c)s, %(a)s, %(e)s, %(edge)s, 40, %(status)s)
ON CONFLICT DO NOTHING
"""


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overrides=st.lists(OVERRIDE, max_size=25),
    requests=st.lists(
        st.tuples(st.sampled_from(["pm.a", "pm.b", "pm.c"]), SCOPES, st.floats(0, 1), st.floats(0, 1)),
        min_size=1,
        max_size=12,
    ),
)
@example(
    overrides=[
        ("pm.a", {"chain": True}, 0.5, 1.0, -1.0, 0.0, "active"),
        ("pm.a", {"tf": 1}, 0.6, -1.0, 1.0, 0.0, "active"),
        ("pm.a", {"mcap": "1"}, 0.7, 0.5, 0.5, 0.0, "active"),
    ],
    requests=[
        ("pm.a", {"chain": 1, "tf": 1.0, "mcap": 1}, 0.5, 0.5),
        ("pm.a", {"chain": True, "tf": True, "mcap": "1"}, 0.5, 0.5),
    ],
)
@example(
    overrides=[
        ("pm.a", {"chain": [1]}, 0.5, 1.0, -1.0, 0.0, "active"),
        ("pm.a", {"tf": {"x": 1}}, 0.6, -1.0, 1.0, 0.0, "active"),
        ("pm.a", [], 0.7, 0.5, 0.5, 0.0, "active"),
        ("pm.b", None, 0.7, 0.5, 0.5, 0.0, "active"),
    ],
    requests=[
        ("pm.a", {"chain": [1, 2], "tf": {"x": 1, "y": 2}}, 0.5, 0.5),
        ("pm.a", {"chain": [2], "tf": {"x": 1}}, 0.5, 0.5),
        ("pm.b", {}, 0.5, 0.5),
    ],
)
def test_batch_equals_single_on_random_data(conn, overrides, requests):
    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM public.pm_overrides")
        for p, s, c, a, e, edge, status in overrides:
            conn.execute(
                INSERT, {"p": p, "s": json.dumps(s), "c": c, "a": a, "e": e, "edge": edge, "status": status}
            )
        batch = apply_strength_overrides_batch(conn, requests)
        # Past runtime._MATCH_MATRIX_CELLS the requests are matched in runs: same results.
        matrix_cells = runtime._MATCH_MATRIX_CELLS
        runtime._MATCH_MATRIX_CELLS = 0
        try:
            by_pairs = apply_strength_overrides_batch(conn, requests)
        finally:
            runtime._MATCH_MATRIX_CELLS = matrix_cells
        assert [b.as_dict() for b in by_pairs] == [b.as_dict() for b in batch]
        for req, b in zip(requests, batch, strict=True):
            s = apply_strength_overrides(conn, *req)
            assert [m.override_id for m in b.matches] == [m.override_id for m in s.matches] == _oracle(conn, *req[:2])
            assert [(m.kept, m.weight) for m in b.matches] == [(m.kept, m.weight) for m in s.matches]
            assert (b.a_final, b.e_final, b.delta_a, b.delta_e, b.confidence, b.applied) == (
                s.a_final,
                s.e_final,
                s.delta_a,
                s.delta_e,
                s.confidence,
                s.applied,
            )


def _oracle(conn, pattern_key, scope):
    """Override ids PostgreSQL's containment finds (the uncached indexed query)."""
    _, found = _fetch(conn, STRENGTH_MATCHES, {"pattern_key": str(pattern_key), "scope": json.dumps(scope)})
    return found.ids


def _insert(conn, overrides):
    conn.execute("DELETE FROM public.pm_overrides")
    for p, s, c, a, e, edge, status in overrides:
        conn.execute(
            INSERT, {"p": p, "s": s if isinstance(s, str) else json.dumps(s), "c": c, "a": a, "e": e, "edge": edge,
                     "status": status}
        )


def _same(conn, requests):
    batch = apply_strength_overrides_batch(conn, requests)
    single = [apply_strength_overrides(conn, *req) for req in requests]
    assert [[m.override_id for m in b.matches] for b in batch] == [[m.override_id for m in s.matches] for s in single]
    oracle = [_oracle(conn, p, dict(sc)) for p, sc, *_ in requests]
    assert [[m.override_id for m in s.matches] for s in single] == oracle
    assert [b.as_dict() for b in batch] == [s.as_dict() for s in single]
    return single


def test_batch_reads_str_subclasses_and_default_dicts_as_the_single_call_does(conn):
    import enum
    from collections import defaultdict

    import numpy as np

    class Chain(enum.StrEnum):
        SOL = "sol"

    with conn.transaction(force_rollback=True):
        _insert(conn, [("pm.a", {"chain": "sol"}, 0.5, 1.0, -1.0, 0.0, "active"),
                       ("pm.a", {"chain": "sol", "tf": ""}, 0.6, -1.0, 1.0, 0.0, "active")])
        scope = defaultdict(str, {"chain": "sol"})
        single = _same(conn, [("pm.a", {"chain": np.str_("sol")}, 0.5, 0.5), ("pm.a", {"chain": Chain.SOL}, 0.5, 0.5),
                              ("pm.a", scope, 0.5, 0.5)])
        assert all(len(s.matches) == 1 for s in single)
        assert dict(scope) == {"chain": "sol"}  # the caller's scope is read, not written


def test_batch_compares_nested_values_as_stored(conn):
    with conn.transaction(force_rollback=True):
        # 0.1000000000000000055511151231257827 is not 0.1 in jsonb (numeric), but is as a Python float.
        _insert(conn, [("pm.a", '{"k": [0.1000000000000000055511151231257827]}', 0.5, 1.0, -1.0, 0.0, "active")])
        single = _same(conn, [("pm.a", {"k": [0.1]}, 0.5, 0.5)])
        assert single[0].matches == []


def test_batch_with_a_huge_key_space_does_not_overflow(conn):
    """Many patterns and many distinct values: the mixed-radix key is re-ranked instead of overflowing."""
    rows = []
    for p in range(60):
        for j in range(3):
            rows.append((f"pm.{p}", {"a": f"a{p}-{j}", "b": p * 10 + j, "c": f"c{j}", "d": -p - j}, 0.5, 0.2, 0.1, 0.0,
                         "active"))
    with conn.transaction(force_rollback=True):
        _insert(conn, rows)
        requests = [(f"pm.{p}", {"a": f"a{p}-1", "b": p * 10 + 1, "c": "c1", "d": -p - 1}, 0.5, 0.5) for p in range(60)]
        # Widen every vocabulary so the four digits and the pattern cannot fit in one int64 key.
        conn.execute(
            "INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier,"
            " confidence_score, dira, dire, n, status) SELECT 'pm.wide', 'pm_strength', jsonb_build_object("
            "'a', 'w' || i, 'b', i + 100000, 'c', 'w' || i, 'd', i + 100000), 1, 0.5, 0.1, 0.1, 40, 'active'"
            " FROM generate_series(1, 40000) AS i"
        )
        requests.append(("pm.wide", {"a": "w5", "b": 100005, "c": "w5", "d": 100005}, 0.5, 0.5))
        single = _same(conn, requests)
        assert all(len(s.matches) == 1 for s in single)


def test_batch_lists_each_requests_matches_in_override_id_order(conn):
    """Matches are found per key set, and the key sets come in another order than the ids: a request
    matching overrides of several key sets still lists them by id, as the single call does (in one
    run of requests and in runs of one, _MATCH_MATRIX_CELLS = 0)."""
    with conn.transaction(force_rollback=True):
        _insert(conn, [
            ("pm.o", {"b": "x"}, 0.5, 0.5, 0.5, 0.0, "active"),
            ("pm.o", {"a": "y"}, 0.6, -0.5, 0.5, 0.0, "active"),
            ("pm.o", {}, 0.7, 0.5, -0.5, 0.0, "active"),
            ("pm.o", {"a": "y", "b": "x"}, 0.8, 0.1, 0.1, 0.0, "active"),
        ])
        requests = [("pm.o", {"a": "y", "b": "x"}, 0.5, 0.5), ("pm.o", {"b": "x"}, 0.5, 0.5)] * 3
        single = _same(conn, requests)
        ids = [m.override_id for m in single[0].matches]
        assert len(ids) == 4 and ids == sorted(ids)
        matrix_cells = runtime._MATCH_MATRIX_CELLS
        runtime._MATCH_MATRIX_CELLS = 0
        try:
            _same(conn, requests)
        finally:
            runtime._MATCH_MATRIX_CELLS = matrix_cells


def test_batch_leaves_numbers_python_cannot_hold_to_postgresql(conn):
    """Review finding: 0.1 and 0.10000000000000000001 are different jsonb numbers (both can be stored)
    but one Python float; the batch matched the request {"k": 0.1} to whichever it coded last. Such
    overrides are now matched by PostgreSQL, as the single call does."""
    with conn.transaction(force_rollback=True):
        _insert(conn, [
            ("pm.n", '{"k": 0.1}', 0.5, 0.5, 0.5, 0.0, "active"),
            ("pm.n", '{"k": 0.10000000000000000001}', 0.9, 0.5, 0.5, 0.0, "active"),
            ("pm.n", '{"k": 1e400}', 0.9, -0.5, 0.5, 0.0, "active"),
        ])
        single = _same(conn, [("pm.n", {"k": 0.1}, 0.5, 0.5), ("pm.n", {"k": 0.2}, 0.5, 0.5)])
        assert [m.scope_subset for m in single[0].matches] == [{"k": 0.1}]


def test_numbers_match_as_jsonb_numerics(conn):
    """jsonb compares numbers as numeric: 1e30 is 10**30 (in Python an exact float and an int differ),
    1.0 is 1 and -0.0 is 0; true is still not 1."""
    with conn.transaction(force_rollback=True):
        _insert(conn, [
            ("pm.n", '{"k": 1e30}', 0.5, 0.5, 0.5, 0.0, "active"),
            ("pm.n", '{"m": 1000000000000000000000000000000}', 0.6, -0.5, 0.5, 0.0, "active"),
            ("pm.n", '{"z": 0}', 0.7, 0.5, -0.5, 0.0, "active"),
            ("pm.n", '{"k": 1e30, "t": true}', 0.8, 0.1, 0.1, 0.0, "active"),
            ("pm.n", '{"f": 2.5}', 0.8, 0.1, 0.1, 0.0, "active"),
        ])
        requests = [
            ("pm.n", {"k": 10**30, "m": 1e30, "z": -0.0, "t": True, "f": 2.5}, 0.5, 0.5),
            ("pm.n", {"k": 1e30, "m": 10**30, "z": 0.0, "t": 1}, 0.5, 0.5),
            ("pm.n", {"k": 1e30 * 10, "m": 10**30 + 1, "z": 1e-300, "f": 2.5000000000000004}, 0.5, 0.5),
        ]
        single = _same(conn, requests)
        assert [len(s.matches) for s in single] == [5, 3, 0]
