-- Scope slices (design §8), shared by the strength builder and the tuning miner: the scope
-- dimensions of a row, the run's slice budget, and the level-wise (apriori) search of every slice
-- with enough support.

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
--   4 such pairs still fits the 2704-byte btree rows of the lessons' and overrides' unique keys
--   (a number is judged by its scale and magnitude before it is printed, design §2);
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
            pg_catalog.octet_length(e.key) <= 200 AND CASE
                WHEN pg_catalog.jsonb_typeof(e.value) <> 'number' THEN pg_catalog.octet_length(e.value::text) <= 200
                -- A number is printed only when its text is short: 1e131071 is 22 bytes of jsonb
                -- and 131,072 characters of text.
                WHEN pg_catalog.scale(e.value::numeric) > 200 OR pg_catalog.abs(e.value::numeric) >= 1e200 THEN false
                ELSE pg_catalog.octet_length(e.value::text) <= 200
            END AS fits
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

-- learning._bound_slice_patterns: learning._slices_bound of the patterns of pg_temp._sb_patterns
-- ranked in (p_after, p_after + p_batch]: per pattern, how many frequent values each key has, then
-- the power sums of those counts (keys with the same count taken together). A step of
-- learning._admit_slice_budget.
CREATE OR REPLACE FUNCTION learning._bound_slice_patterns(
    p_after integer,
    p_batch integer,
    p_n_min integer,
    p_max_level integer
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH batch_patterns AS (
        SELECT x.pattern_key
        FROM pg_temp._sb_patterns AS x
        WHERE x.ord > p_after AND x.ord <= p_after + p_batch
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
        WHERE p_max_level >= 1 AND pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
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
    SET bound = learning._slices_bound(s.p, p_max_level)
    FROM batch_patterns AS bp
    LEFT JOIN power_sums AS s ON bp.pattern_key = s.pattern_key
    WHERE p.pattern_key = bp.pattern_key;
END;
$$;

-- learning._skip_slice_patterns: the patterns of pg_temp._sb_patterns past the budget (no bound,
-- a bound alone over it, or past where the running sum of the bounds in rank order exceeds it) go
-- to pg_temp.slice_skipped, their cells out of pg_temp.slice_cells, with one WARNING naming the
-- first ten. Returns how many. A step of learning._admit_slice_budget.
CREATE OR REPLACE FUNCTION learning._skip_slice_patterns(p_job text, p_budget bigint, p_budget_key text)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    skipped bigint;
    admitted_bound numeric;
    first_patterns text;
BEGIN
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
    IF skipped = 0 THEN
        RETURN 0;
    END IF;
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
    RETURN skipped;
END;
$$;

-- learning._admit_slice_budget: keeps a mining run within p_budget slices whatever one writer
-- inserted (design §8, §14). Patterns of pg_temp.slice_cells with support (summed stats[1]) >= p_n_min
-- are taken in order of support (ties by pattern_key), each bounded before any slice is enumerated
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
        PERFORM learning._bound_slice_patterns(done, batch, p_n_min, max_level);
        done := done + batch;
        batch := batch * 2;
        -- Spent once the bounds so far (a prefix of the order) no longer fit.
        spent := coalesce(
            (SELECT pg_catalog.sum(p.bound) FROM pg_temp._sb_patterns AS p WHERE p.bound <= p_budget) > p_budget,
            false
        );
    END LOOP;

    skipped := learning._skip_slice_patterns(p_job, p_budget, p_budget_key);
    DROP TABLE pg_temp._sb_patterns;
    RETURN skipped;
END;
$$;

-- learning._fs_sums: the element-wise sums of the columns <p_prefix>1..<p_prefix>N as SQL text,
-- e.g. 'pg_catalog.sum(c.s1), pg_catalog.sum(c.s2)' (written out once per run: array subscripts
-- per row are slow).
CREATE OR REPLACE FUNCTION learning._fs_sums(p_prefix text, p_width integer)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (
    SELECT pg_catalog.string_agg(pg_catalog.format('pg_catalog.sum(%s%s)', p_prefix, i), ', ' ORDER BY i)
    FROM pg_catalog.generate_series(1, p_width) AS i
);

-- learning._fs_slice_key: the SQL text of the key of a slice of p_level items at positions m.p[1..]
-- of a cell's frequent items c.items: the ids packed into one bigint (p_bits per id) when they fit
-- in 62 bits, since hashing one integer per enumerated row is far cheaper than an int[]; else the
-- int[] itself. With p_unpack, the ids again as an int[] from a packed key g.k (unpacked once per
-- slice). Ids start at 1, so packed keys of different lengths never collide.
CREATE OR REPLACE FUNCTION learning._fs_slice_key(p_level integer, p_bits integer, p_unpack boolean DEFAULT false)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (
    SELECT
        CASE
            WHEN p_bits * p_level > 62 AND p_unpack THEN 'g.k'
            WHEN p_bits * p_level > 62
                THEN 'ARRAY[' || pg_catalog.string_agg(pg_catalog.format('c.items[m.p[%s]]', j), ', ' ORDER BY j) || ']'
            WHEN p_unpack
                THEN 'ARRAY[' || pg_catalog.string_agg(pg_catalog.format(
                    '((g.k >> %s) & %s)::integer', p_bits * (p_level - j), (1::bigint << p_bits) - 1
                ), ', ' ORDER BY j) || ']'
            ELSE pg_catalog.string_agg(
                pg_catalog.format('(c.items[m.p[%s]]::bigint << %s)', j, p_bits * (p_level - j)), ' | ' ORDER BY j
            )
        END
    FROM pg_catalog.generate_series(1, p_level) AS j
);

-- learning._fs_prepare: the first steps of learning.frequent_slices. The cells grouped by (pattern,
-- dims) with their sums unpacked into columns s1..sN (pg_temp._fs_cells); the empty slice of every
-- pattern with enough support (level 0); the frequent items: distinct (pattern, key, value) pairs
-- with enough support, numbered in key order so that a cell's items sorted by id are sorted by key
-- and a slice's ids increase (pg_temp._fs_items, level 1); each cell's frequent items as one sorted
-- array with the cell's sums alongside (pg_temp._fs_citems: apriori, only they can extend a slice).
-- Level 0 and 1 go to pg_temp._fs_out, level 1's keys to pg_temp._fs_level. Returns the level-1
-- count (0 when level 0 found nothing or p_max_level < 1: then the item tables are not made).
CREATE OR REPLACE FUNCTION learning._fs_prepare(p_n_min integer, p_width integer, p_max_level integer)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_rows bigint;
BEGIN
    EXECUTE pg_catalog.format(
        'CREATE TEMP TABLE _fs_cells ON COMMIT DROP AS
         SELECT pg_catalog.row_number() OVER () AS cell_id, g.*
         FROM (
             SELECT c.pattern_key, c.dims, %s
             FROM pg_temp.slice_cells AS c
             WHERE c.pattern_key IS NOT NULL
             GROUP BY c.pattern_key, c.dims
         ) AS g',
        (SELECT pg_catalog.string_agg(pg_catalog.format('pg_catalog.sum(c.stats[%s]) AS s%s', i, i), ', ' ORDER BY i)
         FROM pg_catalog.generate_series(1, p_width) AS i)
    );
    -- Only the columns plans depend on (the join key and the grouping): stats on dims (jsonb) cost ~0.15 s.
    ANALYZE pg_temp._fs_cells (cell_id, pattern_key);
    EXECUTE pg_catalog.format(
        'INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
         SELECT c.pattern_key, ''{}''::integer [], ARRAY[%s]
         FROM pg_temp._fs_cells AS c
         GROUP BY c.pattern_key
         HAVING pg_catalog.sum(c.s1) >= $1',
        learning._fs_sums('c.s', p_width)
    ) USING p_n_min;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    IF found_rows = 0 OR p_max_level < 1 THEN
        RETURN 0;
    END IF;

    -- Every scalar (key, value) pair of every cell of a pattern with enough support.
    CREATE TEMP TABLE _fs_raw ON COMMIT DROP AS
    SELECT c.cell_id, c.pattern_key, e.key COLLATE "C" AS key, e.value
    FROM pg_temp._fs_cells AS c
    INNER JOIN pg_temp._fs_out AS o ON c.pattern_key = o.pattern_key
    CROSS JOIN LATERAL pg_catalog.jsonb_each(
        CASE WHEN pg_catalog.jsonb_typeof(c.dims) = 'object' THEN c.dims ELSE '{}'::jsonb END
    ) AS e (key, value)
    WHERE pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean');
    ANALYZE pg_temp._fs_raw (cell_id, pattern_key, key); -- not value: jsonb stats cost more than they inform

    -- Level 1: the frequent items with their sums.
    EXECUTE pg_catalog.format(
        'INSERT INTO pg_temp._fs_items (item_id, pattern_key, key, value, stats)
         SELECT
             pg_catalog.row_number() OVER (ORDER BY d.key, d.pattern_key, d.value)::integer,
             d.pattern_key, d.key, d.value, d.stats
         FROM (
             SELECT r.pattern_key, r.key, r.value, ARRAY[%s] AS stats
             FROM pg_temp._fs_raw AS r
             INNER JOIN pg_temp._fs_cells AS c ON r.cell_id = c.cell_id
             GROUP BY r.pattern_key, r.key, r.value
             HAVING pg_catalog.sum(c.s1) >= $1
         ) AS d',
        learning._fs_sums('c.s', p_width)
    ) USING p_n_min;
    GET DIAGNOSTICS found_rows = ROW_COUNT;
    ANALYZE pg_temp._fs_items (item_id, pattern_key, key);
    INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
    SELECT i.pattern_key, ARRAY[i.item_id], i.stats FROM pg_temp._fs_items AS i;
    CREATE TEMP TABLE _fs_level ON COMMIT DROP AS
    SELECT i.item_id::bigint AS k FROM pg_temp._fs_items AS i;

    -- Cells with two frequent items or more (only they hold a slice of level 2 or more).
    EXECUTE pg_catalog.format(
        'CREATE TEMP TABLE _fs_citems ON COMMIT DROP AS
         SELECT x.cell_id, x.items, %s
         FROM (
             SELECT r.cell_id, pg_catalog.array_agg(i.item_id ORDER BY i.item_id) AS items
             FROM pg_temp._fs_raw AS r
             INNER JOIN pg_temp._fs_items AS i
                 ON r.pattern_key = i.pattern_key AND r.key = i.key AND r.value = i.value
             GROUP BY r.cell_id
             HAVING pg_catalog.count(*) >= 2
         ) AS x
         INNER JOIN pg_temp._fs_cells AS c ON x.cell_id = c.cell_id',
        (SELECT pg_catalog.string_agg(pg_catalog.format('c.s%s', i), ', ' ORDER BY i)
         FROM pg_catalog.generate_series(1, p_width) AS i)
    );
    DROP TABLE pg_temp._fs_raw;
    ANALYZE pg_temp._fs_citems (cell_id);
    RETURN found_rows;
END;
$$;

-- learning._fs_prefix_filter: the apriori condition of a level-p_level candidate as SQL text: its
-- (p_level - 1)-item prefix is a frequent slice. A candidate whose every shorter prefix is frequent
-- was itself counted, so "no prefix of length j is one of level j's infrequent candidates" says
-- the same, for the levels that pruned anything (p_pruned_levels): their packed keys p_pruned
-- ($2, hashed by PostgreSQL) are few in the usual case and no join is needed. With p_semijoin (an
-- infrequent candidate's key did not fit in a bigint), the prefix is looked up among the frequent
-- slices of the level before (pg_temp._fs_prev). 'true' when nothing was pruned yet: then every
-- candidate of every level was frequent.
CREATE OR REPLACE FUNCTION learning._fs_prefix_filter(
    p_level integer,
    p_bits integer,
    p_pruned_levels integer [],
    p_semijoin boolean
)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE
    WHEN p_semijoin
        THEN pg_catalog.format(
            'EXISTS (SELECT FROM pg_temp._fs_prev AS f WHERE f.k = %s)', learning._fs_slice_key(p_level - 1, p_bits)
        )
    ELSE coalesce(
        (
            SELECT
                pg_catalog.string_agg(
                    pg_catalog.format('(%s) <> ALL ($2)', learning._fs_slice_key(j, p_bits)), ' AND ' ORDER BY j
                )
            FROM pg_catalog.unnest(p_pruned_levels) AS j
            WHERE j < p_level
        ),
        'true'
    )
END;

-- learning._fs_level: level p_level of learning.frequent_slices (design §8). Candidates are the
-- p_level-subsets of each cell's frequent items that pass the apriori condition
-- (learning._fs_prefix_filter), taken from a table of position combinations (pg_temp._fs_comb) so
-- that every candidate of every cell is counted in one aggregate with no per-cell rows stored.
-- The frequent ones go to pg_temp._fs_out and become the next level's pg_temp._fs_level; the packed
-- keys of the infrequent ones are returned in pruned (NULL when they do not fit in a bigint), the
-- count of the frequent ones in slices.
CREATE OR REPLACE FUNCTION learning._fs_level(
    p_n_min integer,
    p_level integer,
    p_width integer,
    p_bits integer,
    p_pruned bigint [],
    p_filter text,
    OUT slices bigint,
    OUT pruned bigint []
)
RETURNS record
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_pruned bigint;
BEGIN
    ALTER TABLE pg_temp._fs_level RENAME TO _fs_prev;
    EXECUTE pg_catalog.format(
        'CREATE TEMP TABLE _fs_level ON COMMIT DROP AS
         SELECT %s AS k, ARRAY[%s] AS stats
         FROM pg_temp._fs_citems AS c
         INNER JOIN pg_temp._fs_comb AS m ON m.k = %s AND m.last <= pg_catalog.cardinality(c.items)
         WHERE %s
         GROUP BY 1',
        learning._fs_slice_key(p_level, p_bits),
        learning._fs_sums('c.s', p_width),
        p_level,
        p_filter
    ) USING p_n_min, p_pruned;
    DROP TABLE pg_temp._fs_prev;
    IF p_bits * p_level <= 62 THEN
        WITH gone AS (DELETE FROM pg_temp._fs_level AS g WHERE g.stats[1] < p_n_min RETURNING g.k)
        SELECT pg_catalog.count(*), pg_catalog.array_agg(gone.k) INTO n_pruned, pruned FROM gone;
    ELSE
        DELETE FROM pg_temp._fs_level AS g WHERE g.stats[1] < p_n_min;
        GET DIAGNOSTICS n_pruned = ROW_COUNT;
        pruned := CASE WHEN n_pruned = 0 THEN '{}'::bigint [] END;
    END IF;
    pruned := coalesce(pruned, CASE WHEN n_pruned = 0 THEN '{}'::bigint [] END);
    EXECUTE pg_catalog.format(
        'INSERT INTO pg_temp._fs_out (pattern_key, ids, stats)
         SELECT i.pattern_key, g.ids, g.stats
         FROM (SELECT %s AS ids, g.stats FROM pg_temp._fs_level AS g) AS g
         INNER JOIN pg_temp._fs_items AS i ON g.ids[1] = i.item_id',
        learning._fs_slice_key(p_level, p_bits, true)
    );
    GET DIAGNOSTICS slices = ROW_COUNT;
    IF slices > 0 THEN
        ANALYZE pg_temp._fs_level;
    END IF;
END;
$$;

-- learning._fs_dims: the distinct dims of pg_temp.slice_cells with their cell counts
-- (pg_temp._fs_dims, made once per run) and their scalar keys, "C" order.
CREATE OR REPLACE FUNCTION learning._fs_dims()
RETURNS text []
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.to_regclass('pg_temp._fs_dims') IS NULL THEN
        CREATE TEMP TABLE _fs_dims ON COMMIT DROP AS
        SELECT c.dims, pg_catalog.count(*) AS cells
        FROM pg_temp.slice_cells AS c
        WHERE c.pattern_key IS NOT NULL
        GROUP BY c.dims;
    END IF;
    RETURN (
        SELECT coalesce(pg_catalog.array_agg(DISTINCT e.key COLLATE "C" ORDER BY e.key COLLATE "C"), '{}')
        FROM pg_temp._fs_dims AS d
        CROSS JOIN LATERAL pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(d.dims) = 'object' THEN d.dims ELSE '{}'::jsonb END
        ) AS e (key, value)
        WHERE pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
    );
END;
$$;

-- learning._fs_prefer_grouping_sets: whether learning.frequent_slices counts by grouping sets
-- (learning._fs_grouping_sets), its one fast path (design §8): when the cells have few scope keys
-- in all, so that the grouping sets (every subset of <= p_max_level keys) number <= 256, far
-- under the 4,096-set cap, and <= 2x the subsets a cell of average width has (sparse keys keep
-- the level-wise search, which enumerates a cell's own subsets only). At most 40 keys:
-- jsonb_build_object's 80 arguments stay under the 100 a function takes.
CREATE OR REPLACE FUNCTION learning._fs_prefer_grouping_sets(p_max_level integer)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text [] := learning._fs_dims();
    n_keys integer := pg_catalog.cardinality(keys);
    keys_per_cell numeric;
    grouping_sets numeric := 0;
    combinations numeric := 0;
    binomial numeric := 1;
BEGIN
    IF n_keys > 40 OR p_max_level < 1 THEN
        RETURN false;
    END IF;
    SELECT pg_catalog.sum(d.cells * (
        SELECT pg_catalog.count(*)
        FROM pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(d.dims) = 'object' THEN d.dims ELSE '{}'::jsonb END
        ) AS e (key, value)
        WHERE pg_catalog.jsonb_typeof(e.value) IN ('string', 'number', 'boolean')
    )) / nullif(pg_catalog.sum(d.cells), 0)
    INTO keys_per_cell
    FROM pg_temp._fs_dims AS d;
    FOR k IN 0..LEAST(p_max_level, n_keys) LOOP
        IF k > 0 THEN
            binomial := binomial * (n_keys - k + 1) / k;
        END IF;
        grouping_sets := grouping_sets + binomial;
    END LOOP;
    binomial := 1;
    FOR k IN 0..p_max_level LOOP
        IF k > 0 THEN
            binomial := binomial * (pg_catalog.round(coalesce(keys_per_cell, 0)) - k + 1) / k;
        END IF;
        EXIT WHEN binomial <= 0;
        combinations := combinations + binomial;
    END LOOP;
    RETURN grouping_sets <= 256 AND grouping_sets <= 2 * combinations;
END;
$$;

-- learning._fs_grouping_sets: the slices of learning.frequent_slices counted by one GROUP BY
-- GROUPING SETS (design §8): one column per scope key, holding the number of the cell's value
-- there (NULL: no scalar value), and every set of <= p_max_level keys counted in one pass, each
-- cell added to each of its sets, nothing enumerated into tables. A group with NULL in a grouped
-- column is no slice (HAVING). Every slice is counted, so no pruning is needed: a slice's count is
-- never above its parts' for both callers' cells, so this is the level-wise search's result
-- (a property test checks both against a brute force). Values are numbered first: hashing the jsonb
-- values in every grouping set cost 3x more.
CREATE OR REPLACE FUNCTION learning._fs_grouping_sets(p_n_min integer, p_width integer, p_max_level integer)
RETURNS TABLE (pattern_key text, scope_subset jsonb, stats double precision [])
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keys text [] := learning._fs_dims();
    sets text;
    parts record;
BEGIN
    IF p_max_level < 1 THEN
        keys := '{}'::text []; -- only the empty slice is asked for
    END IF;
    DROP TABLE IF EXISTS pg_temp._fs_vals;
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
    WITH RECURSIVE s (last, cols, k) AS (
        SELECT 0, ''::text, 0
        UNION ALL
        SELECT j, s.cols || CASE WHEN s.k > 0 THEN ', ' ELSE '' END || 'c.k' || j, s.k + 1
        FROM s
        CROSS JOIN LATERAL pg_catalog.generate_series(s.last + 1, pg_catalog.cardinality(keys)) AS j
        WHERE s.k < p_max_level
    )
    SELECT pg_catalog.string_agg('(' || s.cols || ')', ', ' ORDER BY s.k, s.cols) INTO sets FROM s;
    SELECT
        coalesce(pg_catalog.string_agg(pg_catalog.format('%L, o%s.value', g.key, g.i), ', ' ORDER BY g.i), '') AS object,
        coalesce(pg_catalog.string_agg(pg_catalog.format(
            ' LEFT JOIN pg_temp._fs_vals AS o%s ON o%s.val_id = g.k%s', g.i, g.i, g.i), '' ORDER BY g.i), '') AS object_joins,
        coalesce(pg_catalog.string_agg(pg_catalog.format(', c.k%s', g.i), '' ORDER BY g.i), '') AS columns,
        coalesce(pg_catalog.string_agg(pg_catalog.format(', v%s.val_id AS k%s', g.i, g.i), '' ORDER BY g.i), '') AS vals,
        coalesce(pg_catalog.string_agg(pg_catalog.format(
            ' LEFT JOIN pg_temp._fs_vals AS v%s ON v%s.key = %L AND v%s.value = c.dims -> %L',
            g.i, g.i, g.key, g.i, g.key), '' ORDER BY g.i), '') AS joins,
        coalesce(pg_catalog.string_agg(pg_catalog.format(
            ' AND (GROUPING(c.k%s) = 1 OR c.k%s IS NOT NULL)', g.i, g.i), '' ORDER BY g.i), '') AS having
    INTO parts
    FROM pg_catalog.unnest(keys) WITH ORDINALITY AS g (key, i);
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
        parts.object, parts.columns, learning._fs_sums('c.s', p_width), parts.vals,
        (SELECT pg_catalog.string_agg(pg_catalog.format('c.stats[%s]::double precision AS s%s', i, i), ', ' ORDER BY i)
         FROM pg_catalog.generate_series(1, p_width) AS i),
        parts.joins, sets, parts.having, parts.object_joins
    ) USING p_n_min;
    DROP TABLE pg_temp._fs_vals;
END;
$$;

-- learning._fs_level_wise: the slices of learning.frequent_slices by the level-wise search
-- (design §8), for cells whose stats have p_width elements. Level by level (apriori): level k extends only the frequent slices of level k - 1, with frequent
-- items of the same cell whose key sorts after the slice's last key (learning._fs_level); a slice's
-- count is never above its parts' (both callers' counts are unit counts, inclusion-exclusion
-- included), so the pruned slices are exactly the infrequent ones. Pairs are numbered in key order
-- so a slice is a packed bigint or an int[] while it is counted (far cheaper than jsonb), and its
-- object is built once at the end. jit off: the temp tables' row estimates (28k groups guessed for
-- 1 real one) priced small statements above jit_above_cost, and compiling them cost ~0.1-0.2 s.
CREATE OR REPLACE FUNCTION learning._fs_level_wise(p_n_min integer, p_max_dims integer, p_width integer)
RETURNS TABLE (pattern_key text, scope_subset jsonb, stats double precision [])
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    width integer := p_width;
    max_level integer := GREATEST(coalesce(p_max_dims, 0), 0);
    level integer := 1;
    found_rows bigint;
    max_items integer;
    bits integer;
    step record;
    pruned bigint [] := '{}'::bigint [];
    pruned_levels integer [] := '{}'::integer [];
    semijoin boolean := false;
