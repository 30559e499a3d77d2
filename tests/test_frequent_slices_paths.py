"""learning.frequent_slices has three paths to the same result (issue 6): one GROUP BY GROUPING SETS
over a column per scope key (few keys in all; setting learning.slices_grouping_sets = on/off/auto),
the direct enumeration of every k-subset of each cell's frequent items, and the level-wise (apriori)
extension it falls back to when the enumeration would be too large (setting
learning.slices_enumeration_limit). On random cells all must return the same slices with the same
sums, and all must equal a brute force.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])
VALUES = st.sampled_from([1, 2, "x", "y", True, [1], None])
CELL = st.tuples(
    st.sampled_from(["p", "q"]),
    st.dictionaries(KEYS, VALUES, max_size=7),
    st.integers(0, 3),
    st.integers(-5, 5),
)

SLICES = """
SELECT pattern_key, scope_subset::text, stats FROM learning.frequent_slices(%(n_min)s, %(max_dims)s)
"""


def brute_force(cells, n_min: int, max_dims: int) -> dict:
    """Every sub-object of a cell's scalar pairs with <= max_dims pairs, summed, kept at n >= n_min."""
    sums: dict = defaultdict(lambda: [0.0, 0.0])
    for pattern, dims, n, value in cells:
        pairs = sorted((k, v) for k, v in dims.items() if isinstance(v, (int, float, str, bool)))
        for size in range(0, max_dims + 1):
            for subset in itertools.combinations(pairs, size):
                key = (pattern, json.dumps(dict(subset), sort_keys=True))
                sums[key][0] += n
                sums[key][1] += value
    return {k: v for k, v in sums.items() if v[0] >= n_min}


def run(conn, cells, n_min: int, max_dims: int, limit: int | None, grouping_sets: str = "off") -> dict:
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMP TABLE slice_cells (pattern_key text, dims jsonb, stats float8 []) ON COMMIT DROP")
        for pattern, dims, n, value in cells:
            conn.execute(
                "INSERT INTO slice_cells VALUES (%s, %s::jsonb, ARRAY[%s, %s]::float8 [])",
                (pattern, json.dumps(dims), n, value),
            )
        if limit is not None:
            conn.execute("SELECT set_config('learning.slices_enumeration_limit', %s, true)", (str(limit),))
        conn.execute("SELECT set_config('learning.slices_grouping_sets', %s, true)", (grouping_sets,))
        rows = conn.execute(SLICES, {"n_min": n_min, "max_dims": max_dims}).fetchall()
    return {(p, json.dumps(json.loads(s), sort_keys=True)): list(stats) for p, s, stats in rows}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(CELL, max_size=25), n_min=st.integers(1, 6), max_dims=st.integers(0, 5))
def test_grouping_sets_direct_and_level_wise_paths_equal_brute_force(conn, cells, n_min, max_dims):
    expected = brute_force(cells, n_min, max_dims)
    grouping_sets = run(conn, cells, n_min, max_dims, None, "on")
    automatic = run(conn, cells, n_min, max_dims, None, "auto")
    direct = run(conn, cells, n_min, max_dims, None)
    level_wise = run(conn, cells, n_min, max_dims, 0)
    assert grouping_sets == expected  # integer sums: exact whatever the order of addition
    assert automatic == expected
    assert direct == expected
    assert level_wise == expected



def test_direct_path_keys_slices_by_array_when_packed_ids_would_not_fit(conn):
    """33,000 distinct items need 16 bits per id: levels 2 and 3 are keyed by a packed bigint, level
    4 (64 bits) by the int[]; both agree with the level-wise path and with the expected counts."""

    def slices(limit: int | None, grouping_sets: str = "off") -> dict:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "CREATE TEMP TABLE slice_cells ON COMMIT DROP AS"
                " SELECT CASE WHEN i % 2 = 0 THEN 'p' ELSE 'q' END AS pattern_key,"
                " jsonb_build_object('a', i, 'b', 'x', 'c', i % 3, 'd', 'z') AS dims,"
                " ARRAY[1, i % 7]::float8 [] AS stats FROM generate_series(1, 33000) AS i"
            )
            if limit is not None:
                conn.execute("SELECT set_config('learning.slices_enumeration_limit', %s, true)", (str(limit),))
            conn.execute("SELECT set_config('learning.slices_grouping_sets', %s, true)", (grouping_sets,))
            assert conn.execute("SELECT max(i) >= 32768 FROM generate_series(1, 33000) AS i").fetchone()[0]
            rows = conn.execute(SLICES, {"n_min": 1, "max_dims": 4}).fetchall()
        return {(p, s): tuple(stats) for p, s, stats in rows}

    direct, level_wise = slices(None), slices(0)
    assert direct == level_wise
    assert slices(None, "auto") == direct  # the grouping sets path (4 keys, every cell has all 4)
    by_dims: dict = defaultdict(int)
    for _, s in direct:
        by_dims[len(json.loads(s))] += 1
    # per pattern: {} ; a(16,500) + b + c(3) + d ; pairs ; triples ; the 16,500 full cells
    assert by_dims[4] == 33000
    assert direct[("p", '{"a": 2, "b": "x", "c": 2, "d": "z"}')] == (1.0, 2.0)
    assert direct[("q", '{"b": "x", "d": "z"}')][0] == 16500


def test_grouping_sets_setting_is_checked_and_integer_stats_are_summed(conn):
    """An unknown learning.slices_grouping_sets value is refused (not silently auto); cells whose
    stats are an int[] give the same float8 sums on every path."""
    import psycopg

    def slices(grouping_sets: str) -> dict:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "CREATE TEMP TABLE slice_cells ON COMMIT DROP AS"
                " SELECT 'p'::text AS pattern_key, jsonb_build_object('a', i % 2, 'b', 'x') AS dims,"
                " ARRAY[1, i]::int [] AS stats FROM generate_series(1, 6) AS i"
            )
            conn.execute("SELECT set_config('learning.slices_grouping_sets', %s, true)", (grouping_sets,))
            rows = conn.execute(SLICES, {"n_min": 2, "max_dims": 2}).fetchall()
        return {(p, s): tuple(stats) for p, s, stats in rows}

    on, off = slices("on"), slices("off")
    assert on == off
    assert on[("p", '{"a": 1, "b": "x"}')] == (3.0, 9.0)  # i = 1, 3, 5
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        slices("yes")
