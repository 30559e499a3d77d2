-- PM strength learning (design §11): trade facts -> strength lessons (distinct trades per scope
-- slice) -> pm_strength overrides. The runtime blend/steer maths live in Python (runtime.py).

-- learning._jsonb_intersect: the (key, value) pairs two objects share.
-- The intersection of two scopes is the cell of an inclusion-exclusion term.
CREATE OR REPLACE FUNCTION learning._jsonb_intersect(a jsonb, b jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN coalesce(
    (
        SELECT pg_catalog.jsonb_object_agg(e.key, e.value)
        FROM pg_catalog.jsonb_each(a) AS e (key, value)
        WHERE b -> e.key = e.value
    ),
    '{}'::jsonb
);

-- learning.strength_outcome: a trade's outcome values from its roi (fraction) and shape flags:
-- x = tanh(roi/ROI_SCALE) and the outcome class (dA, dE) = (-1, 0) for a loss, (-1, 1) for a trimmed
-- loss, (1, -1) for a win that reached S3, (0, 0) otherwise. A SQL table function without a SET
-- clause, so it is inlined where the builder computes it per row.
CREATE OR REPLACE FUNCTION learning.strength_outcome(
    p_roi double precision,
    p_did_trim boolean,
    p_reached_s3 boolean,
    p_roi_scale double precision
)
RETURNS TABLE (x double precision, da integer, de integer)
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT
        pg_catalog.tanh(p_roi / p_roi_scale),
        CASE WHEN p_roi < 0 THEN -1 WHEN p_roi > 0 AND p_reached_s3 THEN 1 ELSE 0 END,
        CASE WHEN p_roi < 0 AND p_did_trim THEN 1 WHEN p_roi > 0 AND p_reached_s3 THEN -1 ELSE 0 END;
END;

-- learning.strength_stats_of: the strength stats rule (design §11), the lesson stats from a slice's additive sums
-- [n, Σroi, Σx, Σx², Σw, Σw·dA, Σw·dE, trims, s3s] (x = tanh(roi/ROI_SCALE), w = |x|) and the
-- window's mean roi; no row for n < 1. A SQL table function without a SET clause, so the builder's
-- LATERAL call is inlined into its one statement (a call per slice cost ~25 us). Pure, so pgTAP
-- checks the formulas on hand-computed sums (through learning.strength_stats).
CREATE OR REPLACE FUNCTION learning.strength_stats_of(
    p_sums double precision [],
    p_baseline_roi double precision
)
RETURNS TABLE (stats jsonb)
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
BEGIN ATOMIC
    WITH s AS (
        SELECT
            pg_catalog.round(p_sums[1])::double precision AS n,
            p_sums[2] AS sum_roi,
            p_sums[3] AS sum_x,
            p_sums[4] AS sum_x2,
            p_sums[5] AS sum_w,
            p_sums[6] AS sum_wa,
            p_sums[7] AS sum_we,
            p_sums[8] AS trims,
            p_sums[9] AS s3s
    ),

    v AS (
        SELECT
            s.*,
            CASE
                WHEN s.n > 1 THEN greatest(0, (s.sum_x2 - s.sum_x * s.sum_x / s.n) / (s.n - 1))
                ELSE 0
            END AS variance,
            -- exp underflows (an error in PostgreSQL) past n = 35000; support is 1 there.
            CASE WHEN s.n > 35000 THEN 1 ELSE 1 - exp(-s.n / 50) END AS support
        FROM s
    ),

    r AS (
        SELECT
            v.*,
            1 / (1 + v.variance + 0.25 / v.n) AS reliability
        FROM v
    )

    SELECT
        pg_catalog.jsonb_build_object(
            'n', r.n::bigint,
            'mean_roi', r.sum_roi / r.n,
            'edge_raw_roi', r.sum_roi / r.n - coalesce(p_baseline_roi, 0),
            'p_trim', greatest(0, least(1, r.trims / r.n)),
            'p_s3', greatest(0, least(1, r.s3s / r.n)),
            'dirA', CASE WHEN r.sum_w > 1e-9 THEN greatest(-1, least(1, r.sum_wa / r.sum_w)) ELSE 0 END,
            'dirE', CASE WHEN r.sum_w > 1e-9 THEN greatest(-1, least(1, r.sum_we / r.sum_w)) ELSE 0 END,
            'variance', r.variance,
            'support_score', r.support,
            'reliability_score', r.reliability,
            'confidence', r.support * r.reliability,
            'sum_w', greatest(0, r.sum_w)
        )
    FROM r
    WHERE r.n >= 1;
END;

-- learning.strength_stats: the same as one value (NULL for n < 1), for callers with one slice.
CREATE OR REPLACE FUNCTION learning.strength_stats(
    p_sums double precision [],
    p_baseline_roi double precision
)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (SELECT s.stats FROM learning.strength_stats_of(p_sums, p_baseline_roi) AS s);

-- learning._read_strength_facts: the strength facts of (p_as_of - p_lookback, p_as_of] (design §11),
-- one row per (pattern, trade) in pg_temp._sl_ptd. Distinct scopes of the window -> their
-- dimensions (_mining_dimensions runs once per distinct scope), and distinct dimension objects
-- numbered (pg_temp._sl_dims, pg_temp._sl_scope_ids) so the per-event work is on integers, not
-- jsonb. Rows without roi are the bot's legacy R/R rows. A scope that cannot be sliced whole is
-- mined without what it cannot be: one WARNING naming its trades, and every trade is still learned from.
CREATE OR REPLACE FUNCTION learning._read_strength_facts(p_as_of timestamptz, p_lookback interval, p_dims text [])
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_too_long bigint;
    v_too_many bigint;
    v_unmined bigint;
    v_unmined_ids text [];
BEGIN
    CREATE TEMP TABLE _sl_scopes ON COMMIT DROP AS
    SELECT d.scope, m.dims, m.too_long, m.too_many
    FROM (
        SELECT DISTINCT e.scope
        FROM public.pattern_trade_events AS e
        WHERE e.roi IS NOT NULL AND e."timestamp" > p_as_of - p_lookback AND e."timestamp" <= p_as_of
    ) AS d
    CROSS JOIN LATERAL learning._mining_dimensions(d.scope, p_dims) AS m;
    SELECT pg_catalog.sum(s.too_long), pg_catalog.sum(s.too_many)
    INTO v_too_long, v_too_many
    FROM pg_temp._sl_scopes AS s
    WHERE s.too_long > 0 OR s.too_many > 0;
    IF v_too_long IS NOT NULL THEN
        SELECT pg_catalog.count(*), (pg_catalog.array_agg(t.trade_id ORDER BY t.trade_id COLLATE "C"))[1:10]
        INTO v_unmined, v_unmined_ids
        FROM (
            SELECT DISTINCT e.trade_id
            FROM public.pattern_trade_events AS e
            INNER JOIN pg_temp._sl_scopes AS s ON e.scope = s.scope AND (s.too_long > 0 OR s.too_many > 0)
            WHERE e.roi IS NOT NULL AND e."timestamp" > p_as_of - p_lookback AND e."timestamp" <= p_as_of
        ) AS t;
        PERFORM learning._log_unmined_scopes(
            'STRENGTH LESSONS', 'trades', v_unmined, v_unmined_ids, v_too_long, v_too_many
        );
    END IF;
    CREATE TEMP TABLE _sl_dims ON COMMIT DROP AS
    SELECT pg_catalog.row_number() OVER ()::integer AS dims_id, x.dims
    FROM (SELECT DISTINCT s.dims FROM pg_temp._sl_scopes AS s) AS x;
    CREATE TEMP TABLE _sl_scope_ids ON COMMIT DROP AS
    SELECT s.scope, d.dims_id
    FROM pg_temp._sl_scopes AS s
    INNER JOIN pg_temp._sl_dims AS d ON s.dims = d.dims;
    ANALYZE pg_temp._sl_scope_ids;
    ANALYZE pg_temp._sl_dims;

    -- One row per (pattern, trade), read with their dims number (a row with a NULL scope counts for
    -- its trade's outcome, in no slice): the first dims number and whether there are several
    -- (multi), and the rows' roi sum, count, range and shape flags. This is a second statement, so
    -- a trade committed since the scopes were read is seen here: one whose scope is new then is
    -- left for the next run (its rows dropped, not counted without their slices). Hashed, no sort.
    CREATE TEMP TABLE _sl_ptd ON COMMIT DROP AS
    SELECT
        e.pattern_key,
        e.trade_id,
        pg_catalog.min(i.dims_id) AS dims_id,
        pg_catalog.min(i.dims_id) <> pg_catalog.max(i.dims_id) AS multi,
        pg_catalog.sum(e.roi) AS roi_sum,
        pg_catalog.count(*) AS roi_rows,
        pg_catalog.min(e.roi) AS roi_min,
        pg_catalog.max(e.roi) AS roi_max,
        coalesce(pg_catalog.bool_or(e.did_trim), false) AS did_trim,
        coalesce(pg_catalog.bool_or(e.reached_s3), false) AS reached_s3
    FROM public.pattern_trade_events AS e
    LEFT JOIN pg_temp._sl_scope_ids AS i ON e.scope = i.scope
    WHERE
        e.roi IS NOT NULL
        AND e."timestamp" > p_as_of - p_lookback
        AND e."timestamp" <= p_as_of
        AND (e.scope IS NULL OR i.dims_id IS NOT NULL)
    GROUP BY e.pattern_key, e.trade_id;
    ANALYZE pg_temp._sl_ptd (pattern_key, trade_id, dims_id, multi);
END;
$$;

-- learning._strength_trade_outcomes: one outcome per trade (design §11) in pg_temp._sl_tv: its roi
-- (mean, should the bot write several) and shape flags, and the per-trade values x, dA, dE
-- (learning.strength_outcome). Uniform: every row of the trade has the same roi and every pattern
-- of it the same flags (the usual case: the trigger writes the trade's values on each of its rows),
-- so each (pattern, trade) row already holds the trade's outcome and the cells need no join back
-- to the trade. Returns the trades, the window's mean roi (the baseline of edge_raw_roi) and
-- whether any trade of a pattern carries several scopes.
CREATE OR REPLACE FUNCTION learning._strength_trade_outcomes(
    p_scale double precision,
    OUT trades bigint,
    OUT baseline double precision,
    OUT any_multi boolean
)
RETURNS record
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CREATE TEMP TABLE _sl_tv ON COMMIT DROP AS
    SELECT
        tr.trade_id,
        tr.roi,
        o.x,
        o.da,
        o.de,
        tr.did_trim::integer AS trim_flag,
        tr.reached_s3::integer AS s3_flag,
        tr.uniform,
        tr.multi
    FROM (
        SELECT
            p.trade_id,
            CASE
                WHEN pg_catalog.min(p.roi_min) = pg_catalog.max(p.roi_max) THEN pg_catalog.min(p.roi_min)
                ELSE pg_catalog.sum(p.roi_sum) / pg_catalog.sum(p.roi_rows)
            END AS roi,
            pg_catalog.bool_or(p.did_trim) AS did_trim,
            pg_catalog.bool_or(p.reached_s3) AS reached_s3,
            pg_catalog.min(p.roi_min) = pg_catalog.max(p.roi_max)
            AND pg_catalog.bool_and(p.did_trim) = pg_catalog.bool_or(p.did_trim)
            AND pg_catalog.bool_and(p.reached_s3) = pg_catalog.bool_or(p.reached_s3) AS uniform,
            pg_catalog.bool_or(p.multi) AS multi
        FROM pg_temp._sl_ptd AS p
        GROUP BY p.trade_id
    ) AS tr
    CROSS JOIN LATERAL learning.strength_outcome(tr.roi, tr.did_trim, tr.reached_s3, p_scale) AS o;
    SELECT pg_catalog.avg(t.roi), pg_catalog.count(*), coalesce(pg_catalog.bool_or(t.multi), false)
    INTO baseline, trades, any_multi
    FROM pg_temp._sl_tv AS t;
    ANALYZE pg_temp._sl_tv (trade_id, uniform); -- the join key and filter; the numeric columns feed no plan
END;
$$;

-- learning._strength_multi_scopes: the trades of a pattern with several dims (pg_temp._sl_multi),
-- their dims read again (the rows of those pairs only; none when p_any_multi is false). A dims
-- contained in another of the same trade adds nothing to the trade's union and is dropped (fewer
-- inclusion-exclusion terms). Containment is judged pair by pair, so a trade takes part with its
-- first p_max_candidates dims (in dims order) only: a bounded number of comparisons per trade,
-- whatever it carries; a trade left with more than p_max_scopes dims is counted by its first
-- p_max_scopes, with one WARNING (design §2: input limits).
CREATE OR REPLACE FUNCTION learning._strength_multi_scopes(
    p_as_of timestamptz,
    p_lookback interval,
    p_any_multi boolean,
    p_max_scopes integer,
    p_max_candidates integer
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_capped bigint;
BEGIN
    CREATE TEMP TABLE _sl_multi (pattern_key text, trade_id text, dims jsonb, truncated boolean) ON COMMIT DROP;
    IF NOT p_any_multi THEN
        RETURN;
    END IF;
    INSERT INTO pg_temp._sl_multi (pattern_key, trade_id, dims, truncated)
    SELECT x.pattern_key, x.trade_id, x.dims, x.m > p_max_candidates
    FROM (
        SELECT
            q.pattern_key,
            q.trade_id,
            q.dims,
            pg_catalog.row_number() OVER (PARTITION BY q.pattern_key, q.trade_id ORDER BY q.dims) AS j,
            pg_catalog.count(*) OVER (PARTITION BY q.pattern_key, q.trade_id) AS m
        FROM (
            SELECT DISTINCT e.pattern_key, e.trade_id, d.dims
            FROM public.pattern_trade_events AS e
            INNER JOIN (
                SELECT p.pattern_key, p.trade_id FROM pg_temp._sl_ptd AS p WHERE p.multi
            ) AS p ON e.pattern_key = p.pattern_key AND e.trade_id = p.trade_id
            INNER JOIN pg_temp._sl_scope_ids AS i ON e.scope = i.scope
            INNER JOIN pg_temp._sl_dims AS d ON i.dims_id = d.dims_id
            WHERE e.roi IS NOT NULL AND e."timestamp" > p_as_of - p_lookback AND e."timestamp" <= p_as_of
        ) AS q
    ) AS x
    WHERE x.j <= p_max_candidates;
    ANALYZE pg_temp._sl_multi (pattern_key, trade_id);
    DELETE FROM pg_temp._sl_multi AS a
    WHERE EXISTS (
        SELECT FROM pg_temp._sl_multi AS b
        WHERE
            b.pattern_key = a.pattern_key AND b.trade_id = a.trade_id
            AND b.dims <> a.dims AND b.dims @> a.dims
    );

    SELECT pg_catalog.count(*) INTO v_capped
    FROM (
        SELECT FROM pg_temp._sl_multi AS p
        GROUP BY p.pattern_key, p.trade_id
        HAVING pg_catalog.count(*) > p_max_scopes OR pg_catalog.bool_or(p.truncated)
    ) AS p;
    IF v_capped > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'STRENGTH LESSONS: trades_over_scope_cap=%s | cap=%s | counted by their first %s scopes',
            v_capped, p_max_scopes, p_max_scopes
        ));
    END IF;
END;
$$;

-- learning._strength_cells: the builder's cells (design §8, §11), pg_temp.slice_cells, with the
-- additive sums [n, Σroi, Σx, Σx², Σw, Σw·dA, Σw·dE, trims, s3s] (x = tanh(roi/ROI_SCALE), w = |x|):
-- a trade with one dims is one cell, its outcome from its own (pattern, trade) row when the trade
-- is uniform, else from pg_temp._sl_tv; a trade with m dims (pg_temp._sl_multi, first p_max_scopes)
-- is the 2^m - 1 intersections with alternating signs (inclusion-exclusion), merged per trade, so
-- every slice counts the trade exactly once.
CREATE OR REPLACE FUNCTION learning._strength_cells(p_scale double precision, p_max_scopes integer)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CREATE TEMP TABLE slice_cells ON COMMIT DROP AS
    SELECT g.pattern_key, d.dims, g.stats
    FROM (
        SELECT
            t.pattern_key,
            t.dims_id,
            ARRAY[
                pg_catalog.count(*),
                pg_catalog.sum(t.roi),
                pg_catalog.sum(t.x),
                pg_catalog.sum(t.x * t.x),
                pg_catalog.sum(abs(t.x)),
                pg_catalog.sum(abs(t.x) * t.da),
                pg_catalog.sum(abs(t.x) * t.de),
                pg_catalog.sum(t.trim_flag),
                pg_catalog.sum(t.s3_flag)
            ]::double precision [] AS stats
        FROM (
            SELECT p.pattern_key, p.dims_id, p.roi_min AS roi, o.x, o.da, o.de,
                p.did_trim::integer AS trim_flag, p.reached_s3::integer AS s3_flag
            FROM pg_temp._sl_ptd AS p
            CROSS JOIN LATERAL learning.strength_outcome(p.roi_min, p.did_trim, p.reached_s3, p_scale) AS o
            WHERE
                NOT p.multi AND p.dims_id IS NOT NULL
                AND NOT EXISTS (SELECT FROM pg_temp._sl_tv AS m WHERE m.trade_id = p.trade_id AND NOT m.uniform)
            UNION ALL
            SELECT p.pattern_key, p.dims_id, m.roi, m.x, m.da, m.de, m.trim_flag, m.s3_flag
            FROM pg_temp._sl_ptd AS p
            INNER JOIN pg_temp._sl_tv AS m ON p.trade_id = m.trade_id AND NOT m.uniform
            WHERE NOT p.multi AND p.dims_id IS NOT NULL
        ) AS t
        GROUP BY t.pattern_key, t.dims_id
    ) AS g
    INNER JOIN pg_temp._sl_dims AS d ON g.dims_id = d.dims_id;

    INSERT INTO pg_temp.slice_cells (pattern_key, dims, stats)
    WITH RECURSIVE capped AS (
        SELECT x.* FROM (
            SELECT
                mu.pattern_key,
                mu.trade_id,
                mu.dims,
                pg_catalog.row_number() OVER (PARTITION BY mu.pattern_key, mu.trade_id ORDER BY mu.dims) AS j
            FROM pg_temp._sl_multi AS mu
        ) AS x
        WHERE x.j <= p_max_scopes
    ),

    terms (pattern_key, trade_id, j, dims, sign) AS (
        SELECT c.pattern_key, c.trade_id, c.j, c.dims, 1
        FROM capped AS c
        UNION ALL
        SELECT t.pattern_key, t.trade_id, c.j, learning._jsonb_intersect(t.dims, c.dims), -t.sign
        FROM terms AS t
        INNER JOIN capped AS c
            ON t.pattern_key = c.pattern_key AND t.trade_id = c.trade_id AND c.j > t.j
    ),

    merged AS (
        SELECT t.pattern_key, t.trade_id, t.dims, pg_catalog.sum(t.sign) AS sign
        FROM terms AS t
        GROUP BY t.pattern_key, t.trade_id, t.dims
        HAVING pg_catalog.sum(t.sign) <> 0
    )

    SELECT
        mg.pattern_key,
        mg.dims,
        ARRAY[
            pg_catalog.sum(mg.sign),
            pg_catalog.sum(mg.sign * t.roi),
            pg_catalog.sum(mg.sign * t.x),
            pg_catalog.sum(mg.sign * t.x * t.x),
            pg_catalog.sum(mg.sign * abs(t.x)),
            pg_catalog.sum(mg.sign * abs(t.x) * t.da),
            pg_catalog.sum(mg.sign * abs(t.x) * t.de),
            pg_catalog.sum(mg.sign * t.trim_flag),
            pg_catalog.sum(mg.sign * t.s3_flag)
        ]::double precision []
    FROM merged AS mg
    INNER JOIN pg_temp._sl_tv AS t ON mg.trade_id = t.trade_id
    GROUP BY mg.pattern_key, mg.dims;
END;
$$;

-- learning.build_strength_lessons: pm_strength lessons of every (pattern, scope slice) with >= n_min
-- distinct trades in (as_of - lookback, as_of] (design §11). Facts (learning._read_strength_facts),
-- one outcome per trade (learning._strength_trade_outcomes), cells (learning._strength_multi_scopes,
-- learning._strength_cells), the run's slice budget (learning._admit_slice_budget: patterns that
-- would not fit are left out before any slice is enumerated, and keep their stored lessons), slices
-- (learning.frequent_slices), stats (learning.strength_stats_of), then the shared writer
-- (learning._write_lessons). Returns the counts. enable_mergejoin off: the planner prices sorting
-- jsonb far too low (a merge join on the lessons' key sorted both sides: 0.5 s at 44k lessons;
-- hashed: 0.08 s).
CREATE OR REPLACE FUNCTION learning.build_strength_lessons(
    p_as_of timestamptz DEFAULT pg_catalog.now(),
    p_lookback interval DEFAULT NULL,
    p_n_min integer DEFAULT NULL,
    OUT lessons integer,
    OUT trades bigint,
    OUT inserted integer,
    OUT updated integer,
    OUT deactivated integer
)
RETURNS record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = 'warning'
SET work_mem = '128MB'
SET enable_mergejoin = off
AS $$
DECLARE
    tun jsonb := learning.tunables();
    v_as_of timestamptz := coalesce(p_as_of, pg_catalog.now());
    v_lookback interval := coalesce(
        p_lookback,
        pg_catalog.make_interval(secs => (tun ->> 'lookback_days')::double precision * 86400)
    );
    v_n_min integer := coalesce(p_n_min, (tun ->> 'n_min')::integer);
    v_max_dims integer := (tun ->> 'max_slice_dims')::integer;
    v_scale double precision := (tun ->> 'roi_scale')::double precision;
    v_max_scopes CONSTANT integer := 12;
    v_max_candidates CONSTANT integer := 64;
    v_outcomes record;
    v_written record;
