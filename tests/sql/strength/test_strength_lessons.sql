-- Strength lessons from trade facts (design §11), on hand-computed small cases.
BEGIN;
SELECT plan(41);

-- Helper view of one lesson's stats.
CREATE TEMP VIEW ls AS
SELECT l.pattern_key, l.scope_subset, l.n, l.status, l.stats,
    (l.stats ->> 'dirA')::float8 AS dir_a, (l.stats ->> 'dirE')::float8 AS dir_e
FROM public.learning_lessons AS l
WHERE l.module = 'pm' AND l.lesson_type = 'pm_strength' AND l.action_category = 'pm_strength';

-- The formulas on sums alone: two trades, +20% S3 winner and -10% trimmed loser.
SELECT ok(
    abs((learning.strength_stats(
        ARRAY[2, 0.1, tanh(2) - tanh(1), tanh(2)^2 + tanh(1)^2, tanh(2) + tanh(1), tanh(2) - tanh(1),
              tanh(1) - tanh(2), 1, 1]::float8 [], 0.05) ->> 'confidence')::float8 - 0.015000873423478004) < 1e-12,
    'strength_stats: confidence = (1 - e^(-2/50)) / (1 + 1.4888851879 + 0.125) = 0.0150008734'
);
SELECT is(
    learning.strength_stats(ARRAY[1, 0.3, tanh(3), tanh(3)^2, tanh(3), tanh(3), -tanh(3), 0, 1]::float8 [], 0.3)
    - 'reliability_score' - 'support_score' - 'confidence' - 'sum_w' - 'dirA' - 'dirE' - 'mean_roi',
    '{"n": 1, "edge_raw_roi": 0, "p_trim": 0, "p_s3": 1, "variance": 0}'::jsonb,
    'strength_stats: n = 1 has variance 0; edge is mean minus the window mean'
);
SELECT ok(
    abs((learning.strength_stats(ARRAY[1, 0.3, tanh(3), tanh(3)^2, tanh(3), tanh(3), -tanh(3), 0, 1]::float8 [], 0)
        ->> 'reliability_score')::float8 - 0.8) < 1e-15,
    'strength_stats: reliability at n = 1 and variance 0 is 1 / (1 + 0.25) = 0.8'
);
SELECT ok(
    abs((learning.strength_stats(ARRAY[50, 0, 0, 0, 0, 0, 0, 0, 0]::float8 [], 0) ->> 'support_score')::float8
        - 0.6321205588285577) < 1e-15,
    'strength_stats: support at n = 50 is 1 - e^-1'
);
SELECT is(
    (learning.strength_stats(ARRAY[100000, 0, 0, 0, 0, 0, 0, 0, 0]::float8 [], 0) ->> 'support_score')::float8,
    1::float8,
    'strength_stats: support saturates at 1 for a huge n (no float underflow error)'
);
SELECT is(
    (learning.strength_stats(ARRAY[3, 0, 0, 0, 0, 0, 0, 0, 0]::float8 [], 0) ->> 'dirA')::float8,
    0::float8,
    'strength_stats: dirA is 0 when every weight is 0 (all roi 0)'
);

-- Trades (closed in February, as_of 2026-03-01, lookback 90 days).
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions, did_trim, reached_s3)
VALUES
-- pm.h: the four-trade hand case (S3 winner, trimmed loser, plain winner, flat), scope chain=sol.
('h1', '1h', 20, '2026-02-01', '[{"pattern_key": "pm.h", "action_category": "entry", "scope": {"chain": "sol"}}]', false, true),
('h2', '1h', -10, '2026-02-02', '[{"pattern_key": "pm.h", "action_category": "entry", "scope": {"chain": "sol"}}]', true, false),
('h3', '1h', 5, '2026-02-03', '[{"pattern_key": "pm.h", "action_category": "entry", "scope": {"chain": "sol"}}]', false, false),
('h4', '1h', 0, '2026-02-04', '[{"pattern_key": "pm.h", "action_category": "entry", "scope": {"chain": "sol"}}]', false, false),
-- Another pattern only moves the window mean (all 13 trades in the window sum to 1.18).
('o1', '4h', 45, '2026-02-05', '[{"pattern_key": "pm.other", "action_category": "entry", "scope": {}}]', false, false),
-- The four outcome classes, one pattern each.
('c1', '1h', -5, '2026-02-06', '[{"pattern_key": "pm.c1", "action_category": "entry", "scope": {}}]', false, false),
('c2', '1h', -5, '2026-02-06', '[{"pattern_key": "pm.c2", "action_category": "entry", "scope": {}}]', true, false),
('c3', '1h', 5, '2026-02-06', '[{"pattern_key": "pm.c3", "action_category": "entry", "scope": {}}]', false, false),
('c4', '1h', 5, '2026-02-06', '[{"pattern_key": "pm.c4", "action_category": "entry", "scope": {}}]', false, true),
-- One trade, three actions of one pattern: n counts it once.
('d1', '1h', 8, '2026-02-07',
 '[{"pattern_key": "pm.d", "action_category": "entry", "scope": {"chain": "sol"}},
   {"pattern_key": "pm.d", "action_category": "add", "scope": {"chain": "sol"}},
   {"pattern_key": "pm.d", "action_category": "trim", "scope": {"chain": "sol"}}]', NULL, NULL),
