"""Both strength calls check their inputs with one rule, before any round trip (design §2, §13).

apply_strength_overrides and apply_strength_overrides_batch used to disagree or fail obscurely on
inputs outside the contract: an int scope key ({1: "x"} matched the override {"1": "x"} in the single
call only), numpy scalars (a TypeError in one, np.True_ matching {"n": 1} in the other), NaN (a
PostgreSQL error in one, silently ignored in the other), a list or JSON text as the scope, a None
pattern_key, NaN or "0.5" flags. Now each is a ValueError naming the field (the batch: `row i: ` and
the single call's message), raised before the connection is used; valid inputs give equal results.
"""

from __future__ import annotations

import enum
import json
import math
import types
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lowcap_learning import runtime
from lowcap_learning.runtime import apply_strength_overrides, apply_strength_overrides_batch

INSERT = """
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score,
    dira, dire, edge_raw_roi, n, status)
VALUES (%(p)s, 'pm_strength', %(s)s::jsonb, 1, %(c)s, %(a)s, %(e)s, 0.01, 40, 'active')
"""

# Overrides the review's inputs used to match in one call and not the other.
OVERRIDES = [
    ("pm.v", {}, 0.5, 0.5, -0.5),
    ("pm.v", {"1": "x"}, 0.6, 1.0, -1.0),
    ("pm.v", {"n": 1}, 0.7, -1.0, 1.0),
    ("pm.v", {"chain": "sol"}, 0.8, 0.5, 0.5),
    ("pm.v", {"tags": ["a"]}, 0.9, -0.5, 0.5),
]


@pytest.fixture
def overrides(conn):
    conn.execute("DELETE FROM public.pm_overrides")
    for p, s, c, a, e in OVERRIDES:
        conn.execute(INSERT, {"p": p, "s": json.dumps(s), "c": c, "a": a, "e": e})
    yield
    conn.execute("DELETE FROM public.pm_overrides")


class NoDatabase:
    """A connection that must not be used: the checks come before any round trip."""

    def __getattr__(self, name):
        raise AssertionError(f"the connection was used ({name}) before the inputs were checked")


class Chain(enum.StrEnum):
    SOL = "sol"


class Ordinal(enum.IntEnum):
    ONE = 1


def _cycle() -> list:
    loop: list = []
    loop.append(loop)
    return loop


GOOD = ("pm.v", {"chain": "sol"}, 0.5, 0.5)

