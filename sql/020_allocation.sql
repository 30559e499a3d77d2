-- Timeframe allocation learning (SPEC section 4): the ROI EWMA, the capped allocation step,
-- position redistribution, and the closed_trades triggers that run them.
--
-- search_path: every function pins it, except the pure IMMUTABLE SQL helpers with a RETURN body
-- (tracked_timeframes, trade_roi, _decay, _scaled, ewma_*, _fmt*, ...). A SET clause would stop the
-- planner from inlining them in the per-trade path, and a SQL-standard body binds its references
-- when it is created, so no search_path can redirect them (SPEC 12's exception; the list is pinned
-- by tests/test_functions_search_path.py).

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

-- learning.ewma_fold: fold one observation into the running sums of a time-decayed mean.
-- state = {ref_epoch, sum_short, weight_short, sum_long, weight_long, sumsq_short, weight2_short,
-- sumsq_long, weight2_long}: per horizon sum w*roi, sum w, sum w*roi^2 and sum w^2, taken at
-- ref_epoch (the newest time seen): equal times weigh equally and a late observation folds in
-- exactly. The first five give the means; the rest the second moment and the effective count.
-- A squared weight exp(-2a/tau) is _decay(a, tau / 2): exactly 0 past 115 tau, so no product
-- leaves float8's range (and every argument stays cheap enough for the planner to inline).
CREATE OR REPLACE FUNCTION learning.ewma_fold(
    state double precision [],
    roi double precision,
    at_epoch double precision,
    tau_short_seconds double precision,
    tau_long_seconds double precision
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
            learning._scaled(state[2], learning._decay(at_epoch - state[1], tau_short_seconds)) + roi,
            learning._scaled(state[3], learning._decay(at_epoch - state[1], tau_short_seconds)) + 1,
            learning._scaled(state[4], learning._decay(at_epoch - state[1], tau_long_seconds)) + roi,
            learning._scaled(state[5], learning._decay(at_epoch - state[1], tau_long_seconds)) + 1,
            learning._scaled(state[6], learning._decay(at_epoch - state[1], tau_short_seconds)) + roi * roi,
            learning._scaled(state[7], learning._decay(at_epoch - state[1], tau_short_seconds / 2)) + 1,
            learning._scaled(state[8], learning._decay(at_epoch - state[1], tau_long_seconds)) + roi * roi,
            learning._scaled(state[9], learning._decay(at_epoch - state[1], tau_long_seconds / 2)) + 1
        ]
    ELSE ARRAY[
        state[1],
        state[2] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_short_seconds)),
        state[3] + learning._decay(state[1] - at_epoch, tau_short_seconds),
        state[4] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_long_seconds)),
        state[5] + learning._decay(state[1] - at_epoch, tau_long_seconds),
        state[6] + learning._scaled(roi * roi, learning._decay(state[1] - at_epoch, tau_short_seconds)),
        state[7] + learning._decay(state[1] - at_epoch, tau_short_seconds / 2),
        state[8] + learning._scaled(roi * roi, learning._decay(state[1] - at_epoch, tau_long_seconds)),
        state[9] + learning._decay(state[1] - at_epoch, tau_long_seconds / 2)
    ]
END;

-- learning.ewma_short / ewma_long: the means a fold state holds (NULL when empty).
CREATE OR REPLACE FUNCTION learning.ewma_short(state double precision [])
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN state[3] > 0 THEN state[2] / state[3] END;

CREATE OR REPLACE FUNCTION learning.ewma_long(state double precision [])
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN state[5] > 0 THEN state[4] / state[5] END;

DO $types$
BEGIN
    IF pg_catalog.to_regtype('learning.allocation_step_result') IS NULL THEN
        CREATE TYPE learning.allocation_step_result AS (
            new_allocation double precision [],
            desired double precision [],
            scores double precision [],
            step_limit double precision,
            reason text
        );
    END IF;
END
$types$;

-- learning.allocation_step: one capped move of the allocation toward the desired split.
-- The desired split is the plan's (sign-safe ROI scores, SPEC 4) or, given p_split, that split of
-- the group's total (learning.evidence_split's); both go through the same floor, and one scale
-- factor on the whole change vector keeps the sum, the direction and the cap exactly, and
-- timeframes without trades keep their value bit for bit.
-- No input can make it raise: float8 products that round to exactly 0 raise "underflow" in
-- PostgreSQL, so every magnitude below 1e-140 (allocations, ROIs, the step, the floor) counts as 0;
-- then no product of two or three of them, nor a quotient by a number at most 1, leaves float8's
-- normal range (docs/decisions.md, "allocation arithmetic").
DROP FUNCTION IF EXISTS learning.allocation_step(
    double precision [], double precision [], integer [], double precision, double precision, double precision
);
CREATE OR REPLACE FUNCTION learning.allocation_step(
    p_current double precision [],
    p_roi_short double precision [],
    p_trade_counts integer [],
    p_max_step double precision DEFAULT 0.003,
    p_min_trades_full double precision DEFAULT 5,
    p_min_allocation double precision DEFAULT 0.05,
    p_split double precision [] DEFAULT NULL
)
RETURNS learning.allocation_step_result
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k integer := pg_catalog.cardinality(p_current);
    result learning.allocation_step_result;
    members integer [] := '{}'::integer [];
    m integer;
    group_total double precision := 0;
    min_roi double precision;
    min_n integer;
    score_sum double precision := 0;
    split_sum double precision := 0;
    floor_value double precision;
    max_change double precision := 0;
    cur double precision [] := p_current;
    roi double precision [] := p_roi_short;
    tiny CONSTANT double precision := 1e-140;
    max_step double precision := p_max_step;
    min_allocation double precision := p_min_allocation;
    full_share double precision;
    spread double precision;
    i integer;
