-- Tuning miner (design §9): per pattern_key and scope slice of the episode windows in the
-- lookback window, the rates WR, FPR, MR, DR as learning_lessons of type tuning_rates.

-- learning._tuning_stats: the miner's rates (design §9), the lesson stats of one slice from its summed counts
-- [n, n_acted, n_skipped, acted_success, acted_failure, skipped_success, skipped_failure, n_neutral].
-- Rates exclude neutral outcomes; a rate whose denominator is 0 is null (undefined, not 0).
CREATE OR REPLACE FUNCTION learning._tuning_stats(p_sums double precision [])
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.jsonb_build_object(
    'wr', p_sums[4] / nullif(p_sums[2], 0),
    'fpr', p_sums[5] / nullif(p_sums[2], 0),
    'mr', p_sums[6] / nullif(p_sums[3], 0),
    'dr', p_sums[7] / nullif(p_sums[3], 0),
    'n_acted', p_sums[2]::bigint,
    'n_skipped', p_sums[3]::bigint,
    'n_wins', p_sums[4]::bigint,
    'n_fps', p_sums[5]::bigint,
    'n_misses', p_sums[6]::bigint,
    'n_dodges', p_sums[7]::bigint,
    'n_neutral', p_sums[8]::bigint,
    'n_total', (p_sums[1] + p_sums[8])::bigint
);

-- learning._tuning_cells: the miner's cells (design §8, §9), pg_temp.slice_cells: the episode
-- windows of (p_as_of - p_lookback, p_as_of] with an outcome, counted per distinct (pattern_key,
-- scope) first, so _mining_dimensions runs once per distinct scope, not once per row; counts are
-- [n, n_acted, n_skipped, acted_success, acted_failure, skipped_success, skipped_failure, n_neutral]
-- with n = success + failure. A scope that cannot be sliced whole is mined without what it cannot
-- be (one WARNING naming its episodes), and every window is still learned from. Returns n summed.
CREATE OR REPLACE FUNCTION learning._tuning_cells(p_as_of timestamptz, p_lookback interval, p_dims text [])
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_too_long bigint;
    n_too_many bigint;
    n_unmined bigint;
    unmined_ids text [];
BEGIN
    DROP TABLE IF EXISTS pg_temp.slice_cells;
    CREATE TEMP TABLE slice_cells ON COMMIT DROP AS
    SELECT
        g.pattern_key,
        m.dims,
        g.stats,
        CASE WHEN m.too_long > 0 OR m.too_many > 0 THEN g.scope END AS unmined_scope,
        m.too_long,
        m.too_many
    FROM (
        SELECT
            e.pattern_key,
            e.scope,
            ARRAY[
                pg_catalog.count(*) FILTER (WHERE e.outcome IN ('success', 'failure')),
                pg_catalog.count(*) FILTER (WHERE e.outcome IN ('success', 'failure') AND e.decision = 'acted'),
                pg_catalog.count(*) FILTER (WHERE e.outcome IN ('success', 'failure') AND e.decision = 'skipped'),
                pg_catalog.count(*) FILTER (WHERE e.outcome = 'success' AND e.decision = 'acted'),
                pg_catalog.count(*) FILTER (WHERE e.outcome = 'failure' AND e.decision = 'acted'),
                pg_catalog.count(*) FILTER (WHERE e.outcome = 'success' AND e.decision = 'skipped'),
                pg_catalog.count(*) FILTER (WHERE e.outcome = 'failure' AND e.decision = 'skipped'),
                pg_catalog.count(*) FILTER (WHERE e.outcome = 'neutral')
            ]::double precision [] AS stats
        FROM public.pattern_episode_events AS e
        WHERE e.timestamp > p_as_of - p_lookback AND e.timestamp <= p_as_of
            AND e.outcome IN ('success', 'failure', 'neutral')
        GROUP BY e.pattern_key, e.scope
    ) AS g
    CROSS JOIN LATERAL learning._mining_dimensions(g.scope, p_dims) AS m;

    SELECT pg_catalog.sum(c.too_long), pg_catalog.sum(c.too_many)
    INTO n_too_long, n_too_many
    FROM pg_temp.slice_cells AS c
    WHERE c.unmined_scope IS NOT NULL;
    IF n_too_long IS NOT NULL THEN
        SELECT pg_catalog.count(*), (pg_catalog.array_agg(x.episode_id ORDER BY x.episode_id COLLATE "C"))[1:10]
        INTO n_unmined, unmined_ids
        FROM (
            SELECT DISTINCT e.episode_id
            FROM public.pattern_episode_events AS e
            INNER JOIN pg_temp.slice_cells AS c
                ON e.pattern_key = c.pattern_key AND e.scope = c.unmined_scope
            WHERE e.timestamp > p_as_of - p_lookback AND e.timestamp <= p_as_of
                AND e.outcome IN ('success', 'failure', 'neutral')
        ) AS x;
        PERFORM learning._log_unmined_scopes('TuningMiner', 'episodes', n_unmined, unmined_ids, n_too_long, n_too_many);
    END IF;
    RETURN (SELECT coalesce(pg_catalog.sum(c.stats[1]), 0)::bigint FROM pg_temp.slice_cells AS c);
END;
$$;

