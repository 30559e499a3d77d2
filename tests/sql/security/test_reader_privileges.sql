-- learning_reader reads the data tables and calls the readers; it cannot write anything, and
-- cannot reach the SECURITY DEFINER writers.
BEGIN;
SELECT plan(25);

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('sr1', '15m', 5, '2026-01-01T00:00:00Z'), ('sr2', '1h', -2, '2026-01-02T00:00:00Z');

SET LOCAL ROLE learning_reader;

SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 10) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.1506), ('1h', 0.4994), ('4h', 0.35)$$,
    'reader calls learning.timeframe_allocation()'
);
SELECT is((SELECT n FROM learning.global_roi()), 2, 'reader calls learning.global_roi()');
SELECT is((learning.tunables() ->> 'max_step')::float8, 0.003::float8, 'reader calls learning.tunables()');
SELECT is(learning.feature_flag('pm', 'ae_v2_enabled'), false, 'reader calls learning.feature_flag()');
SELECT is((SELECT count(*)::integer FROM public.closed_trades WHERE trade_id LIKE 'sr%'), 2,
    'reader selects closed_trades');
SELECT lives_ok($$SELECT * FROM public.learning_configs, public.lowcap_positions, public.pm_overrides,
    public.learning_lessons, public.pattern_trade_events, public.pattern_episode_events,
    learning.allocation_history LIMIT 1$$, 'reader selects every data table');

-- Writes of every kind are refused.
SELECT throws_ok($$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
    VALUES ('sr3', '4h', 1, now())$$, '42501', NULL, 'reader cannot INSERT closed_trades');
SELECT throws_ok($$INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors)
    VALUES ('{}', 'p', 'e', 'acted', '{}')$$, '42501', NULL, 'reader cannot INSERT episodes');
SELECT throws_ok($$UPDATE public.learning_configs SET notes = 'x'$$, '42501', NULL,
    'reader cannot UPDATE learning_configs');
SELECT throws_ok($$DELETE FROM public.learning_configs$$, '42501', NULL,
    'reader cannot DELETE learning_configs');
SELECT throws_ok($$UPDATE public.lowcap_positions SET total_allocation_pct = 0$$, '42501', NULL,
    'reader cannot UPDATE lowcap_positions');
SELECT throws_ok($$UPDATE public.pm_overrides SET multiplier = 2$$, '42501', NULL,
    'reader cannot UPDATE pm_overrides');
SELECT throws_ok($$DELETE FROM public.pm_overrides$$, '42501', NULL, 'reader cannot DELETE pm_overrides');
SELECT throws_ok($$UPDATE public.learning_lessons SET status = 'inactive'$$, '42501', NULL,
    'reader cannot UPDATE learning_lessons');
SELECT throws_ok($$UPDATE public.pattern_episode_events SET outcome = 'failure'$$, '42501', NULL,
    'reader cannot UPDATE episodes');
SELECT throws_ok($$DELETE FROM public.pattern_trade_events$$, '42501', NULL,
    'reader cannot DELETE strength facts');
SELECT throws_ok($$DELETE FROM learning.allocation_history$$, '42501', NULL,
    'reader cannot DELETE allocation history');
SELECT throws_ok($$INSERT INTO learning.learning_log (message) VALUES ('forged')$$, '42501', NULL,
    'reader cannot INSERT log lines');
SELECT throws_ok($$UPDATE learning.tunable_specs SET max_value = 100$$, '42501', NULL,
    'reader cannot UPDATE tunable specs');
SELECT throws_ok($$TRUNCATE public.pm_overrides$$, '42501', NULL, 'reader cannot TRUNCATE pm_overrides');
SELECT throws_ok($$SELECT learning.set_tunable('max_step', '0.5')$$, '42501', NULL,
    'reader cannot set tunables');
SELECT throws_ok($$SELECT learning.set_feature_flag('pm', 'ae_v2_enabled', true)$$, '42501', NULL,
    'reader cannot set feature flags');
SELECT throws_ok($$SELECT learning.ensure_decision_maker_config()$$, '42501', NULL,
    'reader cannot call the config writer');
SELECT throws_ok($$CREATE TABLE learning.planted (x int)$$, '42501', NULL,
    'reader cannot create objects in schema learning');

RESET ROLE;
SELECT is(
    (SELECT count(*)::integer FROM public.closed_trades WHERE trade_id LIKE 'sr%'), 2,
    'nothing the reader tried was written'
);

SELECT * FROM finish();
ROLLBACK;
