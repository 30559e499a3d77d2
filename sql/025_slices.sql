-- Scope slices (SPEC section 7), shared by the strength builder and the tuning miner: the scope
-- dimensions of a row, and the level-wise (apriori) search of every slice with enough support.

-- learning.scope_dimensions: the top-level keys of p_scope with a string, number or boolean value,
-- restricted to p_dims unless it is empty. Pure pg_catalog SQL with a SQL-standard body (its names
-- are bound when it is created), so it needs no SET clause. Its sub-select keeps the planner from
-- inlining it; it runs once per distinct scope, not per row.
CREATE OR REPLACE FUNCTION learning.scope_dimensions(p_scope jsonb, p_dims text [] DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE
    WHEN pg_catalog.jsonb_typeof(p_scope) = 'object'
        THEN coalesce(
            (
                SELECT pg_catalog.jsonb_object_agg(e.key, e.value)
                FROM pg_catalog.jsonb_each(p_scope) AS e (key, value)
                WHERE
                    pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
                    AND (coalesce(pg_catalog.cardinality(p_dims), 0) = 0 OR e.key = any(p_dims))
            ),
            '{}'::jsonb
        )
    ELSE '{}'::jsonb
END;

-- learning._mining_dimensions: the dimensions the miners slice p_scope on (those of
-- learning.scope_dimensions), bounded so that no writer's scope can fail or swamp a mining job:
-- - a pair whose key or JSON value is over 200 bytes is dropped: with a pattern_key, a slice of
--   4 such pairs still fits the 2704-byte btree rows of the lessons' and overrides' unique keys;
-- - a scope left with more than 16 dimensions keeps none, so its row counts in its pattern's {}
--   slice only: 16 keys make at most 2,517 slices of <= 4 pairs per row (40 keys made 102,091,
--   60 keys 523,686), and a real scope has a handful (chain, timeframe, buckets, regime).
-- too_long (pairs dropped) and too_many (dimensions dropped) feed the job's one WARNING. Called
-- once per distinct scope of the window.
CREATE OR REPLACE FUNCTION learning._mining_dimensions(p_scope jsonb, p_dims text [] DEFAULT '{}')
RETURNS TABLE (dims jsonb, too_long integer, too_many integer)
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT
        CASE
            WHEN pg_catalog.count(*) FILTER (WHERE d.fits) <= 16
                THEN coalesce(pg_catalog.jsonb_object_agg(d.key, d.value) FILTER (WHERE d.fits), '{}'::jsonb)
            ELSE '{}'::jsonb
        END,
        pg_catalog.count(*) FILTER (WHERE NOT d.fits)::integer,
        CASE
            WHEN pg_catalog.count(*) FILTER (WHERE d.fits) > 16 THEN pg_catalog.count(*) FILTER (WHERE d.fits)::integer
            ELSE 0
        END
    FROM (
        SELECT
            e.key,
            e.value,
            pg_catalog.octet_length(e.key) <= 200 AND pg_catalog.octet_length(e.value::text) <= 200 AS fits
        FROM
            pg_catalog.jsonb_each(
                CASE WHEN pg_catalog.jsonb_typeof(p_scope) = 'object' THEN p_scope ELSE '{}'::jsonb END
            ) AS e (key, value)
        WHERE
            pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
            AND (coalesce(pg_catalog.cardinality(p_dims), 0) = 0 OR e.key = any(p_dims))
    ) AS d;
END;

-- learning._log_unmined_scopes: the one WARNING of a mining job whose window holds scopes
-- _mining_dimensions bounded: how many rows (trades, episodes), the first ten ids (each cut to 64
-- characters), and how many pairs / dimensions were dropped.
CREATE OR REPLACE FUNCTION learning._log_unmined_scopes(
    p_job text,
    p_unit text,
    p_rows bigint,
    p_first_ids text [],
    p_too_long bigint,
    p_too_many bigint
)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT learning._log('WARNING', pg_catalog.format(
        '%s: scope dimensions not mined | %s=%s | ids=%s%s | pairs_over_200_bytes=%s | '
        || 'dims_of_scopes_over_16=%s | reason=a key or value over 200 bytes is dropped; '
        || 'a scope with more than 16 dimensions counts in its pattern''s {} slice only',
        p_job, p_unit, p_rows,
        (
            SELECT pg_catalog.string_agg(pg_catalog.left(i.id, 64), ',' ORDER BY i.n)
            FROM pg_catalog.unnest(p_first_ids[1:10]) WITH ORDINALITY AS i (id, n)
        ),
        CASE WHEN p_rows > 10 THEN ',...' ELSE '' END,
        p_too_long, p_too_many
    ));
END;

-- learning._slices_bound: how many slices of <= p_max_dims pairs ({} included) a pattern can have at
-- most, from p_power_sums[j] = the sum over its scope keys of (frequent values of the key)^j: a slice
-- takes at most one value per key, so the count is 1 + e_1 + ... + e_{p_max_dims}, the elementary
-- symmetric sums of the per-key value counts, here by Newton's identities (exact in numeric).
CREATE OR REPLACE FUNCTION learning._slices_bound(p_power_sums numeric [], p_max_dims integer)
RETURNS numeric
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e numeric [] := ARRAY[1::numeric];
    total numeric := 1;
    s numeric;
BEGIN
    FOR m IN 1..LEAST(coalesce(p_max_dims, 0), coalesce(pg_catalog.cardinality(p_power_sums), 0)) LOOP
        s := 0;
        FOR i IN 1..m LOOP
            s := s + CASE WHEN i % 2 = 1 THEN 1 ELSE -1 END * e[m - i + 1] * p_power_sums[i];
        END LOOP;
        e[m + 1] := pg_catalog.round(s / m);
        total := total + e[m + 1];
    END LOOP;
    RETURN total;
END;
$$;

-- learning._admit_slice_budget: keeps a mining run within p_budget slices whatever one writer
-- inserted. Patterns of pg_temp.slice_cells with support (summed stats[1]) >= p_n_min are taken in
-- order of support (ties by pattern_key), each bounded before any slice is enumerated
-- (learning._slices_bound of its frequent (key, value) pairs), and admitted while the running sum of
-- their bounds fits the budget; a pattern whose bound alone exceeds the budget is left out without
-- ending the admission. Bounds are computed in batches of growing size down that order and stop
-- once the budget is spent, so the patterns after it cost nothing. The cells of the patterns left
-- out are deleted (frequent_slices never sees them) and their keys kept in pg_temp.slice_skipped:
-- the caller leaves their stored lessons as they are. One WARNING names the first ten and how many;
-- returns how many were left out.
CREATE OR REPLACE FUNCTION learning._admit_slice_budget(
    p_job text,
    p_n_min integer,
    p_max_dims integer,
    p_budget bigint,
    p_budget_key text
)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = 'warning'
SET jit = off
AS $$
DECLARE
    max_level integer := LEAST(GREATEST(coalesce(p_max_dims, 0), 0), 8);
    n_patterns integer;
    done integer := 0;
    batch integer := 256;
    spent boolean := false;
    skipped bigint;
    admitted_bound numeric;
    first_patterns text;
BEGIN
    DROP TABLE IF EXISTS pg_temp.slice_skipped, pg_temp._sb_patterns;
    CREATE TEMP TABLE slice_skipped (pattern_key text PRIMARY KEY) ON COMMIT DROP;

    CREATE TEMP TABLE _sb_patterns ON COMMIT DROP AS
    SELECT
        c.pattern_key,
        pg_catalog.sum(c.stats[1]) AS support,
        NULL::numeric AS bound,
        (pg_catalog.row_number() OVER (
            ORDER BY pg_catalog.sum(c.stats[1]) DESC, c.pattern_key COLLATE "C"
        ))::integer AS ord
    FROM pg_temp.slice_cells AS c
    WHERE c.pattern_key IS NOT NULL
    GROUP BY c.pattern_key
    HAVING pg_catalog.sum(c.stats[1]) >= p_n_min;
    GET DIAGNOSTICS n_patterns = ROW_COUNT;
    ANALYZE pg_temp._sb_patterns;

    WHILE done < n_patterns AND NOT spent LOOP
        -- The bounds of the next batch: per pattern, how many frequent values each key has, then
        -- the power sums of those counts (keys with the same count taken together).
        WITH batch_patterns AS (
            SELECT x.pattern_key
            FROM pg_temp._sb_patterns AS x
            WHERE x.ord > done AND x.ord <= done + batch
        ),

        -- the batch's cells first, so only they are expanded into pairs
        batch_cells AS MATERIALIZED (
            SELECT c.pattern_key, c.dims, c.stats[1] AS n
            FROM pg_temp.slice_cells AS c
            INNER JOIN batch_patterns AS bp ON c.pattern_key = bp.pattern_key
        ),

        items AS (
            SELECT c.pattern_key, e.key
            FROM batch_cells AS c
            CROSS JOIN LATERAL pg_catalog.jsonb_each(
                CASE WHEN pg_catalog.jsonb_typeof(c.dims) = 'object' THEN c.dims ELSE '{}'::jsonb END
            ) AS e (key, value)
            WHERE max_level >= 1 AND pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
            GROUP BY c.pattern_key, e.key, e.value
            HAVING pg_catalog.sum(c.n) >= p_n_min
        ),

        per_v AS (
            SELECT k.pattern_key, k.v, pg_catalog.count(*)::numeric AS keys
            FROM (
                SELECT i.pattern_key, pg_catalog.count(*)::numeric AS v
                FROM items AS i
                GROUP BY i.pattern_key, i.key
            ) AS k
            GROUP BY k.pattern_key, k.v
        ),

        power_sums AS (
            SELECT
                v.pattern_key,
                ARRAY[
                    pg_catalog.sum(v.keys * v.v),
                    pg_catalog.sum(v.keys * v.v ^ 2),
                    pg_catalog.sum(v.keys * v.v ^ 3),
                    pg_catalog.sum(v.keys * v.v ^ 4),
                    pg_catalog.sum(v.keys * v.v ^ 5),
                    pg_catalog.sum(v.keys * v.v ^ 6),
                    pg_catalog.sum(v.keys * v.v ^ 7),
                    pg_catalog.sum(v.keys * v.v ^ 8)
                ] AS p
            FROM per_v AS v
            GROUP BY v.pattern_key
        )

        UPDATE pg_temp._sb_patterns AS p
        SET bound = learning._slices_bound(s.p, max_level)
        FROM batch_patterns AS bp
        LEFT JOIN power_sums AS s ON bp.pattern_key = s.pattern_key
        WHERE p.pattern_key = bp.pattern_key;
        done := done + batch;
        batch := batch * 2;
        -- Spent once the bounds so far (a prefix of the order) no longer fit.
        spent := coalesce(
            (SELECT pg_catalog.sum(p.bound) FROM pg_temp._sb_patterns AS p WHERE p.bound <= p_budget) > p_budget,
            false
        );
    END LOOP;

    INSERT INTO pg_temp.slice_skipped (pattern_key)
    SELECT r.pattern_key
    FROM (
        SELECT
            p.pattern_key,
            p.bound,
            pg_catalog.sum(CASE WHEN p.bound <= p_budget THEN p.bound ELSE 0 END) OVER (ORDER BY p.ord) AS running
        FROM pg_temp._sb_patterns AS p
    ) AS r
    WHERE r.bound IS NULL OR r.bound > p_budget OR r.running > p_budget;
    GET DIAGNOSTICS skipped = ROW_COUNT;
    IF skipped > 0 THEN
        SELECT
            pg_catalog.sum(p.bound) FILTER (WHERE k.pattern_key IS NULL),
            pg_catalog.string_agg(pg_catalog.left(p.pattern_key, 64), ',' ORDER BY p.ord)
                FILTER (WHERE k.pattern_key IS NOT NULL AND k.n <= 10)
        INTO admitted_bound, first_patterns
        FROM pg_temp._sb_patterns AS p
        LEFT JOIN (
            SELECT s.pattern_key, pg_catalog.row_number() OVER (ORDER BY x.ord) AS n
            FROM pg_temp.slice_skipped AS s
            INNER JOIN pg_temp._sb_patterns AS x ON s.pattern_key = x.pattern_key
        ) AS k ON p.pattern_key = k.pattern_key;
        DELETE FROM pg_temp.slice_cells AS c
        WHERE EXISTS (SELECT FROM pg_temp.slice_skipped AS k WHERE k.pattern_key = c.pattern_key);
        PERFORM learning._log('WARNING', pg_catalog.format(
            '%s: patterns not mined | patterns=%s | first=%s%s | admitted_slices_at_most=%s | %s=%s | '
            || 'reason=their slices would not fit the run''s budget (patterns with the most trades or events '
            || 'first); their stored lessons are kept as they are',
            p_job, skipped, first_patterns, CASE WHEN skipped > 10 THEN ',...' ELSE '' END,
            coalesce(admitted_bound, 0), p_budget_key, p_budget
        ));
    END IF;
    DROP TABLE pg_temp._sb_patterns;
    RETURN skipped;
END;
$$;

-- learning._slices_enumeration_limit: how many (cell, slice) rows frequent_slices may enumerate
-- directly before it falls back to the level-wise extension (setting learning.slices_enumeration_limit,
-- so a test can force either path; default 20 million rows, a few seconds of aggregation here).
CREATE OR REPLACE FUNCTION learning._slices_enumeration_limit()
RETURNS numeric
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
RETURN coalesce(nullif(pg_catalog.current_setting('learning.slices_enumeration_limit', true), '')::numeric, 20000000);

-- learning._slices_grouping_sets: whether frequent_slices may count slices by GROUP BY GROUPING SETS
-- (setting learning.slices_grouping_sets: 'auto' by its cost rule, the default; 'on' whenever the sets
-- fit; 'off' never), so a test can force each path.
CREATE OR REPLACE FUNCTION learning._slices_grouping_sets()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
RETURN coalesce(nullif(pg_catalog.current_setting('learning.slices_grouping_sets', true), ''), 'auto');

-- learning.frequent_slices: every slice (sub-object of a cell's dims, <= p_max_dims pairs, {} included)
-- of pg_temp.slice_cells whose summed stats[1] >= p_n_min, with element-wise summed stats.
-- Few scope keys in all: one GROUP BY GROUPING SETS over a column per key (below). Otherwise
-- level by level on aggregated cells: level k counts the k-subsets of each cell's frequent pairs,
-- either all of them at once from a combination table (few pairs per cell) or by extending the
-- frequent (k-1)-slices a cell contains with the cell's frequent pairs whose key sorts after the
-- slice's last key (each slice built once).
-- Pairs are numbered in key order so a slice is an int[] while it is counted (far cheaper than jsonb)
-- and a cell's frequent pairs are one sorted array, extended by slicing instead of a join.
-- jit off: the temp tables' row estimates (28k groups guessed for 1 real one) priced small
-- statements above jit_above_cost, and compiling them cost ~0.1-0.2 s per run.
CREATE OR REPLACE FUNCTION learning.frequent_slices(p_n_min integer, p_max_dims integer)
RETURNS TABLE (pattern_key text, scope_subset jsonb, stats double precision [])
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = 'warning'
SET jit = off
AS $$
DECLARE
    width integer;
    sums text;
    cell_sums text;
    level integer := 0;
    max_level integer := GREATEST(coalesce(p_max_dims, 0), 0);
    found_rows bigint;
    max_items integer;
    max_item integer;
    bits integer;
    key_expr text;
    ids_expr text;
    combinations numeric;
    binomial numeric;
    enumerated numeric;
    direct boolean := false;
    gs_keys text [];
    keys_per_cell numeric;
    grouping_sets numeric;
    gs_columns text;
    gs_values text;
    gs_joins text;
    gs_having text;
    gs_object text;
    gs_object_joins text;
BEGIN
    IF pg_catalog.to_regclass('pg_temp.slice_cells') IS NULL THEN
        RAISE EXCEPTION 'learning.frequent_slices needs the temp table pg_temp.slice_cells'
            USING ERRCODE = 'undefined_table',
                HINT = 'CREATE TEMP TABLE slice_cells (pattern_key text, dims jsonb, stats float8[])';
    END IF;
    SELECT pg_catalog.max(pg_catalog.cardinality(c.stats)) INTO width FROM pg_temp.slice_cells AS c;
    IF width IS NULL OR width < 1 THEN
        RETURN;
    END IF;
    DROP TABLE IF EXISTS pg_temp._fs_cells, pg_temp._fs_raw, pg_temp._fs_items, pg_temp._fs_pairs,
        pg_temp._fs_citems, pg_temp._fs_cur, pg_temp._fs_next, pg_temp._fs_level, pg_temp._fs_out,
        pg_temp._fs_comb, pg_temp._fs_dims, pg_temp._fs_vals;
    SELECT
        pg_catalog.string_agg(pg_catalog.format('pg_catalog.sum(c.stats[%s]) AS s%s', i, i), ', ' ORDER BY i),
        pg_catalog.string_agg(pg_catalog.format('pg_catalog.sum(c.s%s)', i), ', ' ORDER BY i)
    INTO cell_sums, sums
    FROM pg_catalog.generate_series(1, width) AS i;

    -- Few scope keys in all (the usual case: a handful of scope dimensions): one column per key and
    -- every slice of <= max_level keys counted in one GROUP BY GROUPING SETS, each cell added to
    -- each of its sets in one pass, nothing enumerated into tables. A cell without a key (or with
    -- a non-scalar value there) has NULL in its column, and a group with NULL in a grouped column is
    -- no slice (HAVING drops it). Every slice is counted, so no pruning is needed; the paths below
    -- prune by apriori (a slice's count is never above its parts'), which holds for both callers'
    -- cells (trade counts, inclusion-exclusion included), and so they give the same slices.
    -- Many keys, or cells with few of them, take the paths below.
    IF learning._slices_grouping_sets() NOT IN ('auto', 'on', 'off') THEN
        RAISE EXCEPTION 'learning.slices_grouping_sets must be auto, on or off, got %', learning._slices_grouping_sets()
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_level >= 1 AND learning._slices_grouping_sets() <> 'off' THEN
        -- The cells' distinct dims: their scalar keys and how many a cell has on average.
        CREATE TEMP TABLE _fs_dims ON COMMIT DROP AS
        SELECT c.dims, pg_catalog.count(*) AS cells
        FROM pg_temp.slice_cells AS c
        WHERE c.pattern_key IS NOT NULL
        GROUP BY c.dims;
        WITH pairs AS (
            SELECT d.dims, d.cells, e.key COLLATE "C" AS key
            FROM pg_temp._fs_dims AS d
            CROSS JOIN LATERAL pg_catalog.jsonb_each(
                CASE WHEN pg_catalog.jsonb_typeof(d.dims) = 'object' THEN d.dims ELSE '{}'::jsonb END
            ) AS e (key, value)
            WHERE pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
        )
        SELECT
            (SELECT coalesce(pg_catalog.array_agg(k.key ORDER BY k.key), '{}')
             FROM (SELECT DISTINCT p.key FROM pairs AS p) AS k),
            (SELECT pg_catalog.sum(p.cells) FROM pairs AS p)
            / nullif((SELECT pg_catalog.sum(d.cells) FROM pg_temp._fs_dims AS d), 0)
        INTO gs_keys, keys_per_cell;
        -- grouping sets: every subset of <= max_level keys; a cell's own: those of its keys.
        grouping_sets := 0;
        binomial := 1;
        FOR k IN 0..LEAST(max_level, pg_catalog.cardinality(gs_keys)) LOOP
            IF k > 0 THEN
                binomial := binomial * (pg_catalog.cardinality(gs_keys) - k + 1) / k;
            END IF;
            grouping_sets := grouping_sets + binomial;
        END LOOP;
        combinations := 0;
        binomial := 1;
        FOR k IN 0..max_level LOOP
            IF k > 0 THEN
                binomial := binomial * (pg_catalog.round(coalesce(keys_per_cell, 0)) - k + 1) / k;
            END IF;
            EXIT WHEN binomial <= 0;
            combinations := combinations + binomial;
        END LOOP;
        -- 40 keys: jsonb_build_object's 80 arguments stay under the 100 a function takes.
        IF
            pg_catalog.cardinality(gs_keys) <= 40 AND grouping_sets <= 4096
            AND (
                learning._slices_grouping_sets() = 'on'
                OR (grouping_sets <= 256 AND grouping_sets <= 2 * combinations)
            )
        THEN
            -- The (key, value) pairs numbered: the grouping is on these integers (hashing the jsonb
            -- values in every grouping set cost 3x more).
            CREATE TEMP TABLE _fs_vals ON COMMIT DROP AS
            SELECT x.key, x.value, pg_catalog.row_number() OVER ()::integer AS val_id
            FROM (
                SELECT DISTINCT e.key COLLATE "C" AS key, e.value
                FROM pg_temp._fs_dims AS d
                CROSS JOIN LATERAL pg_catalog.jsonb_each(
                    CASE WHEN pg_catalog.jsonb_typeof(d.dims) = 'object' THEN d.dims ELSE '{}'::jsonb END
                ) AS e (key, value)
                WHERE pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
            ) AS x;
            ANALYZE pg_temp._fs_vals;
            WITH RECURSIVE sets (last, cols, k) AS (
                SELECT 0, ''::text, 0
                UNION ALL
                SELECT
                    j,
                    sets.cols || CASE WHEN sets.k > 0 THEN ', ' ELSE '' END || 'c.k' || j,
                    sets.k + 1
                FROM sets
                CROSS JOIN LATERAL pg_catalog.generate_series(sets.last + 1, pg_catalog.cardinality(gs_keys)) AS j
                WHERE sets.k < max_level
            )
            SELECT pg_catalog.string_agg('(' || sets.cols || ')', ', ' ORDER BY sets.k, sets.cols)
            INTO key_expr
            FROM sets;
            -- Each key's column holds the number of the cell's value there (NULL: no scalar value);
            -- a slice's object is built back from the numbers of its grouped columns.
            SELECT
                coalesce(pg_catalog.string_agg(pg_catalog.format('%L, o%s.value', g.key, g.i), ', ' ORDER BY g.i), ''),
                coalesce(pg_catalog.string_agg(pg_catalog.format(
                    ' LEFT JOIN pg_temp._fs_vals AS o%s ON o%s.val_id = g.k%s', g.i, g.i, g.i), '' ORDER BY g.i), ''),
                coalesce(pg_catalog.string_agg(pg_catalog.format(', c.k%s', g.i), '' ORDER BY g.i), ''),
                coalesce(pg_catalog.string_agg(pg_catalog.format(', v%s.val_id AS k%s', g.i, g.i), '' ORDER BY g.i), ''),
                coalesce(pg_catalog.string_agg(pg_catalog.format(
                    ' LEFT JOIN pg_temp._fs_vals AS v%s ON v%s.key = %L AND v%s.value = c.dims -> %L',
                    g.i, g.i, g.key, g.i, g.key), '' ORDER BY g.i), ''),
                coalesce(pg_catalog.string_agg(pg_catalog.format(
                    ' AND (GROUPING(c.k%s) = 1 OR c.k%s IS NOT NULL)', g.i, g.i), '' ORDER BY g.i), '')
            INTO gs_object, gs_object_joins, gs_columns, gs_values, gs_joins, gs_having
            FROM pg_catalog.unnest(gs_keys) WITH ORDINALITY AS g (key, i);
            RETURN QUERY EXECUTE pg_catalog.format(
                'SELECT g.pattern_key, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(%s)), g.stats
                 FROM (
                     SELECT c.pattern_key%s, ARRAY[%s] AS stats
                     FROM (
                         SELECT c.pattern_key%s, %s
                         FROM pg_temp.slice_cells AS c%s
                         WHERE c.pattern_key IS NOT NULL
                     ) AS c
                     GROUP BY c.pattern_key, GROUPING SETS (%s)
                     HAVING pg_catalog.sum(c.s1) >= $1%s
                 ) AS g%s',
                gs_object,
                gs_columns,
                sums,
                gs_values,
                (SELECT pg_catalog.string_agg(pg_catalog.format('c.stats[%s]::double precision AS s%s', i, i), ', ' ORDER BY i)
                 FROM pg_catalog.generate_series(1, width) AS i),
                gs_joins,
                key_expr,
                gs_having,
                gs_object_joins
            ) USING p_n_min;
            DROP TABLE pg_temp._fs_dims, pg_temp._fs_vals;
            RETURN;
        END IF;
        DROP TABLE pg_temp._fs_dims;
    END IF;

    -- Cells grouped, their sums unpacked into columns s1..sN (array subscripts per row are slow).
    EXECUTE pg_catalog.format(
        'CREATE TEMP TABLE _fs_cells ON COMMIT DROP AS
         SELECT pg_catalog.row_number() OVER () AS cell_id, g.*
         FROM (
             SELECT c.pattern_key, c.dims, %s
             FROM pg_temp.slice_cells AS c
             WHERE c.pattern_key IS NOT NULL
             GROUP BY c.pattern_key, c.dims
         ) AS g',
        cell_sums
    );
    -- Only the columns plans depend on (the join key and the grouping): stats on dims (jsonb) cost ~0.15 s.
    ANALYZE pg_temp._fs_cells (cell_id, pattern_key);
    CREATE TEMP TABLE _fs_items (
        item_id integer, pattern_key text, key text COLLATE "C", value jsonb
    ) ON COMMIT DROP;
    CREATE TEMP TABLE _fs_out (
        out_id bigint GENERATED ALWAYS AS IDENTITY,
        pattern_key text,
        ids integer [],
        stats double precision []
    ) ON COMMIT DROP;

    -- Level 0: the empty slice of every pattern.
    EXECUTE pg_catalog.format(
        'INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
         SELECT c.pattern_key, ''{}''::integer [], ARRAY[%s]
         FROM pg_temp._fs_cells AS c
         GROUP BY c.pattern_key
         HAVING pg_catalog.sum(c.s1) >= $1',
        sums
    ) USING p_n_min;
    GET DIAGNOSTICS found_rows = ROW_COUNT;

    IF found_rows > 0 AND max_level >= 1 THEN
        -- Every scalar (key, value) pair of every cell of a supported pattern.
        CREATE TEMP TABLE _fs_raw ON COMMIT DROP AS
        SELECT
            c.cell_id,
            c.pattern_key,
            e.key COLLATE "C" AS key,
            e.value
        FROM pg_temp._fs_cells AS c
        INNER JOIN pg_temp._fs_out AS o ON c.pattern_key = o.pattern_key
        CROSS JOIN LATERAL pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(c.dims) = 'object' THEN c.dims ELSE '{}'::jsonb END
        ) AS e (key, value)
        WHERE pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean');
        ANALYZE pg_temp._fs_raw (cell_id, pattern_key, key); -- not value: jsonb stats cost more than they inform

        -- Items: distinct (pattern, key, value), numbered in key order, so a cell's items sorted by
        -- id are sorted by key and a slice's ids are increasing.
        INSERT INTO pg_temp._fs_items (item_id, pattern_key, key, value)
        SELECT
            pg_catalog.row_number() OVER (ORDER BY d.key, d.pattern_key, d.value)::integer AS item_id,
            d.pattern_key,
            d.key,
            d.value
        FROM (SELECT DISTINCT r.pattern_key, r.key, r.value FROM pg_temp._fs_raw AS r) AS d;
        ANALYZE pg_temp._fs_items;

        CREATE TEMP TABLE _fs_pairs ON COMMIT DROP AS
        SELECT
            r.cell_id,
            i.item_id
        FROM pg_temp._fs_raw AS r
        INNER JOIN pg_temp._fs_items AS i
            ON r.pattern_key = i.pattern_key AND r.key = i.key AND r.value = i.value;
        DROP TABLE pg_temp._fs_raw;
        ANALYZE pg_temp._fs_pairs;

        -- Level 1: one slice per item.
        EXECUTE pg_catalog.format(
            'CREATE TEMP TABLE _fs_level ON COMMIT DROP AS
             SELECT ARRAY[p.item_id] AS ids, ARRAY[%s] AS stats
             FROM pg_temp._fs_pairs AS p
             INNER JOIN pg_temp._fs_cells AS c ON p.cell_id = c.cell_id
             GROUP BY p.item_id
             HAVING pg_catalog.sum(c.s1) >= $1',
            sums
        ) USING p_n_min;
        GET DIAGNOSTICS found_rows = ROW_COUNT;
        level := 1;
        INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
        SELECT i.pattern_key, l.ids, l.stats
        FROM pg_temp._fs_level AS l
        INNER JOIN pg_temp._fs_items AS i ON l.ids[1] = i.item_id;

        -- Each cell's frequent items in key order (apriori: only they can extend a slice), with the
        -- cell's sums alongside so the enumeration below needs no join per enumerated row.
        EXECUTE pg_catalog.format(
            'CREATE TEMP TABLE _fs_citems ON COMMIT DROP AS
             SELECT x.cell_id, x.items, %s
             FROM (
                 SELECT
                     p.cell_id,
                     pg_catalog.array_agg(p.item_id ORDER BY p.item_id) AS items
                 FROM pg_temp._fs_pairs AS p
                 INNER JOIN pg_temp._fs_level AS l ON l.ids[1] = p.item_id
                 GROUP BY p.cell_id
                 HAVING pg_catalog.count(*) >= 2
             ) AS x
             INNER JOIN pg_temp._fs_cells AS c ON x.cell_id = c.cell_id',
            (SELECT pg_catalog.string_agg(pg_catalog.format('c.s%s', i), ', ' ORDER BY i)
             FROM pg_catalog.generate_series(1, width) AS i)
        );
        ANALYZE pg_temp._fs_citems (cell_id);

        -- Few frequent items per cell (the usual case: a handful of scope dimensions): every k-subset
        -- of each cell's frequent items is enumerated from a table of position combinations and
        -- counted in one aggregate per level, no intermediate tables. Slices with an infrequent
        -- (k-1)-subset are counted too and fail HAVING like every infrequent slice, so the result is
        -- the level-wise one. Many items per cell: the level-wise extension below bounds the work.
        SELECT pg_catalog.max(pg_catalog.cardinality(c.items)) INTO max_items FROM pg_temp._fs_citems AS c;
        combinations := 0;
        binomial := coalesce(max_items, 0);
        FOR k IN 2..max_level LOOP
            binomial := binomial * (max_items - k + 1) / k;
            combinations := combinations + binomial;
        END LOOP;
        IF max_items IS NOT NULL AND combinations <= learning._slices_enumeration_limit() / 100 THEN
            CREATE TEMP TABLE _fs_comb ON COMMIT DROP AS
            WITH RECURSIVE comb (k, p) AS (
                SELECT 1, ARRAY[i] FROM pg_catalog.generate_series(1, max_items) AS i
                UNION ALL
                SELECT comb.k + 1, comb.p || j
                FROM comb
                CROSS JOIN LATERAL pg_catalog.generate_series(comb.p[comb.k] + 1, max_items) AS j
                WHERE comb.k < max_level
            )
            SELECT comb.k, comb.p[comb.k] AS last, comb.p FROM comb WHERE comb.k >= 2;
            SELECT pg_catalog.sum(h.cells * (
                SELECT pg_catalog.count(*) FROM pg_temp._fs_comb AS m WHERE m.last <= h.d
            ))
            INTO enumerated
            FROM (
                SELECT pg_catalog.cardinality(c.items) AS d, pg_catalog.count(*) AS cells
                FROM pg_temp._fs_citems AS c
                GROUP BY 1
            ) AS h;
            IF coalesce(enumerated, 0) <= learning._slices_enumeration_limit() THEN
                ANALYZE pg_temp._fs_comb;
                direct := true;
                -- A slice's item ids packed into one bigint (bits per id from the largest id) when
                -- they fit: hashing one integer per enumerated row is far cheaper than an int[];
                -- the ids are unpacked once per group. Otherwise the int[] itself is the key.
                SELECT pg_catalog.max(i.item_id) INTO max_item FROM pg_temp._fs_items AS i;
                bits := pg_catalog.ceil(pg_catalog.log(2, coalesce(max_item, 0) + 1::numeric))::integer;
                WHILE found_rows > 0 AND level < max_level LOOP
                    level := level + 1;
                    IF bits * level <= 62 THEN
                        SELECT
                            pg_catalog.string_agg(
                                pg_catalog.format('(c.items[m.p[%s]]::bigint << %s)', j, bits * (level - j)),
                                ' | ' ORDER BY j
                            ),
                            pg_catalog.string_agg(
                                pg_catalog.format('((g.k >> %s) & %s)::integer', bits * (level - j), (1::bigint << bits) - 1),
                                ', ' ORDER BY j
                            )
                        INTO key_expr, ids_expr
                        FROM pg_catalog.generate_series(1, level) AS j;
                    ELSE
                        key_expr := (
                            SELECT 'ARRAY[' || pg_catalog.string_agg(pg_catalog.format('c.items[m.p[%s]]', j), ', ' ORDER BY j) || ']'
                            FROM pg_catalog.generate_series(1, level) AS j
                        );
                        ids_expr := NULL;
                    END IF;
                    EXECUTE pg_catalog.format(
                        'INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
                         SELECT i.pattern_key, g.ids, g.stats
                         FROM (
                             SELECT %s AS ids, g.stats
                             FROM (
                                 SELECT %s AS k, ARRAY[%s] AS stats
                                 FROM pg_temp._fs_citems AS c
                                 INNER JOIN pg_temp._fs_comb AS m
                                     ON m.k = %s AND m.last <= pg_catalog.cardinality(c.items)
                                 GROUP BY 1
                                 HAVING pg_catalog.sum(c.s1) >= $1
                             ) AS g
                         ) AS g
                         INNER JOIN pg_temp._fs_items AS i ON g.ids[1] = i.item_id',
                        coalesce('ARRAY[' || ids_expr || ']', 'g.k'),
                        key_expr,
                        sums,
                        level
                    ) USING p_n_min;
                    GET DIAGNOSTICS found_rows = ROW_COUNT;
                END LOOP;
            END IF;
        END IF;

        IF NOT direct THEN
            CREATE TEMP TABLE _fs_cur ON COMMIT DROP AS
            SELECT
                c.cell_id,
                ARRAY[u.item_id] AS ids,
                u.pos::integer AS pos
            FROM pg_temp._fs_citems AS c
            CROSS JOIN LATERAL pg_catalog.unnest(c.items) WITH ORDINALITY AS u (item_id, pos);
            ANALYZE pg_temp._fs_cur;
        END IF;
    END IF;

    WHILE NOT direct AND found_rows > 0 AND level < max_level LOOP
        level := level + 1;
        -- Extend each frequent (k-1)-slice of a cell with each later frequent item of that cell.
        DROP TABLE IF EXISTS pg_temp._fs_next;
        CREATE TEMP TABLE _fs_next ON COMMIT DROP AS
        SELECT
            cur.cell_id,
            cur.ids || u.item_id AS ids,
            cur.pos + u.step::integer AS pos
        FROM pg_temp._fs_cur AS cur
        INNER JOIN pg_temp._fs_citems AS c ON cur.cell_id = c.cell_id
        CROSS JOIN LATERAL
            pg_catalog.unnest(c.items[cur.pos + 1:]) WITH ORDINALITY AS u (item_id, step);
        ANALYZE pg_temp._fs_next;

        DROP TABLE IF EXISTS pg_temp._fs_level;
        EXECUTE pg_catalog.format(
            'CREATE TEMP TABLE _fs_level ON COMMIT DROP AS
             SELECT n.ids, ARRAY[%s] AS stats
             FROM pg_temp._fs_next AS n
             INNER JOIN pg_temp._fs_cells AS c ON n.cell_id = c.cell_id
             GROUP BY n.ids
             HAVING pg_catalog.sum(c.s1) >= $1',
            sums
        ) USING p_n_min;
        GET DIAGNOSTICS found_rows = ROW_COUNT;
        INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
        SELECT i.pattern_key, l.ids, l.stats
        FROM pg_temp._fs_level AS l
        INNER JOIN pg_temp._fs_items AS i ON l.ids[1] = i.item_id;

        IF found_rows > 0 AND level < max_level THEN
            DROP TABLE IF EXISTS pg_temp._fs_cur;
            CREATE TEMP TABLE _fs_cur ON COMMIT DROP AS
            SELECT n.cell_id, n.ids, n.pos
            FROM pg_temp._fs_next AS n
            INNER JOIN pg_temp._fs_level AS l ON n.ids = l.ids;
            ANALYZE pg_temp._fs_cur;
        END IF;
    END LOOP;

    -- Each slice's object from its item ids, grouped by out_id alone (hashing the stats array as a
    -- group key cost more than the objects); the empty slice has no items.
    RETURN QUERY
    SELECT
        o.pattern_key,
        coalesce(x.scope_subset, '{}'::jsonb),
        o.stats
    FROM pg_temp._fs_out AS o
    LEFT JOIN (
        SELECT
            u.out_id,
            pg_catalog.jsonb_object_agg(i.key, i.value) AS scope_subset
        FROM (SELECT f.out_id, pg_catalog.unnest(f.ids) AS item_id FROM pg_temp._fs_out AS f) AS u
        INNER JOIN pg_temp._fs_items AS i ON u.item_id = i.item_id
        GROUP BY u.out_id
    ) AS x ON o.out_id = x.out_id;
    DROP TABLE IF EXISTS pg_temp._fs_cells, pg_temp._fs_items, pg_temp._fs_pairs, pg_temp._fs_citems,
        pg_temp._fs_cur, pg_temp._fs_next, pg_temp._fs_level, pg_temp._fs_out, pg_temp._fs_comb,
        pg_temp._fs_dims, pg_temp._fs_vals;
END;
$$;
