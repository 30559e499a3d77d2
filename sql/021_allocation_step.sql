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
-- p_min_trades_full trades), and timeframes without trades keep their value bit for bit. The
-- group's total is 1 minus the timeframes outside it, not the sum of its members: the sum would
-- carry each step's rounding into the next (1e-12 of drift after ~19,000 trades).
-- No valid input makes it raise: float8 products that round to exactly 0 raise "underflow" in
-- PostgreSQL, so every magnitude below 1e-140 (allocations, ROIs, the step, the floor) counts as 0;
-- then no product of two or three of them, nor a quotient by a number at most 1, leaves float8's
-- normal range (design §5, allocation arithmetic). Bad inputs raise 22023, naming the value.
-- Written out for the three tracked timeframes in scalars, like evidence_split: it runs at every
-- trade, and PL/pgSQL loops and array element assignments cost ~37,000 instructions a trade more
-- (design §5). Sums add in timeframe order from 0 (or 1), a non-member adding an exact 0. No SET
-- clause: every type is a keyword or schema-qualified (design §2).
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
AS $$
DECLARE
    tiny CONSTANT double precision := '1e-140'::double precision;
    -- Members (in1..3, m of them): the timeframes with trades; their allocation c (then the new one), ROI r
    -- (magnitudes below tiny as 0) and score s.
    in1 CONSTANT boolean := coalesce(p_trade_counts[1] >= 1, false);
    in2 CONSTANT boolean := coalesce(p_trade_counts[2] >= 1, false);
    in3 CONSTANT boolean := coalesce(p_trade_counts[3] >= 1, false);
    m CONSTANT integer := in1::integer + in2::integer + in3::integer;
    c1 double precision;
    c2 double precision;
    c3 double precision;
    r1 double precision;
    r2 double precision;
    r3 double precision;
    s1 double precision;
    s2 double precision;
    s3 double precision;
    desired double precision [];
    min_n CONSTANT integer := LEAST(CASE WHEN in1 THEN p_trade_counts[1] END, CASE WHEN in2 THEN p_trade_counts[2] END,
        CASE WHEN in3 THEN p_trade_counts[3] END);
    group_total double precision;
    split_sum double precision;
    score_sum double precision;
    floor_value double precision;
    spread double precision;
    max_change double precision;
    step_limit double precision;
    reason pg_catalog.text;