BEGIN
    -- The group's total is 1 minus the timeframes outside it, not the sum of its members: the sum
    -- would carry each step's rounding into the next, and the drift grows without bound (the
    -- allocation left SPEC's 1e-12 after ~19,000 trades). Anchored, it stays within a few ulps.
    group_total := 1;
    FOR i IN 1..k LOOP
        IF p_current[i] IS NULL OR p_current[i] = 'NaN' THEN
            RAISE EXCEPTION 'allocation_step: p_current[%] is %, not an allocation', i, coalesce(p_current[i]::text, 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_trade_counts[i] >= 1 THEN
            IF p_roi_short[i] IS NULL OR p_roi_short[i] = 'NaN' THEN
                RAISE EXCEPTION 'allocation_step: p_roi_short[%] is % for a timeframe with trades', i,
                    coalesce(p_roi_short[i]::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            members := members || i;
            -- A member's allocation or ROI below tiny counts as 0 (min_allocation 0 shrinks the
            -- worst timeframe geometrically toward 0; a trade may earn 1e-300 percent).
            IF pg_catalog.abs(cur[i]) < tiny THEN
                cur[i] := 0;
            END IF;
            IF pg_catalog.abs(roi[i]) < tiny THEN
                roi[i] := 0;
            END IF;
            min_roi := LEAST(min_roi, roi[i]);
            min_n := LEAST(min_n, p_trade_counts[i]);
        ELSE
            group_total := group_total - p_current[i];
        END IF;
    END LOOP;
    m := pg_catalog.cardinality(members);
    result.new_allocation := p_current;
    IF pg_catalog.abs(group_total) < tiny THEN
        group_total := 0;
    END IF;
    IF max_step < tiny THEN
        max_step := 0;
    END IF;
    IF min_allocation < tiny THEN
        min_allocation := 0;
    END IF;
    IF m < 2 THEN
        result.reason := 'skip_one_timeframe';
        RETURN result;
    END IF;

    floor_value := LEAST(min_allocation, group_total / m);
    spread := group_total - m * floor_value;
    IF pg_catalog.abs(spread) < tiny THEN
        spread := 0;
    END IF;

    result.scores := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    result.desired := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    IF p_split IS NULL THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := roi[i] - LEAST(0, min_roi);
            IF result.scores[i] < tiny THEN
                result.scores[i] := 0;
            END IF;
            score_sum := score_sum + result.scores[i];
        END LOOP;
    ELSE
        -- A given split of the group's total, floored like the plan's: a member's score is its
        -- share above the floor, so a split that clears the floor is the desired split exactly.
        FOREACH i IN ARRAY members LOOP
            IF p_split[i] IS NULL OR NOT p_split[i] BETWEEN 1e-50 AND 1e50 THEN
                RAISE EXCEPTION 'allocation_step: p_split[%] is %, not a weight in [1e-50, 1e50]', i,
                    coalesce(p_split[i]::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            split_sum := split_sum + p_split[i];
        END LOOP;
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := group_total * (p_split[i] / split_sum) - floor_value;
            IF result.scores[i] < tiny THEN
                result.scores[i] := 0;
            END IF;
            score_sum := score_sum + result.scores[i];
        END LOOP;
    END IF;
    IF NOT score_sum > 0 THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := 1;
        END LOOP;
        score_sum := m;
    END IF;

    FOREACH i IN ARRAY members LOOP
        result.desired[i] := floor_value + spread * result.scores[i] / score_sum;
        max_change := GREATEST(max_change, abs(result.desired[i] - cur[i]));
    END LOOP;

    full_share := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    result.step_limit := CASE WHEN full_share < tiny THEN 0 ELSE max_step * full_share END;
    IF max_change <= result.step_limit THEN
        result.reason := 'reached_desired';
        FOREACH i IN ARRAY members LOOP
            result.new_allocation[i] := result.desired[i];
        END LOOP;
    ELSE
        result.reason := 'step';
        FOREACH i IN ARRAY members LOOP
            -- A move whose product with the step would leave float8's range is below any
            -- allocation that matters: it is 0.
            IF result.step_limit = 0 OR pg_catalog.abs(result.desired[i] - cur[i]) < 1e-300 / result.step_limit THEN
                result.new_allocation[i] := cur[i];
            ELSE
                result.new_allocation[i] := cur[i]
                    + (result.desired[i] - cur[i]) * result.step_limit / max_change;
            END IF;
        END LOOP;
    END IF;
    FOREACH i IN ARRAY members LOOP
        IF result.new_allocation[i] < tiny THEN
            result.new_allocation[i] := 0;
        END IF;
    END LOOP;
    RETURN result;
END;
$$;

-- learning.evidence_split: the evidence rule's desired split (SPEC 13), the starting split tilted
-- only by ROI differences that stand out of their noise. From the long-horizon sums of each
-- timeframe with trades (p_states: 15m, 1h, 4h, global, 9 values each as ewma_fold keeps them):
-- the mean m, the variance v and the effective count n_eff = (sum w)^2 / sum w^2; the variance is
-- shrunk toward the global one by p_prior_n pseudo-trades, so one or two trades are not precise;
-- se^2 = v / n_eff. Each timeframe is compared with the n_eff-weighted mean of the others:
-- d = m - m_rest, se_d^2 = se^2 + 1 / sum(1 / se_rest^2), z = d / se_d. Only the part of |d|
-- beyond p_threshold standard errors counts (a soft threshold: no step at the threshold), and it
-- tilts the starting split: split = start * exp(sign(d) * p_gain * (|d| - p_threshold * se_d) /
-- sigma_global), the exponent capped at 50. While a timeframe has fewer than p_min_trades_full
-- trades the threshold is scaled by the same n / p_min_trades_full as the step (the step is
-- already that small; the plan's walkthrough moves at its second trade).
-- Returns split (NULL for timeframes without trades, all NULL below two of them), evidence (z)
-- and std_error (se_d). Never raises: magnitudes below 1e-100 count as 0 and variances and
-- standard errors have floors, so no product or quotient leaves float8's normal range.
CREATE OR REPLACE FUNCTION learning.evidence_split(
    p_states double precision [],
    p_counts integer [],
    p_threshold double precision DEFAULT 1.5,
    p_gain double precision DEFAULT 8,
    p_prior_n double precision DEFAULT 5,
    p_min_trades_full double precision DEFAULT 5,
    OUT split double precision [],
    OUT evidence double precision [],
    OUT std_error double precision []
)
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k CONSTANT integer := 3;
    g CONSTANT integer := 4;
    stride CONSTANT integer := 9;
    tiny CONSTANT double precision := 1e-100;
    start CONSTANT double precision [] := learning.starting_allocation();
    mean double precision [] := ARRAY[0, 0, 0, 0]::double precision [];
    var double precision [] := ARRAY[0, 0, 0, 0]::double precision [];
    neff double precision [] := ARRAY[1, 1, 1, 1]::double precision [];
    se2 double precision [] := ARRAY[0, 0, 0]::double precision [];
    members integer [] := '{}'::integer [];
    threshold double precision := coalesce(p_threshold, 0);
    gain double precision := coalesce(p_gain, 0);
    prior double precision := coalesce(p_prior_n, 0);
    w double precision;
    x double precision;
    min_n integer;
    share double precision;
    sigma double precision;
    rest_w double precision;
    rest_m double precision;
    rest_inv double precision;
    d double precision;
    se double precision;
    excess double precision;
    tilt double precision;
    i integer;
    j integer;
BEGIN
    IF threshold < tiny THEN
        threshold := 0;
    END IF;
    IF gain < tiny THEN
        gain := 0;
    END IF;
    IF prior < tiny THEN
        prior := 0;
    END IF;
    FOR i IN 1..g LOOP
        w := p_states[(i - 1) * stride + 5];
        IF (i = g OR p_counts[i] >= 1) AND w >= 1 AND p_states[(i - 1) * stride + 9] >= 1 THEN
            x := p_states[(i - 1) * stride + 4];
            mean[i] := CASE WHEN pg_catalog.abs(x) < 1e-200 THEN 0 ELSE x / w END;
            IF pg_catalog.abs(mean[i]) < tiny THEN
                mean[i] := 0;
            END IF;
            x := p_states[(i - 1) * stride + 8];
            x := CASE WHEN x > 1e-200 THEN x / w ELSE 0 END - mean[i] * mean[i];
            var[i] := CASE WHEN x > 1e-200 THEN x ELSE 0 END;
            neff[i] := GREATEST(w * (w / p_states[(i - 1) * stride + 9]), 1);
        END IF;
        IF i < g AND p_counts[i] >= 1 THEN
            members := members || i;
            min_n := LEAST(min_n, p_counts[i]);
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(members) < 2 THEN
        RETURN;
    END IF;
    sigma := GREATEST(pg_catalog.sqrt(var[g]), 1e-50);
    share := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    FOREACH i IN ARRAY members LOOP
        x := (neff[i] * var[i] + prior * var[g]) / (neff[i] + prior);
        se2[i] := GREATEST(CASE WHEN x > 1e-200 THEN x / neff[i] ELSE 0 END, 1e-100);
    END LOOP;
    split := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    evidence := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    std_error := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    FOREACH i IN ARRAY members LOOP
        rest_w := 0;
        rest_m := 0;
        rest_inv := 0;
        FOREACH j IN ARRAY members LOOP
            IF j <> i THEN
                rest_w := rest_w + neff[j];
                rest_m := rest_m + neff[j] * mean[j];
                rest_inv := rest_inv + 1 / se2[j];
            END IF;
        END LOOP;
        d := mean[i] - rest_m / rest_w;
        IF pg_catalog.abs(d) < tiny THEN
            d := 0;
        END IF;
        se := pg_catalog.sqrt(se2[i] + 1 / rest_inv);
        evidence[i] := d / se;
        std_error[i] := se;
        excess := pg_catalog.abs(d) - threshold * share * se;
        tilt := CASE WHEN excess > tiny AND gain > 0 THEN LEAST(50, gain * (excess / sigma)) ELSE 0 END;
        split[i] := start[i] * pg_catalog.exp(pg_catalog.sign(d) * tilt);
    END LOOP;
END;
$$;

-- learning.redistribute_positions: rewrite each token's tracked positions to its total split by
-- the allocation (SPEC 4); with p_pending_only, only the tokens marked in pending_redistribution.
-- Lock first, read after: one statement locks the tracked rows, skipping rows another transaction
-- holds (NULL totals too: the bot may be filling one in); the next statement reads the totals, so
-- they are the rows as committed after any concurrent change, never a snapshot from before a wait.
-- A token with a tracked row this call does not hold (the bot's, or one committed in between) is
-- left as it is and marked pending: a trade never waits on the bot's position rows, so it cannot
-- deadlock with it, whatever order the bot locks them in. The rows locked stay tracked, so when the
-- second statement counts as many tracked rows as were locked it holds them all; only otherwise are
-- the held ids collected and matched per token (a second pass).
-- A row whose total_allocation_pct is not a percent in [0, 1e9] (NaN, infinite, negative, absurd)
-- keeps its token as it is, with one WARNING line naming the rows (at most 10); the sum of a token's
-- at most three sane rows cannot overflow. A token total below 1e-150 counts as 0 (left as it is) and
-- a row's share of it below 1e-160 as 0: PostgreSQL raises when a float8 product rounds to 0.
-- Rows whose value would not change are not written. One generic plan serves every call
-- (BENCHMARKS.md, "redistribution").
DROP FUNCTION IF EXISTS learning.redistribute_positions(double precision []);
CREATE OR REPLACE FUNCTION learning.redistribute_positions(
    p_allocation double precision [],
    p_pending_only boolean DEFAULT false
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    held integer;
    ids uuid [];
    complete boolean;
    updated integer;
    bad_rows integer;
    bad_list text;
BEGIN
    SELECT pg_catalog.count(*) INTO held
    FROM (
        SELECT
        FROM public.lowcap_positions AS p
        WHERE p.status IN ('watchlist', 'active', 'dormant')
            AND p.timeframe = ANY(learning.tracked_timeframes())
            AND (NOT p_pending_only OR EXISTS (
                SELECT FROM learning.pending_redistribution AS m
                WHERE m.token_contract = p.token_contract AND m.token_chain = p.token_chain
            ))
        FOR NO KEY UPDATE OF p SKIP LOCKED
    ) AS l;

    -- Once, or twice when a row was skipped: then with the ids this call holds, to tell its tokens.
    LOOP
        WITH alloc AS (
            SELECT a.timeframe, a.alloc
            FROM unnest(learning.tracked_timeframes(), p_allocation) AS a (timeframe, alloc)
        ),

        -- Every token in scope, from its tracked rows as committed now.
        summed AS (
            SELECT
                p.token_contract,
                p.token_chain,
                pg_catalog.count(*) AS n,
                pg_catalog.bool_and(m.id IS NOT NULL) AS ids_held,
                pg_catalog.count(*) FILTER (WHERE NOT p.total_allocation_pct BETWEEN 0 AND 1e9) AS bad_rows,
                pg_catalog.sum(p.total_allocation_pct) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9)
                AS token_total,
                pg_catalog.sum(a.alloc) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9) AS alloc_sum
            FROM public.lowcap_positions AS p
            INNER JOIN alloc AS a ON p.timeframe = a.timeframe
            LEFT JOIN unnest(ids) AS m (id) ON p.id = m.id
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND (NOT p_pending_only OR EXISTS (
                    SELECT FROM learning.pending_redistribution AS pr
                    WHERE pr.token_contract = p.token_contract AND pr.token_chain = p.token_chain
                ))
            GROUP BY p.token_contract, p.token_chain
        ),

        -- Every row locked above is still tracked, so as many rows as locked means this call holds them all.
        whole AS (
            SELECT coalesce(pg_catalog.sum(s.n), 0) = held AS all_held FROM summed AS s
        ),

        token AS (
            SELECT
                s.token_contract,
                s.token_chain,
                s.bad_rows,
                s.token_total,
                s.alloc_sum,
                w.all_held OR s.ids_held AS held,
                (w.all_held OR s.ids_held) AND s.bad_rows = 0 AND s.token_total >= 1e-150
                AND s.alloc_sum > 0 AS ready
            FROM summed AS s
            CROSS JOIN whole AS w
        ),

        -- The same snapshot as summed: a token's rows here are the rows it summed. A row holding all
        -- of its token's allocation (a token with one tracked row) gets the total itself: total * a / a
        -- can round to a neighbouring float, and the row would be rewritten.
        written AS (
            UPDATE public.lowcap_positions AS p
            SET total_allocation_pct = CASE
                WHEN a.alloc = t.alloc_sum THEN t.token_total
                WHEN a.alloc >= 1e-150 THEN t.token_total * a.alloc / t.alloc_sum
                WHEN a.alloc / t.alloc_sum >= 1e-160 THEN t.token_total * (a.alloc / t.alloc_sum)
                ELSE 0
            END
            FROM token AS t, alloc AS a
            WHERE p.token_contract = t.token_contract AND p.token_chain = t.token_chain
                AND p.timeframe = a.timeframe
                AND p.status IN ('watchlist', 'active', 'dormant')
                AND p.total_allocation_pct IS NOT NULL
                AND t.ready
                AND p.total_allocation_pct IS DISTINCT FROM (
                    CASE
                        WHEN a.alloc = t.alloc_sum THEN t.token_total
                        WHEN a.alloc >= 1e-150 THEN t.token_total * a.alloc / t.alloc_sum
                        WHEN a.alloc / t.alloc_sum >= 1e-160 THEN t.token_total * (a.alloc / t.alloc_sum)
                        ELSE 0
                    END
                )
            RETURNING 1
        ),

        marked AS (
            INSERT INTO learning.pending_redistribution (token_contract, token_chain)
            SELECT t.token_contract, t.token_chain
            FROM token AS t
            WHERE NOT t.held AND ids IS NOT NULL
            ON CONFLICT DO NOTHING
        ),

        -- Every other mark is done: redistributed now, left for a bad row, or without rows.
        cleared AS (
            DELETE FROM learning.pending_redistribution AS pr
            WHERE NOT EXISTS (
                SELECT FROM token AS t
                WHERE t.token_contract = pr.token_contract AND t.token_chain = pr.token_chain AND NOT t.held
            )
        )

        SELECT
            (SELECT w.all_held FROM whole AS w),
            (SELECT pg_catalog.count(*) FROM written),
            (SELECT pg_catalog.sum(t.bad_rows) FROM token AS t)
        INTO complete, updated, bad_rows;

        EXIT WHEN complete OR ids IS NOT NULL;
        -- Locking again returns the rows this call holds (and any that came free since).
        ids := ARRAY(
            SELECT p.id
            FROM public.lowcap_positions AS p
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND p.timeframe = ANY(learning.tracked_timeframes())
                AND (NOT p_pending_only OR EXISTS (
                    SELECT FROM learning.pending_redistribution AS m
                    WHERE m.token_contract = p.token_contract AND m.token_chain = p.token_chain
                ))
            FOR NO KEY UPDATE OF p SKIP LOCKED
        );
    END LOOP;

    IF bad_rows > 0 THEN
        SELECT
            pg_catalog.count(*),
            pg_catalog.string_agg(pg_catalog.format(
                'id=%s token=%s chain=%s timeframe=%s total_allocation_pct=%s',
                b.id, pg_catalog.to_jsonb(b.token_contract), pg_catalog.to_jsonb(b.token_chain), b.timeframe,
                b.total_allocation_pct
            ), ', ' ORDER BY b.rn) FILTER (WHERE b.rn <= 10)
        INTO bad_rows, bad_list
        FROM (
            SELECT
                p.id, p.token_contract, p.token_chain, p.timeframe, p.total_allocation_pct,
                pg_catalog.row_number() OVER (ORDER BY p.token_contract, p.token_chain, p.timeframe) AS rn
            FROM public.lowcap_positions AS p
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND p.timeframe = ANY(learning.tracked_timeframes())
                AND NOT p.total_allocation_pct BETWEEN 0 AND 1e9
        ) AS b;
        PERFORM learning._log('WARNING', pg_catalog.format(
            'POSITIONS SKIPPED: %s row(s) with total_allocation_pct not a percent in [0, 1e9] keep their '
            || 'token as it is | %s%s',
            bad_rows, bad_list, CASE WHEN bad_rows > 10 THEN ', ...' ELSE '' END
        ));
    END IF;
    RETURN updated;
END;
$$;

-- learning.redistribute_pending: redistribute the tokens a trade had to skip, with the current
-- allocation, under the decision_maker row lock (the trigger's lock order: that row, then
-- positions). For the hourly jobs; the next trade does the same. Returns the rows written.
-- A transaction holding that row longer than lock_timeout (a bot's open transaction that inserted
-- a trade) makes it return 0, writing nothing: that trade, or the next one, takes the marks.
CREATE OR REPLACE FUNCTION learning.redistribute_pending()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    alloc double precision [];
BEGIN
    IF NOT EXISTS (SELECT FROM learning.pending_redistribution) THEN
        RETURN 0;
    END IF;
    PERFORM FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    alloc := ARRAY(
        SELECT s.current_allocation
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
        INNER JOIN learning.allocation_state AS s ON x.tf = s.series
        ORDER BY x.ord
    );
    IF pg_catalog.cardinality(alloc) <> pg_catalog.cardinality(learning.tracked_timeframes()) THEN
        RETURN 0;
    END IF;
    RETURN learning.redistribute_positions(alloc, true);
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END;
$$;

-- The decision_maker row is output since the state moved to learning.allocation_state: nothing
-- restores it or checks it any more; the next trade rewrites it.
DROP FUNCTION IF EXISTS learning._decision_maker_intact(jsonb, boolean);
DROP FUNCTION IF EXISTS learning._series_intact(jsonb, text, integer);
DROP FUNCTION IF EXISTS learning._allocation_intact(jsonb);
DROP FUNCTION IF EXISTS learning._series_state(jsonb, text);
DROP FUNCTION IF EXISTS learning._initial_decision_maker_config();
DROP FUNCTION IF EXISTS learning.ensure_decision_maker_config(boolean);

-- learning._series_json: one series' entry in the decision_maker row (roi_short, roi_long, n,
-- updated_at = the newest trade folded in).
-- SQL with no SET clause so it inlines; STABLE like jsonb_build_object (an IMMUTABLE function
-- whose body is STABLE is never inlined).
CREATE OR REPLACE FUNCTION learning._series_json(p_state double precision [], p_n integer)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'roi_short', learning.ewma_short(p_state),
    'roi_long', learning.ewma_long(p_state),
    'n', p_n,
    'updated_at', CASE WHEN p_n > 0 THEN pg_catalog.to_timestamp(p_state[1]) END
);

-- learning._decision_maker_config: the plan's timeframe_allocation and global_roi keys of the
-- decision_maker row (output for the bot) for an allocation and fold states. states holds 4 series
-- of 9 values (15m, 1h, 4h, global); counts holds their n.
-- Written out for the three tracked timeframes as one expression, no sub-select and no SET clause:
-- it inlines into the trigger's UPDATE, whose plan is cached (a query here cost ~0.15 ms a trade).
CREATE OR REPLACE FUNCTION learning._decision_maker_config(
    p_allocation double precision [],
    p_states double precision [],
    p_counts integer []
)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'timeframe_allocation', pg_catalog.jsonb_build_object(
        (learning.tracked_timeframes())[1],
        learning._series_json(p_states[1:9], p_counts[1])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[1]),
        (learning.tracked_timeframes())[2],
        learning._series_json(p_states[10:18], p_counts[2])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[2]),
        (learning.tracked_timeframes())[3],
        learning._series_json(p_states[19:27], p_counts[3])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[3])
    ),
    'global_roi', learning._series_json(p_states[28:36], p_counts[4])
);

