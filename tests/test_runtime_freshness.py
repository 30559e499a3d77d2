"""Every runtime call steers by what its own snapshot holds (design §13): a change to pm_overrides or
to the tunables is seen by the next call, single or batch, whoever made it, and a rolled-back one
never. The oracle is PostgreSQL: the ids its `scope_subset <@ scope` finds, learning.tunables(), and
steer_strength (the steering maths on given matches).
"""

from __future__ import annotations

import json
from dataclasses import fields

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowcap_learning.runtime import (
    SteeringTunables,
    StrengthResult,
    apply_strength_overrides,
    apply_strength_overrides_batch,
    steer_strength,
)

INSERT = """
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score,
    dira, dire, edge_raw_roi, n, status)
VALUES (%(p)s, 'pm_strength', %(s)s::jsonb, 1, %(c)s, %(a)s, %(e)s, 0.01, 40, 'active')
ON CONFLICT DO NOTHING
"""
CONTAINED = """
SELECT coalesce(array_agg(o.id ORDER BY o.id), '{}') FROM public.pm_overrides AS o
WHERE o.pattern_key = %s AND o.scope_subset <@ %s::jsonb AND o.action_category = 'pm_strength'
    AND o.status = 'active' AND (o.dira IS NOT NULL OR o.dire IS NOT NULL)
"""

KEYS = st.sampled_from(["chain", "tf", "mcap"])
PLAIN = st.sampled_from(["sol", "eth", "1", "true", ""])
ANY_VALUE = st.one_of(PLAIN, st.sampled_from([1, 1.0, True, None, [1], {"x": 1}]))
OVERRIDE = st.tuples(
    st.sampled_from(["pm.a", "pm.b"]),
    st.dictionaries(KEYS, ANY_VALUE, max_size=3),
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
    st.tuples(st.just("truncate"), st.just(None)),
)
REQUEST = st.tuples(st.sampled_from(["pm.a", "pm.b", "pm.c"]), st.dictionaries(KEYS, ANY_VALUE, max_size=3))


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
    elif kind == "truncate":
        conn.execute("TRUNCATE public.pm_overrides")


def _calls(conn, requests, a=0.5, e=0.5) -> list[StrengthResult]:
    """Each request's result from the single call, checked equal to the batch's."""
    single = [apply_strength_overrides(conn, p, s, a, e) for p, s in requests]
    batch = apply_strength_overrides_batch(conn, [(p, s, a, e) for p, s in requests])
    assert [b.as_dict() for b in batch] == [s.as_dict() for s in single]
    return single


def _assert_as_postgresql(conn, requests):
    """Matches as PostgreSQL's containment finds them, steered by learning.tunables() as they are now."""
    tun = SteeringTunables.from_json(conn.execute("SELECT learning.tunables()").fetchone()[0])
    for (p, s), got in zip(requests, _calls(conn, requests), strict=True):
        assert [m.override_id for m in got.matches] == conn.execute(CONTAINED, (p, json.dumps(s))).fetchone()[0]
        expected = steer_strength(list(got.matches), 0.5, 0.5, tun)
        assert got.as_dict() == expected.as_dict()


@pytest.fixture
def clean(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")
    yield conn
    conn.execute("DELETE FROM public.pm_overrides")
    conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.lists(OVERRIDE, max_size=20),
    steps=st.lists(st.tuples(WRITE, st.lists(REQUEST, min_size=1, max_size=4)), min_size=1, max_size=6),
)
def test_every_write_is_seen_by_the_next_call(clean, start, steps):
    conn = clean
    conn.execute("DELETE FROM public.pm_overrides")
    for o in start:
        _write(conn, "insert", o)
    for (kind, arg), requests in steps:
        _write(conn, kind, arg)
        _assert_as_postgresql(conn, requests)