BEGIN
    IF v_n_min IS NULL OR v_n_min < 1 THEN
        RAISE EXCEPTION 'n_min must be a positive integer, got %', v_n_min
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_lookback <= interval '0' THEN
        RAISE EXCEPTION 'lookback must be positive, got %', v_lookback
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DROP TABLE IF EXISTS pg_temp._sl_scopes, pg_temp._sl_dims, pg_temp._sl_scope_ids, pg_temp._sl_ptd,
        pg_temp._sl_multi, pg_temp._sl_tv, pg_temp.slice_cells, pg_temp.lesson_rows, pg_temp.slice_skipped;

    PERFORM learning._read_strength_facts(
        v_as_of, v_lookback, ARRAY(SELECT pg_catalog.jsonb_array_elements_text(tun -> 'scope_dims'))
    );
    v_outcomes := learning._strength_trade_outcomes(v_scale);
    PERFORM learning._strength_multi_scopes(
        v_as_of, v_lookback, v_outcomes.any_multi, v_max_scopes, v_max_candidates
    );
    PERFORM learning._strength_cells(v_scale, v_max_scopes);
    PERFORM learning._admit_slice_budget(
        'STRENGTH LESSONS', v_n_min, v_max_dims, (tun ->> 'max_strength_lessons')::bigint, 'max_strength_lessons'
    );

    CREATE TEMP TABLE lesson_rows ON COMMIT DROP AS
    SELECT f.pattern_key, f.scope_subset, (s.stats ->> 'n')::integer AS n, s.stats
    FROM learning.frequent_slices(v_n_min, v_max_dims) AS f
    CROSS JOIN LATERAL learning.strength_stats_of(f.stats, v_outcomes.baseline) AS s;
    v_written := learning._write_lessons('STRENGTH LESSONS', 'pm_strength', 'pm_strength');

    lessons := v_written.lessons;
    trades := v_outcomes.trades;
    inserted := v_written.inserted;
    updated := v_written.updated;
    deactivated := v_written.deactivated;
    PERFORM learning._log('INFO', pg_catalog.format(
        'STRENGTH LESSONS: as_of=%s | trades=%s | lessons=%s | new=%s | updated=%s | deactivated=%s | n_min=%s',
        v_as_of, trades, lessons, inserted, updated, deactivated, v_n_min
    ));
    DROP TABLE IF EXISTS pg_temp._sl_scopes, pg_temp._sl_dims, pg_temp._sl_scope_ids, pg_temp._sl_ptd,
        pg_temp._sl_multi, pg_temp._sl_tv, pg_temp.slice_cells, pg_temp.lesson_rows, pg_temp.slice_skipped;
