-- set_tunable of tau_short_days / tau_long_days recomputes the EWMA state from closed_trades
-- (late trades included) and leaves the allocation as it is.
BEGIN;
SELECT plan(13);

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES
('r1', '15m', 5, '2026-01-01T00:00:00Z'),
('r2', '1h', -2, '2026-01-05T00:00:00Z'),
('r3', '4h', 3, '2026-01-09T00:00:00Z'),
('r4', '1h', 8, '2026-01-20T00:00:00Z'),
('r5', '1m', 99, '2026-01-21T00:00:00Z');
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('r6', '1h', -4, '2026-01-02T12:00:00Z');  -- late

-- expected(tf, tau_days): the closed form of design §4 over closed_trades (NULL tf = global).
CREATE FUNCTION pg_temp.expected(p_tf text, p_tau_days float8)
RETURNS float8
LANGUAGE sql
STABLE
RETURN (
    WITH t AS (
        SELECT rpnl_pct / 100 AS roi, extract(EPOCH FROM closed_at)::float8 AS at
        FROM public.closed_trades
        WHERE timeframe = coalesce(p_tf, timeframe) AND timeframe IN ('15m', '1h', '4h')
    )
    SELECT sum(roi * exp(-(m.at - t.at) / (p_tau_days * 86400))) / sum(exp(-(m.at - t.at) / (p_tau_days * 86400)))
    FROM t CROSS JOIN (SELECT max(at) AS at FROM t) AS m
);

CREATE TEMP TABLE before_alloc AS SELECT timeframe, current_allocation, n FROM learning.timeframe_allocation();
CREATE TEMP TABLE before_roi AS SELECT timeframe, roi_short, roi_long FROM learning.timeframe_allocation();

SELECT ok(
    (SELECT bool_and(abs(roi_short - pg_temp.expected(timeframe, 14)) < 1e-12
        AND abs(roi_long - pg_temp.expected(timeframe, 90)) < 1e-12)
     FROM learning.timeframe_allocation()),
    'the incremental EWMAs (late trade included) equal the closed form at tau 14/90');

SELECT is(learning.set_tunable('tau_short_days', '7'), '7'::jsonb, 'set tau_short_days = 7');
SELECT ok(
    (SELECT bool_and(abs(roi_short - pg_temp.expected(timeframe, 7)) < 1e-12) FROM learning.timeframe_allocation()),
    'tau_short 7: every roi_short is recomputed from closed_trades');
SELECT ok(
    (SELECT abs(roi_short - pg_temp.expected(NULL, 7)) < 1e-12 FROM learning.global_roi()),
    'and so is the global roi_short');
SELECT ok(
    (SELECT bool_and(abs(roi_long - pg_temp.expected(timeframe, 90)) < 1e-12) FROM learning.timeframe_allocation()),
    'roi_long (tau 90) is unchanged');
SELECT results_eq(
    $$SELECT timeframe, current_allocation, n FROM learning.timeframe_allocation()$$,
    $$SELECT timeframe, current_allocation, n FROM before_alloc$$,
    'the allocation and n are left as they are');

SELECT is(learning.set_tunable('tau_long_days', '30'), '30'::jsonb, 'set tau_long_days = 30');
SELECT ok(
    (SELECT abs(roi_long - pg_temp.expected(NULL, 30)) < 1e-12 FROM learning.global_roi()),
    'tau_long 30: the global roi_long is recomputed');

-- A trade after the change folds with the new tau into the recomputed state.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('r7', '4h', -1, '2026-01-25T00:00:00Z');
SELECT ok(
    (SELECT bool_and(abs(roi_short - pg_temp.expected(timeframe, 7)) < 1e-12
        AND abs(roi_long - pg_temp.expected(timeframe, 30)) < 1e-12)
     FROM learning.timeframe_allocation()),
    'later trades fold in with the new taus');

SELECT is(learning.set_tunable('tau_short_days', '14'), '14'::jsonb, 'set tau_short_days = 14');
SELECT is(learning.set_tunable('tau_long_days', '90'), '90'::jsonb, 'set tau_long_days = 90');
SELECT ok(
    (SELECT bool_and(abs(roi_short - pg_temp.expected(timeframe, 14)) < 1e-12
        AND abs(roi_long - pg_temp.expected(timeframe, 90)) < 1e-12)
     FROM learning.timeframe_allocation()),
    'back to 14/90: the EWMAs are the closed form again');
SELECT is(
    (SELECT count(*)::integer FROM learning.learning_log WHERE message LIKE 'ROI RECOMPUTE:%'), 4,
    'each tau change logs ROI RECOMPUTE');

SELECT * FROM finish();
ROLLBACK;
