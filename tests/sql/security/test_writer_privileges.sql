-- learning_writer appends trades and episodes; the SECURITY DEFINER triggers still learn from
-- them (allocation, positions, history, log, strength facts), and it can change nothing else.
BEGIN;
SELECT plan(26);

-- Positions of one token as the bot holds them (20% of wallet split 15/50/35).
INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
VALUES ('0xsec', 'solana', '15m', 'active', 3.0), ('0xsec', 'solana', '1h', 'active', 10.0),
('0xsec', 'solana', '4h', 'watchlist', 7.0);

SET LOCAL ROLE learning_writer;

SELECT lives_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('sw1', '15m', 5, '2026-01-01T00:00:00Z',
              '[{"pattern_key": "pm.uptrend.S1.buy_flag", "action_category": "entry", "scope": {"chain": "solana"}}]')$$,
    'writer inserts a closed trade'
);
SELECT lives_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
      VALUES ('sw2', '1h', -2, '2026-01-02T00:00:00Z')$$,
    'writer inserts a second closed trade (the allocation moves)'
);
SELECT lives_ok(
    $$INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors)
      VALUES ('{"chain": "solana"}', 'pm.uptrend.S1.buy_flag', 'sec-ep-1', 'skipped',
              '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0}')$$,
    'writer inserts an episode window'
);

SELECT is(
    learning.set_episode_outcome('sec-ep-1', 'success'), 1,
    'writer sets an episode''s outcome through learning.set_episode_outcome'
);

-- What the writer may not do.
SELECT throws_ok($$UPDATE public.learning_configs SET notes = 'x'$$, '42501', NULL,
    'writer cannot UPDATE learning_configs');
SELECT throws_ok($$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('evil', '{}')$$,
    '42501', NULL, 'writer cannot INSERT learning_configs');
SELECT throws_ok($$UPDATE public.pm_overrides SET multiplier = 10$$, '42501', NULL,
    'writer cannot UPDATE pm_overrides');
SELECT throws_ok(
    $$INSERT INTO public.pm_overrides (pattern_key, action_category, scope_subset) VALUES ('p', 'entry', '{}')$$,
    '42501', NULL, 'writer cannot INSERT pm_overrides');
SELECT throws_ok($$UPDATE public.learning_lessons SET n = 0$$, '42501', NULL,
    'writer cannot UPDATE learning_lessons');
SELECT throws_ok($$UPDATE public.lowcap_positions SET total_allocation_pct = 99$$, '42501', NULL,
    'writer cannot UPDATE lowcap_positions');
SELECT throws_ok($$DELETE FROM public.closed_trades$$, '42501', NULL,
    'writer cannot DELETE closed_trades');
SELECT throws_ok($$UPDATE public.pattern_episode_events SET outcome = 'success'$$, '42501', NULL,
    'writer cannot UPDATE episodes directly');
SELECT throws_ok($$INSERT INTO public.pattern_trade_events (pattern_key, action_category, scope, trade_id)
      VALUES ('p', 'entry', '{}', 'forged')$$, '42501', NULL,
    'writer cannot forge strength facts');
SELECT throws_ok($$INSERT INTO learning.allocation_history (trade_id, timeframe, closed_at, trade_roi, reason,
      allocation_before, allocation_after, roi_short, trade_counts)
      VALUES ('f', '1h', now(), 0, 'step', '{}', '{}', '{}', '{}')$$, '42501', NULL,
    'writer cannot forge allocation history');
SELECT throws_ok($$SELECT learning.set_tunable('max_step', '0.5')$$, '42501', NULL,
    'writer cannot set tunables');
SELECT throws_ok($$SELECT learning.set_feature_flag('pm', 'ae_v2_enabled', true)$$, '42501', NULL,
    'writer cannot set feature flags');
SELECT throws_ok($$SELECT learning.recompute_roi_state()$$, '42501', NULL,
    'writer cannot rewrite the EWMA state');
SELECT throws_ok($$SELECT learning.redistribute_positions(ARRAY[1, 0, 0]::float8[])$$, '42501', NULL,
    'writer cannot redistribute positions');
SELECT throws_ok($$SELECT learning._log('ERROR', 'forged')$$, '42501', NULL,
    'writer cannot write log lines');
SELECT throws_ok($$SELECT * FROM public.learning_configs$$, '42501', NULL,
    'writer cannot read configs (reading is the reader role)');

RESET ROLE;

-- The triggers ran with their owner's rights on the writer's behalf.
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 10) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.1506), ('1h', 0.4994), ('4h', 0.35)$$,
    'the writer''s trades moved the allocation (plan walkthrough figures)'
);
SELECT results_eq(
    $$SELECT timeframe, round(total_allocation_pct::numeric, 10) FROM public.lowcap_positions
      WHERE token_contract = '0xsec' ORDER BY timeframe$$,
    $$VALUES ('15m', 3.012), ('1h', 9.988), ('4h', 7.0)$$,
    'the writer''s trades redistributed the token''s positions (total 20 kept)'
);
SELECT is(
    (SELECT count(*)::integer FROM learning.allocation_history WHERE trade_id IN ('sw1', 'sw2')), 2,
    'each trade wrote an allocation_history row'
);
SELECT is(
    (SELECT count(*)::integer FROM public.pattern_trade_events WHERE trade_id = 'sw1'), 1,
    'the trade''s action became a strength fact'
);
SELECT is(
    (SELECT count(*)::integer FROM public.pattern_episode_events WHERE episode_id = 'sec-ep-1'), 1,
    'the episode window was stored'
);
SELECT is(
    (SELECT outcome FROM public.pattern_episode_events WHERE episode_id = 'sec-ep-1'), 'success',
    'the outcome was set on the writer''s behalf'
);

SELECT * FROM finish();
ROLLBACK;