END;
$$;

-- learning._write_strength_overrides: pg_temp._so_target's rows become active pm_strength overrides
-- (upsert on pm_overrides' key; an unchanged row, numbers within learning._num_close, is not
-- written), one STRENGTH OVERRIDE line per write. Returns how many were written.
CREATE OR REPLACE FUNCTION learning._write_strength_overrides()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_written integer;
BEGIN
    WITH written AS (
        INSERT INTO public.pm_overrides AS o (
            pattern_key, action_category, scope_subset, multiplier, tuning_params, confidence_score,
            dira, dire, edge_raw_roi, n, status, last_updated_at
        )
        SELECT
            t.pattern_key, 'pm_strength', t.scope_subset, 1.0, NULL, t.confidence,
            t.dira, t.dire, t.edge, t.n, 'active', pg_catalog.now()
        FROM pg_temp._so_target AS t
        ON CONFLICT (pattern_key, action_category, scope_subset) DO UPDATE
            SET
                multiplier = excluded.multiplier,
                tuning_params = excluded.tuning_params,
                confidence_score = excluded.confidence_score,
                dira = excluded.dira,
                dire = excluded.dire,
                edge_raw_roi = excluded.edge_raw_roi,
                n = excluded.n,
                status = 'active',
                last_updated_at = excluded.last_updated_at
            WHERE
                o.status IS DISTINCT FROM 'active'
                OR o.multiplier IS DISTINCT FROM excluded.multiplier
                OR o.tuning_params IS NOT NULL
                OR o.n IS DISTINCT FROM excluded.n
                OR NOT learning._num_close(o.confidence_score, excluded.confidence_score)
                OR NOT learning._num_close(o.dira, excluded.dira)
                OR NOT learning._num_close(o.dire, excluded.dire)
                OR NOT learning._num_close(o.edge_raw_roi, excluded.edge_raw_roi)
        RETURNING o.pattern_key, o.scope_subset, o.dira, o.dire, o.confidence_score, o.edge_raw_roi, o.n
    ),

    logged AS (
        SELECT learning._log('INFO', pg_catalog.format(
            'STRENGTH OVERRIDE: pattern=%s | dirA=%s dirE=%s conf=%s edge=%s n=%s | scope=%s',
            w.pattern_key, learning._fmt(w.dira), learning._fmt(w.dire),
            learning._fmt(w.confidence_score), learning._fmt(w.edge_raw_roi), w.n, learning._fmt_slice(w.scope_subset)
        ))
        FROM written AS w
    )

    SELECT pg_catalog.count(*) INTO v_written FROM logged;
    RETURN v_written;
