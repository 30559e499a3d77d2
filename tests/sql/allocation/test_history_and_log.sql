-- Every step or skip writes one learning.allocation_history row and its log lines (the plan's shapes,
-- each naming its trade); the readers report the newest closed_at as updated_at.
BEGIN;
SELECT plan(14);

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('h1', '15m', 5, '2026-01-01T00:00:00Z');
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('h2', '1h', -2, '2026-01-02T00:00:00Z');
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('h4', '1d', 1, '2026-01-04T00:00:00Z'), ('h3', '4h', 3, '2026-01-03T00:00:00Z'),
       ('h0', '1h', 1, '2025-12-31T00:00:00Z');  -- late, and first in (closed_at, trade_id) order

SELECT results_eq(
    $$SELECT trade_id, timeframe, reason FROM learning.allocation_history ORDER BY seq$$,
    $$VALUES ('h1', '15m', 'skip_one_timeframe'), ('h2', '1h', 'step'), ('h0', '1h', 'step'),
             ('h3', '4h', 'step'), ('h4', '1d', 'skip_untracked')$$,
    'one history row per trade, a multi-row INSERT in (closed_at, trade_id) order');
SELECT is(
    (SELECT count(*)::integer FROM learning.allocation_history AS a
     INNER JOIN learning.allocation_history AS b ON b.seq = (
         SELECT min(seq) FROM learning.allocation_history WHERE seq > a.seq)
     WHERE b.allocation_before IS DISTINCT FROM a.allocation_after),
    0, 'the recorded path chains: each row starts where the previous one ended');
SELECT results_eq(
    $$SELECT trade_roi, roi_short[2], trade_counts FROM learning.allocation_history WHERE trade_id = 'h2'$$,
    $$VALUES (-0.02::float8, -0.02::float8, ARRAY[1, 1, 0])$$,
    'a history row carries the trade roi, the EWMAs and the counts after the fold');
SELECT ok(
    (SELECT desired IS NOT NULL AND scores IS NOT NULL AND abs(step_limit - 0.003 * 1 / 5.0) < 1e-18
     FROM learning.allocation_history WHERE trade_id = 'h2'),
    'a step records desired, scores and its limit');
SELECT ok(
    (SELECT desired IS NULL AND step_limit IS NULL FROM learning.allocation_history WHERE trade_id = 'h1'),
    'a skip records no desired split and no limit');

SELECT is(
    (SELECT count(*)::integer FROM learning.allocation_history AS h
     WHERE NOT EXISTS (
         SELECT FROM learning.learning_log AS l
         WHERE l.message LIKE 'ALLOCATION %' AND l.message LIKE '%| trade_id=' || h.trade_id)),
    0, 'every history row has an ALLOCATION UPDATE or ALLOCATION SKIP line naming its trade');
SELECT is(
    (SELECT message FROM learning.learning_log WHERE message LIKE 'ALLOCATION SKIP: Only%'),
    'ALLOCATION SKIP: Only 1 timeframe has trades (need 2+) | timeframes_with_trades=[15m] | trade_id=h1',
    'the one-timeframe skip in the plan''s shape');
SELECT is(
    (SELECT message FROM learning.learning_log WHERE message LIKE 'ALLOCATION UPDATE:%trade_id=h2'),
    'ALLOCATION UPDATE: trigger=1h trade closed | old={15m: 0.150000, 1h: 0.500000, 4h: 0.350000}'
    || ' | new={15m: 0.150600, 1h: 0.499400, 4h: 0.350000} | change=0.0600% | limit=0.000600 | trade_id=h2',
    'the allocation update in the plan''s shape');
SELECT is(
    (SELECT message FROM learning.learning_log WHERE message LIKE 'ROI UPDATE:%trade_id=h2'),
    'ROI UPDATE: timeframe=1h | roi_short=-0.020000 | n=1 | trade_roi=-0.020000 | trade_id=h2',
    'the ROI update in the plan''s shape');
SELECT is(
    (SELECT message FROM learning.learning_log WHERE message LIKE 'ALLOCATION SKIP:%trade_id=h4'),
    'ALLOCATION SKIP: 1d is not a learning timeframe (learning: 15m, 1h, 4h) | trade_id=h4',
    'the untracked skip');
SELECT is(
    (SELECT count(*)::integer FROM learning.learning_log WHERE message LIKE 'ROI UPDATE:%'), 4,
    'one ROI UPDATE per tracked trade, none for 1d');

SELECT results_eq(
    $$SELECT timeframe, updated_at, n FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', '2026-01-01T00:00:00Z'::timestamptz, 1), ('1h', '2026-01-02T00:00:00Z'::timestamptz, 2),
             ('4h', '2026-01-03T00:00:00Z'::timestamptz, 1)$$,
    'updated_at is the newest closed_at folded in (a late trade does not move it back)');
SELECT results_eq(
    $$SELECT n, updated_at FROM learning.global_roi()$$,
    $$VALUES (4, '2026-01-03T00:00:00Z'::timestamptz)$$,
    'the global reader counts tracked trades and reports the newest closed_at');
SELECT ok(
    (SELECT abs(sum(current_allocation) - 1) < 1e-12 FROM learning.timeframe_allocation()),
    'the reader''s allocation sums to 1');

SELECT * FROM finish();
ROLLBACK;