-- learning._decision_maker_output: the decision_maker row with our keys written over it. What the
-- bot wrote stays, except that a row that is not a JSON object is replaced; the bot's own row shape
-- (its global_roi in percent, no timeframe_allocation) keeps that value aside once, as
-- global_roi_legacy_pct, never over a value kept before. STABLE like jsonb_build_object, so it inlines.
CREATE OR REPLACE FUNCTION learning._decision_maker_output(p_cfg jsonb, p_output jsonb)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(p_cfg) = 'object' THEN p_cfg ELSE '{}'::jsonb END
|| CASE
    WHEN p_cfg ? 'global_roi' AND NOT p_cfg ? 'global_roi_legacy_pct' AND NOT p_cfg ? 'timeframe_allocation'
        THEN pg_catalog.jsonb_build_object('global_roi_legacy_pct', p_cfg -> 'global_roi')
    ELSE '{}'::jsonb
END
|| p_output;

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

-- learning.ensure_decision_maker_config: create or adopt the decision_maker row and write our keys
-- into it from learning.allocation_state; returns it, locked.
CREATE OR REPLACE FUNCTION learning.ensure_decision_maker_config()
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
DECLARE
    cfg jsonb;
    st record;
BEGIN
    INSERT INTO public.learning_configs (module_id, config_data, updated_by, notes)
    VALUES ('decision_maker', '{}', 'lowcap-learning', 'timeframe allocation learned from closed_trades')
    ON CONFLICT (module_id) DO NOTHING;
    SELECT c.config_data INTO cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    PERFORM learning._ensure_state_rows();
    SELECT * INTO st FROM learning._state_arrays();
    cfg := learning._decision_maker_output(cfg, learning._decision_maker_config(st.allocation, st.states, st.counts));
    UPDATE public.learning_configs
    SET config_data = cfg, updated_at = pg_catalog.now(), updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker' AND config_data IS DISTINCT FROM cfg;
    RETURN cfg;