BEGIN
    DROP TABLE IF EXISTS pg_temp._fs_cells, pg_temp._fs_raw, pg_temp._fs_items, pg_temp._fs_citems,
        pg_temp._fs_level, pg_temp._fs_prev, pg_temp._fs_out, pg_temp._fs_comb;
    CREATE TEMP TABLE _fs_items (
        item_id integer, pattern_key text, key text COLLATE "C", value jsonb, stats double precision []
    ) ON COMMIT DROP;
    CREATE TEMP TABLE _fs_out (
        out_id bigint GENERATED ALWAYS AS IDENTITY,
        pattern_key text,
        ids integer [],
        stats double precision []
    ) ON COMMIT DROP;

    found_rows := learning._fs_prepare(p_n_min, width, max_level);
    IF found_rows > 0 AND max_level >= 2 THEN
        SELECT pg_catalog.max(pg_catalog.cardinality(c.items)) INTO max_items FROM pg_temp._fs_citems AS c;
    END IF;
    IF max_items IS NOT NULL THEN
        -- Position combinations k = 2..max_level of up to max_items items, ascending.
        CREATE TEMP TABLE _fs_comb ON COMMIT DROP AS
        WITH RECURSIVE comb (k, p) AS (
            SELECT 1, ARRAY[i] FROM pg_catalog.generate_series(1, max_items) AS i
            UNION ALL
            SELECT comb.k + 1, comb.p || j
            FROM comb
            CROSS JOIN LATERAL pg_catalog.generate_series(comb.p[comb.k] + 1, max_items) AS j
            WHERE comb.k < LEAST(max_level, max_items)
        )
        SELECT comb.k, comb.p[comb.k] AS last, comb.p FROM comb WHERE comb.k >= 2;
        ANALYZE pg_temp._fs_comb;
        SELECT pg_catalog.ceil(pg_catalog.log(2, coalesce(pg_catalog.max(i.item_id), 0) + 1::numeric))::integer
        INTO bits
        FROM pg_temp._fs_items AS i;
        WHILE found_rows > 0 AND level < LEAST(max_level, max_items) LOOP
            level := level + 1;
            step := learning._fs_level(
                p_n_min, level, width, bits, pruned,
                learning._fs_prefix_filter(level, bits, pruned_levels, semijoin)
            );
            found_rows := step.slices;
            IF step.pruned IS NULL THEN
                semijoin := true;
            ELSIF pg_catalog.cardinality(step.pruned) > 0 THEN
                pruned := pruned || step.pruned;
                pruned_levels := pruned_levels || level;
            END IF;
        END LOOP;
    END IF;

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
    DROP TABLE IF EXISTS pg_temp._fs_cells, pg_temp._fs_items, pg_temp._fs_citems, pg_temp._fs_level,
        pg_temp._fs_out, pg_temp._fs_comb;