-- learning._log_tuning_lessons: the miner's lesson lines: a Created lesson line (INFO) for each
-- lesson of pg_temp.lesson_rows with new evidence (changed: not only a moved window), a Scope slice
-- passed line (DEBUG) for each non-empty slice. Returns how many were new evidence.
CREATE OR REPLACE FUNCTION learning._log_tuning_lessons()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_changed integer;
BEGIN
    PERFORM learning._log('INFO', pg_catalog.format(
        'TuningMiner: Created lesson | pattern=%s | scope=%s | n=%s | wr=%s fpr=%s mr=%s dr=%s',
        w.pattern_key, learning._fmt_slice(w.scope_subset), w.n,
        learning._fmt((w.stats ->> 'wr')::double precision, 3),
        learning._fmt((w.stats ->> 'fpr')::double precision, 3),
        learning._fmt((w.stats ->> 'mr')::double precision, 3),
        learning._fmt((w.stats ->> 'dr')::double precision, 3)
    ))
    FROM pg_temp.lesson_rows AS w
    WHERE w.changed
    ORDER BY w.pattern_key, w.scope_subset;
    GET DIAGNOSTICS n_changed = ROW_COUNT;

    PERFORM learning._log('DEBUG', pg_catalog.format(
        'TuningMiner: Scope slice passed | pattern=%s | scope=%s | n=%s',
        t.pattern_key, learning._fmt_slice(t.scope_subset), t.n
    ))
    FROM pg_temp.lesson_rows AS t
    WHERE t.scope_subset <> '{}'::jsonb
    ORDER BY t.pattern_key, t.scope_subset;
    RETURN n_changed;
END;
$$;

-- learning.mine_tuning_lessons: mine tuning_rates lessons in (as_of - lookback, as_of] (design §9);
-- returns the number of lessons. Cells (learning._tuning_cells), the run's slice budget
-- (learning._admit_slice_budget: patterns that would not fit are left out before any slice is
-- enumerated and keep their stored lessons), slices (learning.frequent_slices), rates
-- (learning._tuning_stats), then the shared writer (learning._write_lessons): unchanged lessons
-- are not written, lessons not re-mined become inactive.
CREATE OR REPLACE FUNCTION learning.mine_tuning_lessons(
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
AS $$
DECLARE
    tun jsonb := learning.tunables();
    as_of timestamptz := coalesce(p_as_of, pg_catalog.now());
    lookback interval := coalesce(
        p_lookback,
        pg_catalog.make_interval(secs => (tun ->> 'lookback_days')::double precision * 86400)
    );
    n_min integer := coalesce(p_n_min, (tun ->> 'n_min')::integer);
    max_dims integer := (tun ->> 'max_slice_dims')::integer;
    started timestamptz := pg_catalog.clock_timestamp();
    n_events bigint;
    n_changed integer;
    window_info jsonb;
    w record;
BEGIN
    IF n_min IS NULL OR n_min < 1 THEN
        RAISE EXCEPTION 'n_min must be a positive integer, got %', coalesce(n_min::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lookback <= interval '0' THEN
        RAISE EXCEPTION 'lookback must be positive, got %', lookback
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    window_info := pg_catalog.jsonb_build_object(
        'window_start', as_of - lookback,
        'window_end', as_of,
        'lookback_days', pg_catalog.date_part('epoch', lookback) / 86400
    );

    n_events := learning._tuning_cells(
        as_of, lookback, ARRAY(SELECT pg_catalog.jsonb_array_elements_text(tun -> 'scope_dims'))
    );
    PERFORM learning._log('INFO', pg_catalog.format(
        'TuningMiner starting | events=%s | lookback_days=%s', n_events, window_info ->> 'lookback_days'
    ));
    PERFORM learning._admit_slice_budget(
        'TuningMiner', n_min, max_dims, (tun ->> 'max_tuning_lessons')::bigint, 'max_tuning_lessons'
    );

    DROP TABLE IF EXISTS pg_temp.lesson_rows;
    CREATE TEMP TABLE lesson_rows ON COMMIT DROP AS
    SELECT
        f.pattern_key,
        f.scope_subset,
        f.stats[1]::integer AS n,
        learning._tuning_stats(f.stats) || window_info AS stats,
        -- New evidence (not only a moved window): these get a Created lesson line.
        NOT EXISTS (
            SELECT FROM public.learning_lessons AS l
            WHERE l.module = 'pm' AND l.action_category = 'tuning'
                AND l.pattern_key = f.pattern_key AND l.scope_subset = f.scope_subset
                AND l.lesson_type = 'tuning_rates' AND l.status = 'active'
                AND l.n = f.stats[1]
                AND l.stats - 'window_start' - 'window_end' - 'lookback_days' = learning._tuning_stats(f.stats)
        ) AS changed
    FROM learning.frequent_slices(n_min, max_dims) AS f;

    w := learning._write_lessons('TuningMiner', 'tuning', 'tuning_rates');
    n_changed := learning._log_tuning_lessons();
    PERFORM learning._log('INFO', pg_catalog.format(
        'TuningMiner completed | lessons_created=%s | changed=%s | written=%s | deactivated=%s | duration=%ss',
        w.lessons, n_changed, w.inserted + w.updated, w.deactivated,
        pg_catalog.round(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started)::numeric, 3)
    ));
    DROP TABLE IF EXISTS pg_temp.slice_cells, pg_temp.lesson_rows, pg_temp.slice_skipped;
    RETURN w.lessons;
END;
$$;

-- learning.tuning_lesson_window: the window a tuning lesson was mined on (its stats' window_start and
-- window_end), or (as_of - lookback_days, as_of] for a lesson without one (e.g. the bot's own).
-- One rule for the materializer's simulation and for `explain tuning`.
CREATE OR REPLACE FUNCTION learning.tuning_lesson_window(
    p_stats jsonb,
    p_as_of timestamptz,
    OUT window_start timestamptz,
    OUT window_end timestamptz
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT
        coalesce(
            (p_stats ->> 'window_start')::timestamptz,
            p_as_of - pg_catalog.make_interval(
                secs => (learning.tunables() ->> 'lookback_days')::double precision * 86400
            )
        ),
        coalesce((p_stats ->> 'window_end')::timestamptz, p_as_of);
END;