END;
$$;

-- learning._fmt: a number for log lines (4 to 6 decimals, no float noise).
-- No SET clause so it inlines into the trigger's log statement (called per history row).
CREATE OR REPLACE FUNCTION learning._fmt(x double precision, digits integer DEFAULT 4)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(pg_catalog.round(x::numeric, digits)::text, 'null');

-- learning._fmt_allocation: {15m: 0.15, 1h: 0.5, 4h: 0.35} as the plan's log lines show it.
-- Written out for the three tracked timeframes with || only (array_to_string is STABLE, and an
-- IMMUTABLE function calling it is never inlined: it was planned again for each log row, 0.15 ms).
CREATE OR REPLACE FUNCTION learning._fmt_allocation(p_allocation double precision [])
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN '{'
|| (learning.tracked_timeframes())[1] || ': ' || learning._fmt(p_allocation[1], 6) || ', '
|| (learning.tracked_timeframes())[2] || ': ' || learning._fmt(p_allocation[2], 6) || ', '
|| (learning.tracked_timeframes())[3] || ': ' || learning._fmt(p_allocation[3], 6)
|| '}';

-- learning.trg_closed_trades_learn: AFTER INSERT (statement) on closed_trades.
-- Takes each new trade as one step in (closed_at, trade_id) order under the decision_maker row
-- lock, then redistributes positions once and writes strength facts, all in the same statement.
-- jit off: transition-table row estimates are far too high, and JIT compiling cost more than it saved.
-- extra_float_digits 1: the decision_maker row shows the state exactly, whatever the client session set.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_learn()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
SET jit = off
AS $$
DECLARE
    tun jsonb;
    tau_short double precision;
    tau_long double precision;
    max_step double precision;
    min_trades_full double precision;
    min_allocation double precision;
    tracked CONSTANT text [] := learning.tracked_timeframes();
    alloc double precision [];
    present integer;
    rule text;
    evidence_z double precision;
    evidence_gain double precision;
    evidence_prior_n double precision;
    ev record;
    ev_split double precision [];
    ev_z double precision [];
    alloc_moved boolean := false;
    states double precision [];
    counts integer [];
    roi_short double precision [];
    step learning.allocation_step_result;
    t record;
    i integer;
    g CONSTANT integer := 4;
    at_epoch double precision;
    st double precision [];
    -- History rows, written once at the end: one array of the table's own row type, appended in
    -- place (one append a trade; twelve arrays of text cast back cost ~10 us a trade more).
    steps learning.allocation_history [] := '{}'::learning.allocation_history [];
    bad record;
    cfg_tid tid;
