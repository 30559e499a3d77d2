-- PM strength learning (SPEC section 8): trade facts -> strength lessons (distinct trades per scope
-- slice) -> pm_strength overrides. The runtime blend/steer maths live in Python (runtime.py).

-- learning._num_close: two numbers agree within 1e-12, relative to the larger (at least 1).
-- NULL agrees only with NULL (false, not NULL, otherwise: a writer's `NOT _num_close` must be true).
-- Re-runs sum in a different order; bit noise must not count as a change.
CREATE OR REPLACE FUNCTION learning._num_close(a double precision, b double precision)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN a IS NOT DISTINCT FROM b
OR coalesce(pg_catalog.abs(a - b) <= 1e-12 * greatest(pg_catalog.abs(a), pg_catalog.abs(b), 1), false);

-- learning._stats_close: two stats objects have the same keys and values, numbers within 1e-12.
-- The writers compare with it so that re-running on unchanged data writes no row.
CREATE OR REPLACE FUNCTION learning._stats_close(a jsonb, b jsonb)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN a IS NOT NULL AND b IS NOT NULL
AND pg_catalog.jsonb_typeof(a) = 'object' AND pg_catalog.jsonb_typeof(b) = 'object'
AND (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(a))
= (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(b))
AND NOT EXISTS (
    SELECT FROM pg_catalog.jsonb_each(a) AS e (key, value)
    WHERE NOT coalesce(
        CASE
            WHEN
                pg_catalog.jsonb_typeof(e.value) = 'number'
                AND pg_catalog.jsonb_typeof(b -> e.key) = 'number'
                THEN learning._num_close(
                    (e.value #>> '{}')::double precision, (b ->> e.key)::double precision
                )
            ELSE e.value = b -> e.key
        END,
        false
    )
);

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

-- learning.strength_stats_of: the lesson stats of SPEC 8 from a slice's additive sums
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

-- learning.build_strength_lessons: pm_strength lessons of every (pattern, scope slice) with >= n_min
-- distinct trades in (as_of - lookback, as_of]; upserts learning_lessons, deactivates the rest.
-- A trade whose actions of one pattern carry several scopes becomes inclusion-exclusion cells, so
-- every slice counts it once; cells feed learning.frequent_slices. Unchanged rows are not written.
-- enable_mergejoin off: the planner prices sorting jsonb far too low, and a merge join on the
-- lessons' (pattern_key, scope_subset) sorted both sides (0.5 s at 44k lessons; hashed: 0.08 s).
CREATE OR REPLACE FUNCTION learning.build_strength_lessons(
    p_as_of timestamptz DEFAULT pg_catalog.now(),
    p_lookback interval DEFAULT NULL,
    p_n_min integer DEFAULT NULL
)
RETURNS integer
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
    v_dims text [] := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(tun -> 'scope_dims'));
    v_budget bigint := (tun ->> 'max_strength_lessons')::bigint;
    v_max_scopes CONSTANT integer := 12;
    v_max_candidates CONSTANT integer := 64;
    v_baseline double precision;
    v_trades bigint;
    v_capped bigint;
    v_too_long bigint;
    v_too_many bigint;
    v_unmined bigint;
    v_unmined_ids text [];
    v_unstored bigint;
    v_unstored_patterns text;
    v_any_multi boolean;
    v_lessons integer;
    v_inserted integer;
    v_updated integer;
    v_deactivated integer;
BEGIN
    IF v_n_min IS NULL OR v_n_min < 1 THEN
        RAISE EXCEPTION 'n_min must be a positive integer, got %', v_n_min
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_lookback <= interval '0' THEN
        RAISE EXCEPTION 'lookback must be positive, got %', v_lookback
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    DROP TABLE IF EXISTS pg_temp._sl_scopes, pg_temp._sl_dims,
        pg_temp._sl_scope_ids, pg_temp._sl_ptd, pg_temp._sl_multi, pg_temp._sl_tv, pg_temp.slice_cells,
        pg_temp._sl_lessons, pg_temp._sl_match, pg_temp.slice_skipped;

    -- Distinct scopes of the window -> their dimensions (_mining_dimensions runs once per distinct
    -- scope), and distinct dimension objects numbered so the per-event work is on integers, not
    -- jsonb. Rows without roi are the bot's legacy R/R rows.
    CREATE TEMP TABLE _sl_scopes ON COMMIT DROP AS
    SELECT
        d.scope,
        m.dims,
        m.too_long,
        m.too_many
    FROM (
        SELECT DISTINCT e.scope
        FROM public.pattern_trade_events AS e
        WHERE
            e.roi IS NOT NULL
            AND e."timestamp" > v_as_of - v_lookback
            AND e."timestamp" <= v_as_of
    ) AS d
    CROSS JOIN LATERAL learning._mining_dimensions(d.scope, v_dims) AS m;
    -- A scope that cannot be sliced whole is mined without what it cannot be (_mining_dimensions):
    -- one WARNING naming its trades, and every trade is still learned from.
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
            WHERE
                e.roi IS NOT NULL
                AND e."timestamp" > v_as_of - v_lookback
                AND e."timestamp" <= v_as_of
        ) AS t;
        PERFORM learning._log_unmined_scopes(
            'STRENGTH LESSONS', 'trades', v_unmined, v_unmined_ids, v_too_long, v_too_many
        );
    END IF;
    CREATE TEMP TABLE _sl_dims ON COMMIT DROP AS
    SELECT
        pg_catalog.row_number() OVER ()::integer AS dims_id,
        x.dims
    FROM (SELECT DISTINCT s.dims FROM pg_temp._sl_scopes AS s) AS x;
    CREATE TEMP TABLE _sl_scope_ids ON COMMIT DROP AS
    SELECT
        s.scope,
        d.dims_id
    FROM pg_temp._sl_scopes AS s
    INNER JOIN pg_temp._sl_dims AS d ON s.dims = d.dims;
    ANALYZE pg_temp._sl_scope_ids;
    ANALYZE pg_temp._sl_dims;

    -- Strength facts of the window, one row per (pattern, trade), read with their dims number (a
    -- row with a NULL scope counts for its trade's outcome, in no slice): the first dims number and
    -- whether there are several (multi), and the rows' roi sum, count, range and shape flags. This
    -- is a second statement, so a trade committed since the scopes were read is seen here: one
    -- whose scope is new then is left for the next run (its rows dropped, not counted without their
    -- slices). Hashed, no sort; the per-event work is on text and integers from here on.
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
        AND e."timestamp" > v_as_of - v_lookback
        AND e."timestamp" <= v_as_of
        AND (e.scope IS NULL OR i.dims_id IS NOT NULL)
    GROUP BY e.pattern_key, e.trade_id;
    ANALYZE pg_temp._sl_ptd (pattern_key, trade_id, dims_id, multi);

    -- One outcome per trade: its roi (mean, should the bot write several) and shape flags, and the
    -- per-trade values x, dA, dE (learning.strength_outcome). Uniform: every row of the trade has
    -- the same roi and every pattern of it the same flags (the usual case: the trigger writes the
    -- trade's values on each of its rows), so each (pattern, trade) row already holds the trade's
    -- outcome and the cells below need no join back to the trade.
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
    CROSS JOIN LATERAL learning.strength_outcome(tr.roi, tr.did_trim, tr.reached_s3, v_scale) AS o;
    SELECT pg_catalog.avg(t.roi), pg_catalog.count(*), coalesce(pg_catalog.bool_or(t.multi), false)
    INTO v_baseline, v_trades, v_any_multi
    FROM pg_temp._sl_tv AS t;
    ANALYZE pg_temp._sl_tv (trade_id, uniform); -- the join key and filter; the numeric columns feed no plan

    -- Trades of a pattern with several dims: a dims contained in another of the same trade adds
    -- nothing to the trade's union and is dropped (fewer inclusion-exclusion terms).
    -- Their dims are read again (the rows of those pairs only; skipped when there are none).
    -- Containment is judged pair by pair, so a trade takes part with its first v_max_candidates
    -- dims (in dims order) only: a bounded number of comparisons per trade, whatever it carries.
    CREATE TEMP TABLE _sl_multi (
        pattern_key text, trade_id text, dims jsonb, truncated boolean
    ) ON COMMIT DROP;
    IF v_any_multi THEN
        INSERT INTO pg_temp._sl_multi (pattern_key, trade_id, dims, truncated)
        SELECT x.pattern_key, x.trade_id, x.dims, x.m > v_max_candidates
        FROM (
            SELECT
                q.pattern_key,
                q.trade_id,
                q.dims,
                pg_catalog.row_number() OVER (PARTITION BY q.pattern_key, q.trade_id ORDER BY q.dims) AS j,
                pg_catalog.count(*) OVER (PARTITION BY q.pattern_key, q.trade_id) AS m
            FROM (
                SELECT DISTINCT
                    e.pattern_key,
                    e.trade_id,
                    d.dims
                FROM public.pattern_trade_events AS e
                INNER JOIN (
                    SELECT p.pattern_key, p.trade_id FROM pg_temp._sl_ptd AS p WHERE p.multi
                ) AS p ON e.pattern_key = p.pattern_key AND e.trade_id = p.trade_id
                INNER JOIN pg_temp._sl_scope_ids AS i ON e.scope = i.scope
                INNER JOIN pg_temp._sl_dims AS d ON i.dims_id = d.dims_id
                WHERE
                    e.roi IS NOT NULL
                    AND e."timestamp" > v_as_of - v_lookback
                    AND e."timestamp" <= v_as_of
            ) AS q
        ) AS x
        WHERE x.j <= v_max_candidates;
        ANALYZE pg_temp._sl_multi (pattern_key, trade_id);
        DELETE FROM pg_temp._sl_multi AS a
        WHERE EXISTS (
            SELECT FROM pg_temp._sl_multi AS b
            WHERE
                b.pattern_key = a.pattern_key AND b.trade_id = a.trade_id
                AND b.dims <> a.dims AND b.dims @> a.dims
        );
    END IF;

    SELECT pg_catalog.count(*) INTO v_capped
    FROM (
        SELECT FROM pg_temp._sl_multi AS p
        GROUP BY p.pattern_key, p.trade_id
        HAVING pg_catalog.count(*) > v_max_scopes OR pg_catalog.bool_or(p.truncated)
    ) AS p;
    IF v_capped > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'STRENGTH LESSONS: trades_over_scope_cap=%s | cap=%s | counted by their first %s scopes',
            v_capped, v_max_scopes, v_max_scopes
        ));
    END IF;

    -- Cells with the additive sums [n, Σroi, Σx, Σx², Σw, Σw·dA, Σw·dE, trims, s3s]: a trade with one
    -- dims is one cell; with m dims, the 2^m - 1 intersections with alternating signs
    -- (inclusion-exclusion), merged per trade, so every slice holds the trade exactly once.
    CREATE TEMP TABLE slice_cells ON COMMIT DROP AS
    WITH RECURSIVE single AS (
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
            -- a uniform trade: its outcome from this row
            SELECT
                p.pattern_key,
                p.dims_id,
                p.roi_min AS roi,
                o.x,
                o.da,
                o.de,
                p.did_trim::integer AS trim_flag,
                p.reached_s3::integer AS s3_flag
            FROM pg_temp._sl_ptd AS p
            CROSS JOIN LATERAL learning.strength_outcome(p.roi_min, p.did_trim, p.reached_s3, v_scale) AS o
            WHERE
                NOT p.multi AND p.dims_id IS NOT NULL
                AND NOT EXISTS (
                    SELECT FROM pg_temp._sl_tv AS m WHERE m.trade_id = p.trade_id AND NOT m.uniform
                )
            UNION ALL
            -- any other trade: its outcome from _sl_tv
            SELECT
                p.pattern_key,
                p.dims_id,
                m.roi,
                m.x,
                m.da,
                m.de,
                m.trim_flag,
                m.s3_flag
            FROM pg_temp._sl_ptd AS p
            INNER JOIN pg_temp._sl_tv AS m ON p.trade_id = m.trade_id AND NOT m.uniform
            WHERE NOT p.multi AND p.dims_id IS NOT NULL
        ) AS t
        GROUP BY t.pattern_key, t.dims_id
    ),

    numbered AS (
        SELECT
            mu.pattern_key,
            mu.trade_id,
            mu.dims,
            pg_catalog.row_number() OVER (PARTITION BY mu.pattern_key, mu.trade_id ORDER BY mu.dims) AS j
        FROM pg_temp._sl_multi AS mu
    ),

    capped AS (
        SELECT nb.* FROM numbered AS nb WHERE nb.j <= v_max_scopes
    ),

    terms (pattern_key, trade_id, j, dims, sign) AS (
        SELECT
            c.pattern_key,
            c.trade_id,
            c.j,
            c.dims,
            1
        FROM capped AS c
        UNION ALL
        SELECT
            t.pattern_key,
            t.trade_id,
            c.j,
            learning._jsonb_intersect(t.dims, c.dims),
            -t.sign
        FROM terms AS t
        INNER JOIN capped AS c
            ON t.pattern_key = c.pattern_key AND t.trade_id = c.trade_id AND c.j > t.j
    ),

    merged AS (
        SELECT
            t.pattern_key,
            t.trade_id,
            t.dims,
            pg_catalog.sum(t.sign) AS sign
        FROM terms AS t
        GROUP BY t.pattern_key, t.trade_id, t.dims
        HAVING pg_catalog.sum(t.sign) <> 0
    )

    SELECT
        s.pattern_key,
        d.dims,
        s.stats
    FROM single AS s
    INNER JOIN pg_temp._sl_dims AS d ON s.dims_id = d.dims_id
    UNION ALL
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

    -- The run's slice budget: patterns that would not fit are left out before any slice is
    -- enumerated (learning._admit_slice_budget), and keep their stored lessons.
    PERFORM learning._admit_slice_budget(
        'STRENGTH LESSONS', v_n_min, v_max_dims, v_budget, 'max_strength_lessons'
    );

    CREATE TEMP TABLE _sl_lessons ON COMMIT DROP AS
    SELECT
        f.pattern_key,
        f.scope_subset,
        s.stats
    FROM learning.frequent_slices(v_n_min, v_max_dims) AS f
    CROSS JOIN LATERAL learning.strength_stats_of(f.stats, v_baseline) AS s;
    -- A lesson whose key cannot be stored (learning_lessons_scope_key and pm_overrides' keys are
    -- btree rows of at most 2704 bytes) is left out with one WARNING, not the run's failure.
    WITH unstored AS (
        DELETE FROM pg_temp._sl_lessons AS s
        WHERE pg_catalog.octet_length(s.pattern_key) + pg_catalog.pg_column_size(s.scope_subset) > 2400
        RETURNING s.pattern_key
    )

    SELECT
        pg_catalog.count(*),
        pg_catalog.string_agg(DISTINCT pg_catalog.left(u.pattern_key, 64), ',')
    INTO v_unstored, v_unstored_patterns
    FROM unstored AS u;
    IF v_unstored > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'STRENGTH LESSONS: lessons not stored | lessons=%s | patterns=%s | reason=pattern_key and scope_subset over 2400 bytes',
            v_unstored, pg_catalog.left(v_unstored_patterns, 640)
        ));
    END IF;
    SELECT pg_catalog.count(*) INTO v_lessons FROM pg_temp._sl_lessons;

    -- The run's lessons are matched once to the stored ones (one hash join on the jsonb key); from
    -- there the writes go by id. Changed lessons are updated, stale ones (active, not in this run)
    -- deactivated, new ones inserted: set statements instead of one upsert, whose speculative
    -- insertion costs a second descent of the (jsonb) unique index per row. Stale is decided by id
    -- against what the match read, not by a count, so a lesson another session changed meanwhile
    -- cannot hide a stale one. A concurrent builder is kept out by the job slot; should another
    -- writer insert one of the new lessons in between, the unique key refuses it and the run fails
    -- whole (the next run redoes it). Plans do not depend on stale statistics of learning_lessons:
    -- its filtered text columns are analyzed first (statistics on its jsonb columns cost ~0.1-0.2 s
    -- and inform no plan), and the INSERT looks at it only by id, for matched lessons deleted since
    -- (an earlier anti-join on the jsonb key against the table being inserted into re-read every row
    -- just inserted: quadratic, 22 s at 44k lessons). Merge joins are off for the builder: sorting
    -- the jsonb keys cost 0.5 s where hashing costs 0.08 s.
    ANALYZE pg_temp._sl_lessons (pattern_key); -- its size is what the plans need
    ANALYZE public.learning_lessons (module, action_category, status);
    CREATE TEMP TABLE _sl_match ON COMMIT DROP AS
    SELECT
        s.pattern_key,
        s.scope_subset,
        s.stats,
        l.id AS lesson_id
    FROM pg_temp._sl_lessons AS s
    LEFT JOIN public.learning_lessons AS l
        ON
            l.module = 'pm'
            AND l.action_category = 'pm_strength'
            AND l.pattern_key = s.pattern_key
            AND l.scope_subset = s.scope_subset;
    ANALYZE pg_temp._sl_match (lesson_id);

    -- Whether a lesson changed is judged on its row as the UPDATE finds it (so a lesson another
    -- session deactivated meanwhile is active again).
    UPDATE public.learning_lessons AS l
    SET
        n = (m.stats ->> 'n')::integer,
        stats = m.stats,
        lesson_type = 'pm_strength',
        status = 'active',
        updated_at = pg_catalog.now()
    FROM pg_temp._sl_match AS m
    WHERE
        l.id = m.lesson_id
        AND (
            l.status IS DISTINCT FROM 'active'
            OR l.n IS DISTINCT FROM (m.stats ->> 'n')::integer
            OR l.lesson_type IS DISTINCT FROM 'pm_strength'
            -- equal objects first: a re-run on unchanged data sums in the same order, and the
            -- tolerant comparison (a SQL function planned per call) cost ~25 us per lesson
            OR (l.stats IS DISTINCT FROM m.stats AND NOT learning._stats_close(l.stats, m.stats))
        );
    GET DIAGNOSTICS v_updated = ROW_COUNT;

    -- NOT EXISTS, not NOT IN: a hashed NOT IN subplan turns into a re-scan per row once the
    -- lessons outgrow work_mem (seen: 8 minutes at 130k lessons).
    UPDATE public.learning_lessons AS l
    SET status = 'inactive', updated_at = pg_catalog.now()
    WHERE
        l.module = 'pm'
        AND l.action_category = 'pm_strength'
        AND l.status = 'active'
        AND NOT EXISTS (SELECT FROM pg_temp._sl_match AS m WHERE m.lesson_id = l.id)
        AND NOT EXISTS (SELECT FROM pg_temp.slice_skipped AS k WHERE k.pattern_key = l.pattern_key);
    GET DIAGNOSTICS v_deactivated = ROW_COUNT;

    INSERT INTO public.learning_lessons (
        module, pattern_key, action_category, scope_subset, n, stats, lesson_type, status,
        created_at, updated_at
    )
    SELECT
        'pm',
        m.pattern_key,
        'pm_strength',
        m.scope_subset,
        (m.stats ->> 'n')::integer,
        m.stats,
        'pm_strength',
        'active',
        pg_catalog.now(),
        pg_catalog.now()
    FROM pg_temp._sl_match AS m
    -- new, or deleted by another session since the match
    WHERE m.lesson_id IS NULL OR NOT EXISTS (SELECT FROM public.learning_lessons AS l WHERE l.id = m.lesson_id);
    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    PERFORM learning._log('INFO', pg_catalog.format(
        'STRENGTH LESSONS: as_of=%s | trades=%s | lessons=%s | new=%s | updated=%s | deactivated=%s | n_min=%s',
        v_as_of, v_trades, v_lessons, v_inserted, v_updated, v_deactivated, v_n_min
    ));
    PERFORM pg_catalog.set_config('learning.strength_lessons_counts', pg_catalog.jsonb_build_object(
        'trades', v_trades, 'lessons', v_lessons, 'active', v_lessons, 'inserted', v_inserted,
        'updated', v_updated, 'deactivated', v_deactivated
    )::text, true);

    DROP TABLE IF EXISTS pg_temp._sl_scopes, pg_temp._sl_dims,
        pg_temp._sl_scope_ids, pg_temp._sl_ptd, pg_temp._sl_multi, pg_temp._sl_tv, pg_temp.slice_cells,
        pg_temp._sl_lessons, pg_temp._sl_match, pg_temp.slice_skipped;
    RETURN v_lessons;