# (pattern_key, scope, a_flags, e_flags) with one bad field, and what the message must name.
BAD = [
    # pattern_key: not a non-empty str (None was a silent no-op in both calls)
    pytest.param((None, {}, 0.5, 0.5), "pattern_key must be a non-empty str", id="pattern-None"),
    pytest.param(("", {}, 0.5, 0.5), "pattern_key must be a non-empty str", id="pattern-empty"),
    pytest.param((7, {}, 0.5, 0.5), "pattern_key must be a non-empty str, got int 7", id="pattern-int"),
    pytest.param((b"pm.v", {}, 0.5, 0.5), "pattern_key must be a non-empty str, got bytes", id="pattern-bytes"),
    pytest.param(("pm\x00v", {}, 0.5, 0.5), "pattern_key contains a NUL character", id="pattern-nul"),
    # scope: not a dict (a list, a str or JSON text: no match and no error in the single call, an
    # AttributeError in the batch)
    pytest.param(("pm.v", ["chain"], 0.5, 0.5), "scope must be a dict", id="scope-list"),
    pytest.param(("pm.v", "chain", 0.5, 0.5), "scope must be a dict", id="scope-str"),
    pytest.param(("pm.v", '{"chain": "sol"}', 0.5, 0.5), "(JSON text? pass json.loads() of it)", id="scope-json-text"),
    pytest.param(("pm.v", b'{"chain": "sol"}', 0.5, 0.5), "scope must be a dict", id="scope-bytes"),
    pytest.param(("pm.v", 0, 0.5, 0.5), "scope must be a dict", id="scope-int"),
    pytest.param(("pm.v", [("chain", "sol")], 0.5, 0.5), "scope must be a dict", id="scope-pairs"),
    # scope keys that are not str (json.dumps turned 1 into "1" in the single call only)
    pytest.param(("pm.v", {1: "x"}, 0.5, 0.5), "scope: key int 1 is not a str", id="key-int"),
    pytest.param(("pm.v", {None: "x"}, 0.5, 0.5), "scope: key NoneType None is not a str", id="key-None"),
    pytest.param(("pm.v", {np.str_("a"): "x", 2.5: "y"}, 0.5, 0.5), "scope: key float 2.5", id="key-float"),
    pytest.param(("pm.v", {"chain": {1: "x"}}, 0.5, 0.5), "scope['chain']: key int 1 is not a str", id="key-nested"),
    pytest.param(("pm.v", {"ch\x00ain": "sol"}, 0.5, 0.5), "scope: key 'ch\\x00ain' contains a NUL", id="key-nul"),
    pytest.param(("pm.v", {"\ud800": "sol"}, 0.5, 0.5), "lone surrogate", id="key-surrogate"),
    # scope values that are not JSON values (numpy scalars: a TypeError in the single call, and
    # np.True_ matched {"n": 1} in the batch)
    pytest.param(("pm.v", {"n": np.int64(1)}, 0.5, 0.5), "scope['n'] is a numpy.int64", id="value-np-int64"),
    pytest.param(("pm.v", {"n": np.True_}, 0.5, 0.5), "scope['n'] is a numpy.bool", id="value-np-bool"),
    pytest.param(("pm.v", {"n": np.float32(0.5)}, 0.5, 0.5), "scope['n'] is a numpy.float32", id="value-np-float32"),
    pytest.param(("pm.v", {"n": np.array([1])}, 0.5, 0.5), "scope['n'] is a numpy.ndarray", id="value-np-array"),
    pytest.param(("pm.v", {"n": Decimal("1")}, 0.5, 0.5), "scope['n'] is a decimal.Decimal", id="value-decimal"),
    pytest.param(("pm.v", {"n": (1, 2)}, 0.5, 0.5), "scope['n'] is a tuple", id="value-tuple"),
    pytest.param(("pm.v", {"n": {1, 2}}, 0.5, 0.5), "scope['n'] is a set", id="value-set"),
    pytest.param(("pm.v", {"n": b"x"}, 0.5, 0.5), "scope['n'] is a bytes", id="value-bytes"),
    pytest.param(("pm.v", {"n": [1, np.int64(2)]}, 0.5, 0.5), "scope['n'][1] is a numpy.int64", id="value-nested"),
    pytest.param(
        ("pm.v", {"n": types.MappingProxyType({"x": 1})}, 0.5, 0.5), "scope['n'] is a mappingproxy", id="value-map"
    ),
    pytest.param(("pm.v", {"n": "so\x00l"}, 0.5, 0.5), "scope['n'] contains a NUL character", id="value-nul"),
    pytest.param(
        ("pm.v", {"n": ["\udfff"]}, 0.5, 0.5), "scope['n'][0] contains a NUL character or a lone", id="value-lone"
    ),
    pytest.param(
        ("pm.v", {"n": 10**5000}, 0.5, 0.5), "scope['n'] is an integer too long to write as JSON", id="int-huge"
    ),
    pytest.param(("pm.v", {"n": _cycle()}, 0.5, 0.5), "scope['n'] is nested too deeply", id="value-cycle"),
    # non-finite numbers anywhere in the scope (a PostgreSQL error in the single call, ignored by the batch)
    pytest.param(("pm.v", {"n": math.nan}, 0.5, 0.5), "scope['n'] is nan: not a finite number", id="nan"),
    pytest.param(("pm.v", {"n": math.inf}, 0.5, 0.5), "scope['n'] is inf: not a finite number", id="inf"),
    pytest.param(("pm.v", {"n": -math.inf}, 0.5, 0.5), "scope['n'] is -inf: not a finite number", id="-inf"),
    pytest.param(("pm.v", {"n": np.float64("nan")}, 0.5, 0.5), "scope['n'] is nan", id="np-float64-nan"),
    pytest.param(("pm.v", {"n": [0.5, {"x": math.nan}]}, 0.5, 0.5), "scope['n'][1]['x'] is nan", id="nested-nan"),
    # flags: not a real number, not finite, or outside [0, 1]
    pytest.param(("pm.v", {}, math.nan, 0.5), "a_flags must be a finite number in [0, 1], got nan", id="a-nan"),
    pytest.param(("pm.v", {}, 0.5, math.nan), "e_flags must be a finite number in [0, 1], got nan", id="e-nan"),
    pytest.param(("pm.v", {}, math.inf, 0.5), "a_flags must be a finite number in [0, 1], got inf", id="a-inf"),
    pytest.param(("pm.v", {}, 0.5, -math.inf), "e_flags must be a finite number in [0, 1], got -inf", id="e--inf"),
    pytest.param(("pm.v", {}, np.float32("nan"), 0.5), "a_flags must be a finite number", id="a-np-nan"),
    pytest.param(
        ("pm.v", {}, "0.5", 0.5), "a_flags must be a real number (int or float) in [0, 1], got str", id="a-str"
    ),
    pytest.param(
        ("pm.v", {}, 0.5, "0.5"), "e_flags must be a real number (int or float) in [0, 1], got str", id="e-str"
    ),
    pytest.param(("pm.v", {}, None, 0.5), "a_flags must be a real number", id="a-None"),
    pytest.param(
        ("pm.v", {}, True, 0.5), "a_flags must be a real number (int or float) in [0, 1], got bool", id="a-bool"
    ),
    pytest.param(
        ("pm.v", {}, 0.5, False), "e_flags must be a real number (int or float) in [0, 1], got bool", id="e-bool"
    ),
    pytest.param(("pm.v", {}, np.True_, 0.5), "a_flags must be a real number", id="a-np-bool"),
    pytest.param(("pm.v", {}, Decimal("0.5"), 0.5), "a_flags must be a real number", id="a-decimal"),
    pytest.param(("pm.v", {}, [0.5], 0.5), "a_flags must be a real number", id="a-list"),
    pytest.param(("pm.v", {}, -0.1, 0.5), "a_flags must be in [0, 1], got float -0.1", id="a-negative"),
    pytest.param(("pm.v", {}, 0.5, 1.5), "e_flags must be in [0, 1], got float 1.5", id="e-above"),
    pytest.param(("pm.v", {}, 2, 0.5), "a_flags must be in [0, 1], got int 2", id="a-int-2"),
    pytest.param(("pm.v", {}, 0.5, -1), "e_flags must be in [0, 1], got int -1", id="e-int--1"),
    pytest.param(("pm.v", {}, 10**400, 0.5), "a_flags must be in [0, 1], got int of 1329 bits", id="a-int-huge"),
    pytest.param(("pm.v", {}, np.float64(1.0000001), 0.5), "a_flags must be in [0, 1]", id="a-np-float64-above"),
    pytest.param(("pm.v", {}, 0.5, np.int64(3)), "e_flags must be in [0, 1]", id="e-np-int64-above"),
]
if np.longdouble(0.1) != np.float64(0.1):  # an 80- or 128-bit long double: 0.1 is not a float
    BAD.append(
        pytest.param(("pm.v", {}, np.longdouble("0.1"), 0.5), "which a float does not hold exactly", id="a-longdouble")
    )