BEGIN
    -- At most 1,000 actions and 1 MiB of JSON text a trade: each action is a strength fact written
    -- under the decision_maker lock and a scope the builder compares within its trade (100,000
    -- actions held the lock 3.4 s). The text, not the stored size: a value may arrive compressed.
    SELECT n.trade_id, pg_catalog.jsonb_array_length(n.actions) AS actions,
        pg_catalog.octet_length(n.actions::text) AS bytes INTO bad
    FROM new_trades AS n
    WHERE pg_catalog.jsonb_typeof(n.actions) = 'array'
        AND (pg_catalog.jsonb_array_length(n.actions) > 1000 OR pg_catalog.octet_length(n.actions::text) > 1048576)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions of trade % has % actions in % bytes; at most 1000 actions '
            'and 1048576 bytes are allowed', bad.trade_id, bad.actions, bad.bytes
            USING ERRCODE = 'program_limit_exceeded', COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    -- Actions are validated before anything is learned: a bad element fails the whole INSERT.
    SELECT n.trade_id, e.ord, e.action INTO bad
    FROM new_trades AS n
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    WHERE pg_catalog.jsonb_typeof(e.action) <> 'object'
        OR pg_catalog.jsonb_typeof(e.action -> 'pattern_key') IS DISTINCT FROM 'string'
        OR e.action ->> 'pattern_key' = ''
        -- Keys are index keys downstream (lessons, overrides): bounded so they always fit.
        OR pg_catalog.length(e.action ->> 'pattern_key') > 200
        OR pg_catalog.jsonb_typeof(e.action -> 'action_category') IS DISTINCT FROM 'string'
        OR pg_catalog.length(e.action ->> 'action_category') > 200
        OR coalesce(pg_catalog.jsonb_typeof(e.action -> 'scope'), 'object') NOT IN ('object', 'null')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions[%] of trade % must be an object with string pattern_key and action_category (1 to 200 characters) and an object scope',
            bad.ord - 1, bad.trade_id
            USING ERRCODE = 'check_violation', DETAIL = 'got ' || pg_catalog.left(bad.action::text, 200),
                COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    -- The decision_maker row lock serializes concurrent trade inserts and guards the typed state
    -- (every writer of learning.allocation_state takes it first): no lost update. The state and
    -- the tunables are read after it, so a trade that waited on a tau change folds with the tau
    -- that rebuilt the state. The row's ctid is kept so the final UPDATE is a TID fetch: when
    -- another session's snapshot holds back pruning, an index lookup walks every dead version of
    -- this row (twice per trade).
    SELECT c.ctid INTO cfg_tid
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    IF cfg_tid IS NULL THEN
        -- No row (the bot deleted it): made again; the state is ours, so nothing is lost.
        PERFORM learning.ensure_decision_maker_config();
        SELECT c.ctid INTO cfg_tid
        FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    END IF;
    -- The typed state, read as learning._state_arrays reads it.
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
    INTO states, counts, alloc, present
    FROM (SELECT) AS one
    LEFT JOIN learning.allocation_state AS a ON a.series = (learning.tracked_timeframes())[1]
    LEFT JOIN learning.allocation_state AS b ON b.series = (learning.tracked_timeframes())[2]
    LEFT JOIN learning.allocation_state AS c ON c.series = (learning.tracked_timeframes())[3]
    LEFT JOIN learning.allocation_state AS g ON g.series = 'global';
    IF present < g THEN
        PERFORM learning._ensure_state_rows();
    END IF;
    tun := learning.tunables();
    tau_short := (tun ->> 'tau_short_days')::double precision * 86400;
    tau_long := (tun ->> 'tau_long_days')::double precision * 86400;
    max_step := (tun ->> 'max_step')::double precision;
    min_trades_full := (tun ->> 'min_trades_full')::double precision;
    min_allocation := (tun ->> 'min_allocation')::double precision;
    rule := tun ->> 'allocation_rule';
    evidence_z := (tun ->> 'evidence_z')::double precision;
    evidence_gain := (tun ->> 'evidence_gain')::double precision;
    evidence_prior_n := (tun ->> 'evidence_prior_n')::double precision;
    roi_short := pg_catalog.array_fill(NULL::double precision, ARRAY[g - 1]);
    FOR i IN 1..g - 1 LOOP
        IF counts[i] > 0 THEN
            roi_short[i] := learning.ewma_short(states[(i - 1) * 9 + 1:i * 9]);
        END IF;
    END LOOP;

    FOR t IN
        SELECT n.trade_id, n.timeframe, n.closed_at, learning.trade_roi(n.rpnl_pct) AS roi
        FROM new_trades AS n
        ORDER BY n.closed_at, n.trade_id COLLATE "C"
    LOOP
        i := pg_catalog.array_position(tracked, t.timeframe);
        IF i IS NULL THEN
            -- Columns in the table's order: seq and recorded_at are left to their defaults.
            steps := steps || ROW(
                NULL, t.trade_id, t.timeframe, t.closed_at, t.roi, 'skip_untracked', alloc, alloc,
                NULL, NULL, roi_short, counts[1:g - 1], NULL, NULL, NULL, NULL, NULL
            )::learning.allocation_history;
        ELSE
            at_epoch := EXTRACT(EPOCH FROM t.closed_at);
            st := states[(i - 1) * 9 + 1:i * 9];
            st := learning.ewma_fold(st, t.roi, at_epoch, tau_short, tau_long);
            states[(i - 1) * 9 + 1:i * 9] := st;
            roi_short[i] := learning.ewma_short(st);
            st := states[(g - 1) * 9 + 1:g * 9];
            states[(g - 1) * 9 + 1:g * 9] := learning.ewma_fold(st, t.roi, at_epoch, tau_short, tau_long);
            counts[i] := counts[i] + 1;
            counts[g] := counts[g] + 1;
            ev_split := NULL;
            ev_z := NULL;
            IF rule = 'evidence' THEN
                ev := learning.evidence_split(
                    states, counts, evidence_z, evidence_gain, evidence_prior_n, min_trades_full
                );
                ev_split := ev.split;
                ev_z := ev.evidence;
            END IF;
            step := learning.allocation_step(
                alloc, roi_short, counts[1:g - 1], max_step, min_trades_full, min_allocation, ev_split
            );
            alloc_moved := alloc_moved OR step.new_allocation IS DISTINCT FROM alloc;
            steps := steps || ROW(
                NULL, t.trade_id, t.timeframe, t.closed_at, t.roi, step.reason, alloc,
                step.new_allocation, step.desired, step.scores, roi_short, counts[1:g - 1],
                step.step_limit, NULL, rule, ev_z, ev_split
            )::learning.allocation_history;
            alloc := step.new_allocation;
        END IF;
    END LOOP;

    IF pg_catalog.cardinality(steps) = 0 THEN
        RETURN NULL;
    END IF;

    PERFORM learning._write_state(states, counts, alloc);
    -- The bot's view, rewritten from the state whatever the bot did to the row.
    UPDATE public.learning_configs
    SET config_data = learning._decision_maker_output(
            config_data, learning._decision_maker_config(alloc, states, counts)
        ),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE ctid = cfg_tid;

    WITH history AS (
        INSERT INTO learning.allocation_history (
            trade_id, timeframe, closed_at, trade_roi, reason, allocation_before,
            allocation_after, desired, scores, roi_short, trade_counts, step_limit, rule, evidence, split
        )
        SELECT
            h.trade_id, h.timeframe, h.closed_at, h.trade_roi, h.reason, h.allocation_before,
            h.allocation_after, h.desired, h.scores, h.roi_short, h.trade_counts, h.step_limit,
            h.rule, h.evidence, h.split
        FROM unnest(steps) WITH ORDINALITY AS h
        ORDER BY h.ordinality
        RETURNING *
    )

    -- Each history row's two lines come from unnest(ARRAY[...]), not a VALUES list: a lateral VALUES
    -- list sets its expressions up again for every row (~15 us a trade in a bulk insert).
    INSERT INTO learning.learning_log (level, message)
    SELECT 'INFO', l.message
    FROM history AS h
    CROSS JOIN LATERAL (
        SELECT pg_catalog.array_position(tracked, h.timeframe) AS i
    ) AS x
    CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[
        CASE WHEN x.i IS NOT NULL THEN pg_catalog.format(
            'ROI UPDATE: timeframe=%s | roi_short=%s | n=%s | trade_roi=%s | trade_id=%s',
            h.timeframe, learning._fmt(h.roi_short[x.i], 6), h.trade_counts[x.i],
            learning._fmt(h.trade_roi, 6), h.trade_id
        ) END,
        CASE h.reason
            WHEN 'skip_untracked' THEN pg_catalog.format(
                'ALLOCATION SKIP: %s is not a learning timeframe (learning: 15m, 1h, 4h) | trade_id=%s',
                h.timeframe, h.trade_id
            )
            WHEN 'skip_one_timeframe' THEN pg_catalog.format(
                'ALLOCATION SKIP: Only %s timeframe has trades (need 2+) | timeframes_with_trades=[%s] | trade_id=%s',
                (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(h.trade_counts) AS c (n) WHERE c.n > 0),
                (
                    SELECT pg_catalog.string_agg(tf, ', ' ORDER BY o)
                    FROM unnest(tracked, h.trade_counts) WITH ORDINALITY AS c (tf, n, o)
                    WHERE c.n > 0
                ),
                h.trade_id
            )
            ELSE pg_catalog.format(
                'ALLOCATION UPDATE: trigger=%s trade closed | old=%s | new=%s | change=%s%% | limit=%s | trade_id=%s',
                h.timeframe, learning._fmt_allocation(h.allocation_before),
                learning._fmt_allocation(h.allocation_after),
                -- Written out for the three tracked timeframes, like _fmt_allocation.
                learning._fmt(100 * GREATEST(
                    abs(h.allocation_after[1] - h.allocation_before[1]),
                    abs(h.allocation_after[2] - h.allocation_before[2]),
                    abs(h.allocation_after[3] - h.allocation_before[3])
                ), 4),
                learning._fmt(h.step_limit, 6), h.trade_id
            )
        END
    ]) WITH ORDINALITY AS l (message, ord)
    WHERE l.message IS NOT NULL
    ORDER BY h.seq, l.ord;
    PERFORM pg_catalog.pg_notify('learning_log', '');

    -- Any step that moved counts, even if the statement ends where it began: one-by-one inserts
    -- would have redistributed, and a multi-row INSERT must give the same positions.
    IF alloc_moved THEN
        PERFORM learning.redistribute_positions(alloc);
    -- Tokens an earlier trade had to skip (the bot held a row) are redistributed by the next one.
    ELSIF EXISTS (SELECT FROM learning.pending_redistribution) THEN
        PERFORM learning.redistribute_positions(alloc, true);
    END IF;

    -- Strength facts (SPEC section 5): one row per action, with the trade's roi and outcome shape.
    INSERT INTO public.pattern_trade_events (
        pattern_key, action_category, scope, trade_id, roi, did_trim, reached_s3, "timestamp"
    )
    -- did_trim / reached_s3 are judged once per trade (one pass over its actions), not per action.
    SELECT
        e.action ->> 'pattern_key',
        e.action ->> 'action_category',
        coalesce(nullif(e.action -> 'scope', 'null'::jsonb), '{}'::jsonb),
        n.trade_id,
        learning.trade_roi(n.rpnl_pct),
        f.did_trim,
        f.reached_s3,
        n.closed_at
    FROM new_trades AS n
    CROSS JOIN LATERAL (
        SELECT
            coalesce(n.did_trim, coalesce(pg_catalog.bool_or(
                x.a ->> 'action_category' = 'trim' OR x.a ->> 'decision_type' = 'trim'
            ), false)) AS did_trim,
            coalesce(n.reached_s3, coalesce(pg_catalog.bool_or(
                x.a ->> 'state' = 'S3' OR pg_catalog.strpos(x.a ->> 'pattern_key', '.S3.') > 0
            ), false)) AS reached_s3
        FROM pg_catalog.jsonb_array_elements(n.actions) AS x (a)
    ) AS f
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    ORDER BY n.closed_at, n.trade_id COLLATE "C", e.ord;

    RETURN NULL;
