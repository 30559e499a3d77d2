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
-- state = {ref_epoch, sum_short, weight_short, sum_long, weight_long}, sums taken at ref_epoch
-- (the newest time seen): equal times weigh equally and a late observation folds in exactly.
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
        THEN ARRAY[at_epoch, roi, 1, roi, 1]
    WHEN at_epoch >= state[1]
        THEN ARRAY[
            at_epoch,
            learning._scaled(state[2], learning._decay(at_epoch - state[1], tau_short_seconds)) + roi,
            learning._scaled(state[3], learning._decay(at_epoch - state[1], tau_short_seconds)) + 1,
            learning._scaled(state[4], learning._decay(at_epoch - state[1], tau_long_seconds)) + roi,
            learning._scaled(state[5], learning._decay(at_epoch - state[1], tau_long_seconds)) + 1
        ]
    ELSE ARRAY[
        state[1],
        state[2] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_short_seconds)),
        state[3] + learning._decay(state[1] - at_epoch, tau_short_seconds),
        state[4] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_long_seconds)),
        state[5] + learning._decay(state[1] - at_epoch, tau_long_seconds)
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

-- learning.allocation_step: one capped move of the allocation toward the ROI-desired split.
-- Sign-safe scores, a floor, and one scale factor on the whole change vector so the sum, the
-- direction and the cap hold exactly and timeframes without trades keep their value bit for bit.
-- No input can make it raise: float8 products that round to exactly 0 raise "underflow" in
-- PostgreSQL, so every magnitude below 1e-140 (allocations, ROIs, the step, the floor) counts as 0;
-- then no product of two or three of them, nor a quotient by a number at most 1, leaves float8's
-- normal range (docs/decisions.md, "allocation arithmetic").
CREATE OR REPLACE FUNCTION learning.allocation_step(
    p_current double precision [],
    p_roi_short double precision [],
    p_trade_counts integer [],
    p_max_step double precision DEFAULT 0.003,
    p_min_trades_full double precision DEFAULT 5,
    p_min_allocation double precision DEFAULT 0.05
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

    result.scores := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    result.desired := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    FOREACH i IN ARRAY members LOOP
        result.scores[i] := roi[i] - LEAST(0, min_roi);
        IF result.scores[i] < tiny THEN
            result.scores[i] := 0;
        END IF;
        score_sum := score_sum + result.scores[i];
    END LOOP;
    IF NOT score_sum > 0 THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := 1;
        END LOOP;
        score_sum := m;
    END IF;

    floor_value := LEAST(min_allocation, group_total / m);
    spread := group_total - m * floor_value;
    IF pg_catalog.abs(spread) < tiny THEN
        spread := 0;
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
    cfg jsonb;
BEGIN
    IF NOT EXISTS (SELECT FROM learning.pending_redistribution) THEN
        RETURN 0;
    END IF;
    SELECT c.config_data INTO cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    -- No usable allocation: the next trade restores it and redistributes.
    IF NOT coalesce(learning._allocation_intact(cfg -> 'timeframe_allocation'), false) THEN
        RETURN 0;
    END IF;
    RETURN learning.redistribute_positions(
        ARRAY(
            SELECT (cfg -> 'timeframe_allocation' -> x.tf ->> 'current_allocation')::double precision
            FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
            ORDER BY x.ord
        ),
        true
    );
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END;
$$;

-- learning._initial_decision_maker_config: our keys of the decision_maker row before any trade.
CREATE OR REPLACE FUNCTION learning._initial_decision_maker_config()
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.jsonb_build_object(
    'timeframe_allocation', (
        SELECT
            pg_catalog.jsonb_object_agg(
                tf,
                pg_catalog.jsonb_build_object(
                    'current_allocation', alloc, 'roi_short', NULL, 'roi_long', NULL,
                    'n', 0, 'updated_at', NULL
                )
            )
        FROM unnest(learning.tracked_timeframes(), learning.starting_allocation())
            AS a (tf, alloc)
    ),
    'global_roi', pg_catalog.jsonb_build_object(
        'roi_short', NULL, 'roi_long', NULL, 'n', 0, 'updated_at', NULL
    ),
    'learning_state', '{}'::jsonb
);

-- learning._allocation_intact: the decision_maker row's timeframe_allocation holds, for every
-- tracked timeframe, a number in [0, 1] that float8 reads (0 or at least 4.9e-324), summing to 1
-- within 1e-9. Never raises, whatever the bot wrote (the casts run only under the CASE's check).
CREATE OR REPLACE FUNCTION learning._allocation_intact(p_allocation jsonb)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE
    WHEN
        coalesce(
            pg_catalog.jsonb_path_exists(
                p_allocation -> (learning.tracked_timeframes())[1] -> 'current_allocation',
                'strict $ ? (@.type() == "number" && @ >= 0 && @ <= 1 && (@ == 0 || @ >= 4.9e-324))', '{}', true
            )
            AND pg_catalog.jsonb_path_exists(
                p_allocation -> (learning.tracked_timeframes())[2] -> 'current_allocation',
                'strict $ ? (@.type() == "number" && @ >= 0 && @ <= 1 && (@ == 0 || @ >= 4.9e-324))', '{}', true
            )
            AND pg_catalog.jsonb_path_exists(
                p_allocation -> (learning.tracked_timeframes())[3] -> 'current_allocation',
                'strict $ ? (@.type() == "number" && @ >= 0 && @ <= 1 && (@ == 0 || @ >= 4.9e-324))', '{}', true
            ),
            false
        )
        THEN pg_catalog.abs(
            (p_allocation -> (learning.tracked_timeframes())[1] ->> 'current_allocation')::numeric
            + (p_allocation -> (learning.tracked_timeframes())[2] ->> 'current_allocation')::numeric
            + (p_allocation -> (learning.tracked_timeframes())[3] ->> 'current_allocation')::numeric
            - 1
        ) <= 1e-9
    ELSE false
END;

-- learning._series_intact: one series' fold state in the decision_maker row is usable, or absent or
-- all zeros while its count is 0. A real state is [ref_epoch, sum_short, weight_short, sum_long, weight_long]
-- with weights >= 1 (the newest trade weighs exactly 1), |sums| <= 1e4 x weight (the largest roi
-- accepted), sums 0 or at least 1e-300 in size (float8 underflow raises), and a reference time
-- timestamptz holds (4713 BC to 294276 AD). Never raises.
CREATE OR REPLACE FUNCTION learning._series_intact(p_state jsonb, p_series text, p_index integer)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(
    CASE
        WHEN NOT p_state ? p_series THEN p_state -> 'n' -> p_index = '0'::jsonb
        -- a series without trades is stored as zeros
        WHEN p_state -> 'n' -> p_index = '0'::jsonb AND p_state -> p_series = '[0, 0, 0, 0, 0]'::jsonb THEN true
        ELSE pg_catalog.jsonb_path_exists(
            p_state -> p_series,
            'strict $ ? (@.type() == "array" && @.size() == 5 && @[0] >= -210866803200 && @[0] < 9224318016000 && @[2] >= 1 && @[2] <= 1e10 && @[4] >= 1 && @[4] <= 1e10 && @[1].abs() <= 1.0001e4 * @[2] && @[3].abs() <= 1.0001e4 * @[4] && (@[1] == 0 || @[1].abs() >= 1e-300) && (@[3] == 0 || @[3].abs() >= 1e-300))',
            '{}', true
        )
    END,
    false
);

-- learning._decision_maker_intact: whether the decision_maker row holds a usable state: an object
-- with an intact allocation and either, once trades were learned, four counts (integers in [0, 1e9],
-- the global one the sum of the others) and an intact state for every series, or (p_fresh_ok,
-- before the first trade) no counts and no series at all. Never raises; no SET clause, so it and
-- its helpers inline into the trigger's one check per statement (~10-20 us).
CREATE OR REPLACE FUNCTION learning._decision_maker_intact(p_cfg jsonb, p_fresh_ok boolean)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(
    learning._allocation_intact(p_cfg -> 'timeframe_allocation')
    AND pg_catalog.jsonb_typeof(p_cfg -> 'learning_state') = 'object'
    AND CASE
        WHEN NOT p_cfg -> 'learning_state' ? 'n'
            THEN p_fresh_ok AND NOT ((p_cfg -> 'learning_state') ?| (learning.tracked_timeframes() || 'global'::text))
        ELSE pg_catalog.jsonb_path_exists(
            p_cfg -> 'learning_state' -> 'n',
            'strict $ ? (@.type() == "array" && @.size() == 4 && !exists(@[*] ? (@.type() != "number" || @ < 0 || @ > 1e9 || @ != @.floor())) && @[3] == @[0] + @[1] + @[2])',
            '{}', true
        )
        AND learning._series_intact(p_cfg -> 'learning_state', (learning.tracked_timeframes())[1], 0)
        AND learning._series_intact(p_cfg -> 'learning_state', (learning.tracked_timeframes())[2], 1)
        AND learning._series_intact(p_cfg -> 'learning_state', (learning.tracked_timeframes())[3], 2)
        AND learning._series_intact(p_cfg -> 'learning_state', 'global', 3)
    END,
    false
);

-- learning.ensure_decision_maker_config: create or adopt the decision_maker row; returns it locked.
-- The bot's legacy global_roi is in percent: it moves to global_roi_legacy_pct before ours replaces it.
-- A row that lost our keys after trades were learned is restored from history, with a WARNING line;
-- so is one the trigger found disagreeing with the newest history row (p_stale).
DROP FUNCTION IF EXISTS learning.ensure_decision_maker_config();
CREATE OR REPLACE FUNCTION learning.ensure_decision_maker_config(p_stale boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
DECLARE
    cfg jsonb;
    created boolean := false;
    learned boolean;
    alloc double precision [];
    states double precision [] := pg_catalog.array_fill(0::double precision, ARRAY[20]);
    counts integer [] := ARRAY[0, 0, 0, 0];
    r record;
BEGIN
    SELECT config_data INTO cfg
    FROM public.learning_configs WHERE module_id = 'decision_maker' FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO public.learning_configs (module_id, config_data, updated_by, notes)
        VALUES (
            'decision_maker', learning._initial_decision_maker_config(), 'lowcap-learning',
            'timeframe allocation learned from closed_trades'
        )
        ON CONFLICT (module_id) DO NOTHING;
        created := FOUND;
        SELECT config_data INTO cfg
        FROM public.learning_configs WHERE module_id = 'decision_maker' FOR UPDATE;
    END IF;
    learned := EXISTS (SELECT FROM learning.allocation_history);
    IF learning._decision_maker_intact(cfg, NOT learned) AND NOT created AND NOT p_stale
        OR (created AND NOT learned)
    THEN
        RETURN cfg;
    END IF;
    IF pg_catalog.jsonb_typeof(cfg) IS DISTINCT FROM 'object' THEN
        cfg := '{}'::jsonb;
    END IF;
    -- The bot's own row shape (no keys of ours): its global_roi is in percent and is kept aside
    -- once, never over a value kept before.
    cfg := cfg
        || CASE WHEN cfg ? 'global_roi' AND NOT cfg ? 'global_roi_legacy_pct'
            AND NOT cfg ? 'learning_state' AND NOT cfg ? 'timeframe_allocation'
            THEN pg_catalog.jsonb_build_object('global_roi_legacy_pct', cfg -> 'global_roi')
            ELSE '{}'::jsonb END
        || learning._initial_decision_maker_config();
    -- The row lost or damaged our keys (or the row itself) after trades were learned: restore,
    -- never restart from the starting split (a jump far above the step cap). The allocation is the
    -- last history row's; the EWMA state is rebuilt from the trades already folded.
    IF learned THEN
        -- The newest complete allocation (a damaged row could have put NULLs into history before
        -- this check existed); none at all: the starting split.
        SELECT h.allocation_after INTO alloc
        FROM learning.allocation_history AS h
        WHERE pg_catalog.cardinality(h.allocation_after) = pg_catalog.cardinality(learning.tracked_timeframes())
            AND pg_catalog.array_position(h.allocation_after, NULL) IS NULL
            AND pg_catalog.abs((SELECT pg_catalog.sum(a.x) FROM pg_catalog.unnest(h.allocation_after) AS a (x)) - 1)
            <= 1e-9
        ORDER BY h.seq DESC
        LIMIT 1;
        alloc := coalesce(alloc, learning.starting_allocation());
        FOR r IN SELECT * FROM learning.recomputed_roi_state(NULL, NULL, true) LOOP
            states[(r.ord - 1) * 5 + 1:r.ord * 5] := r.state;
            counts[r.ord] := r.n;
        END LOOP;
        cfg := cfg || learning._decision_maker_config(alloc, states, counts);
        PERFORM learning._log('WARNING', pg_catalog.format(
            'ALLOCATION STATE RESTORED: trades=%s | allocation=%s | reason=%s',
            counts[4], learning._fmt_allocation(alloc),
            CASE
                WHEN created THEN 'the decision_maker row was missing'
                WHEN p_stale THEN 'the decision_maker row disagreed with allocation_history (a stale or rewound write)'
                ELSE 'the decision_maker row had lost or damaged timeframe_allocation or learning_state'
            END
        ));
    END IF;
    UPDATE public.learning_configs
    SET config_data = cfg, updated_at = pg_catalog.now(), updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker';
    RETURN cfg;
END;
$$;

-- learning._series_state: the fold state of one series from the decision_maker config.
-- One cast, no sub-select and no SET clause, so it inlines (it runs four times per trigger call).
-- STABLE, not IMMUTABLE: the text-to-array cast (array_in) is STABLE, and PostgreSQL never inlines
-- an IMMUTABLE function whose body is not; a function it does not inline is planned again in every
-- transaction of a plpgsql caller (~25 us per call).
CREATE OR REPLACE FUNCTION learning._series_state(p_cfg jsonb, p_series text)
RETURNS double precision []
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE
    WHEN pg_catalog.jsonb_typeof(p_cfg -> 'learning_state' -> p_series) = 'array'
        THEN pg_catalog.translate(
            (p_cfg -> 'learning_state' -> p_series)::text, '[]', '{}'
        )::double precision []
END;

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

-- learning._decision_maker_config: the decision_maker keys for an allocation and fold states.
-- states holds 4 series of 5 values (15m, 1h, 4h, global); counts holds their n.
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
        learning._series_json(p_states[1:5], p_counts[1])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[1]),
        (learning.tracked_timeframes())[2],
        learning._series_json(p_states[6:10], p_counts[2])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[2]),
        (learning.tracked_timeframes())[3],
        learning._series_json(p_states[11:15], p_counts[3])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[3])
    ),
    'global_roi', learning._series_json(p_states[16:20], p_counts[4]),
    'learning_state', pg_catalog.jsonb_build_object(
        (learning.tracked_timeframes())[1], pg_catalog.to_jsonb(p_states[1:5]),
        (learning.tracked_timeframes())[2], pg_catalog.to_jsonb(p_states[6:10]),
        (learning.tracked_timeframes())[3], pg_catalog.to_jsonb(p_states[11:15]),
        'global', pg_catalog.to_jsonb(p_states[16:20]),
        'n', pg_catalog.to_jsonb(p_counts)
    )
);

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
-- extra_float_digits 1: the state goes through jsonb and text exactly, whatever the client session set.
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
    cfg jsonb;
    alloc double precision [];
    last_after double precision [];
    last_counts integer [];
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

    -- The row lock serializes concurrent trade inserts: no lost update. Tunables are read after
    -- it, so a trade that waited on a tau change folds with the tau that rebuilt the state.
    -- The row's ctid is kept so the final UPDATE is a TID fetch: when another session's snapshot
    -- holds back pruning, an index lookup walks every dead version of this row (twice per trade).
    SELECT c.ctid, c.config_data INTO cfg_tid, cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    -- Anything but a usable state (no row, the first trade, a row the bot rewrote or damaged):
    -- ensure_decision_maker_config adopts, initialises or restores it. Checked before any cast.
    IF cfg_tid IS NULL OR NOT learning._decision_maker_intact(cfg, false) THEN
        cfg := learning.ensure_decision_maker_config();
        SELECT c.ctid INTO cfg_tid FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker';
    END IF;
    FOR attempt IN 1..2 LOOP
        alloc := ARRAY(
            SELECT (cfg -> 'timeframe_allocation' -> tf ->> 'current_allocation')::double precision
            FROM pg_catalog.unnest(tracked) WITH ORDINALITY AS x (tf, ord) ORDER BY x.ord
        );
        -- numeric first: a client may write a count as 5.0
        counts := coalesce(
            ARRAY(SELECT pg_catalog.jsonb_array_elements_text(cfg -> 'learning_state' -> 'n')::numeric::integer),
            '{}'
        );
        EXIT WHEN attempt = 2 OR pg_catalog.cardinality(counts) <> g;
        -- The row must be where the newest history row left it: a stale write-back (the bot read
        -- the row, trades were learned, it wrote its old copy back) would rewind n and the EWMAs
        -- and jump the allocation. One index lookup per statement; an incomplete row (written by
        -- an older version from a damaged state) is not compared.
        SELECT h.allocation_after, h.trade_counts INTO last_after, last_counts
        FROM learning.allocation_history AS h ORDER BY h.seq DESC LIMIT 1;
        EXIT WHEN last_after IS NULL OR pg_catalog.array_position(last_after, NULL) IS NOT NULL
            OR last_after = alloc AND last_counts = counts[1:g - 1];
        cfg := learning.ensure_decision_maker_config(true);
        SELECT c.ctid INTO cfg_tid FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker';
    END LOOP;
    IF pg_catalog.cardinality(counts) <> g THEN
        counts := pg_catalog.array_fill(0, ARRAY[g]);
    END IF;
    tun := learning.tunables();
    tau_short := (tun ->> 'tau_short_days')::double precision * 86400;
    tau_long := (tun ->> 'tau_long_days')::double precision * 86400;
    max_step := (tun ->> 'max_step')::double precision;
    min_trades_full := (tun ->> 'min_trades_full')::double precision;
    min_allocation := (tun ->> 'min_allocation')::double precision;
    states := pg_catalog.array_fill(0::double precision, ARRAY[g * 5]);
    roi_short := pg_catalog.array_fill(NULL::double precision, ARRAY[g - 1]);
    FOR i IN 1..g LOOP
        IF cfg -> 'learning_state' ? (tracked || 'global'::text)[i] THEN
            states[(i - 1) * 5 + 1:i * 5] := learning._series_state(cfg, (tracked || 'global'::text)[i]);
            IF i < g THEN
                roi_short[i] := learning.ewma_short(states[(i - 1) * 5 + 1:i * 5]);
            END IF;
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
                NULL, NULL, roi_short, counts[1:g - 1], NULL, NULL
            )::learning.allocation_history;
        ELSE
            at_epoch := EXTRACT(EPOCH FROM t.closed_at);
            st := states[(i - 1) * 5 + 1:i * 5];
            st := learning.ewma_fold(st, t.roi, at_epoch, tau_short, tau_long);
            states[(i - 1) * 5 + 1:i * 5] := st;
            roi_short[i] := learning.ewma_short(st);
            st := states[(g - 1) * 5 + 1:g * 5];
            states[(g - 1) * 5 + 1:g * 5] := learning.ewma_fold(st, t.roi, at_epoch, tau_short, tau_long);
            counts[i] := counts[i] + 1;
            counts[g] := counts[g] + 1;
            step := learning.allocation_step(
                alloc, roi_short, counts[1:g - 1], max_step, min_trades_full, min_allocation
            );
            alloc_moved := alloc_moved OR step.new_allocation IS DISTINCT FROM alloc;
            steps := steps || ROW(
                NULL, t.trade_id, t.timeframe, t.closed_at, t.roi, step.reason, alloc,
                step.new_allocation, step.desired, step.scores, roi_short, counts[1:g - 1],
                step.step_limit, NULL
            )::learning.allocation_history;
            alloc := step.new_allocation;
        END IF;
    END LOOP;

    IF pg_catalog.cardinality(steps) = 0 THEN
        RETURN NULL;
    END IF;

    UPDATE public.learning_configs
    SET config_data = config_data || learning._decision_maker_config(alloc, states, counts),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE ctid = cfg_tid;

    WITH history AS (
        INSERT INTO learning.allocation_history (
            trade_id, timeframe, closed_at, trade_roi, reason, allocation_before,
            allocation_after, desired, scores, roi_short, trade_counts, step_limit
        )
        SELECT
            h.trade_id, h.timeframe, h.closed_at, h.trade_roi, h.reason, h.allocation_before,
            h.allocation_after, h.desired, h.scores, h.roi_short, h.trade_counts, h.step_limit
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
        coalesce(
            (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'current_allocation')::double precision,
            x.start
        ),
        (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'roi_short')::double precision,
        (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'roi_long')::double precision,
        coalesce((c.config_data -> 'timeframe_allocation' -> x.tf ->> 'n')::integer, 0),
        (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'updated_at')::timestamptz
    FROM
        unnest(learning.tracked_timeframes(), learning.starting_allocation())
        WITH ORDINALITY AS x (tf, start, ord)
    LEFT JOIN public.learning_configs AS c ON c.module_id = 'decision_maker'
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
        (c.config_data -> 'global_roi' ->> 'roi_short')::double precision,
        (c.config_data -> 'global_roi' ->> 'roi_long')::double precision,
        coalesce((c.config_data -> 'global_roi' ->> 'n')::integer, 0),
        (c.config_data -> 'global_roi' ->> 'updated_at')::timestamptz
    FROM (SELECT 1) AS one
    LEFT JOIN public.learning_configs AS c ON c.module_id = 'decision_maker';
END;

-- learning.recomputed_roi_state: the EWMA state every series would have from closed_trades alone.
-- Closed form (sums at the newest closed_at): the oracle for `check` and the tau-change recompute.
-- p_folded_only keeps the trades the trigger has already folded (those with a history row), so a
-- restore inside the trigger does not count the statement's own new trades twice.
DROP FUNCTION IF EXISTS learning.recomputed_roi_state(double precision, double precision);
CREATE OR REPLACE FUNCTION learning.recomputed_roi_state(
    p_tau_short_days double precision DEFAULT NULL,
    p_tau_long_days double precision DEFAULT NULL,
    p_folded_only boolean DEFAULT false
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
        WHERE NOT p_folded_only OR EXISTS (  -- noqa: RF02
            SELECT FROM learning.allocation_history AS h
            WHERE h.trade_id = t.trade_id
        )
    ),

    refs AS (
        SELECT
            tr.series,
            pg_catalog.max(tr.at_epoch) AS ref
        FROM trades AS tr
        GROUP BY tr.series
    )

    SELECT
        tr.series,
        tr.ord,
        ARRAY[
            r.ref,
            pg_catalog.sum(learning._scaled(tr.roi, learning._decay(r.ref - tr.at_epoch, taus.tau_short))),
            pg_catalog.sum(learning._decay(r.ref - tr.at_epoch, taus.tau_short)),
            pg_catalog.sum(learning._scaled(tr.roi, learning._decay(r.ref - tr.at_epoch, taus.tau_long))),
            pg_catalog.sum(learning._decay(r.ref - tr.at_epoch, taus.tau_long))
        ],
        pg_catalog.count(*)::integer
    FROM trades AS tr
    INNER JOIN refs AS r ON tr.series = r.series
    CROSS JOIN taus
    GROUP BY tr.series, tr.ord, r.ref
    ORDER BY tr.ord;
END;

-- learning.recompute_roi_state: rebuild the stored EWMA state from closed_trades (after a tau
-- change); the allocation is left as it is. Exact float output, as in the trigger.
CREATE OR REPLACE FUNCTION learning.recompute_roi_state()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
DECLARE
    cfg jsonb;
    alloc double precision [];
    states double precision [] := pg_catalog.array_fill(0::double precision, ARRAY[20]);
    counts integer [] := ARRAY[0, 0, 0, 0];
    r record;
BEGIN
    cfg := learning.ensure_decision_maker_config();
    alloc := ARRAY(
        SELECT (cfg -> 'timeframe_allocation' -> tf ->> 'current_allocation')::double precision
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord) ORDER BY x.ord
    );
    FOR r IN SELECT * FROM learning.recomputed_roi_state() LOOP
        states[(r.ord - 1) * 5 + 1:r.ord * 5] := r.state;
        counts[r.ord] := r.n;
    END LOOP;
    UPDATE public.learning_configs
    SET config_data = config_data || learning._decision_maker_config(alloc, states, counts),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker';
    PERFORM learning._log('INFO', pg_catalog.format(
        'ROI RECOMPUTE: trades=%s | tau_short_days=%s | tau_long_days=%s',
        counts[4], learning.tunables() ->> 'tau_short_days', learning.tunables() ->> 'tau_long_days'
    ));
    RETURN counts[4];
END;
$$;

SELECT learning.ensure_decision_maker_config();