BEGIN
    IF pg_catalog.cardinality(p_current) <> 3 THEN
        RAISE EXCEPTION 'allocation_step: p_current has % values, one for each of the 3 tracked timeframes expected',
            pg_catalog.cardinality(p_current) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1..3 LOOP  -- each allocation checked before its ROI, in timeframe order
        IF p_current[i] IS NULL OR p_current[i] = 'NaN' THEN
            RAISE EXCEPTION 'allocation_step: p_current[%] is %, not an allocation', i,
                coalesce(p_current[i]::pg_catalog.text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_trade_counts[i] >= 1 AND (p_roi_short[i] IS NULL OR p_roi_short[i] = 'NaN') THEN
            RAISE EXCEPTION 'allocation_step: p_roi_short[%] is % for a timeframe with trades', i,
                coalesce(p_roi_short[i]::pg_catalog.text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF m < 2 THEN
        RETURN ROW(p_current, NULL, NULL, NULL, 'skip_one_timeframe')::learning.allocation_step_result;
    END IF;
    group_total := 1 - CASE WHEN in1 THEN 0 ELSE p_current[1] END - CASE WHEN in2 THEN 0 ELSE p_current[2] END
        - CASE WHEN in3 THEN 0 ELSE p_current[3] END;
    group_total := CASE WHEN pg_catalog.abs(group_total) < tiny THEN 0 ELSE group_total END;
    c1 := CASE WHEN in1 THEN CASE WHEN pg_catalog.abs(p_current[1]) < tiny THEN 0 ELSE p_current[1] END END;
    c2 := CASE WHEN in2 THEN CASE WHEN pg_catalog.abs(p_current[2]) < tiny THEN 0 ELSE p_current[2] END END;
    c3 := CASE WHEN in3 THEN CASE WHEN pg_catalog.abs(p_current[3]) < tiny THEN 0 ELSE p_current[3] END END;
    r1 := CASE WHEN in1 THEN CASE WHEN pg_catalog.abs(p_roi_short[1]) < tiny THEN 0 ELSE p_roi_short[1] END END;
    r2 := CASE WHEN in2 THEN CASE WHEN pg_catalog.abs(p_roi_short[2]) < tiny THEN 0 ELSE p_roi_short[2] END END;
    r3 := CASE WHEN in3 THEN CASE WHEN pg_catalog.abs(p_roi_short[3]) < tiny THEN 0 ELSE p_roi_short[3] END END;
    floor_value := LEAST(CASE WHEN p_min_allocation < tiny THEN 0 ELSE p_min_allocation END, group_total / m);
    spread := CASE WHEN pg_catalog.abs(group_total - m * floor_value) < tiny THEN 0
        ELSE group_total - m * floor_value END;
    IF p_split IS NULL THEN
        s1 := CASE WHEN in1 THEN r1 - LEAST(0, LEAST(r1, r2, r3)) END;
        s2 := CASE WHEN in2 THEN r2 - LEAST(0, LEAST(r1, r2, r3)) END;
        s3 := CASE WHEN in3 THEN r3 - LEAST(0, LEAST(r1, r2, r3)) END;
    ELSE
        FOR i IN 1..3 LOOP
            IF p_trade_counts[i] >= 1 AND (p_split[i] IS NULL OR NOT p_split[i] BETWEEN 1e-50 AND 1e50) THEN
                RAISE EXCEPTION 'allocation_step: p_split[%] is %, not a weight in [1e-50, 1e50]', i,
                    coalesce(p_split[i]::pg_catalog.text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        split_sum := 0 + CASE WHEN in1 THEN p_split[1] ELSE 0 END + CASE WHEN in2 THEN p_split[2] ELSE 0 END
            + CASE WHEN in3 THEN p_split[3] ELSE 0 END;
        s1 := CASE WHEN in1 THEN group_total * (p_split[1] / split_sum) - floor_value END;
        s2 := CASE WHEN in2 THEN group_total * (p_split[2] / split_sum) - floor_value END;
        s3 := CASE WHEN in3 THEN group_total * (p_split[3] / split_sum) - floor_value END;
    END IF;
    s1 := CASE WHEN s1 < tiny THEN 0 ELSE s1 END;
    s2 := CASE WHEN s2 < tiny THEN 0 ELSE s2 END;
    s3 := CASE WHEN s3 < tiny THEN 0 ELSE s3 END;
    score_sum := 0 + coalesce(s1, 0) + coalesce(s2, 0) + coalesce(s3, 0);
    s1 := CASE WHEN NOT score_sum > 0 AND in1 THEN 1 ELSE s1 END;  -- no score: equal scores
    s2 := CASE WHEN NOT score_sum > 0 AND in2 THEN 1 ELSE s2 END;
    s3 := CASE WHEN NOT score_sum > 0 AND in3 THEN 1 ELSE s3 END;
    score_sum := CASE WHEN score_sum > 0 THEN score_sum ELSE m END;
    desired := ARRAY[floor_value + spread * s1 / score_sum, floor_value + spread * s2 / score_sum,
        floor_value + spread * s3 / score_sum];
    max_change := GREATEST(0, pg_catalog.abs(desired[1] - c1), pg_catalog.abs(desired[2] - c2),
        pg_catalog.abs(desired[3] - c3));
    step_limit := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    step_limit := CASE WHEN step_limit < tiny THEN 0
        ELSE CASE WHEN p_max_step < tiny THEN 0 ELSE p_max_step END * step_limit END;
    reason := CASE WHEN max_change <= step_limit THEN 'reached_desired' ELSE 'step' END;
    -- To desired, or step_limit / max_change of the way (a move too small to multiply is none).
    c1 := CASE WHEN NOT in1 THEN p_current[1] WHEN reason = 'reached_desired' THEN desired[1]
        WHEN step_limit = 0 OR pg_catalog.abs(desired[1] - c1) < 1e-300 / step_limit THEN c1
        ELSE c1 + (desired[1] - c1) * step_limit / max_change END;
    c2 := CASE WHEN NOT in2 THEN p_current[2] WHEN reason = 'reached_desired' THEN desired[2]
        WHEN step_limit = 0 OR pg_catalog.abs(desired[2] - c2) < 1e-300 / step_limit THEN c2
        ELSE c2 + (desired[2] - c2) * step_limit / max_change END;
    c3 := CASE WHEN NOT in3 THEN p_current[3] WHEN reason = 'reached_desired' THEN desired[3]
        WHEN step_limit = 0 OR pg_catalog.abs(desired[3] - c3) < 1e-300 / step_limit THEN c3
        ELSE c3 + (desired[3] - c3) * step_limit / max_change END;
    RETURN ROW(ARRAY[CASE WHEN in1 AND c1 < tiny THEN 0 ELSE c1 END, CASE WHEN in2 AND c2 < tiny THEN 0 ELSE c2 END,
        CASE WHEN in3 AND c3 < tiny THEN 0 ELSE c3 END], desired, ARRAY[s1, s2, s3], step_limit, reason
    )::learning.allocation_step_result;
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
-- Written out for the three tracked timeframes in scalars, one expression per value: it runs at
-- every trade, and PL/pgSQL array element assignments and loops cost ~3x as much (design §5).
-- Sums over the other timeframes add in timeframe order from 0, a non-member adding an exact 0.
-- No SET clause, like allocation_step (design §2).
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
AS $$
DECLARE
    tiny CONSTANT double precision := '1e-100'::double precision;
    threshold CONSTANT double precision := CASE WHEN coalesce(p_threshold, 0) < tiny THEN 0 ELSE p_threshold END;
    gain CONSTANT double precision := CASE WHEN coalesce(p_gain, 0) < tiny THEN 0 ELSE p_gain END;
    prior CONSTANT double precision := CASE WHEN coalesce(p_prior_n, 0) < tiny THEN 0 ELSE p_prior_n END;
    -- Members: the tracked timeframes with trades; ok: the series has sums to read (1, 2, 3, global).
    in1 CONSTANT boolean := coalesce(p_counts[1] >= 1, false);
    in2 CONSTANT boolean := coalesce(p_counts[2] >= 1, false);
    in3 CONSTANT boolean := coalesce(p_counts[3] >= 1, false);
    ok1 CONSTANT boolean := in1 AND coalesce(p_states[5] >= 1 AND p_states[9] >= 1, false);
    ok2 CONSTANT boolean := in2 AND coalesce(p_states[14] >= 1 AND p_states[18] >= 1, false);
    ok3 CONSTANT boolean := in3 AND coalesce(p_states[23] >= 1 AND p_states[27] >= 1, false);
    okg CONSTANT boolean := coalesce(p_states[32] >= 1 AND p_states[36] >= 1, false);
    -- Mean m, variance v (x: before its floor), effective count n; 0, 0, 1 for a series without sums.
    m1 double precision;
    m2 double precision;
    m3 double precision;
    mg double precision;
    v1 double precision;
    v2 double precision;
    v3 double precision;
    vg double precision;
    n1 double precision;
    n2 double precision;
    n3 double precision;
    x1 double precision;
    x2 double precision;
    x3 double precision;
    min_n integer;
    share double precision;
    sigma double precision;
    d1 double precision;
    d2 double precision;
    d3 double precision;
    e1 double precision;
    e2 double precision;
    e3 double precision;
BEGIN
    IF in1::integer + in2::integer + in3::integer < 2 THEN
        RETURN;
    END IF;
    m1 := CASE WHEN NOT ok1 OR pg_catalog.abs(p_states[4]) < 1e-200 THEN 0 ELSE p_states[4] / p_states[5] END;
    m2 := CASE WHEN NOT ok2 OR pg_catalog.abs(p_states[13]) < 1e-200 THEN 0 ELSE p_states[13] / p_states[14] END;
    m3 := CASE WHEN NOT ok3 OR pg_catalog.abs(p_states[22]) < 1e-200 THEN 0 ELSE p_states[22] / p_states[23] END;
    mg := CASE WHEN NOT okg OR pg_catalog.abs(p_states[31]) < 1e-200 THEN 0 ELSE p_states[31] / p_states[32] END;
    m1 := CASE WHEN pg_catalog.abs(m1) < tiny THEN 0 ELSE m1 END;
    m2 := CASE WHEN pg_catalog.abs(m2) < tiny THEN 0 ELSE m2 END;
    m3 := CASE WHEN pg_catalog.abs(m3) < tiny THEN 0 ELSE m3 END;
    mg := CASE WHEN pg_catalog.abs(mg) < tiny THEN 0 ELSE mg END;
    x1 := CASE WHEN ok1 THEN CASE WHEN p_states[8] > 1e-200 THEN p_states[8] / p_states[5] ELSE 0 END - m1 * m1 END;
    x2 := CASE WHEN ok2 THEN CASE WHEN p_states[17] > 1e-200 THEN p_states[17] / p_states[14] ELSE 0 END - m2 * m2 END;
    x3 := CASE WHEN ok3 THEN CASE WHEN p_states[26] > 1e-200 THEN p_states[26] / p_states[23] ELSE 0 END - m3 * m3 END;
    vg := CASE WHEN okg THEN CASE WHEN p_states[35] > 1e-200 THEN p_states[35] / p_states[32] ELSE 0 END - mg * mg END;
    v1 := CASE WHEN x1 > 1e-200 THEN x1 ELSE 0 END;
    v2 := CASE WHEN x2 > 1e-200 THEN x2 ELSE 0 END;
    v3 := CASE WHEN x3 > 1e-200 THEN x3 ELSE 0 END;
    vg := CASE WHEN vg > 1e-200 THEN vg ELSE 0 END;
    n1 := CASE WHEN ok1 THEN GREATEST(p_states[5] * (p_states[5] / p_states[9]), 1) ELSE 1 END;
    n2 := CASE WHEN ok2 THEN GREATEST(p_states[14] * (p_states[14] / p_states[18]), 1) ELSE 1 END;
    n3 := CASE WHEN ok3 THEN GREATEST(p_states[23] * (p_states[23] / p_states[27]), 1) ELSE 1 END;
    sigma := GREATEST(pg_catalog.sqrt(vg), 1e-50);
    min_n := LEAST(CASE WHEN in1 THEN p_counts[1] END, CASE WHEN in2 THEN p_counts[2] END,
        CASE WHEN in3 THEN p_counts[3] END);
    share := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    -- se^2 of each member (x), its variance shrunk toward the global one by prior pseudo-trades.
    x1 := CASE WHEN in1 THEN (n1 * v1 + prior * vg) / (n1 + prior) END;
    x2 := CASE WHEN in2 THEN (n2 * v2 + prior * vg) / (n2 + prior) END;
    x3 := CASE WHEN in3 THEN (n3 * v3 + prior * vg) / (n3 + prior) END;
    x1 := CASE WHEN in1 THEN GREATEST(CASE WHEN x1 > 1e-200 THEN x1 / n1 ELSE 0 END, 1e-100) END;
    x2 := CASE WHEN in2 THEN GREATEST(CASE WHEN x2 > 1e-200 THEN x2 / n2 ELSE 0 END, 1e-100) END;
    x3 := CASE WHEN in3 THEN GREATEST(CASE WHEN x3 > 1e-200 THEN x3 / n3 ELSE 0 END, 1e-100) END;
    -- d = m - the n_eff-weighted mean of the other members; se_d (e) adds their 1 / sum(1 / se^2).
    d1 := m1 - (0 + CASE WHEN in2 THEN n2 * m2 ELSE 0 END + CASE WHEN in3 THEN n3 * m3 ELSE 0 END)
        / (0 + CASE WHEN in2 THEN n2 ELSE 0 END + CASE WHEN in3 THEN n3 ELSE 0 END);
    d2 := m2 - (0 + CASE WHEN in1 THEN n1 * m1 ELSE 0 END + CASE WHEN in3 THEN n3 * m3 ELSE 0 END)
        / (0 + CASE WHEN in1 THEN n1 ELSE 0 END + CASE WHEN in3 THEN n3 ELSE 0 END);
    d3 := m3 - (0 + CASE WHEN in1 THEN n1 * m1 ELSE 0 END + CASE WHEN in2 THEN n2 * m2 ELSE 0 END)
        / (0 + CASE WHEN in1 THEN n1 ELSE 0 END + CASE WHEN in2 THEN n2 ELSE 0 END);
    d1 := CASE WHEN pg_catalog.abs(d1) < tiny THEN 0 ELSE d1 END;
    d2 := CASE WHEN pg_catalog.abs(d2) < tiny THEN 0 ELSE d2 END;
    d3 := CASE WHEN pg_catalog.abs(d3) < tiny THEN 0 ELSE d3 END;
    e1 := CASE WHEN in1 THEN pg_catalog.sqrt(x1 + 1 / (0 + CASE WHEN in2 THEN 1 / x2 ELSE 0 END + CASE WHEN in3 THEN 1 / x3 ELSE 0 END)) END;
    e2 := CASE WHEN in2 THEN pg_catalog.sqrt(x2 + 1 / (0 + CASE WHEN in1 THEN 1 / x1 ELSE 0 END + CASE WHEN in3 THEN 1 / x3 ELSE 0 END)) END;
    e3 := CASE WHEN in3 THEN pg_catalog.sqrt(x3 + 1 / (0 + CASE WHEN in1 THEN 1 / x1 ELSE 0 END + CASE WHEN in2 THEN 1 / x2 ELSE 0 END)) END;
    evidence := ARRAY[CASE WHEN in1 THEN d1 / e1 END, CASE WHEN in2 THEN d2 / e2 END, CASE WHEN in3 THEN d3 / e3 END];
    std_error := ARRAY[e1, e2, e3];
    -- The excess (x) of |d| over threshold standard errors tilts the start by exp(sign(d) * tilt).
    x1 := pg_catalog.abs(d1) - threshold * share * e1;
    x2 := pg_catalog.abs(d2) - threshold * share * e2;
    x3 := pg_catalog.abs(d3) - threshold * share * e3;
    split := ARRAY[
        CASE WHEN in1 THEN (learning.starting_allocation())[1] * pg_catalog.exp(pg_catalog.sign(d1)
            * CASE WHEN x1 > tiny AND gain > 0 THEN LEAST(50, gain * (x1 / sigma)) ELSE 0 END) END,
        CASE WHEN in2 THEN (learning.starting_allocation())[2] * pg_catalog.exp(pg_catalog.sign(d2)
            * CASE WHEN x2 > tiny AND gain > 0 THEN LEAST(50, gain * (x2 / sigma)) ELSE 0 END) END,
        CASE WHEN in3 THEN (learning.starting_allocation())[3] * pg_catalog.exp(pg_catalog.sign(d3)
            * CASE WHEN x3 > tiny AND gain > 0 THEN LEAST(50, gain * (x3 / sigma)) ELSE 0 END) END
    ];
END;
$$;
