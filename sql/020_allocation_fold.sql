-- Timeframe allocation learning, the EWMA fold into the typed state (design §4). The allocation
-- step is in 021, position redistribution in 022, the closed_trades trigger in 023, the read
-- functions in 024.
--
-- search_path: every function pins it, except the pure SQL helpers with a RETURN body
-- (tracked_timeframes, trade_roi, _decay, _scaled, ewma_*, _fmt*, ...). A SET clause would stop the
-- planner from inlining them in the per-trade path, and a SQL-standard body binds its references
-- when it is created, so no search_path can redirect them (design §2; the list is pinned by
-- tests/test_functions_search_path.py).

-- learning.tracked_timeframes: the learning timeframes, in the order every array here uses.
CREATE OR REPLACE FUNCTION learning.tracked_timeframes()
RETURNS text []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN ARRAY['15m', '1h', '4h'];

-- learning.starting_allocation: the plan's starting split, same order as tracked_timeframes().
CREATE OR REPLACE FUNCTION learning.starting_allocation()
RETURNS double precision []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN ARRAY[0.15, 0.50, 0.35]::double precision [];

-- learning.trade_roi: a closed trade's ROI as a fraction (rpnl_pct is a percent).
-- |rpnl_pct| < 1e-9 counts as flat: such values carry no signal and would underflow float8 maths.
CREATE OR REPLACE FUNCTION learning.trade_roi(rpnl_pct double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN abs(rpnl_pct) < 1e-9 THEN 0 ELSE rpnl_pct / 100 END;

-- learning._decay: exp(-age/tau) for age >= 0, exactly 0 past 230 tau (1e-100).
-- PostgreSQL raises on float underflow, so tiny weights are cut to 0 instead.
CREATE OR REPLACE FUNCTION learning._decay(age_seconds double precision, tau_seconds double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN age_seconds / tau_seconds > 230 THEN 0 ELSE exp(-age_seconds / tau_seconds) END;

-- learning._scaled: x * factor where factor is a _decay() value, without float underflow errors.
CREATE OR REPLACE FUNCTION learning._scaled(x double precision, factor double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN factor = 0 OR abs(x) < 1e-200 THEN 0 ELSE x * factor END;

-- learning.ewma_fold: fold one observation into the running sums of a time-decayed mean (design §4).
-- state = {ref_epoch, sum_short, weight_short, sum_long, weight_long, sumsq_short, weight2_short,
-- sumsq_long, weight2_long}: per horizon sum w*roi, sum w, sum w*roi^2 and sum w^2, taken at
-- ref_epoch (the newest time seen): equal times weigh equally and a late observation folds in
-- exactly. The first five give the means; the rest the second moment and the effective count.
-- An observation age seconds from ref_epoch weighs w = exp(-age / tau) on each horizon, and w^2 =
-- exp(-2 age / tau) is _decay(age, tau / 2): exactly 0 past 115 tau, so no product leaves float8's
-- range. The weights are computed once, into variables, and handed to _ewma_fold_weighted: inlined,
-- each use of an argument is a copy of it, and PL/pgSQL sets a trade's expressions up again in every
-- transaction (design §4). No SET clause: every type is a keyword or schema-qualified (design §2).
CREATE OR REPLACE FUNCTION learning.ewma_fold(
    state double precision [],
    roi double precision,
    at_epoch double precision,
    tau_short_seconds double precision,
    tau_long_seconds double precision
)
RETURNS double precision []
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
AS $$
DECLARE
    age CONSTANT double precision := pg_catalog.abs(at_epoch - state[1]);
    w_short CONSTANT double precision := learning._decay(age, tau_short_seconds);
    w_long CONSTANT double precision := learning._decay(age, tau_long_seconds);
    w2_short CONSTANT double precision := learning._decay(age, tau_short_seconds / 2);
    w2_long CONSTANT double precision := learning._decay(age, tau_long_seconds / 2);
BEGIN
    RETURN learning._ewma_fold_weighted(state, roi, at_epoch, w_short, w_long, w2_short, w2_long);
END;
$$;

-- learning._ewma_fold_weighted: ewma_fold given the observation's weights (of |at_epoch - ref_epoch|).
-- A newer observation becomes the reference time and the sums are scaled down by its weights; an
-- older one is added at its weights.
CREATE OR REPLACE FUNCTION learning._ewma_fold_weighted(
    state double precision [],
    roi double precision,
    at_epoch double precision,
    w_short double precision,
    w_long double precision,
    w2_short double precision,
    w2_long double precision
)
RETURNS double precision []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE
    WHEN state IS NULL OR state[3] = 0
        THEN ARRAY[at_epoch, roi, 1, roi, 1, roi * roi, 1, roi * roi, 1]
    WHEN at_epoch >= state[1]
        THEN ARRAY[
            at_epoch,
            learning._scaled(state[2], w_short) + roi,
            learning._scaled(state[3], w_short) + 1,
            learning._scaled(state[4], w_long) + roi,
            learning._scaled(state[5], w_long) + 1,
            learning._scaled(state[6], w_short) + roi * roi,
            learning._scaled(state[7], w2_short) + 1,
            learning._scaled(state[8], w_long) + roi * roi,
            learning._scaled(state[9], w2_long) + 1
        ]
    ELSE ARRAY[
        state[1],
        state[2] + learning._scaled(roi, w_short),
        state[3] + w_short,
        state[4] + learning._scaled(roi, w_long),
        state[5] + w_long,
        state[6] + learning._scaled(roi * roi, w_short),
        state[7] + w2_short,
        state[8] + learning._scaled(roi * roi, w_long),
        state[9] + w2_long
    ]
END;

-- learning.ewma_short / ewma_long: the means a fold state holds (NULL when empty): of its series
-- number `series` when it holds several series of 9 values (the trigger's 15m, 1h, 4h, global), so
-- no caller takes a slice of them first (a slice is one more subscript to set up at each use).
CREATE OR REPLACE FUNCTION learning.ewma_short(state double precision [], series integer DEFAULT 1)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN state[series * 9 - 6] > 0 THEN state[series * 9 - 7] / state[series * 9 - 6] END;

CREATE OR REPLACE FUNCTION learning.ewma_long(state double precision [], series integer DEFAULT 1)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN state[series * 9 - 4] > 0 THEN state[series * 9 - 5] / state[series * 9 - 4] END;

-- learning._state_arrays: the typed state as the trigger's arrays: 4 series x 9 fold values (15m,
-- 1h, 4h, global; ewma_fold's order), their n, the tracked timeframes' allocation, and how many
-- of the four rows exist (a missing row reads as no trades at the starting split).
-- plpgsql, so its plans are cached per session (a SQL function's are made again at every call).
CREATE OR REPLACE FUNCTION learning._state_arrays(
    OUT states double precision [],
    OUT counts integer [],
    OUT allocation double precision [],
    OUT present integer
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- One row of the four series; a missing series reads as no trades at the starting split.
    SELECT
        ARRAY[
            coalesce(a.ref_epoch, 0), coalesce(a.short_sum_w_roi, 0), coalesce(a.short_sum_w, 0),
            coalesce(a.long_sum_w_roi, 0), coalesce(a.long_sum_w, 0), coalesce(a.short_sum_w_roi2, 0),
            coalesce(a.short_sum_w2, 0), coalesce(a.long_sum_w_roi2, 0), coalesce(a.long_sum_w2, 0),
            coalesce(b.ref_epoch, 0), coalesce(b.short_sum_w_roi, 0), coalesce(b.short_sum_w, 0),
            coalesce(b.long_sum_w_roi, 0), coalesce(b.long_sum_w, 0), coalesce(b.short_sum_w_roi2, 0),
            coalesce(b.short_sum_w2, 0), coalesce(b.long_sum_w_roi2, 0), coalesce(b.long_sum_w2, 0),
            coalesce(c.ref_epoch, 0), coalesce(c.short_sum_w_roi, 0), coalesce(c.short_sum_w, 0),
            coalesce(c.long_sum_w_roi, 0), coalesce(c.long_sum_w, 0), coalesce(c.short_sum_w_roi2, 0),
            coalesce(c.short_sum_w2, 0), coalesce(c.long_sum_w_roi2, 0), coalesce(c.long_sum_w2, 0),
            coalesce(g.ref_epoch, 0), coalesce(g.short_sum_w_roi, 0), coalesce(g.short_sum_w, 0),
            coalesce(g.long_sum_w_roi, 0), coalesce(g.long_sum_w, 0), coalesce(g.short_sum_w_roi2, 0),
            coalesce(g.short_sum_w2, 0), coalesce(g.long_sum_w_roi2, 0), coalesce(g.long_sum_w2, 0)
        ],
        ARRAY[coalesce(a.n, 0), coalesce(b.n, 0), coalesce(c.n, 0), coalesce(g.n, 0)],
        ARRAY[
            coalesce(a.current_allocation, (learning.starting_allocation())[1]),
            coalesce(b.current_allocation, (learning.starting_allocation())[2]),
            coalesce(c.current_allocation, (learning.starting_allocation())[3])
        ],
        (a.series IS NOT NULL)::integer + (b.series IS NOT NULL)::integer + (c.series IS NOT NULL)::integer
        + (g.series IS NOT NULL)::integer
    INTO states, counts, allocation, present
    FROM (SELECT) AS one
    LEFT JOIN learning.allocation_state AS a ON a.series = (learning.tracked_timeframes())[1]
    LEFT JOIN learning.allocation_state AS b ON b.series = (learning.tracked_timeframes())[2]
    LEFT JOIN learning.allocation_state AS c ON c.series = (learning.tracked_timeframes())[3]
    LEFT JOIN learning.allocation_state AS g ON g.series = 'global';
END;
$$;

-- learning._ensure_state_rows: the typed state's rows, at the starting split with no trades, for
-- any series that has none (a fresh database).
CREATE OR REPLACE FUNCTION learning._ensure_state_rows()
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO learning.allocation_state (series, current_allocation)
    SELECT
        x.name,
        x.start
    FROM unnest(learning.tracked_timeframes(), learning.starting_allocation()) AS x (name, start)
    UNION ALL
    SELECT
        'global',
        NULL
    ON CONFLICT (series) DO NOTHING;
END;

-- learning._write_state: store fold states, counts and an allocation (arrays as _state_arrays
-- gives them) in learning.allocation_state; rows that do not change are not written. The caller
-- holds the decision_maker row: its lock guards this table (one lock order: that row, this
-- table, positions), and every writer here takes it first.
CREATE OR REPLACE FUNCTION learning._write_state(
    p_states double precision [],
    p_counts integer [],
    p_allocation double precision []
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE learning.allocation_state AS s
    SET
        ref_epoch = v.ref_epoch,
        short_sum_w_roi = v.short_sum_w_roi,
        short_sum_w = v.short_sum_w,
        long_sum_w_roi = v.long_sum_w_roi,
        long_sum_w = v.long_sum_w,
        short_sum_w_roi2 = v.short_sum_w_roi2,
        short_sum_w2 = v.short_sum_w2,
        long_sum_w_roi2 = v.long_sum_w_roi2,
        long_sum_w2 = v.long_sum_w2,
        n = v.n,
        current_allocation = v.current_allocation,
        updated_at = pg_catalog.now()
    FROM (
        SELECT
            x.name,
            p_states[(x.ord - 1) * 9 + 1] AS ref_epoch,
            p_states[(x.ord - 1) * 9 + 2] AS short_sum_w_roi,
            p_states[(x.ord - 1) * 9 + 3] AS short_sum_w,
            p_states[(x.ord - 1) * 9 + 4] AS long_sum_w_roi,
            p_states[(x.ord - 1) * 9 + 5] AS long_sum_w,
            p_states[(x.ord - 1) * 9 + 6] AS short_sum_w_roi2,
            p_states[(x.ord - 1) * 9 + 7] AS short_sum_w2,
            p_states[(x.ord - 1) * 9 + 8] AS long_sum_w_roi2,
            p_states[(x.ord - 1) * 9 + 9] AS long_sum_w2,
            p_counts[x.ord] AS n,
            p_allocation[x.ord] AS current_allocation
        FROM pg_catalog.unnest(learning.tracked_timeframes() || 'global'::text) WITH ORDINALITY AS x (name, ord)
    ) AS v
    WHERE s.series = v.name
        AND (
            s.ref_epoch, s.short_sum_w_roi, s.short_sum_w, s.long_sum_w_roi, s.long_sum_w, s.short_sum_w_roi2,
            s.short_sum_w2, s.long_sum_w_roi2, s.long_sum_w2, s.n, s.current_allocation
        ) IS DISTINCT FROM (
            v.ref_epoch, v.short_sum_w_roi, v.short_sum_w, v.long_sum_w_roi, v.long_sum_w, v.short_sum_w_roi2,
            v.short_sum_w2, v.long_sum_w_roi2, v.long_sum_w2, v.n, v.current_allocation
        );
END;
$$;
