-- 1m/1d trades are stored and write strength facts but learn nothing; positions are redistributed
-- set-based over watchlist/active/dormant rows of tracked timeframes only, and unchanged rows are not written.
BEGIN;
SELECT plan(22);

CREATE TEMP TABLE alloc0 AS SELECT * FROM learning.timeframe_allocation();
CREATE TEMP TABLE global0 AS SELECT * FROM learning.global_roi();

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
VALUES
('u1', '1m', 40, '2026-02-01T00:00:00Z',
 '[{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry", "scope": {"chain": "solana"}},
   {"pattern_key": "pm.uptrend.S3.trim", "action_category": "trim", "scope": {"chain": "solana"}}]'),
('u2', '1d', -30, '2026-02-01T00:00:00Z',
 '[{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry"}]');

SELECT is((SELECT count(*)::integer FROM public.closed_trades WHERE trade_id IN ('u1', 'u2')), 2,
    '1m and 1d trades are stored');
SELECT results_eq(
    $$SELECT trade_id, action_category, roi, did_trim, reached_s3, "timestamp"
      FROM public.pattern_trade_events WHERE trade_id IN ('u1', 'u2') ORDER BY trade_id, action_category$$,
    $$VALUES ('u1', 'entry', 0.4::float8, true, true, '2026-02-01T00:00:00Z'::timestamptz),
             ('u1', 'trim', 0.4::float8, true, true, '2026-02-01T00:00:00Z'::timestamptz),
             ('u2', 'entry', -0.3::float8, false, false, '2026-02-01T00:00:00Z'::timestamptz)$$,
    'their actions become strength facts (roi as a fraction, did_trim/reached_s3 derived)');
SELECT results_eq($$SELECT * FROM learning.timeframe_allocation()$$, $$SELECT * FROM alloc0$$,
    'no allocation, EWMA or n changed');
SELECT results_eq($$SELECT * FROM learning.global_roi()$$, $$SELECT * FROM global0$$,
    'the global ROI did not change either');
SELECT results_eq(
    $$SELECT trade_id, reason, allocation_before = allocation_after FROM learning.allocation_history ORDER BY seq$$,
    $$VALUES ('u1', 'skip_untracked', true), ('u2', 'skip_untracked', true)$$,
    'each is recorded as skip_untracked');
SELECT is(
    (SELECT count(*)::integer FROM learning.learning_log WHERE message LIKE 'ALLOCATION SKIP: 1m %'
        OR message LIKE 'ALLOCATION SKIP: 1d %'),
    2, 'ALLOCATION SKIP is logged for each');
SELECT is((SELECT count(*)::integer FROM learning.learning_log WHERE message LIKE 'ROI UPDATE%'), 0,
    'no ROI UPDATE for untracked trades');

-- Positions. tokA: three eligible rows + one untracked row + one shadow row.
-- tokB: one eligible row (4.0: 4 * a / a is exact, so the value does not change) + NULL + paused.
-- tokC: eligible rows totalling 0. tokD: only untracked timeframes.
INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
VALUES
('tokA', 'solana', '15m', 'active', 3.0),
('tokA', 'solana', '1h', 'watchlist', 10.0),
('tokA', 'solana', '4h', 'dormant', 2.0),
('tokA', 'solana', '1m', 'active', 5.0),
('tokA', 'base', '15m', 'shadow', 7.0),
('tokB', 'solana', '4h', 'active', 4.0),
('tokB', 'solana', '1h', 'active', NULL),
('tokB', 'solana', '15m', 'paused', 9.0),
('tokC', 'solana', '15m', 'active', 0.0),
('tokC', 'solana', '1h', 'dormant', 0.0),
('tokD', 'solana', '1m', 'active', 5.0),
('tokD', 'solana', '1d', 'watchlist', 5.0),
('tokE', 'solana', '1h', 'archived', 5.0),
('tokE', 'solana', '4h', 'regime_driver', 5.0);

CREATE TEMP TABLE pos0 AS
SELECT id, token_contract, token_chain, timeframe, status, total_allocation_pct, ctid::text AS tid
FROM public.lowcap_positions;

-- A skipped trade (one traded timeframe) moves nothing, so positions are not touched.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('p1', '15m', 5, '2026-01-01T00:00:00Z');
SELECT is(
    (SELECT count(*)::integer FROM public.lowcap_positions AS p INNER JOIN pos0 USING (id) WHERE p.ctid::text <> pos0.tid),
    0, 'a trade that moves no allocation writes no position');

CREATE TEMP TABLE upd0 AS
SELECT n_tup_upd FROM pg_catalog.pg_stat_xact_user_tables WHERE relid = 'public.lowcap_positions'::regclass;

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('p2', '1h', -2, '2026-01-02T00:00:00Z');