-- One trade whose actions of one pattern carry two scopes: every slice counts it once.
('m1', '1h', 8, '2026-02-07',
 '[{"pattern_key": "pm.m", "action_category": "entry", "scope": {"chain": "sol", "mcap": "s"}},
   {"pattern_key": "pm.m", "action_category": "add", "scope": {"chain": "sol", "mcap": "m"}},
   {"pattern_key": "pm.m", "action_category": "add", "scope": {"chain": "sol"}}]', false, false),
('m2', '1h', -8, '2026-02-08',
 '[{"pattern_key": "pm.m", "action_category": "entry", "scope": {"chain": "eth", "mcap": "s"}}]', false, false),
-- Outside the window (exactly as_of - 90 days) and inside at exactly as_of.
('w0', '1h', 50, '2025-12-01', '[{"pattern_key": "pm.w", "action_category": "entry", "scope": {}}]', false, false),
('w1', '1h', 50, '2026-03-01', '[{"pattern_key": "pm.w", "action_category": "entry", "scope": {}}]', false, false);

SELECT is((SELECT b.lessons > 0 AND b.inserted = b.lessons FROM learning.build_strength_lessons('2026-03-01', NULL, 1) AS b), true,
    'the builder returns its counts: lessons, all of them new');

SELECT is((SELECT n FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}'), 4, 'pm.h: n = 4 trades');
SELECT ok(
    abs((SELECT (stats ->> 'mean_roi')::float8 FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}') - 0.0375) < 1e-15,
    'pm.h: mean_roi = 0.15 / 4 (the flat trade counts)'
);
SELECT ok(
    abs((SELECT (stats ->> 'edge_raw_roi')::float8 FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}')
        - (0.0375 - 1.18 / 13)) < 1e-15,
    'pm.h: edge_raw_roi = 0.0375 - 1.18/13 (mean of the 13 trades in the window, any pattern)'
);
SELECT ok(
    abs((SELECT (stats ->> 'variance')::float8 FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}')
        - 0.5375067439212459) < 1e-12,
    'pm.h: variance = sample variance of tanh(roi/0.10) over the 4 trades'
);
SELECT ok(
    abs((SELECT (stats ->> 'support_score')::float8 FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}')
        - 0.07688365361336424) < 1e-12,
    'pm.h: support = 1 - e^(-4/50)'
);
SELECT ok(
    abs((SELECT (stats ->> 'reliability_score')::float8 FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}')
        - 0.6249973656668669) < 1e-12,
    'pm.h: reliability = 1 / (1 + variance + 0.25/4)'
);
SELECT ok(
    abs((SELECT (stats ->> 'confidence')::float8 FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}')
        - 0.048052080971196544) < 1e-12,
    'pm.h: confidence = support x reliability'
);
SELECT ok(
    (SELECT abs(dir_a - 0.09253088873667104) < 1e-12 AND abs(dir_e + 0.09253088873667104) < 1e-12
     FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}'),
    'pm.h: dirA/dirE = tanh-weighted means (tanh2 - tanh1) / (tanh2 + tanh1 + tanh0.5); roi 0 weighs nothing'
);
SELECT results_eq(
    $$SELECT (stats ->> 'p_trim')::float8, (stats ->> 'p_s3')::float8 FROM ls
      WHERE pattern_key = 'pm.h' AND scope_subset = '{}'$$,
    $$VALUES (0.25::float8, 0.25::float8)$$,
    'pm.h: p_trim and p_s3 are shares of trades'
);
SELECT is(
    (SELECT stats FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{"chain": "sol"}'),
    (SELECT stats FROM ls WHERE pattern_key = 'pm.h' AND scope_subset = '{}'),
    'pm.h: the chain=sol slice holds the same trades, so the same stats'
);

SELECT results_eq(
    $$SELECT pattern_key, dir_a, dir_e FROM ls WHERE pattern_key IN ('pm.c1', 'pm.c2', 'pm.c3', 'pm.c4')
      AND scope_subset = '{}' ORDER BY pattern_key$$,
    $$VALUES ('pm.c1', -1::float8, 0::float8), ('pm.c2', -1, 1), ('pm.c3', 0, 0), ('pm.c4', 1, -1)$$,
    'the four outcome classes map to (-1,0), (-1,+1), (0,0), (+1,-1)'
);
SELECT is((SELECT n FROM ls WHERE pattern_key = 'pm.d' AND scope_subset = '{"chain": "sol"}'), 1,
    'a trade with 3 actions of one pattern counts once');
SELECT ok(
    (SELECT (stats ->> 'p_trim')::float8 = 1 FROM ls WHERE pattern_key = 'pm.d' AND scope_subset = '{}'),
    'pm.d: did_trim derived from its trim action'
);

SELECT set_eq(
    $$SELECT scope_subset, n FROM ls WHERE pattern_key = 'pm.m'$$,
    $$VALUES ('{}'::jsonb, 2), ('{"chain": "sol"}', 1), ('{"chain": "eth"}', 1), ('{"mcap": "s"}', 2),
        ('{"mcap": "m"}', 1), ('{"chain": "sol", "mcap": "s"}', 1), ('{"chain": "sol", "mcap": "m"}', 1),
        ('{"chain": "eth", "mcap": "s"}', 1)$$,
    'a trade whose actions carry several scopes counts once in every slice they share'
);
SELECT ok(
    (SELECT abs((stats ->> 'mean_roi')::float8) < 1e-15 AND abs((stats ->> 'sum_w')::float8 - 2 * tanh(0.8)) < 1e-12
     FROM ls WHERE pattern_key = 'pm.m' AND scope_subset = '{"mcap": "s"}'),
    'inclusion-exclusion: the sums of the shared slice hold each trade once'
);
SELECT is(
    (SELECT n FROM ls WHERE pattern_key = 'pm.w' AND scope_subset = '{}'), 1,
    'window (as_of - lookback, as_of]: a trade at as_of counts, one at as_of - 90 days does not'
);

-- Materializer: directional lessons only.
SELECT is((SELECT m.active > 0 FROM learning.materialize_strength_overrides() AS m), true,
    'the materializer returns its counts: the active overrides');
SELECT is(
    (SELECT count(*)::integer FROM public.pm_overrides WHERE pattern_key = 'pm.c3' AND status = 'active'),
    0,
    'a (0, 0) lesson writes no override'
);
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log WHERE message LIKE 'STRENGTH NO OVERRIDE: pattern=pm.c3 | dirA=0 dirE=0%'),
    'and logs why'
);
SELECT results_eq(
    $$SELECT dira, dire, multiplier, n, status FROM public.pm_overrides
      WHERE pattern_key = 'pm.c4' AND action_category = 'pm_strength' AND scope_subset = '{}'$$,
    $$VALUES (1::float8, -1::float8, 1::float8, 1, 'active')$$,
    'an S3 winner slice becomes an override: dira 1, dire -1, no size multiplier'
);
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log
            WHERE message ~ '^STRENGTH OVERRIDE: pattern=pm\.c4 \| dirA=1\.0000 dirE=-1\.0000 conf=0\.0158 edge=[-0-9.]+ n=1 \| scope=\{\}$'),
    'STRENGTH OVERRIDE log line in the plan''s shape'
);