END;
$$;

-- learning.frequent_slices: every slice (sub-object of a cell's dims, <= p_max_dims pairs, {} included)
-- of pg_temp.slice_cells whose summed stats[1] >= p_n_min, with element-wise summed stats (design §8).
-- The level-wise (apriori) search (learning._fs_level_wise), or, when the cells have few scope keys
-- in all, its one fast path: one GROUP BY GROUPING SETS (learning._fs_prefer_grouping_sets,
-- learning._fs_grouping_sets), which gives the same slices (property-tested) and halves the
-- strength builder's slice count on realistic data (the builder beats pandas only with it).
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
    max_level integer := GREATEST(coalesce(p_max_dims, 0), 0);
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
    DROP TABLE IF EXISTS pg_temp._fs_dims;
    IF learning._fs_prefer_grouping_sets(max_level) THEN
        RETURN QUERY SELECT g.pattern_key, g.scope_subset, g.stats FROM learning._fs_grouping_sets(p_n_min, width, max_level) AS g;
    ELSE
        RETURN QUERY SELECT l.pattern_key, l.scope_subset, l.stats FROM learning._fs_level_wise(p_n_min, max_level, width) AS l;
    END IF;
    DROP TABLE IF EXISTS pg_temp._fs_dims;
END;
$$;