END;
$$;

-- learning._deactivate_strength_overrides: every active pm_strength override without a row in
-- pg_temp._so_target, and the bot's legacy strength rows (a size multiplier per action, BOT_SHAPES:
-- entry/add/trim/exit, which would count the lesson twice next to the steering of A and E), become
-- inactive, one STRENGTH OVERRIDE DEACTIVATED line each. By id: the overrides' and the targets'
-- keys grouped together (a key of overrides only is stale), so no plan rescans the targets per row.
-- Returns how many.
CREATE OR REPLACE FUNCTION learning._deactivate_strength_overrides()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deactivated integer;
BEGIN
    WITH gone AS (
        UPDATE public.pm_overrides AS o
        SET status = 'inactive', last_updated_at = pg_catalog.now()
        WHERE
            o.status IS DISTINCT FROM 'inactive'
            AND o.id = any(ARRAY(
                SELECT x.id
                FROM public.pm_overrides AS x
                WHERE
                    x.status IS DISTINCT FROM 'inactive'
                    AND x.action_category IN ('entry', 'add', 'trim', 'exit')
                UNION ALL
                SELECT pg_catalog.max(k.id)
                FROM (
                    SELECT x.id, x.pattern_key, x.scope_subset
                    FROM public.pm_overrides AS x
                    WHERE x.action_category = 'pm_strength' AND x.status IS DISTINCT FROM 'inactive'
                    UNION ALL
                    SELECT NULL, t.pattern_key, t.scope_subset
                    FROM pg_temp._so_target AS t
                ) AS k
                GROUP BY k.pattern_key, k.scope_subset
                HAVING pg_catalog.count(k.id) = pg_catalog.count(*)
            ))
        RETURNING o.pattern_key, o.action_category, o.scope_subset, o.dira, o.dire, o.n
    ),

    logged AS (
        SELECT learning._log('INFO', pg_catalog.format(
            'STRENGTH OVERRIDE DEACTIVATED: pattern=%s | action=%s | n=%s | scope=%s | reason=%s',
            g.pattern_key, g.action_category, coalesce(g.n::text, 'null'), learning._fmt_slice(g.scope_subset),
            CASE
                WHEN g.action_category <> 'pm_strength' OR (g.dira IS NULL AND g.dire IS NULL)
                    THEN 'legacy size multiplier row'
                ELSE 'no active lesson with a direction'
            END
        ))
        FROM gone AS g
    )

    SELECT pg_catalog.count(*) INTO v_deactivated FROM logged;
    RETURN v_deactivated;
