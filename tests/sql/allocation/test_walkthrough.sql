-- The plan's walkthrough and the pinned trade-3 figures of design §5, through the real trigger, under the
-- plan's rule; the walkthrough's first two trades hold under the evidence rule too (design §5).
BEGIN;
SELECT plan(14);

SAVEPOINT evidence;
SELECT lives_ok($$SELECT learning.set_tunable('allocation_rule', '"evidence"')$$, 'the evidence rule');
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('e1', '15m', 5, '2026-01-01T00:00:00Z');
SELECT results_eq(
    $$SELECT timeframe, current_allocation FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.15::float8), ('1h', 0.50::float8), ('4h', 0.35::float8)$$,
    'evidence rule, trade 1 (15m +5%): nothing moves'
);
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('e2', '1h', -2, '2026-01-02T00:00:00Z');
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 10) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.1506), ('1h', 0.4994), ('4h', 0.35)$$,
    'evidence rule, trade 2 (1h -2%): 15m 0.1506, 1h 0.4994, 4h 0.35'
);
SELECT is(
    (SELECT rule FROM learning.allocation_history WHERE trade_id = 'e2'), 'evidence',
    'the step records its rule'
);
ROLLBACK TO SAVEPOINT evidence;
SELECT lives_ok($$SELECT learning.set_tunable('allocation_rule', '"plan"')$$, 'the plan''s rule (design §5)');

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('w1', '15m', 5, '2026-01-01T00:00:00Z');

SELECT results_eq(
    $$SELECT timeframe, current_allocation FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.15::float8), ('1h', 0.50::float8), ('4h', 0.35::float8)$$,
    'trade 1 (15m +5%): one timeframe has trades, nothing moves'
);
SELECT is(
    (SELECT reason FROM learning.allocation_history WHERE trade_id = 'w1'),
    'skip_one_timeframe',
    'trade 1 is recorded as a skip'
);

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('w2', '1h', -2, '2026-01-02T00:00:00Z');

SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 10) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.1506), ('1h', 0.4994), ('4h', 0.35)$$,
    'trade 2 (1h -2%): 15m 0.1506, 1h 0.4994, 4h 0.35'
);
SELECT ok(
    (SELECT current_allocation FROM learning.timeframe_allocation() WHERE timeframe = '4h') = 0.35::float8,
    '4h (no trades) keeps 0.35 bit for bit'
);

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('w3', '4h', 3, '2026-01-03T00:00:00Z');

SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 6) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.151128), ('1h', 0.498800), ('4h', 0.350072)$$,
    'trade 3 (4h +3%): the pinned figures of design §5'
);
SELECT cmp_ok(
    abs((SELECT sum(current_allocation) FROM learning.timeframe_allocation()) - 1), '<', 1e-12::float8,
    'allocation sums to 1'
);
SELECT results_eq(
    $$SELECT roi_short, roi_long, n FROM learning.timeframe_allocation()$$,
    $$VALUES (0.05::float8, 0.05::float8, 1), (-0.02, -0.02, 1), (0.03, 0.03, 1)$$,
    'first trade of a timeframe: EWMA equals its roi (a fraction), n = 1'
);
SELECT is((SELECT n FROM learning.global_roi()), 3, 'global n counts every tracked trade');

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('w4', '1m', 50, '2026-01-04T00:00:00Z');
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 6), n FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.151128, 1), ('1h', 0.498800, 1), ('4h', 0.350072, 1)$$,
    'a 1m trade is stored and changes nothing'
);

SELECT * FROM finish();
ROLLBACK;
