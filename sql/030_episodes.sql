-- Episode capture (SPEC section 6): a BEFORE INSERT trigger on pattern_episode_events turns the
-- bot's factors.samples plus thresholds into the summary the tuning miner and the lever simulation
-- read, and learning.set_episode_outcome sets the outcome of every window of an episode.

-- learning._num: a jsonb number as float8, NULL for anything else (strings, booleans, null, |x| >= 1e300);
-- |x| < 1e-300 is 0 (the float8 cast would raise on underflow). Pure pg_catalog SQL, no SET: it inlines.
CREATE OR REPLACE FUNCTION learning._num(p_value jsonb)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE
    WHEN pg_catalog.jsonb_typeof(p_value) = 'number'
        THEN CASE
            WHEN pg_catalog.abs((p_value #>> '{}')::numeric) >= 1e300 THEN NULL
            WHEN pg_catalog.abs((p_value #>> '{}')::numeric) < 1e-300 THEN 0.0
            ELSE (p_value #>> '{}')::double precision
        END
END;

-- learning._flag: a jsonb boolean as boolean, NULL for anything else.
-- The bot's flags are booleans; a string "true" is junk, not a flag.
CREATE OR REPLACE FUNCTION learning._flag(p_value jsonb)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(p_value) = 'boolean' THEN (p_value #>> '{}')::boolean END;

-- learning._fmt_slice: a scope as the plan's log lines show it, {timeframe: 15m, chain: solana}.
-- Keys sorted so that one slice always prints the same.
CREATE OR REPLACE FUNCTION learning._fmt_slice(p_scope jsonb)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN '{' || coalesce(
    (
        SELECT pg_catalog.string_agg(e.key || ': ' || (e.value #>> '{}'), ', ' ORDER BY e.key)
        FROM pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(p_scope) = 'object' THEN p_scope ELSE '{}'::jsonb END
        ) AS e (key, value)
    ),
    ''
) || '}';

-- learning.gate_thresholds: [ts_min, halo_max, slope_min] of an event's factors, defaults filled in.
-- Missing or non-numeric thresholds default to 0.60, 1.0, 0.0; a non-positive ts_min or halo_max
-- counts as missing (so a lever's sign always means the same direction). Shared with the simulation.
CREATE OR REPLACE FUNCTION learning.gate_thresholds(p_factors jsonb)
RETURNS double precision []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN ARRAY[
    CASE
        WHEN learning._num(p_factors -> 'ts_min') > 0 THEN learning._num(p_factors -> 'ts_min')
        ELSE 0.60
    END,
    CASE
        WHEN learning._num(p_factors -> 'halo_max') > 0 THEN learning._num(p_factors -> 'halo_max')
        ELSE 1.0
    END,
    coalesce(learning._num(p_factors -> 'slope_min'), 0.0)
]::double precision [];

-- learning._missing_thresholds: the names of the thresholds gate_thresholds had to default.
-- Same rule as gate_thresholds, kept beside it so the warning and the default never disagree.
CREATE OR REPLACE FUNCTION learning._missing_thresholds(p_factors jsonb)
RETURNS text []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.array_remove(
    ARRAY[
        CASE WHEN coalesce(learning._num(p_factors -> 'ts_min') > 0, false) THEN NULL ELSE 'ts_min' END,
        CASE WHEN coalesce(learning._num(p_factors -> 'halo_max') > 0, false) THEN NULL ELSE 'halo_max' END,
        CASE WHEN learning._num(p_factors -> 'slope_min') IS NULL THEN 'slope_min' END
    ]::text [],
    NULL
);

-- learning.blocked_by: the gates (ts, slope, halo, in that order) that fail for a decision sample
-- under thresholds [ts_min, halo_max, slope_min]; the value when present, else its flag, else failed.
-- This is the base judgement of the lever simulation (lowcap_learning.simulate mirrors it in numpy).
CREATE OR REPLACE FUNCTION learning.blocked_by(p_sample jsonb, p_thresholds double precision [])
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (
    SELECT coalesce(pg_catalog.jsonb_agg(g.gate ORDER BY g.ord), '[]'::jsonb)
    FROM (
        VALUES
        (
            1, 'ts',
            CASE
                WHEN learning._num(p_sample -> 'ts_score') IS NOT NULL
                    THEN learning._num(p_sample -> 'ts_score') < p_thresholds[1]
                ELSE NOT coalesce(learning._flag(p_sample -> 'ts_ok'), false)
            END
        ),
        (
            2, 'slope',
            CASE
                WHEN
                    learning._num(p_sample -> 'ema60_slope') IS NOT NULL
                    OR learning._num(p_sample -> 'ema144_slope') IS NOT NULL
                    THEN NOT (
                        coalesce(learning._num(p_sample -> 'ema60_slope') > p_thresholds[3], false)
                        OR coalesce(learning._num(p_sample -> 'ema144_slope') >= p_thresholds[3], false)
                    )
                ELSE NOT coalesce(learning._flag(p_sample -> 'slope_ok'), false)
            END
        ),
        (
            3, 'halo',
            CASE
                WHEN learning._num(p_sample -> 'halo_distance') IS NOT NULL
                    THEN learning._num(p_sample -> 'halo_distance') > p_thresholds[2]
                ELSE NOT coalesce(learning._flag(p_sample -> 'entry_zone_ok'), false)
            END
        )
    ) AS g (ord, gate, failed)
    WHERE g.failed
);

-- learning.summarize_samples: the SPEC 6 summary of a samples array (min/max/median per numeric
-- field, gate flags any-over-samples, decision_sample) plus a list of problems found in it.
-- One set-based statement over the array (PL/pgSQL so that its plan is cached across rows);
-- non-object samples and non-numeric junk are ignored.
CREATE OR REPLACE FUNCTION learning.summarize_samples(
    p_samples jsonb,
    OUT summary jsonb,
    OUT problems text []
)
RETURNS record
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n_all bigint;
    n_obj bigint;
    last_sample jsonb;
    numeric_part jsonb;
    flags jsonb;
    junk text;
BEGIN
    -- One pass over the array: counts and the last object sample.
    SELECT
        pg_catalog.count(*),
        pg_catalog.count(*) FILTER (WHERE pg_catalog.jsonb_typeof(e.v) = 'object'),
        (pg_catalog.array_agg(e.v ORDER BY e.ord DESC) FILTER (WHERE pg_catalog.jsonb_typeof(e.v) = 'object'))[1]
    INTO n_all, n_obj, last_sample
    FROM pg_catalog.jsonb_array_elements(p_samples) WITH ORDINALITY AS e (v, ord);

    -- One pass over every (sample, field): per-field statistics, flags and junk counts.
    WITH per_key AS (
        SELECT
            f.key,
            pg_catalog.min(learning._num(f.value)) AS mn,
            pg_catalog.max(learning._num(f.value)) AS mx,
            pg_catalog.percentile_cont(0.5) WITHIN GROUP (ORDER BY learning._num(f.value)) AS med,
            pg_catalog.count(learning._num(f.value)) AS n_num,
            pg_catalog.count(*) FILTER (
                WHERE learning._num(f.value) IS NULL
                AND pg_catalog.jsonb_typeof(f.value) NOT IN ('null', 'boolean')
            ) AS n_junk,
            pg_catalog.bool_or(learning._flag(f.value)) AS any_flag
        FROM pg_catalog.jsonb_array_elements(p_samples) AS e (v)
        CROSS JOIN LATERAL pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(e.v) = 'object' THEN e.v ELSE '{}'::jsonb END
        ) AS f (key, value)
        GROUP BY f.key
    )

    SELECT
        pg_catalog.jsonb_object_agg(x.k, x.v) FILTER (WHERE x.k IS NOT NULL),
        (
            SELECT pg_catalog.jsonb_object_agg(q.key, q.any_flag)
            FROM per_key AS q
            WHERE q.key IN ('entry_zone_ok', 'ts_ok', 'slope_ok') AND q.any_flag IS NOT NULL
        ),
        (
            SELECT pg_catalog.string_agg(q.key || '(' || q.n_junk || ')', ', ' ORDER BY q.key)
            FROM per_key AS q
            WHERE q.n_junk > 0
                AND (q.n_num > 0 OR q.key IN ('ts_score', 'halo_distance', 'ema60_slope', 'ema144_slope'))
        )
    INTO numeric_part, flags, junk
    FROM per_key AS p
    LEFT JOIN LATERAL (
        VALUES
        (p.key || '_min', pg_catalog.to_jsonb(p.mn)),
        (p.key || '_max', pg_catalog.to_jsonb(p.mx)),
        (p.key || '_median', pg_catalog.to_jsonb(p.med))
    ) AS x (k, v) ON p.n_num > 0;

    summary := coalesce(numeric_part, '{}'::jsonb)
        || coalesce(flags, '{}'::jsonb)
        || pg_catalog.jsonb_build_object(
            'decision_sample', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'ts_score', learning._num(last_sample -> 'ts_score'),
                'halo_distance', learning._num(last_sample -> 'halo_distance'),
                'ema60_slope', learning._num(last_sample -> 'ema60_slope'),
                'ema144_slope', learning._num(last_sample -> 'ema144_slope'),
                'ts_ok', learning._flag(last_sample -> 'ts_ok'),
                'slope_ok', learning._flag(last_sample -> 'slope_ok'),
                'entry_zone_ok', learning._flag(last_sample -> 'entry_zone_ok')
            )),
            'n_samples', n_obj
        );
    problems := pg_catalog.array_remove(
        ARRAY[
            CASE
                WHEN n_all > n_obj THEN pg_catalog.format('%s of %s samples are not objects', n_all - n_obj, n_all)
            END,
            'non-numeric values ignored: ' || junk
        ]::text [],
        NULL
    );
END;
$$;

-- learning.episode_limits: the size limits of an episode window, one place for the trigger, the
-- outcome setter and the docs. Keys are btree index keys (and log fields): 200 characters, as an
-- action's pattern_key in closed_trades. A window's samples are summarised in one statement whose
-- time and memory grow with their count and size: 10,000 samples (the synthetic history sends 3)
-- and 8 MiB of factors keep one window to a few seconds and a few hundred MB at worst.
-- A scope is a handful of dimension values; 64 kB is a hundred times a real one.
CREATE OR REPLACE FUNCTION learning.episode_limits()
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN '{"pattern_key_chars": 200, "episode_id_chars": 200, "scope_bytes": 65536,
    "factors_bytes": 8388608, "samples": 10000}'::jsonb;

-- learning.trg_pattern_episode_events_capture: BEFORE INSERT, refuses a window over the size limits
-- (program_limit_exceeded, naming the field, its size and the limit, before any work on it), then
-- replaces factors.samples by the summary, adds blocked_by (skipped) or the *_acted values (acted),
-- and logs the event. A malformed factors value never fails the bot's insert: the row is kept as
-- given and a WARNING is logged. On UPDATE of those columns only the limits apply, to the values
-- that change (a stored row is not judged again by a later limit, nor summarised again).
CREATE OR REPLACE FUNCTION learning.trg_pattern_episode_events_capture()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim CONSTANT jsonb := learning.episode_limits();
    is_insert CONSTANT boolean := TG_OP = 'INSERT';
    f jsonb := NEW.factors;
    raw_samples jsonb;
    size bigint;
    summary jsonb;
    problems text [];
    last_sample jsonb;
    missing text [];
    blocked jsonb;
BEGIN
    -- Limits before any work on the value; the keys before any message quotes episode_id.
    IF is_insert OR NEW.pattern_key IS DISTINCT FROM OLD.pattern_key THEN
        size := pg_catalog.length(NEW.pattern_key);
        IF size > (lim ->> 'pattern_key_chars')::integer THEN
            RAISE EXCEPTION 'pattern_episode_events.pattern_key is % characters, limit %',
                size, lim ->> 'pattern_key_chars'
                USING ERRCODE = 'program_limit_exceeded', DETAIL = 'starts with ' || pg_catalog.left(NEW.pattern_key, 40),
                    COLUMN = 'pattern_key', TABLE = 'pattern_episode_events', SCHEMA = 'public';
        END IF;
    END IF;
    IF is_insert OR NEW.episode_id IS DISTINCT FROM OLD.episode_id THEN
        size := pg_catalog.length(NEW.episode_id);
        IF size > (lim ->> 'episode_id_chars')::integer THEN
            RAISE EXCEPTION 'pattern_episode_events.episode_id is % characters, limit %',
                size, lim ->> 'episode_id_chars'
                USING ERRCODE = 'program_limit_exceeded', DETAIL = 'starts with ' || pg_catalog.left(NEW.episode_id, 40),
                    COLUMN = 'episode_id', TABLE = 'pattern_episode_events', SCHEMA = 'public';
        END IF;
    END IF;
    IF is_insert OR NEW.scope IS DISTINCT FROM OLD.scope THEN
        -- Its JSON text, not its stored size: a value read from another table may still be
        -- compressed (the stored size is only a cheap first look).
        size := pg_catalog.pg_column_size(NEW.scope);
        IF size <= (lim ->> 'scope_bytes')::integer THEN
            size := pg_catalog.octet_length(NEW.scope::text);
        END IF;
        IF size > (lim ->> 'scope_bytes')::integer THEN
            RAISE EXCEPTION 'pattern_episode_events.scope of episode % is % bytes, limit %',
                NEW.episode_id, size, lim ->> 'scope_bytes'
                USING ERRCODE = 'program_limit_exceeded',
                    COLUMN = 'scope', TABLE = 'pattern_episode_events', SCHEMA = 'public';
        END IF;
    END IF;
    IF is_insert OR NEW.factors IS DISTINCT FROM OLD.factors THEN
        size := pg_catalog.pg_column_size(NEW.factors);
        IF size <= (lim ->> 'factors_bytes')::integer THEN
            size := pg_catalog.octet_length(NEW.factors::text);
        END IF;
        IF size > (lim ->> 'factors_bytes')::integer THEN
            RAISE EXCEPTION 'pattern_episode_events.factors of episode % is % bytes, limit %',
                NEW.episode_id, size, lim ->> 'factors_bytes'
                USING ERRCODE = 'program_limit_exceeded',
                    COLUMN = 'factors', TABLE = 'pattern_episode_events', SCHEMA = 'public';
        END IF;
        IF pg_catalog.jsonb_typeof(f) = 'object' THEN
            raw_samples := f -> 'samples';
        END IF;
        IF pg_catalog.jsonb_typeof(raw_samples) = 'array' THEN
            size := pg_catalog.jsonb_array_length(raw_samples);
            IF size > (lim ->> 'samples')::integer THEN
                RAISE EXCEPTION 'pattern_episode_events.factors.samples of episode % has % samples, limit %',
                    NEW.episode_id, size, lim ->> 'samples'
                    USING ERRCODE = 'program_limit_exceeded',
                        COLUMN = 'factors', TABLE = 'pattern_episode_events', SCHEMA = 'public';
            END IF;
            size := pg_catalog.pg_column_size(raw_samples);
            IF size > (lim ->> 'factors_bytes')::integer THEN
                RAISE EXCEPTION 'pattern_episode_events.factors.samples of episode % is % bytes, limit %',
                    NEW.episode_id, size, lim ->> 'factors_bytes'
                    USING ERRCODE = 'program_limit_exceeded',
                        COLUMN = 'factors', TABLE = 'pattern_episode_events', SCHEMA = 'public';
            END IF;
        END IF;
    END IF;
    IF NOT is_insert THEN
        RETURN NEW;
    END IF;

    IF pg_catalog.jsonb_typeof(f) IS DISTINCT FROM 'object' THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'EPISODE EVENT: Invalid factors | episode_id=%s | reason=factors is %s, not an object | kept as given',
            NEW.episode_id, coalesce(pg_catalog.jsonb_typeof(f), 'null')
        ));
        PERFORM learning._log('INFO', pg_catalog.format(
            'EPISODE EVENT: pattern=%s | decision=%s | episode_id=%s', NEW.pattern_key, NEW.decision, NEW.episode_id
        ));
        RETURN NEW;
    END IF;

    IF f ? 'samples' THEN
        IF pg_catalog.jsonb_typeof(raw_samples) = 'array' THEN
            SELECT s.summary, s.problems INTO summary, problems
            FROM learning.summarize_samples(raw_samples) AS s;
            last_sample := summary -> 'decision_sample';
            f := (f - 'samples') || summary;
            IF NEW.decision = 'acted' THEN
                f := f || pg_catalog.jsonb_build_object(
                    'ts_score_acted', last_sample -> 'ts_score',
                    'halo_distance_acted', last_sample -> 'halo_distance',
                    'slope_acted', last_sample -> 'ema60_slope'
                );
            ELSIF NEW.decision = 'skipped' THEN
                blocked := learning.blocked_by(last_sample, learning.gate_thresholds(f));
                f := f || pg_catalog.jsonb_build_object('blocked_by', blocked);
            END IF;
            IF pg_catalog.cardinality(problems) > 0 THEN
                PERFORM learning._log('WARNING', pg_catalog.format(
                    'EPISODE EVENT: Invalid samples | episode_id=%s | reason=%s',
                    NEW.episode_id, pg_catalog.array_to_string(problems, '; ')
                ));
            END IF;
        ELSE
            f := f || pg_catalog.jsonb_build_object(
                'capture_error', 'samples is ' || pg_catalog.jsonb_typeof(f -> 'samples') || ', not an array'
            );
            PERFORM learning._log('WARNING', pg_catalog.format(
                'EPISODE EVENT: Invalid samples | episode_id=%s | reason=samples is %s, not an array | kept as given',
                NEW.episode_id, pg_catalog.jsonb_typeof(f -> 'samples')
            ));
        END IF;
    END IF;

    missing := learning._missing_thresholds(f);
    IF pg_catalog.cardinality(missing) > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'EPISODE EVENT: Missing threshold data | episode_id=%s | missing=[%s]',
            NEW.episode_id, pg_catalog.array_to_string(missing, ', ')
        ));
    END IF;

    NEW.factors := f;
    PERFORM learning._log('INFO', pg_catalog.format(
        'EPISODE EVENT: pattern=%s | decision=%s | episode_id=%s%s',
        NEW.pattern_key, NEW.decision, NEW.episode_id,
        CASE
            WHEN NEW.decision = 'skipped' AND pg_catalog.jsonb_typeof(f -> 'blocked_by') = 'array'
                THEN ' | blocked_by=[' || coalesce((
                    SELECT pg_catalog.string_agg(b.g, ', ' ORDER BY b.ord)
                    FROM pg_catalog.jsonb_array_elements_text(f -> 'blocked_by') WITH ORDINALITY AS b (g, ord)
                ), '') || ']'
            ELSE ''
        END
    ));
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS _100_capture ON public.pattern_episode_events;
CREATE TRIGGER _100_capture
BEFORE INSERT OR UPDATE OF pattern_key, episode_id, scope, factors ON public.pattern_episode_events
FOR EACH ROW EXECUTE FUNCTION learning.trg_pattern_episode_events_capture();