def _single_error(request) -> str:
    with pytest.raises(ValueError) as err:
        apply_strength_overrides(NoDatabase(), *request)
    return str(err.value)


@pytest.mark.parametrize(("request_", "expected"), BAD)
def test_a_bad_input_is_refused_before_any_round_trip_naming_the_field(request_, expected):
    message = _single_error(request_)
    assert expected in message
    # The batch refuses the same row with the same message and its index, wherever it is.
    for rows, index in (([request_], 0), ([GOOD, GOOD, request_, GOOD], 2), ([GOOD] * 5 + [request_], 5)):
        with pytest.raises(ValueError) as err:
            apply_strength_overrides_batch(NoDatabase(), rows)
        assert str(err.value) == f"row {index}: {message}"
    with pytest.raises(ValueError) as err:  # the first bad row is named
        apply_strength_overrides_batch(NoDatabase(), iter([GOOD, request_, ("pm.v", {}, math.nan, 0.5)]))
    assert str(err.value) == f"row 1: {message}"


@pytest.mark.parametrize(("request_", "expected"), BAD)
def test_a_bad_input_is_a_value_error_on_a_real_connection_that_stays_usable(conn, overrides, request_, expected):
    """Not a PostgreSQL error, a TypeError or an AttributeError: and the transaction is not broken."""
    with conn.transaction(force_rollback=True):
        with pytest.raises(ValueError, match="pattern_key|scope|a_flags|e_flags"):
            apply_strength_overrides(conn, *request_)
        with pytest.raises(ValueError, match=r"^row 1: "):
            apply_strength_overrides_batch(conn, [GOOD, request_])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert apply_strength_overrides(conn, *GOOD).applied