END;
$$;

-- learning.materialize_strength_overrides: every active pm_strength lesson with (dirA, dirE) <> (0, 0)
-- becomes an active pm_strength override (design §11, §12); a lesson without direction steers
-- nothing and gets a STRENGTH NO OVERRIDE line instead; every other pm_strength override, and the
-- bot's legacy size-multiplier rows, are deactivated. Unchanged rows are not written; each write is
-- one log line. Returns the counts.
CREATE OR REPLACE FUNCTION learning.materialize_strength_overrides(
    OUT active integer,
    OUT written integer,
    OUT deactivated integer,
    OUT no_override integer
)
RETURNS record
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = 'warning'
AS $$
BEGIN
    DROP TABLE IF EXISTS pg_temp._so_target;
    CREATE TEMP TABLE _so_target ON COMMIT DROP AS
    SELECT
        l.pattern_key,
        l.scope_subset,
        (l.stats ->> 'dirA')::double precision AS dira,
        (l.stats ->> 'dirE')::double precision AS dire,
        (l.stats ->> 'confidence')::double precision AS confidence,
        (l.stats ->> 'edge_raw_roi')::double precision AS edge,
        l.n
    FROM public.learning_lessons AS l
    WHERE
        l.module = 'pm'
        AND l.action_category = 'pm_strength'
        AND l.lesson_type = 'pm_strength'
        AND l.status = 'active';

    SELECT pg_catalog.count(*) INTO no_override FROM (
        SELECT learning._log('INFO', pg_catalog.format(
            'STRENGTH NO OVERRIDE: pattern=%s | dirA=0 dirE=0 conf=%s edge=%s n=%s | scope=%s | '
            || 'reason=no direction (wins without S3 only, or roi 0)',
            t.pattern_key, learning._fmt(t.confidence), learning._fmt(t.edge), t.n, learning._fmt_slice(t.scope_subset)
        ))
        FROM pg_temp._so_target AS t
        WHERE t.dira = 0 AND t.dire = 0
    ) AS x;
    DELETE FROM pg_temp._so_target AS t WHERE t.dira = 0 AND t.dire = 0;
    SELECT pg_catalog.count(*) INTO active FROM pg_temp._so_target;

    written := learning._write_strength_overrides();
    deactivated := learning._deactivate_strength_overrides();
    PERFORM learning._log('INFO', pg_catalog.format(
        'STRENGTH MATERIALIZER: active=%s | written=%s | deactivated=%s | no_override=%s',
        active, written, deactivated, no_override
    ));
    DROP TABLE IF EXISTS pg_temp._so_target;
END;
$$;
