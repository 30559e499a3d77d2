-- Reading the allocation state (design §4, §5): the current split and EWMAs, the evidence rule's view,
-- and the closed-form state recomputed from closed_trades (the check's oracle, the tau-change rebuild).

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
-- `check` and the tau-change recompute (design §4).
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

-- A fresh install starts at the starting split with no trades (design §4).
SELECT learning._ensure_state_rows();
SELECT learning.ensure_decision_maker_config();