def test_the_reviews_inputs_no_longer_match_in_one_call_only(conn, overrides):
    """Each of the review's findings, as it was seen: now refused by both calls alike."""
    findings = [
        ("pm.v", {1: "x"}, 0.5, 0.5),  # single matched {"1": "x"}, batch did not
        ("pm.v", {"n": np.True_}, 0.5, 0.5),  # batch matched {"n": 1}, single raised TypeError
        ("pm.v", {"n": np.int64(1)}, 0.5, 0.5),
        ("pm.v", {"n": math.nan}, 0.5, 0.5),  # single: invalid input syntax for type json; batch: ignored
        ("pm.v", '{"chain": "sol"}', 0.5, 0.5),  # single: nothing matched, not even {}; batch: AttributeError
        ("pm.v", ["chain"], 0.5, 0.5),
        (None, {}, 0.5, 0.5),  # a silent no-op in both
        ("pm.v", {"chain": "sol"}, math.nan, 0.5),  # NaN flowed into a_final and position_size_frac
        ("pm.v", {"chain": "sol"}, "0.5", 0.5),
        ("pm.v", {"chain": "sol"}, 1.5, 0.5),  # clamped when steered, passed through otherwise
        ("pm.none", {}, 1.5, 0.5),
    ]
    for request in findings:
        with pytest.raises(ValueError):
            apply_strength_overrides(conn, *request)
        with pytest.raises(ValueError, match=r"^row 0: "):
            apply_strength_overrides_batch(conn, [request])


def test_edges_of_the_rule_are_accepted_by_both_calls(conn, overrides):
    """What the rule keeps: None is {}, another Mapping is read as a dict, str and float subclasses are
    the JSON values Python's json writes for them, ints 0 and 1 and exact numpy floats are flags, and
    the edges 0 and 1 themselves."""
    rows = [
        ("pm.v", None, 0.5, 0.5),
        ("pm.v", types.MappingProxyType({"chain": "sol", "n": 1}), 0.5, 0.5),
        ("pm.v", {"chain": Chain.SOL, "n": Ordinal.ONE}, 0, 1),
        ("pm.v", {"chain": np.str_("sol"), "n": np.float64(1.0)}, np.float32(0.25), np.float64(0.75)),
        (Chain.SOL, {}, np.int64(1), np.int8(0)),
        ("pm.v", {"1": "x", "tags": ["a", "b"], "deep": {"k": [None, True, -0.0, 2**70]}}, 0.0, 1.0),
        ("pm.v", {}, 5e-324, 1 - 2**-53),
    ]
    batch = apply_strength_overrides_batch(conn, rows)
    single = [apply_strength_overrides(conn, *row) for row in rows]
    assert [b.as_dict() for b in batch] == [s.as_dict() for s in single]
    assert [len(s.matches) for s in single] == [1, 3, 3, 3, 0, 3, 1]
    for s in single:
        assert type(s.a_flags) is float and type(s.e_flags) is float  # noqa: E721
        assert 0.0 <= s.a_final <= 1.0 and 0.0 <= s.e_final <= 1.0
    assert (single[2].a_flags, single[2].e_flags, single[3].a_flags) == (0.0, 1.0, 0.25)