def test_a_write_committed_by_another_connection_is_seen_by_the_next_call(clean, db_url):
    conn, scope = clean, {"chain": "sol"}
    assert _calls(conn, [("pm.x", scope)])[0].matches == []
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute(INSERT, {"p": "pm.x", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
    hit = _calls(conn, [("pm.x", scope)])[0]
    assert len(hit.matches) == 1 and hit.a_final > 0.5
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("UPDATE public.pm_overrides SET dira = -1.0 WHERE pattern_key = 'pm.x'")
    assert _calls(conn, [("pm.x", scope)])[0].a_final < 0.5
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("UPDATE public.pm_overrides SET status = 'inactive' WHERE pattern_key = 'pm.x'")
    assert _calls(conn, [("pm.x", scope)])[0].matches == []


def test_a_transaction_sees_its_own_changes_and_a_rolled_back_one_is_gone(clean):
    conn, scope = clean, {"chain": "sol", "tf": "1h"}
    conn.execute(INSERT, {"p": "pm.w", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
    with conn.transaction(force_rollback=True):
        conn.execute(INSERT, {"p": "pm.w", "s": json.dumps(scope), "c": 0.8, "a": 1.0, "e": -1.0})
        assert len(_calls(conn, [("pm.w", scope)])[0].matches) == 2
        conn.execute("UPDATE public.pm_overrides SET status = 'inactive' WHERE scope_subset = '{\"chain\": \"sol\"}'")
        assert len(_calls(conn, [("pm.w", scope)])[0].matches) == 1
    assert [m.scope_subset for m in _calls(conn, [("pm.w", scope)])[0].matches] == [{"chain": "sol"}]


def test_returned_matches_are_the_callers_to_change(clean):
    conn = clean
    for s in ('{"chain": "sol"}', '{"chain": "sol", "tf": "1h"}', '{"k": [1], "m": {"a": "b"}}'):
        conn.execute(INSERT, {"p": "pm.m", "s": s, "c": 0.8, "a": 1.0, "e": -1.0})
    scope = {"chain": "sol", "tf": "1h", "k": [1, 2], "m": {"a": "b", "c": "d"}}
    for call in (
        lambda: apply_strength_overrides(conn, "pm.m", scope, 0.5, 0.5),
        lambda: apply_strength_overrides_batch(conn, [("pm.m", scope, 0.5, 0.5)])[0],
    ):
        first = call()
        first.matches[0].scope_subset["note"] = "x"
        first.matches[1].scope_subset.clear()
        first.matches[2].scope_subset["k"].append(9)
        first.matches[2].scope_subset["m"]["x"] = "y"
        again = call()
        assert [m.scope_subset for m in again.matches] == [
            {"chain": "sol"},
            {"chain": "sol", "tf": "1h"},
            {"k": [1], "m": {"a": "b"}},
        ]
        assert [m.dims for m in again.matches] == [1, 2, 2]


def test_results_carry_exactly_the_dataclass_fields(clean):
    """Results get their fields as one dict (not through __init__): the names must be the
    dataclass' own, or a new field would be missing from them."""
    conn = clean
    conn.execute(INSERT, {"p": "pm.f", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
    names = {f.name for f in fields(StrengthResult)}
    batch = apply_strength_overrides_batch(conn, [("pm.f", {"chain": "sol"}, 0.5, 0.5), ("pm.f", {}, 0.4, 0.6)])
    single = apply_strength_overrides(conn, "pm.f", {"chain": "sol"}, 0.5, 0.5)
    for result in [*batch, single]:
        assert set(vars(result)) == names
    assert batch[0] == single and batch[0].as_dict() == single.as_dict()
    assert batch[1].a_final == 0.4 and batch[1].matches == [] and not batch[1].applied


@pytest.mark.parametrize(
    "scope",
    [
        {"chain": "sol", "z": 10**5000},
        {"chain": float("nan")},
        {"chain": "so\x00l"},
        {"chain": "\ud800"},
        {"ch\x00ain": "sol"},
        {"chain": float("inf")},
        ["chain", "tf"],
    ],
)
def test_a_scope_jsonb_refuses_is_refused_before_any_match(clean, scope):
    clean.execute(INSERT, {"p": "pm.e", "s": '{"chain": "sol"}', "c": 0.8, "a": 1.0, "e": -1.0})
    with pytest.raises(ValueError, match="scope"):
        apply_strength_overrides(clean, "pm.e", scope, 0.5, 0.5)
    with pytest.raises(ValueError, match="row 0: .*scope"):
        apply_strength_overrides_batch(clean, [("pm.e", scope, 0.5, 0.5)])


def test_numbers_and_nested_values_match_as_postgresql_contains_them(clean):
    for s in ['{"k": 1}', '{"k": [1]}', '{"k": 0.1000000000000000055511151231257827}', '{"k": "1"}']:
        clean.execute(INSERT, {"p": "pm.n", "s": s, "c": 0.8, "a": 1.0, "e": -1.0})
    requests = [("pm.n", {"k": 1.0}), ("pm.n", {"k": [1, 2]}), ("pm.n", {"k": 0.1}), ("pm.n", {"k": "1"})]
    _assert_as_postgresql(clean, requests)
    assert [len(r.matches) for r in _calls(clean, requests)] == [1, 1, 0, 1]


def test_an_override_python_cannot_parse_does_not_stop_the_pattern(clean):
    """An integer past Python's 4,300 digits in an override that does not match: both calls answer."""
    clean.execute(INSERT, {"p": "pm.h", "s": '{"k": "a"}', "c": 0.8, "a": 1.0, "e": -1.0})
    clean.execute(INSERT, {"p": "pm.h", "s": '{"z": 1' + "0" * 5000 + "}", "c": 0.8, "a": 1.0, "e": -1.0})
    assert [len(r.matches) for r in _calls(clean, [("pm.h", {"k": "a"}), ("pm.h", {"z": 1})])] == [1, 0]


def test_a_connection_in_another_client_encoding_is_answered(clean, db_url):
    with psycopg.connect(db_url, autocommit=True) as latin:
        latin.execute("SET client_encoding = 'LATIN1'")
        latin.execute(INSERT, {"p": "pm.l", "s": '{"k": "a"}', "c": 0.8, "a": 1.0, "e": -1.0})
        latin.execute(INSERT, {"p": "pm.l", "s": r'{"k": "\u20ac"}', "c": 0.8, "a": 1.0, "e": -1.0})
        assert len(apply_strength_overrides(latin, "pm.l", {"k": "a"}, 0.5, 0.5).matches) == 1


# Tunables: every kind of change is seen by the next call (the oracle reads learning.tunables()).
TUNED = [("pm.t", {"chain": "sol", "tf": "1h"}), ("pm.t", {"chain": "eth"}), ("pm.u", {"chain": "sol"})]


def _tuned_overrides(conn):
    for p, s, c, a, e in [
        ("pm.t", {"chain": "sol"}, 0.5, 1.0, -0.5),
        ("pm.t", {"tf": "1h"}, 0.3, -0.4, 0.8),
        ("pm.t", {}, 0.9, 0.2, 0.1),
        ("pm.u", {"chain": "sol"}, 0.7, -1.0, 1.0),
        ("pm.v", {}, 0.1, 0.5, 0.5),
    ]:
        conn.execute(INSERT, {"p": p, "s": json.dumps(s), "c": c, "a": a, "e": e})


def _set(conn, key, value):
    conn.execute("SELECT learning.set_tunable(%s, %s::jsonb)", (key, json.dumps(value)))


def _steer_base(conn) -> float:
    """steer_base as the calls use it: one match of confidence 0.1, so STEER_MAX_eff = base + 0.02
    (below the hard cap 0.22 for every base used here)."""
    result = _calls(conn, [("pm.v", {"chain": "sol"})])[0]
    return round(result.steer_max_eff - 0.2 * 0.1, 9)


def test_a_changed_tunable_steers_the_next_call(clean, db_url):
    conn = clean
    _tuned_overrides(conn)
    _assert_as_postgresql(conn, TUNED)
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE learning.tunable_specs SET default_value = '0.2' WHERE key = 'steer_base'")
        assert _steer_base(conn) == 0.2  # a changed default, seen inside the transaction
        _set(conn, "steer_base", 0.1)
        assert _steer_base(conn) == 0.1
    assert _steer_base(conn) == 0.03  # rolled back
    _set(conn, "conf_min", 0.95)  # every match now below it: none dropped
    _assert_as_postgresql(conn, TUNED)
    conn.execute(
        "UPDATE public.learning_configs SET config_data = config_data || '{\"steer_gain\": 0.9}'"
        " WHERE module_id = 'learning'"
    )  # the bot edits the row itself
    _assert_as_postgresql(conn, TUNED)
    with psycopg.connect(db_url, autocommit=True) as other:
        _set(other, "base_bias", 0.5)
    _assert_as_postgresql(conn, TUNED)
    conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'learning'")
    _assert_as_postgresql(conn, TUNED)


def test_a_new_definition_of_learning_tunables_is_seen_by_the_next_call(clean):
    conn = clean
    _tuned_overrides(conn)
    definition = conn.execute("SELECT pg_get_functiondef('learning.tunables()'::regprocedure)").fetchone()[0]
    assert definition.count("RETURN tun;") == 1
    try:
        assert _steer_base(conn) == 0.03
        conn.execute(definition.replace("RETURN tun;", """RETURN tun || '{"steer_base": 0.2}'::jsonb;"""))
        assert _steer_base(conn) == 0.2
    finally:
        conn.execute(definition)


def test_a_repeatable_read_transaction_keeps_its_snapshots_tunables(clean, db_url):
    conn = clean
    _tuned_overrides(conn)
    _set(conn, "steer_base", 0.1)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with conn.transaction():
            assert _steer_base(conn) == 0.1
            with psycopg.connect(db_url, autocommit=True) as other:
                _set(other, "steer_base", 0.2)
            assert _steer_base(conn) == 0.1
        assert _steer_base(conn) == 0.2
    finally:
        conn.isolation_level = None
