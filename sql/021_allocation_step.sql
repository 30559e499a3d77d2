-- The allocation step (design §5): one capped, sign-safe move of the timeframe split toward the
-- desired split of the configured rule, the plan's (ROI scores) or the evidence rule's.

CREATE TYPE learning.allocation_step_result AS (
    new_allocation double precision [],
    desired double precision [],
    scores double precision [],
    step_limit double precision,
    reason text
);

-- learning.allocation_step: one capped move of the allocation toward the desired split (design §5).
-- The timeframes with trades are the group. Each member's score is, under the plan rule, its ROI
-- above the worst negative one (sign-safe ROI scores), or, given p_split (the evidence rule's,
-- learning.evidence_split), its share of the group's total above the floor, so a split that clears
-- the floor is the desired split exactly. The desired split is the floor plus the rest of the
-- group's total in proportion to the scores; one scale factor on the whole change vector keeps
-- the sum, the direction and the cap (p_max_step, scaled down while a member has fewer than
-- p_min_trades_full trades), and timeframes without trades keep their value bit for bit.
-- No input can make it raise: float8 products that round to exactly 0 raise "underflow" in
-- PostgreSQL, so every magnitude below 1e-140 (allocations, ROIs, the step, the floor) counts as 0;
-- then no product of two or three of them, nor a quotient by a number at most 1, leaves float8's
-- normal range (design §5, allocation arithmetic).
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
    k CONSTANT integer := pg_catalog.cardinality(p_current);
    tiny CONSTANT double precision := 1e-140;
    max_step CONSTANT double precision := CASE WHEN p_max_step < tiny THEN 0 ELSE p_max_step END;
    min_allocation CONSTANT double precision := CASE WHEN p_min_allocation < tiny THEN 0 ELSE p_min_allocation END;
    result learning.allocation_step_result;
    members integer [] := '{}'::integer [];
    m integer;
    cur double precision [] := p_current;
    roi double precision [] := p_roi_short;
    -- The group's total is 1 minus the timeframes outside it, not the sum of its members: the sum
    -- would carry each step's rounding into the next, and the drift grows without bound (the
    -- allocation left 1e-12 of 1 after ~19,000 trades). Anchored, it stays within a few ulps.
    group_total double precision := 1;
    min_roi double precision;
    min_n integer;
    split_sum double precision := 0;
    score_sum double precision := 0;
    floor_value double precision;
    spread double precision;
    max_change double precision := 0;
    full_share double precision;
    i integer;
BEGIN
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
            -- Below tiny is 0 (min_allocation 0 shrinks the worst timeframe geometrically toward 0;
            -- a trade may earn 1e-300 percent).
            cur[i] := CASE WHEN pg_catalog.abs(cur[i]) < tiny THEN 0 ELSE cur[i] END;
            roi[i] := CASE WHEN pg_catalog.abs(roi[i]) < tiny THEN 0 ELSE roi[i] END;
            min_roi := LEAST(min_roi, roi[i]);
            min_n := LEAST(min_n, p_trade_counts[i]);
        ELSE
            group_total := group_total - p_current[i];
        END IF;
    END LOOP;
    m := pg_catalog.cardinality(members);
    result.new_allocation := p_current;
    IF m < 2 THEN
        result.reason := 'skip_one_timeframe';
        RETURN result;
    END IF;
    group_total := CASE WHEN pg_catalog.abs(group_total) < tiny THEN 0 ELSE group_total END;
    floor_value := LEAST(min_allocation, group_total / m);
    spread := group_total - m * floor_value;
    spread := CASE WHEN pg_catalog.abs(spread) < tiny THEN 0 ELSE spread END;

    FOREACH i IN ARRAY CASE WHEN p_split IS NOT NULL THEN members ELSE '{}' END LOOP
        IF p_split[i] IS NULL OR NOT p_split[i] BETWEEN 1e-50 AND 1e50 THEN
            RAISE EXCEPTION 'allocation_step: p_split[%] is %, not a weight in [1e-50, 1e50]', i,
                coalesce(p_split[i]::text, 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        split_sum := split_sum + p_split[i];
    END LOOP;
    result.scores := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    FOREACH i IN ARRAY members LOOP
        result.scores[i] := CASE
            WHEN p_split IS NULL THEN roi[i] - LEAST(0, min_roi)
            ELSE group_total * (p_split[i] / split_sum) - floor_value
        END;
        result.scores[i] := CASE WHEN result.scores[i] < tiny THEN 0 ELSE result.scores[i] END;
        score_sum := score_sum + result.scores[i];
    END LOOP;
    IF NOT score_sum > 0 THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := 1;
        END LOOP;
        score_sum := m;
    END IF;

    result.desired := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    FOREACH i IN ARRAY members LOOP
        result.desired[i] := floor_value + spread * result.scores[i] / score_sum;
        max_change := GREATEST(max_change, abs(result.desired[i] - cur[i]));
    END LOOP;
    full_share := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    result.step_limit := CASE WHEN full_share < tiny THEN 0 ELSE max_step * full_share END;
    result.reason := CASE WHEN max_change <= result.step_limit THEN 'reached_desired' ELSE 'step' END;
    FOREACH i IN ARRAY members LOOP
        result.new_allocation[i] := CASE
            WHEN result.reason = 'reached_desired' THEN result.desired[i]
            -- A move whose product with the step would leave float8's range is below any
            -- allocation that matters: it is 0.
            WHEN result.step_limit = 0 OR pg_catalog.abs(result.desired[i] - cur[i]) < 1e-300 / result.step_limit
                THEN cur[i]
            ELSE cur[i] + (result.desired[i] - cur[i]) * result.step_limit / max_change
        END;
        result.new_allocation[i] := CASE WHEN result.new_allocation[i] < tiny THEN 0 ELSE result.new_allocation[i] END;
    END LOOP;
    RETURN result;
END;
$$;

-- learning.evidence_split: the evidence rule's desired split (design §5), the starting split tilted
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

