"""The batch form of strength steering equals the single call, on random overrides and scopes.

The batch matches in numpy (grouped by key set, equal values found by sorted search) instead of
PostgreSQL's `scope_subset <@ scope`; here PostgreSQL's containment is the oracle, including the
jsonb equality corner cases (true is not 1, 1 equals 1.0, "1" is not 1, unknown keys and values),
array and object values (containment, not equality: [1] <@ [1, 2]) and legacy non-object scopes.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lowcap_learning.runtime import apply_strength_overrides, apply_strength_overrides_batch

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
        for req, b in zip(requests, batch, strict=True):
            s = apply_strength_overrides(conn, *req)
            assert [m.override_id for m in b.matches] == [m.override_id for m in s.matches]
            assert [(m.kept, m.weight) for m in b.matches] == [(m.kept, m.weight) for m in s.matches]
            assert (b.a_final, b.e_final, b.delta_a, b.delta_e, b.confidence, b.applied) == (
                s.a_final,
                s.e_final,
                s.delta_a,
                s.delta_e,
                s.confidence,
                s.applied,
            )
