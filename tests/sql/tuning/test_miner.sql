-- Tuning miner: rates equal hand counts, neutral excluded, n_min respected, stale lessons inactive,
-- a re-run on unchanged data writes nothing.
BEGIN;
SELECT plan(12);

INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, outcome, factors, timestamp)
SELECT s.scope::jsonb, 'mt.p', 'mt_' || s.tag || '_' || g, s.decision, s.outcome, '{"samples": []}',
    '2026-01-05T00:00:00Z'::timestamptz
FROM (VALUES
    ('{"timeframe": "15m", "chain": "sol"}', 'a', 'acted', 'success', 3),
    ('{"timeframe": "15m", "chain": "sol"}', 'b', 'acted', 'failure', 2),
    ('{"timeframe": "15m", "chain": "sol"}', 'c', 'skipped', 'success', 1),
    ('{"timeframe": "15m", "chain": "sol"}', 'd', 'skipped', 'failure', 4),
    ('{"timeframe": "15m", "chain": "sol"}', 'e', 'skipped', 'neutral', 2),
    ('{"timeframe": "1h", "chain": "sol"}', 'f', 'acted', 'success', 1),
    ('{"timeframe": "1h", "chain": "sol"}', 'g', 'acted', 'failure', 1),
    ('{"timeframe": "1h", "chain": "sol"}', 'h', 'skipped', 'failure', 2),
    ('{"timeframe": "1h", "chain": "sol"}', 'i', 'skipped', NULL, 5)
) AS s (scope, tag, decision, outcome, k)
CROSS JOIN LATERAL generate_series(1, s.k) AS g;
-- Outside the window: too old, and after as_of.
INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, outcome, factors, timestamp)
VALUES
('{"timeframe": "1h", "chain": "sol"}', 'mt.p', 'mt_old', 'acted', 'success', '{}', '2025-11-01T00:00:00Z'),
('{"timeframe": "1h", "chain": "sol"}', 'mt.p', 'mt_future', 'acted', 'success', '{}', '2026-01-10T00:00:01Z');

SELECT is(learning.mine_tuning_lessons('2026-01-10T00:00:00Z', interval '30 days', 5), 4,
    'four slices reach n_min 5: {}, {chain}, {timeframe 15m}, {chain, timeframe 15m}');

SELECT is(
    (SELECT stats - 'window_start' - 'window_end' - 'lookback_days' FROM public.learning_lessons
     WHERE pattern_key = 'mt.p' AND scope_subset = '{}'),
    jsonb_build_object(
        'wr', 4 / 7.0::float8, 'fpr', 3 / 7.0::float8, 'mr', 1 / 7.0::float8, 'dr', 6 / 7.0::float8,
        'n_acted', 7, 'n_skipped', 7, 'n_wins', 4, 'n_fps', 3, 'n_misses', 1, 'n_dodges', 6,
        'n_neutral', 2, 'n_total', 16
    ),
    'global slice: rates equal the hand counts (neutral and pending excluded from the rates)'
);
SELECT is(
    (SELECT n FROM public.learning_lessons WHERE pattern_key = 'mt.p' AND scope_subset = '{}'),
    14, 'n counts success/failure rows only');
SELECT is(
    (SELECT array[stats ->> 'wr', stats ->> 'fpr', stats ->> 'mr', stats ->> 'dr', stats ->> 'n_neutral']
     FROM public.learning_lessons WHERE pattern_key = 'mt.p' AND scope_subset = '{"timeframe": "15m"}'),
    array['0.6', '0.4', '0.2', '0.8', '2'], '{timeframe: 15m}: wr 3/5, fpr 2/5, mr 1/5, dr 4/5');
SELECT ok(
    NOT EXISTS (SELECT FROM public.learning_lessons WHERE pattern_key = 'mt.p' AND scope_subset @> '{"timeframe": "1h"}'),
    '{timeframe: 1h} has 4 rows < n_min: no lesson');
SELECT is(
    (SELECT array_agg(DISTINCT module || '/' || action_category || '/' || lesson_type || '/' || status)
     FROM public.learning_lessons WHERE pattern_key = 'mt.p'),
    array['pm/tuning/tuning_rates/active'], 'lessons are module pm, action_category tuning, tuning_rates, active');
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log WHERE message =
        'TuningMiner: Created lesson | pattern=mt.p | scope={timeframe: 15m} | n=10 | wr=0.600 fpr=0.400 mr=0.200 dr=0.800'),
    'Created lesson line in the plan''s shape');
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log WHERE message LIKE 'TuningMiner starting | events=14 | lookback_days=30'),
    'starting line counts the events of the window');

CREATE TEMP TABLE before AS SELECT id, ctid::text AS c FROM public.learning_lessons WHERE pattern_key = 'mt.p';
SELECT is(learning.mine_tuning_lessons('2026-01-10T00:00:00Z', interval '30 days', 5), 4, 're-run: same lessons');
SELECT is(
    (SELECT count(*)::int FROM public.learning_lessons AS l JOIN before AS b ON b.id = l.id WHERE l.ctid::text <> b.c),
    0, 're-run on unchanged data rewrites no row');

SELECT is(learning.mine_tuning_lessons('2026-01-10T00:00:00Z', interval '30 days', 11), 2,
    'with n_min 11 only {} and {chain} remain');
SELECT is(
    (SELECT array_agg(scope_subset::text || ':' || status ORDER BY scope_subset::text)
     FROM public.learning_lessons WHERE pattern_key = 'mt.p'),
    array['{"chain": "sol", "timeframe": "15m"}:inactive', '{"chain": "sol"}:active', '{"timeframe": "15m"}:inactive', '{}:active'],
    'lessons not re-mined become inactive');

SELECT * FROM finish();
ROLLBACK;