-- Re-running on unchanged data changes no row.
CREATE TEMP TABLE before_rows AS
SELECT 'l' AS t, ctid::text AS c FROM public.learning_lessons
UNION ALL SELECT 'o', ctid::text FROM public.pm_overrides;
DO $do$ BEGIN PERFORM learning.build_strength_lessons('2026-03-01', NULL, 1); END $do$;
DO $do$ BEGIN PERFORM learning.materialize_strength_overrides(); END $do$;
SELECT set_eq(
    $$SELECT 'l' AS t, ctid::text AS c FROM public.learning_lessons
      UNION ALL SELECT 'o', ctid::text FROM public.pm_overrides$$,
    $$SELECT t, c FROM before_rows$$,
    're-running builder and materializer on unchanged data rewrites no row (same tuple ids)'
);

-- n_min: slices below it make no lesson; lessons that fall below turn inactive, overrides follow.
DO $do$ BEGIN PERFORM learning.build_strength_lessons('2026-03-01', NULL, 2); END $do$;
SELECT is((SELECT status FROM ls WHERE pattern_key = 'pm.c4' AND scope_subset = '{}'), 'inactive',
    'a lesson that falls below n_min turns inactive');
SELECT is((SELECT status FROM ls WHERE pattern_key = 'pm.m' AND scope_subset = '{}'), 'active',
    'a lesson still at n_min stays active');
