-- Execution overrides: the most specific active override per category applies alone.
BEGIN;
SELECT plan(7);

INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset, multiplier, tuning_params, n, status)
VALUES
('so.p', 'tuning_halo', '{}', 1.1, '{"delta": 0.1}', 100, 'active'),
('so.p', 'tuning_halo', '{"timeframe": "15m"}', 1.05, '{"delta": 0.05}', 50, 'active'),
('so.p', 'tuning_halo', '{"timeframe": "15m", "bucket": "micro"}', 1.3, '{"delta": 0.3}', 20, 'active'),
('so.p', 'tuning_halo', '{"timeframe": "15m", "bucket": "micro", "chain": "sol"}', 9.0, '{}', 40, 'inactive'),
('so.p', 'pm_strength', '{"timeframe": "15m", "bucket": "micro"}', 1.0, NULL, 20, 'active'),
('so.q', 'tuning_halo', '{"timeframe": "4h"}', 1.2, '{"delta": 0.2}', 20, 'active'),
('so.q', 'tuning_ts_min', '{"timeframe": "4h"}', 0.9, '{"delta": -0.1}', 20, 'active'),
('so.q', 'tuning_halo', '{"chain": "sol"}', 1.1, '{"delta": 0.1}', 30, 'active'),
('so.q', 'tuning_ts_min', '{"chain": "sol"}', 1.05, '{"delta": 0.05}', 30, 'active');

SELECT results_eq(
    $$SELECT action_category, multiplier FROM learning.select_execution_overrides('so.p',
        '{"timeframe": "15m", "bucket": "micro", "chain": "sol"}')$$,
    $$VALUES ('tuning_halo', 1.3::float8)$$,
    'the 2-key override applies alone to a scope it matches (inactive and pm_strength rows ignored)');
SELECT results_eq(
    $$SELECT action_category, multiplier FROM learning.select_execution_overrides('so.p',
        '{"timeframe": "15m", "bucket": "large"}')$$,
    $$VALUES ('tuning_halo', 1.05::float8)$$,
    'the 1-key override applies to a scope only it (and the global) matches');
SELECT results_eq(
    $$SELECT action_category, multiplier FROM learning.select_execution_overrides('so.p', '{"timeframe": "1h"}')$$,
    $$VALUES ('tuning_halo', 1.1::float8)$$,
    'the global override applies when nothing more specific matches');
SELECT is_empty(
    $$SELECT * FROM learning.select_execution_overrides('so.other', '{"timeframe": "15m"}')$$,
    'no override outside the pattern');
SELECT results_eq(
    $$SELECT action_category, multiplier, delta FROM learning.select_execution_overrides('so.q',
        '{"timeframe": "4h", "chain": "sol"}') ORDER BY 1$$,
    $$VALUES ('tuning_halo', 1.1::float8, 0.1::float8), ('tuning_ts_min', 1.05::float8, 0.05::float8)$$,
    'equal specificity: higher n wins, and every category comes from the same slice');
SELECT is_empty(
    $$SELECT * FROM learning.select_execution_overrides('so.q', '{"timeframe": "1h"}')$$,
    'no override for a scope none matches');
SELECT is_empty(
    $$SELECT * FROM learning.select_execution_overrides('so.q', 'null')$$,
    'a non-object scope matches only global overrides (none here)');

SELECT * FROM finish();
ROLLBACK;