-- learning.set_episode_outcome: set the outcome of every window of an episode; returns the count.
-- updated_at moves only on windows whose outcome changes, so a repeated call is a no-op.
CREATE OR REPLACE FUNCTION learning.set_episode_outcome(p_episode_id text, p_outcome text)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    windows integer;
BEGIN
    IF p_outcome IS NULL OR p_outcome NOT IN ('success', 'failure', 'neutral') THEN
        RAISE EXCEPTION 'outcome must be success, failure or neutral, got %', coalesce(p_outcome, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_episode_id IS NULL THEN
        RAISE EXCEPTION 'episode_id is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- No window has a longer id (the capture trigger refuses it), and the id goes into the log.
    IF pg_catalog.length(p_episode_id) > (learning.episode_limits() ->> 'episode_id_chars')::integer THEN
        RAISE EXCEPTION 'episode_id is % characters, limit %',
            pg_catalog.length(p_episode_id), learning.episode_limits() ->> 'episode_id_chars'
            USING ERRCODE = 'program_limit_exceeded', DETAIL = 'starts with ' || pg_catalog.left(p_episode_id, 40);
    END IF;
    UPDATE public.pattern_episode_events AS e
    SET
        outcome = p_outcome,
        updated_at = CASE WHEN e.outcome IS DISTINCT FROM p_outcome THEN pg_catalog.now() ELSE e.updated_at END
    WHERE e.episode_id = p_episode_id;
    GET DIAGNOSTICS windows = ROW_COUNT;
    PERFORM learning._log(
        CASE WHEN windows = 0 THEN 'WARNING' ELSE 'INFO' END,
        pg_catalog.format(
            'EPISODE OUTCOME: episode_id=%s | outcome=%s | windows_updated=%s', p_episode_id, p_outcome, windows
        )
    );
    RETURN windows;
END;
$$;