DO $do$ BEGIN PERFORM learning.materialize_strength_overrides(); END $do$;
SELECT is(
    (SELECT status FROM public.pm_overrides WHERE pattern_key = 'pm.c4' AND scope_subset = '{}'),
    'inactive',
    'its override is deactivated'
);
SELECT is(
    (SELECT count(*)::integer FROM ls WHERE status = 'active' AND n < 2),
    0,
    'no active lesson has fewer than n_min trades'
);

-- A legacy pm_strength row of the bot (size multiplier, no direction) is deactivated and logged.
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, confidence_score)
VALUES ('pm.legacy', 'pm_strength', '{"chain": "sol"}', 1.8, 0.7);
DO $do$ BEGIN PERFORM learning.materialize_strength_overrides(); END $do$;
SELECT is(
    (SELECT status FROM public.pm_overrides WHERE pattern_key = 'pm.legacy'),
    'inactive',
    'a legacy pm_strength override is deactivated'
);
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log
            WHERE message LIKE 'STRENGTH OVERRIDE DEACTIVATED: pattern=pm.legacy |%legacy size multiplier row'),
    'with a log line'
);

-- The bot's legacy size-multiplier rows (action entry/add/trim/exit, BOT_SHAPES) are deactivated
-- too: next to the steering of A and E they would count the lesson twice.
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier)
VALUES ('pm.legacy2', 'entry', '{"chain": "sol"}', 1.5), ('pm.legacy2', 'trim', '{}', 0.7),
    ('pm.legacy2', 'tuning_ts_min', '{}', 1.05);
DO $do$ BEGIN PERFORM learning.materialize_strength_overrides(); END $do$;
SELECT is(
    (SELECT array_agg(action_category || '=' || status ORDER BY action_category)
     FROM public.pm_overrides WHERE pattern_key = 'pm.legacy2'),
    ARRAY['entry=inactive', 'trim=inactive', 'tuning_ts_min=active'],
    'legacy entry/trim size multipliers are deactivated; tuning rows are not the strength materializer''s'
);
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log
            WHERE message = 'STRENGTH OVERRIDE DEACTIVATED: pattern=pm.legacy2 | action=entry | n=null'
                || ' | scope={chain: sol} | reason=legacy size multiplier row'),
    'each with a log line naming its action'
);

-- A neutral legacy pm_strength row (multiplier 1, no direction) on a learned slice is rewritten
-- with the lesson: `NOT _num_close(NULL, x)` was NULL, so the upsert's WHERE skipped it (review).
INSERT INTO public.learning_lessons (module, pattern_key, action_category, scope_subset, n, stats, lesson_type, status)
VALUES ('pm', 'pm.neutral', 'pm_strength', '{"chain": "sol"}', 40,
    '{"dirA": 0.6, "dirE": -0.4, "confidence": 0.5, "edge_raw_roi": 0.01}', 'pm_strength', 'active');
INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, n)
VALUES ('pm.neutral', 'pm_strength', '{"chain": "sol"}', 1.0, 40);
DO $do$ BEGIN PERFORM learning.materialize_strength_overrides(); END $do$;
SELECT results_eq(
    $$SELECT dira, dire, confidence_score, edge_raw_roi, status FROM public.pm_overrides
      WHERE pattern_key = 'pm.neutral'$$,
    $$VALUES (0.6::float8, -0.4::float8, 0.5::float8, 0.01::float8, 'active'::text)$$,
    'a neutral row on a learned slice takes the lesson''s direction'
);
SELECT ok(learning._num_close(NULL, NULL) AND NOT learning._num_close(NULL, 1)
    AND NOT learning._num_close(1, NULL) AND learning._num_close(1, 1 + 1e-13),
    '_num_close: NULL agrees only with NULL, never NULL itself');
SELECT is(learning._num_close(NULL, 1), false, '_num_close(NULL, x) is false, not NULL');

-- scope_dims restricts the dimensions mined.
DO $do$ BEGIN PERFORM learning.set_tunable('scope_dims', '["mcap"]'); END $do$;
DO $do$ BEGIN PERFORM learning.build_strength_lessons('2026-03-01', NULL, 1); END $do$;
SELECT set_eq(
    $$SELECT scope_subset, n FROM ls WHERE pattern_key = 'pm.m' AND status = 'active'$$,
    $$VALUES ('{}'::jsonb, 2), ('{"mcap": "s"}', 2), ('{"mcap": "m"}', 1)$$,
    'scope_dims ["mcap"]: only mcap slices (and {}) are mined'
);

SELECT * FROM finish();
ROLLBACK;