END;
$$;

-- learning.trg_closed_trades_append_only: closed_trades is append-only (a correction is a new
-- trade), so the learning state is always a function of its rows. Per statement, so even an
-- UPDATE of no row is refused: PostgreSQL fires it for every INSERT ... ON CONFLICT DO UPDATE too,
-- and a bot that upserts trades fails on its first trade, in testing, not at its first duplicate.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'closed_trades is append-only: UPDATE is refused (insert a correcting trade instead)'
            USING ERRCODE = 'prohibited_sql_statement_attempted', TABLE = 'closed_trades', SCHEMA = 'public',
                HINT = 'INSERT ... ON CONFLICT DO UPDATE counts as an UPDATE, even for a new trade; '
                    || 'to skip a trade already stored, use ON CONFLICT (trade_id) DO NOTHING.';
    END IF;
    RAISE EXCEPTION 'closed_trades is append-only: % is refused (insert a correcting trade instead)', TG_OP
        USING ERRCODE = 'prohibited_sql_statement_attempted', TABLE = 'closed_trades', SCHEMA = 'public';
END;
$$;

DROP TRIGGER IF EXISTS _500_learn ON public.closed_trades;
CREATE TRIGGER _500_learn
AFTER INSERT ON public.closed_trades
REFERENCING NEW TABLE AS new_trades
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_closed_trades_learn();