SELECT results_eq(
    $$SELECT timeframe, round(total_allocation_pct::numeric, 12) FROM public.lowcap_positions
      WHERE token_contract = 'tokA' AND token_chain = 'solana' AND timeframe IN ('15m', '1h', '4h') ORDER BY timeframe$$,
    $$VALUES ('15m', round(15 * 0.1506, 12)), ('1h', round(15 * 0.4994, 12)), ('4h', round(15 * 0.35, 12))$$,
    'tokA''s eligible rows get total (15) * alloc[tf] / sum alloc (1)');
SELECT ok(
    abs((SELECT sum(total_allocation_pct) FROM public.lowcap_positions
         WHERE token_contract = 'tokA' AND token_chain = 'solana' AND timeframe IN ('15m', '1h', '4h')) - 15) < 1e-12,
    'tokA''s total is preserved');
SELECT results_eq(
    $$SELECT p.id, p.total_allocation_pct FROM public.lowcap_positions AS p INNER JOIN pos0 USING (id)
      WHERE NOT (p.token_contract = 'tokA' AND p.token_chain = 'solana' AND p.timeframe IN ('15m', '1h', '4h'))
      ORDER BY p.id$$,
    $$SELECT id, total_allocation_pct FROM pos0
      WHERE NOT (token_contract = 'tokA' AND token_chain = 'solana' AND timeframe IN ('15m', '1h', '4h'))
      ORDER BY id$$,
    'every other row keeps its value (untracked tf, other statuses, NULL, zero total, single row)');
SELECT is(
    (SELECT array_agg(p.timeframe || '/' || p.token_contract ORDER BY p.token_contract, p.timeframe)
     FROM public.lowcap_positions AS p INNER JOIN pos0 USING (id) WHERE p.ctid::text <> pos0.tid),
    ARRAY['15m/tokA', '1h/tokA', '4h/tokA'],
    'only the three rows whose value changed were written (new tuple versions)');
SELECT is(
    (SELECT n_tup_upd FROM pg_catalog.pg_stat_xact_user_tables WHERE relid = 'public.lowcap_positions'::regclass)
    - (SELECT n_tup_upd FROM upd0),
    3::bigint, 'three row updates in this transaction (n_tup_upd)');
SELECT is(
    (SELECT total_allocation_pct FROM public.lowcap_positions WHERE token_contract = 'tokB' AND timeframe = '4h'),
    4.0::float8, 'a token with one eligible row keeps its whole total on it');
SELECT ok(
    (SELECT bool_and(total_allocation_pct = 0) FROM public.lowcap_positions WHERE token_contract = 'tokC'),
    'a zero-total token stays at zero');

-- Two tracked timeframes only: the split is over that token's own timeframes.
INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
VALUES ('tokF', 'solana', '15m', 'active', 1.0), ('tokF', 'solana', '4h', 'watchlist', 1.0);
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('p3', '4h', 3, '2026-01-03T00:00:00Z');
SELECT ok(
    abs((SELECT total_allocation_pct FROM public.lowcap_positions WHERE token_contract = 'tokF' AND timeframe = '15m')
        - 2 * (SELECT current_allocation FROM learning.timeframe_allocation() WHERE timeframe = '15m')
        / (SELECT sum(current_allocation) FROM learning.timeframe_allocation() WHERE timeframe IN ('15m', '4h')))
    < 1e-12,
    'a token with 15m and 4h only: 15m gets total * a15m / (a15m + a4h)');
SELECT ok(
    abs((SELECT sum(total_allocation_pct) FROM public.lowcap_positions WHERE token_contract = 'tokF') - 2) < 1e-12,
    'and its total (2) is preserved');
SELECT ok(
    abs((SELECT sum(total_allocation_pct) FROM public.lowcap_positions
         WHERE token_contract = 'tokA' AND token_chain = 'solana' AND timeframe IN ('15m', '1h', '4h')) - 15) < 1e-12,
    'tokA''s total is still 15 after a second move');

-- A 1m trade after learning started still changes nothing.
CREATE TEMP TABLE alloc1 AS SELECT * FROM learning.timeframe_allocation();
CREATE TEMP TABLE pos1 AS SELECT id, total_allocation_pct FROM public.lowcap_positions;
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('u3', '1m', -90, '2026-01-04T00:00:00Z');
SELECT results_eq($$SELECT * FROM learning.timeframe_allocation()$$, $$SELECT * FROM alloc1$$,
    'a 1m trade after learning started changes no allocation or EWMA');
SELECT results_eq(
    $$SELECT id, total_allocation_pct FROM public.lowcap_positions ORDER BY id$$,
    $$SELECT id, total_allocation_pct FROM pos1 ORDER BY id$$,
    'and no position');
SELECT is((SELECT n FROM learning.global_roi()), 3, 'global n counts tracked trades only');
SELECT is(
    (SELECT reason FROM learning.allocation_history WHERE trade_id = 'u3'), 'skip_untracked',
    'recorded as skip_untracked');

SELECT * FROM finish();
ROLLBACK;