END;
$$;

-- learning.materialize_strength_overrides: every active pm_strength lesson with (dirA, dirE) <> (0, 0)
-- becomes an active pm_strength override; every other pm_strength override, and the bot's legacy
-- size-multiplier rows (action entry/add/trim/exit), are deactivated. Unchanged rows are not
-- written; each write is one log line.
CREATE OR REPLACE FUNCTION learning.materialize_strength_overrides()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET client_min_messages = 'warning'
AS $$
DECLARE
    v_active integer;
    v_written integer;
    v_deactivated integer;
    v_no_override integer;
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

    -- A lesson without direction steers nothing: say so instead of writing an override.
    SELECT pg_catalog.count(*) INTO v_no_override FROM (
        SELECT learning._log('INFO', pg_catalog.format(
        'STRENGTH NO OVERRIDE: pattern=%s | dirA=0 dirE=0 conf=%s edge=%s n=%s | scope=%s | reason=no direction (wins without S3 only, or roi 0)',
        t.pattern_key, learning._fmt(t.confidence), learning._fmt(t.edge), t.n, learning._fmt_slice(t.scope_subset)
    ))
    FROM pg_temp._so_target AS t
    WHERE t.dira = 0 AND t.dire = 0) AS x;
    DELETE FROM pg_temp._so_target AS t WHERE t.dira = 0 AND t.dire = 0;
    SELECT pg_catalog.count(*) INTO v_active FROM pg_temp._so_target;

    WITH written AS (
        INSERT INTO public.pm_overrides AS o (
            pattern_key, action_category, scope_subset, multiplier, tuning_params, confidence_score,
            dira, dire, edge_raw_roi, n, status, last_updated_at
        )
        SELECT
            t.pattern_key,
            'pm_strength',
            t.scope_subset,
            1.0,
            NULL,
            t.confidence,
            t.dira,
            t.dire,
            t.edge,
            t.n,
            'active',
            pg_catalog.now()
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

    -- The rows to deactivate, by id: the bot's legacy strength rows, a size multiplier per action
    -- (BOT_SHAPES), which would count the lesson twice next to the steering of A and E; and the
    -- pm_strength rows without a target, found by grouping the overrides' and the targets' keys
    -- together (a key of overrides only is stale), so no plan can rescan the targets per row.
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

    PERFORM learning._log('INFO', pg_catalog.format(
        'STRENGTH MATERIALIZER: active=%s | written=%s | deactivated=%s | no_override=%s',
        v_active, v_written, v_deactivated, v_no_override
    ));
    PERFORM pg_catalog.set_config('learning.strength_overrides_counts', pg_catalog.jsonb_build_object(
        'active', v_active, 'written', v_written, 'deactivated', v_deactivated,
        'no_override', v_no_override
    )::text, true);
    DROP TABLE IF EXISTS pg_temp._so_target;
    RETURN v_active;
END;
$$;
