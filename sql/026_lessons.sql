-- The lesson writer shared by both miners (design §9): the tuning miner and the strength builder
-- hand it their run's lessons; it stores them, deactivates the rest and returns the counts.

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

-- learning._stats_close: two stats objects have the same keys and values, numbers within 1e-12
-- (learning._num_close), everything else equal. The lesson writer and the strength materializer
-- compare with it so that re-running on unchanged data writes no row.
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

-- learning._drop_unstorable_lessons: a lesson of pg_temp.lesson_rows whose key cannot be stored
-- (learning_lessons_scope_key and pm_overrides' keys are btree rows of at most 2704 bytes) is left
-- out with one WARNING, not the run's failure (design §2). Returns how many.
CREATE OR REPLACE FUNCTION learning._drop_unstorable_lessons(p_job text)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_unstored bigint;
    patterns text;
BEGIN
    WITH unstored AS (
        DELETE FROM pg_temp.lesson_rows AS t
        WHERE pg_catalog.octet_length(t.pattern_key) + pg_catalog.pg_column_size(t.scope_subset) > 2400
        RETURNING t.pattern_key
    )

    SELECT pg_catalog.count(*), pg_catalog.string_agg(DISTINCT pg_catalog.left(u.pattern_key, 64), ',')
    INTO n_unstored, patterns
    FROM unstored AS u;
    IF n_unstored > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            '%s: lessons not stored | lessons=%s | patterns=%s | reason=pattern_key and scope_subset over 2400 bytes',
            p_job, n_unstored, pg_catalog.left(patterns, 640)
        ));
    END IF;
    RETURN n_unstored;
END;
$$;

-- learning._write_lessons: the one lesson writer (design §9). The run's lessons, pg_temp.lesson_rows
-- (pattern_key, scope_subset, n, stats), become the active lessons of (module pm, p_category) with
-- lesson_type p_type; every other active lesson of (pm, p_category) becomes inactive, except those
-- of the patterns in pg_temp.slice_skipped (left out by the run's slice budget: kept as they are).
-- A lesson is written only when it changed: status, n or lesson_type differ, or its stats differ
-- beyond learning._stats_close (numbers within 1e-12 relative). One tolerance for both miners: the
-- strength sums add floats in an order that changes from run to run, and bit noise must not count
-- as a change; the tuning rates are ratios of integer counts, reproduced exactly, so for them the
-- tolerance decides nothing (their window bounds compare exactly). Returns the counts.
-- The run's lessons are matched once to the stored ones (one hash join on the jsonb key); from
-- there the writes go by id, as set statements instead of one upsert, whose speculative insertion
-- costs a second descent of the (jsonb) unique index per row. Stale is decided by id against what
-- the match read, so a lesson another session changed meanwhile cannot hide a stale one. A
-- concurrent miner is kept out by the job slot; should another writer insert one of the new
-- lessons in between, the unique key refuses it and the run fails whole (the next run redoes it).
-- learning_lessons' filtered text columns are analyzed first (statistics on its jsonb columns cost
-- ~0.1-0.2 s and inform no plan); the INSERT looks at it by id only (an anti-join on the jsonb key
-- against the table being inserted into re-read every row just inserted: quadratic). Merge joins
-- off: sorting the jsonb keys cost 0.5 s at 44k lessons where hashing costs 0.08 s.
CREATE OR REPLACE FUNCTION learning._write_lessons(
    p_job text,
    p_category text,
    p_type text,
    OUT lessons integer,
    OUT inserted integer,
    OUT updated integer,
    OUT deactivated integer
)
RETURNS record
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_mergejoin = off
AS $$
BEGIN
    PERFORM learning._drop_unstorable_lessons(p_job);
    SELECT pg_catalog.count(*) INTO lessons FROM pg_temp.lesson_rows;
    ANALYZE pg_temp.lesson_rows (pattern_key); -- its size is what the plans need
    ANALYZE public.learning_lessons (module, action_category, status);
    DROP TABLE IF EXISTS pg_temp._lw_match;
    CREATE TEMP TABLE _lw_match ON COMMIT DROP AS
    SELECT t.pattern_key, t.scope_subset, t.n, t.stats, l.id AS lesson_id
    FROM pg_temp.lesson_rows AS t
    LEFT JOIN public.learning_lessons AS l
        ON
            l.module = 'pm'
            AND l.action_category = p_category
            AND l.pattern_key = t.pattern_key
            AND l.scope_subset = t.scope_subset;
    ANALYZE pg_temp._lw_match (lesson_id);

    -- Judged on the row as the UPDATE finds it (a lesson another session deactivated meanwhile is
    -- active again); equal objects first: the tolerant comparison is a SQL function call (~25 us).
    UPDATE public.learning_lessons AS l
    SET n = m.n, stats = m.stats, lesson_type = p_type, status = 'active', updated_at = pg_catalog.now()
    FROM pg_temp._lw_match AS m
    WHERE
        l.id = m.lesson_id
        AND (
            l.status IS DISTINCT FROM 'active'
            OR l.n IS DISTINCT FROM m.n
            OR l.lesson_type IS DISTINCT FROM p_type
            OR (l.stats IS DISTINCT FROM m.stats AND NOT learning._stats_close(l.stats, m.stats))
        );
    GET DIAGNOSTICS updated = ROW_COUNT;

    -- NOT EXISTS, not NOT IN: a hashed NOT IN subplan turns into a re-scan per row once the
    -- lessons outgrow work_mem (seen: 8 minutes at 130k lessons).
    UPDATE public.learning_lessons AS l
    SET status = 'inactive', updated_at = pg_catalog.now()
    WHERE
        l.module = 'pm'
        AND l.action_category = p_category
        AND l.status = 'active'
        AND NOT EXISTS (SELECT FROM pg_temp._lw_match AS m WHERE m.lesson_id = l.id)
        AND NOT EXISTS (SELECT FROM pg_temp.slice_skipped AS k WHERE k.pattern_key = l.pattern_key);
    GET DIAGNOSTICS deactivated = ROW_COUNT;

    INSERT INTO public.learning_lessons (
        module, pattern_key, action_category, scope_subset, n, stats, lesson_type, status, created_at, updated_at
    )
    SELECT 'pm', m.pattern_key, p_category, m.scope_subset, m.n, m.stats, p_type, 'active', pg_catalog.now(), pg_catalog.now()
    FROM pg_temp._lw_match AS m
    -- new, or deleted by another session since the match
    WHERE m.lesson_id IS NULL OR NOT EXISTS (SELECT FROM public.learning_lessons AS l WHERE l.id = m.lesson_id);
    GET DIAGNOSTICS inserted = ROW_COUNT;
    DROP TABLE pg_temp._lw_match;
END;
$$;
