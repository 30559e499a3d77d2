"""learning.frequent_slices (design §8): the level-wise (apriori) search, a candidate counted only
when its prefix is a frequent slice (learning._fs_level_wise), and its one fast path, one GROUP BY
GROUPING SETS when the cells have few scope keys in all (learning._fs_grouping_sets). On random
cells both, and frequent_slices itself, must equal a brute force (every sub-object of every cell,
summed, kept at n >= n_min), whichever way the apriori condition is checked: no pruning yet, lists
of pruned packed keys, or the look-up of the prefix among the frequent slices of the level before
(when a pruned key does not fit in a bigint).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict

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
# Each path alone (the cells' stats have 2 elements).
LEVEL_WISE = """
SELECT pattern_key, scope_subset::text, stats FROM learning._fs_level_wise(%(n_min)s, %(max_dims)s, 2)
"""
GROUPING_SETS = """
SELECT pattern_key, scope_subset::text, stats FROM learning._fs_grouping_sets(%(n_min)s, 2, %(max_dims)s)
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


def run(conn, cells, n_min: int, max_dims: int, query: str = SLICES) -> dict:
    with conn.transaction(force_rollback=True):
        conn.execute("CREATE TEMP TABLE slice_cells (pattern_key text, dims jsonb, stats float8 []) ON COMMIT DROP")
        for pattern, dims, n, value in cells:
            conn.execute(
                "INSERT INTO slice_cells VALUES (%s, %s::jsonb, ARRAY[%s, %s]::float8 [])",
                (pattern, json.dumps(dims), n, value),
            )
        rows = conn.execute(query, {"n_min": n_min, "max_dims": max_dims}).fetchall()
    return {(p, json.dumps(json.loads(s), sort_keys=True)): list(stats) for p, s, stats in rows}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(CELL, max_size=25), n_min=st.integers(1, 6), max_dims=st.integers(0, 5))
def test_level_wise_search_and_grouping_sets_equal_brute_force(conn, cells, n_min, max_dims):
    expected = brute_force(cells, n_min, max_dims)
    assert run(conn, cells, n_min, max_dims) == expected  # integer sums: exact
    assert run(conn, cells, n_min, max_dims, LEVEL_WISE) == expected
    assert run(conn, cells, n_min, max_dims, GROUPING_SETS) == expected


def test_apriori_filters_agree_with_brute_force(conn):
    """Dense cells where level 2 prunes nothing and levels 3 and 4 prune some candidates: the
    pruned-key lists must give the brute force's slices, not more, not fewer."""
    cells = []
    for i in range(60):
        dims = {"a": i % 2, "b": i % 3, "c": i % 5, "d": "x", "e": i % 4 == 0}
        cells.append(("p", dims, 1, i % 7))
    for n_min in (2, 3, 4, 6):
        expected = brute_force(cells, n_min, 5)
        assert run(conn, cells, n_min, 5, LEVEL_WISE) == expected, n_min
        assert run(conn, cells, n_min, 5) == expected, n_min


def test_keys_past_a_bigint_use_arrays_and_the_prefix_look_up(conn):
    """Over 32,768 distinct items need 16 bits per id: levels 2 and 3 are keyed by a packed bigint,
    level 4 (64 bits) by the int[]. Two cells share each value of a; for odd a they differ in d, so
    {a, b, c, d} (its prefixes frequent) is an infrequent level-4 candidate whose key is an array,
    and level 5 looks its prefixes up among level 4's frequent slices. Counts by hand."""
    with conn.transaction(force_rollback=True):
        conn.execute(
            "CREATE TEMP TABLE slice_cells ON COMMIT DROP AS"
            " SELECT 'p'::text AS pattern_key, jsonb_build_object('a', i / 2, 'b', 'x', 'c', 'y',"
            " 'd', CASE WHEN (i / 2) % 2 = 0 THEN 'z' ELSE (i % 2)::text END, 'e', 'w') AS dims,"
            " ARRAY[1, i % 7]::float8 [] AS stats FROM generate_series(0, 65539) AS i"
        )
        rows = conn.execute(LEVEL_WISE, {"n_min": 2, "max_dims": 5}).fetchall()
    got = {s: tuple(stats) for _, s, stats in rows}
    by_dims: dict = defaultdict(int)
    for s in got:
        by_dims[len(json.loads(s))] += 1
    assert by_dims[1] == 32770 + 1 + 1 + 3 + 1  # a (over 32,768 items), b, c, d in {z, 0, 1}, e
    assert by_dims[5] == 16385  # the even values of a: both cells agree on d
    assert got['{"a": 4, "b": "x", "c": "y", "d": "z", "e": "w"}'] == (2.0, float(8 % 7 + 9 % 7))
    assert '{"a": 5, "b": "x", "c": "y", "d": "0"}' not in got
    assert got['{"a": 5, "b": "x", "c": "y", "e": "w"}'] == (2.0, float(10 % 7 + 11 % 7))


def test_integer_stats_are_summed_as_floats_on_both_paths(conn):
    """Cells whose stats are an int[] give the same float8 sums on both paths."""

    def slices(query: str) -> dict:
        with conn.transaction(force_rollback=True):
            conn.execute(
                "CREATE TEMP TABLE slice_cells ON COMMIT DROP AS"
                " SELECT 'p'::text AS pattern_key, jsonb_build_object('a', i % 2, 'b', 'x') AS dims,"
                " ARRAY[1, i]::int [] AS stats FROM generate_series(1, 6) AS i"
            )
            rows = conn.execute(query, {"n_min": 2, "max_dims": 2}).fetchall()
        return {(p, s): tuple(stats) for p, s, stats in rows}

    level_wise, grouping_sets = slices(LEVEL_WISE), slices(GROUPING_SETS)
    assert level_wise == grouping_sets == slices(SLICES)
    assert level_wise[("p", '{"a": 1, "b": "x"}')] == (3.0, 9.0)  # i = 1, 3, 5
