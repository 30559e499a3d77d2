-- learning_admin runs the system (tunables, flags, jobs, everything in schema learning) but, like
-- the other roles, cannot rewrite the bot's positions or the append-only trades.
BEGIN;
SELECT plan(9);

SET LOCAL ROLE learning_admin;
SELECT is(learning.set_tunable('max_step', '0.004'), '0.004'::jsonb, 'admin sets a tunable');
SELECT is(learning.set_feature_flag('pm', 'ae_v2_enabled', true), true, 'admin sets a feature flag');
SELECT lives_ok($$SELECT learning.recompute_roi_state()$$, 'admin recomputes the EWMA state');
SELECT lives_ok(
    $$UPDATE public.pm_overrides SET status = 'inactive' WHERE pattern_key = 'none'$$,
    'admin may write pm_overrides (the Python materializers)'
);
SELECT lives_ok($$SELECT count(*) FROM learning.allocation_history$$, 'admin reads schema learning');
SELECT throws_ok($$UPDATE public.lowcap_positions SET total_allocation_pct = 1$$, '42501', NULL,
    'admin cannot rewrite the bot''s positions directly');
SELECT throws_ok($$DELETE FROM public.closed_trades$$, '42501', NULL, 'admin cannot delete trades');
SELECT throws_ok($$TRUNCATE public.learning_configs$$, '42501', NULL, 'admin cannot truncate configs');
RESET ROLE;

SELECT is(
    (learning.tunables() ->> 'max_step')::float8, 0.004::float8, 'the admin''s tunable was stored'
);

SELECT * FROM finish();
ROLLBACK;
