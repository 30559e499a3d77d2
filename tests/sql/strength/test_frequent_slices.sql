-- learning.scope_dimensions and learning.frequent_slices (design §8) on hand-computed cells.
BEGIN;
SELECT plan(14);

SELECT is(
    learning.scope_dimensions('{"a": 1, "b": [1], "c": null, "d": {"x": 1}, "e": "s", "f": false}'),
    '{"a": 1, "e": "s", "f": false}'::jsonb,
    'scope_dimensions keeps string, number and boolean values only'
);
SELECT is(
    learning.scope_dimensions('{"a": 1, "e": "s", "f": false}', ARRAY['e', 'zz']),
    '{"e": "s"}'::jsonb,
    'scope_dimensions restricts to p_dims when it is not empty'
);
SELECT is(learning.scope_dimensions('[1, 2]'), '{}'::jsonb, 'a non-object scope has no dimensions');
SELECT is(learning.scope_dimensions(NULL), '{}'::jsonb, 'a NULL scope has no dimensions');

CREATE TEMP TABLE slice_cells (pattern_key text, dims jsonb, stats double precision []);

SELECT is_empty(
    $$SELECT * FROM learning.frequent_slices(1, 4)$$,
    'no cells: no slices'
);

INSERT INTO slice_cells VALUES
('p', '{"a": 1, "b": "x", "c": true}', '{1, 10}'),
('p', '{"a": 1, "b": "y"}', '{1, 20}'),
('p', '{"a": 2, "b": "x", "c": true}', '{1, 30}'),
('p', '{"a": 1, "b": "x"}', '{1, 40}'),
('q', '{"a": 1}', '{1, 1}');

-- By hand, n >= 2: {} 4 (100); a=1 3 (70); b=x 3 (80); c=true 2 (40); a=1,b=x 2 (50);
-- b=x,c=true 2 (40). a=1,c=true has 1, a=2 has 1, pattern q has 1.
SELECT set_eq(
    $$SELECT pattern_key, scope_subset, stats FROM learning.frequent_slices(2, 4)$$,
    $$VALUES
        ('p', '{}'::jsonb, '{4,100}'::float8 []),
        ('p', '{"a": 1}', '{3,70}'),
        ('p', '{"b": "x"}', '{3,80}'),
        ('p', '{"c": true}', '{2,40}'),
        ('p', '{"a": 1, "b": "x"}', '{2,50}'),
        ('p', '{"b": "x", "c": true}', '{2,40}')$$,
    'n_min 2: every slice with >= 2 units and its summed stats, by hand'
);
SELECT set_eq(
    $$SELECT pattern_key, scope_subset FROM learning.frequent_slices(2, 1)$$,
    $$VALUES ('p', '{}'::jsonb), ('p', '{"a": 1}'), ('p', '{"b": "x"}'), ('p', '{"c": true}')$$,
    'max_dims 1 caps slices at one pair'
);
SELECT set_eq(
    $$SELECT pattern_key, scope_subset, stats FROM learning.frequent_slices(1, 0)$$,
    $$VALUES ('p', '{}'::jsonb, '{4,100}'::float8 []), ('q', '{}', '{1,1}')$$,
    'max_dims 0: only the empty slice of each pattern'
);
SELECT is(
    (SELECT count(*)::integer FROM learning.frequent_slices(1, 4)),
    -- p: {} + 5 singles (a=1,a=2,b=x,b=y,c=true) + 6 pairs + 2 triples = 14; q: {} + a=1 = 2.
    16,
    'n_min 1: every sub-object of every cell (14 for p, 2 for q)'
);
SELECT is(
    (SELECT stats FROM learning.frequent_slices(1, 4) WHERE scope_subset = '{"a": 2, "b": "x", "c": true}'),
    '{1,30}'::float8 [],
    'a full-width slice sums its one cell'
);
SELECT is_empty(
    $$SELECT * FROM learning.frequent_slices(5, 4)$$,
    'n_min above every total: no slice, not even the empty one'
);

-- Non-scalar values are never dimensions; equal dims of separate cells are summed.
INSERT INTO slice_cells VALUES
('r', '{"a": [1, 2], "b": {"k": 1}, "c": null, "d": "x"}', '{1, 5}'),
('r', '{"a": [1, 2], "d": "x"}', '{1, 5}');
SELECT set_eq(
    $$SELECT scope_subset, stats FROM learning.frequent_slices(2, 4) WHERE pattern_key = 'r'$$,
    $$VALUES ('{}'::jsonb, '{2,10}'::float8 []), ('{"d": "x"}', '{2,10}')$$,
    'array, object and null values are ignored'
);

-- Inclusion-exclusion: a negative cell cancels a double count.
DELETE FROM slice_cells;
INSERT INTO slice_cells VALUES
('s', '{"a": 1}', '{1, 0.5}'),
('s', '{"a": 1, "b": 2}', '{1, 0.5}'),
('s', '{"a": 1}', '{-1, -0.5}'),
('s', '{"a": 3}', '{1, 1}');
SELECT set_eq(
    $$SELECT scope_subset, stats FROM learning.frequent_slices(1, 4)$$,
    $$VALUES ('{}'::jsonb, '{2,1.5}'::float8 []), ('{"a": 1}', '{1,0.5}'), ('{"b": 2}', '{1,0.5}'),
        ('{"a": 1, "b": 2}', '{1,0.5}'), ('{"a": 3}', '{1,1}')$$,
    'negative correction cells are summed like any other'
);

DROP TABLE slice_cells;
SELECT throws_ok(
    $$SELECT * FROM learning.frequent_slices(1, 4)$$,
    '42P01',
    NULL,
    'without pg_temp.slice_cells the call fails clearly'
);

SELECT * FROM finish();
ROLLBACK;