def test_a_caller_scope_is_never_written(conn, overrides):
    """A dict subclass is checked and matched as it is, never through a lookup that could add a key
    (pm.s has only string values: the single call's cache would match it with itemgetter)."""
    from collections import defaultdict

    for s in ({"chain": "sol"}, {"chain": "sol", "tf": "1h"}):
        conn.execute(INSERT, {"p": "pm.s", "s": json.dumps(s), "c": 0.8, "a": 1.0, "e": -1.0})
    for pattern_key, matches in (("pm.v", 2), ("pm.s", 1)):
        scope = defaultdict(list, {"chain": "sol"})
        assert len(apply_strength_overrides(conn, pattern_key, scope, 0.5, 0.5).matches) == matches
        apply_strength_overrides(conn, pattern_key, scope, 0.5, 0.5)  # again, from the cache
        batch = apply_strength_overrides_batch(conn, [(pattern_key, scope, 0.5, 0.5), (pattern_key, scope, 0.5, 0.5)])
        assert [len(b.matches) for b in batch] == [matches, matches]
        assert dict(scope) == {"chain": "sol"}


def test_a_batch_row_that_is_not_a_row_is_named(conn):
    for rows, shown in (([GOOD, ("pm.v", {}, 0.5)], "tuple"), ([GOOD, GOOD, None], "NoneType"), ([7], "int")):
        with pytest.raises(ValueError, match=rf"^row {len(rows) - 1}: not a \(pattern_key, scope, a_flags, e_flags\)"):
            apply_strength_overrides_batch(NoDatabase(), rows)
        with pytest.raises(ValueError, match=shown):
            apply_strength_overrides_batch(NoDatabase(), rows)
    assert apply_strength_overrides_batch(NoDatabase(), []) == []
    assert apply_strength_overrides_batch(NoDatabase(), iter([])) == []


# The batch screens the common shape (str patterns, plain dict scopes of scalars, float or int flags)
# by checking each distinct value once, and goes row by row otherwise: both must decide alike, and
# give the same columns. Values and flags here mix valid and invalid ones.
SCREEN_VALUES = st.sampled_from(
    [
        "sol", "", "so\x00l", "\ud800", Chain.SOL, np.str_("eth"), 1, 1.0, True, False, None, 0.5, -0.0, 2**70,
        Ordinal.ONE, np.float64(1.0), math.nan, math.inf, np.int64(1), np.True_, np.float32(1.0), Decimal(1),
        (1,), [1], {"x": 1}, [math.nan], {"x": {1: 2}},
    ]
)  # fmt: skip
SCREEN_KEYS = st.sampled_from(["chain", "tf", "1", "k\x00", 1, None])
SCREEN_FLAGS = st.sampled_from(
    [0.0, 0.5, 1.0, 0, 1, 2, -0.0, -1e-300, math.nan, math.inf, True, "0.5", np.float64(0.5)]
)
SCREEN_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["pm.a", "pm.b", "", None, Chain.SOL]),
        st.one_of(st.dictionaries(SCREEN_KEYS, SCREEN_VALUES, max_size=3), st.sampled_from([None, [], "x"])),
        SCREEN_FLAGS,
        SCREEN_FLAGS,
    ),
    max_size=6,
)


def _row_by_row(rows):
    try:
        return "ok", [runtime._checked_request(*row) for row in rows]
    except ValueError:
        return "refused", None