DROP TRIGGER IF EXISTS _100_append_only ON public.closed_trades;
CREATE TRIGGER _100_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON public.closed_trades
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_closed_trades_append_only();

-- learning.timeframe_allocation: the current allocation and ROI EWMAs per tracked timeframe.
CREATE OR REPLACE FUNCTION learning.timeframe_allocation()
RETURNS TABLE (
    timeframe text,
    current_allocation double precision,
    roi_short double precision,
    roi_long double precision,
    n integer,
    updated_at timestamptz
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT
        x.tf,
        coalesce(s.current_allocation, x.start),
        CASE WHEN s.n > 0 AND s.short_sum_w > 0 THEN s.short_sum_w_roi / s.short_sum_w END,
        CASE WHEN s.n > 0 AND s.long_sum_w > 0 THEN s.long_sum_w_roi / s.long_sum_w END,
        coalesce(s.n, 0),
        CASE WHEN s.n > 0 THEN pg_catalog.to_timestamp(s.ref_epoch) END
    FROM
        unnest(learning.tracked_timeframes(), learning.starting_allocation())
        WITH ORDINALITY AS x (tf, start, ord)
    LEFT JOIN learning.allocation_state AS s ON x.tf = s.series
    ORDER BY x.ord;
END;

-- learning.global_roi: the ROI EWMAs over every tracked timeframe.
CREATE OR REPLACE FUNCTION learning.global_roi()
RETURNS TABLE (
    roi_short double precision,
    roi_long double precision,
    n integer,
    updated_at timestamptz
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT
        CASE WHEN s.n > 0 AND s.short_sum_w > 0 THEN s.short_sum_w_roi / s.short_sum_w END,
        CASE WHEN s.n > 0 AND s.long_sum_w > 0 THEN s.long_sum_w_roi / s.long_sum_w END,
        coalesce(s.n, 0),
        CASE WHEN s.n > 0 THEN pg_catalog.to_timestamp(s.ref_epoch) END
    FROM (SELECT 1) AS one
    LEFT JOIN learning.allocation_state AS s ON s.series = 'global';
END;

-- learning.allocation_evidence: what the evidence rule sees now, per tracked timeframe: the
-- long-horizon ROI, the effective count, the standard error of its difference from the other
-- timeframes, that difference in standard errors (evidence) and the share of the traded group's
-- allocation the rule asks for (desired_share), under the current tunables.
CREATE OR REPLACE FUNCTION learning.allocation_evidence()
RETURNS TABLE (
    timeframe text,
    n integer,
    roi_long double precision,
    n_eff double precision,
    std_error double precision,
    evidence double precision,
    desired_share double precision
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH st AS (
        SELECT
            a.states,
            a.counts
        FROM learning._state_arrays() AS a
    ),

    ev AS (
        SELECT
            e.split,
            e.evidence,
            e.std_error
        FROM st
        CROSS JOIN LATERAL learning.evidence_split(
            st.states, st.counts,
            (learning.tunables() ->> 'evidence_z')::double precision,
            (learning.tunables() ->> 'evidence_gain')::double precision,
            (learning.tunables() ->> 'evidence_prior_n')::double precision,
            (learning.tunables() ->> 'min_trades_full')::double precision
        ) AS e
    )

    SELECT
        x.tf,
        st.counts[x.ord],
        CASE WHEN st.counts[x.ord] > 0 THEN st.states[(x.ord - 1) * 9 + 4] / st.states[(x.ord - 1) * 9 + 5] END,
        CASE
            WHEN st.counts[x.ord] > 0
                THEN st.states[(x.ord - 1) * 9 + 5] * (st.states[(x.ord - 1) * 9 + 5] / st.states[(x.ord - 1) * 9 + 9])
        END,
        ev.std_error[x.ord],
        ev.evidence[x.ord],
        ev.split[x.ord] / (SELECT pg_catalog.sum(w.s) FROM pg_catalog.unnest(ev.split) AS w (s))
    FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
    CROSS JOIN st
    CROSS JOIN ev
    ORDER BY x.ord;
END;

-- learning.recomputed_roi_state: the EWMA state every series would have from closed_trades alone,
-- as ewma_fold keeps it (9 values). Closed form (sums at the newest closed_at): the oracle for
-- `check`, the tau-change recompute and the move of a 0001 state into learning.allocation_state.
DROP FUNCTION IF EXISTS learning.recomputed_roi_state(double precision, double precision, boolean);
CREATE OR REPLACE FUNCTION learning.recomputed_roi_state(
    p_tau_short_days double precision DEFAULT NULL,
    p_tau_long_days double precision DEFAULT NULL
)
RETURNS TABLE (
    series text,
    ord integer,
    state double precision [],
    n integer
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    WITH taus AS (
        SELECT
            coalesce(p_tau_short_days, (learning.tunables() ->> 'tau_short_days')::double precision)
            * 86400 AS tau_short,
            coalesce(p_tau_long_days, (learning.tunables() ->> 'tau_long_days')::double precision)
            * 86400 AS tau_long
    ),

    trades AS (
        SELECT
            s.name AS series,
            s.ord::integer AS ord,
            extract(EPOCH FROM t.closed_at)::double precision AS at_epoch,
            learning.trade_roi(t.rpnl_pct) AS roi
        FROM public.closed_trades AS t
        INNER JOIN
            pg_catalog.unnest(learning.tracked_timeframes() || 'global'::text)
            WITH ORDINALITY AS s (name, ord)
            ON t.timeframe = s.name OR (s.name = 'global' AND t.timeframe = any(learning.tracked_timeframes()))
    ),

    refs AS (
        SELECT
            tr.series,
            pg_catalog.max(tr.at_epoch) AS ref
        FROM trades AS tr
        GROUP BY tr.series
    ),

    weighed AS (
        SELECT
            tr.series,
            tr.ord,
            r.ref,
            tr.roi,
            learning._decay(r.ref - tr.at_epoch, taus.tau_short) AS w_short,
            learning._decay(r.ref - tr.at_epoch, taus.tau_long) AS w_long,
            learning._decay(r.ref - tr.at_epoch, taus.tau_short / 2) AS w2_short,
            learning._decay(r.ref - tr.at_epoch, taus.tau_long / 2) AS w2_long
        FROM trades AS tr
        INNER JOIN refs AS r ON tr.series = r.series
        CROSS JOIN taus
    )

    SELECT
        wd.series,
        wd.ord,
        ARRAY[
            wd.ref,
            pg_catalog.sum(learning._scaled(wd.roi, wd.w_short)),
            pg_catalog.sum(wd.w_short),
            pg_catalog.sum(learning._scaled(wd.roi, wd.w_long)),
            pg_catalog.sum(wd.w_long),
            pg_catalog.sum(learning._scaled(wd.roi * wd.roi, wd.w_short)),
            pg_catalog.sum(wd.w2_short),
            pg_catalog.sum(learning._scaled(wd.roi * wd.roi, wd.w_long)),
            pg_catalog.sum(wd.w2_long)
        ],
        pg_catalog.count(*)::integer
    FROM weighed AS wd
    GROUP BY wd.series, wd.ord, wd.ref
    ORDER BY wd.ord;
END;

-- learning.recompute_roi_state: rebuild the stored EWMA state from closed_trades (after a tau
-- change); the allocation is left as it is. Under the decision_maker row lock, like a trade.
CREATE OR REPLACE FUNCTION learning.recompute_roi_state()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
DECLARE
    st record;
    states double precision [] := pg_catalog.array_fill(0::double precision, ARRAY[36]);
    counts integer [] := ARRAY[0, 0, 0, 0];
    r record;
BEGIN
    PERFORM learning.ensure_decision_maker_config();
    SELECT * INTO st FROM learning._state_arrays();
    FOR r IN SELECT * FROM learning.recomputed_roi_state() LOOP
        states[(r.ord - 1) * 9 + 1:r.ord * 9] := r.state;
        counts[r.ord] := r.n;
    END LOOP;
    PERFORM learning._write_state(states, counts, st.allocation);
    PERFORM learning.ensure_decision_maker_config();
    PERFORM learning._log('INFO', pg_catalog.format(
        'ROI RECOMPUTE: trades=%s | tau_short_days=%s | tau_long_days=%s',
        counts[4], learning.tunables() ->> 'tau_short_days', learning.tunables() ->> 'tau_long_days'
    ));
    RETURN counts[4];
END;
$$;

-- A database of revision 0001 kept the learning state in the decision_maker row (learning_state:
-- per series [ref_epoch, sum_short, weight_short, sum_long, weight_long] and the counts n). It moves
-- into learning.allocation_state once, when that table is empty: the sums and n exactly as they
-- were, the second moments (which 0001 did not keep) in closed form from closed_trades at the same
-- reference time, the allocation from the row. A series whose stored sums are not usable, or whose
-- n or reference time disagrees with closed_trades, takes the closed form whole.
DO $adopt$
DECLARE
    cfg jsonb;
    states double precision [] := pg_catalog.array_fill(0::double precision, ARRAY[36]);
    counts integer [] := ARRAY[0, 0, 0, 0];
    alloc double precision [];
    r record;
    kept double precision [];
BEGIN
    IF EXISTS (SELECT FROM learning.allocation_state) THEN
        RETURN;
    END IF;
    SELECT c.config_data INTO cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    IF pg_catalog.jsonb_typeof(cfg -> 'learning_state') IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM learning.recomputed_roi_state() LOOP
        states[(r.ord - 1) * 9 + 1:r.ord * 9] := r.state;
        counts[r.ord] := r.n;
        kept := NULL;
        IF pg_catalog.jsonb_path_exists(
            cfg -> 'learning_state' -> r.series,
            'strict $ ? (@.type() == "array" && @.size() == 5 && !exists(@[*] ? (@.type() != "number")))'
        ) AND pg_catalog.jsonb_path_exists(
            cfg -> 'learning_state' -> 'n' -> (r.ord - 1), 'strict $ ? (@.type() == "number")'
        ) THEN
            kept := pg_catalog.translate((cfg -> 'learning_state' -> r.series)::text, '[]', '{}')::double precision [];
            IF kept[1] = r.state[1] AND kept[3] >= 1 AND kept[5] >= 1
                AND (cfg -> 'learning_state' -> 'n' ->> (r.ord - 1))::numeric = r.n
            THEN
                states[(r.ord - 1) * 9 + 1:(r.ord - 1) * 9 + 5] := kept;
            END IF;
        END IF;
    END LOOP;
    alloc := ARRAY(
        SELECT (cfg -> 'timeframe_allocation' -> x.tf ->> 'current_allocation')::double precision
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
        WHERE pg_catalog.jsonb_typeof(cfg -> 'timeframe_allocation' -> x.tf -> 'current_allocation') = 'number'
        ORDER BY x.ord
    );
    IF pg_catalog.cardinality(alloc) <> 3
        OR pg_catalog.abs((SELECT pg_catalog.sum(a.x) FROM pg_catalog.unnest(alloc) AS a (x)) - 1) > 1e-9
        OR EXISTS (SELECT FROM pg_catalog.unnest(alloc) AS a (x) WHERE NOT a.x BETWEEN 0 AND 1)
    THEN
        SELECT h.allocation_after INTO alloc
        FROM learning.allocation_history AS h
        ORDER BY h.seq DESC
        LIMIT 1;
    END IF;
    PERFORM learning._ensure_state_rows();
    PERFORM learning._write_state(states, counts, coalesce(alloc, learning.starting_allocation()));
END
$adopt$;

-- Output only from now on: the state is in learning.allocation_state.
UPDATE public.learning_configs
SET config_data = config_data - 'learning_state'
WHERE module_id = 'decision_maker' AND config_data ? 'learning_state';

SELECT learning._ensure_state_rows();
SELECT learning.ensure_decision_maker_config();