@settings(max_examples=300, deadline=None)
@given(rows=SCREEN_ROWS)
@example(rows=[("pm.a", {"n": 1}, 0.5, 0.5), ("pm.a", {"n": np.int64(1)}, 0.5, 0.5)])  # equal, one refused
@example(rows=[("pm.a", {"n": 1}, 0.5, 0.5), ("pm.a", {"n": np.True_}, 0.5, 0.5)])
@example(rows=[("pm.a", {"n": 1.0}, 1, 0), ("pm.a", {"n": True}, True, 0.5)])
def test_the_batch_screen_decides_as_the_row_by_row_rule(rows):
    verdict, checked = _row_by_row(rows)
    try:
        columns = runtime._checked_rows(rows)
    except ValueError:
        assert verdict == "refused", rows
        return
    assert verdict == "ok", rows
    expected = tuple(map(list, zip(*checked, strict=True))) if checked else ([], [], [], [])
    assert columns == expected
    for column in columns[2:]:
        assert all(type(x) is float for x in column)  # noqa: E721


# Valid inputs: the single call and the batch agree (values and flags of every accepted kind).
VALID_VALUES = st.one_of(
    st.sampled_from(["sol", "eth", "1", "", Chain.SOL, np.str_("sol")]),
    st.sampled_from([1, 1.0, 0, True, False, None, Ordinal.ONE, np.float64(1.0), 2**70, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from([["a"], ["a", "b"], [1], {"x": 1}, {"x": [None]}]),
)
VALID_FLAGS = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0, 1, np.float32(0.5), np.float64(0.25), np.int64(1), 5e-324]),
)
VALID_SCOPES = st.one_of(
    st.dictionaries(st.sampled_from(["chain", "n", "1", "tags", "x"]), VALID_VALUES, max_size=4),
    st.just(None),
    st.builds(types.MappingProxyType, st.dictionaries(st.sampled_from(["chain", "n"]), VALID_VALUES, max_size=2)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        st.tuples(st.sampled_from(["pm.v", "pm.w", Chain.SOL]), VALID_SCOPES, VALID_FLAGS, VALID_FLAGS),
        min_size=1,
        max_size=8,
    )
)
@example(
    requests=[
        ("pm.v", {"1": "x", "n": 1.0}, 0.5, 0.5),
        ("pm.v", {"n": True}, 1, 0),
        ("pm.v", None, 0.5, 0.5),
        ("pm.v", {"chain": Chain.SOL, "tags": ["a", "b"]}, np.float32(0.5), 0.5),
    ]
)
def test_valid_inputs_give_equal_results_in_both_calls(conn, overrides, requests):
    batch = apply_strength_overrides_batch(conn, requests)
    single = [apply_strength_overrides(conn, *request) for request in requests]
    assert [b.as_dict() for b in batch] == [s.as_dict() for s in single]
    for request, s in zip(requests, single, strict=True):
        assert (s.a_flags, s.e_flags) == (float(request[2]), float(request[3]))
        assert not (math.isnan(s.a_final) or math.isnan(s.position_size_frac))


def test_rounding_noise_in_the_flags_is_clamped_by_both_calls(conn, overrides):
    """Review: a flag an ulp past 1 (the bot's own arithmetic) must not fail a trade. Within
    FLAG_TOLERANCE of [0, 1] a flag is clamped into it, by both calls; further out it is refused."""
    tol = runtime.FLAG_TOLERANCE
    rows = [
        ("pm.v", {"chain": "sol"}, 1.0000000000000002, -1e-17),
        ("pm.v", {"chain": "sol"}, 1.0 + tol, -tol),
        ("pm.none", {}, 1.0 + tol / 2, 0.5),
    ]
    single = [apply_strength_overrides(conn, *row) for row in rows]
    batch = apply_strength_overrides_batch(conn, rows)
    assert [b.as_dict() for b in batch] == [s.as_dict() for s in single]
    assert [(s.a_flags, s.e_flags) for s in single] == [(1.0, 0.0), (1.0, 0.0), (1.0, 0.5)]
    assert single[2].a_final == 1.0 and single[2].position_size_frac == 0.60  # passed through, clamped
    for a, e in ((1.0 + 2 * tol, 0.5), (0.5, -2 * tol)):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\], got float .* clamped"):
            apply_strength_overrides(conn, "pm.v", {}, a, e)
        with pytest.raises(ValueError, match=r"^row 0: "):
            apply_strength_overrides_batch(conn, [("pm.v", {}, a, e)])
