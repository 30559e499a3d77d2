-- Episode capture (design §7): a BEFORE INSERT trigger on pattern_episode_events turns the
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

-- learning.blocked_by: the blocked_by rule (design §7, §10): the gates (ts, slope, halo, in that order) that fail for a decision sample
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

-- learning.summarize_samples: the episode summary of a samples array (design §7) (min/max/median per numeric
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

-- learning._check_episode_limits: refuses a window over learning.episode_limits()
-- (program_limit_exceeded, naming the field, its size and the limit) before any work on it
-- (design §2: input limits). A NULL value is not checked (the trigger passes only the values that
-- change); p_label is the episode_id the messages quote, checked first.
CREATE OR REPLACE FUNCTION learning._check_episode_limits(
    p_label text,
    p_pattern_key text,
    p_episode_id text,
    p_scope jsonb,
    p_factors jsonb
)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim CONSTANT jsonb := learning.episode_limits();
    size bigint;
    samples jsonb := CASE WHEN pg_catalog.jsonb_typeof(p_factors) = 'object' THEN p_factors -> 'samples' END;
BEGIN
    IF pg_catalog.length(p_pattern_key) > (lim ->> 'pattern_key_chars')::integer THEN
        RAISE EXCEPTION 'pattern_episode_events.pattern_key is % characters, limit %',
            pg_catalog.length(p_pattern_key), lim ->> 'pattern_key_chars'
            USING ERRCODE = 'program_limit_exceeded', DETAIL = 'starts with ' || pg_catalog.left(p_pattern_key, 40),
                COLUMN = 'pattern_key', TABLE = 'pattern_episode_events', SCHEMA = 'public';
    END IF;
    IF pg_catalog.length(p_episode_id) > (lim ->> 'episode_id_chars')::integer THEN
        RAISE EXCEPTION 'pattern_episode_events.episode_id is % characters, limit %',
            pg_catalog.length(p_episode_id), lim ->> 'episode_id_chars'
            USING ERRCODE = 'program_limit_exceeded', DETAIL = 'starts with ' || pg_catalog.left(p_episode_id, 40),
                COLUMN = 'episode_id', TABLE = 'pattern_episode_events', SCHEMA = 'public';
    END IF;
    -- Its JSON text, not its stored size: a value read from another table may still be compressed
    -- (the stored size is only a cheap first look).
    size := pg_catalog.pg_column_size(p_scope);
    IF size <= (lim ->> 'scope_bytes')::integer THEN
        size := pg_catalog.octet_length(p_scope::text);
    END IF;
    IF size > (lim ->> 'scope_bytes')::integer THEN
        RAISE EXCEPTION 'pattern_episode_events.scope of episode % is % bytes, limit %',
            p_label, size, lim ->> 'scope_bytes'
            USING ERRCODE = 'program_limit_exceeded', COLUMN = 'scope', TABLE = 'pattern_episode_events', SCHEMA = 'public';
    END IF;
    size := pg_catalog.pg_column_size(p_factors);
    IF size <= (lim ->> 'factors_bytes')::integer THEN
        size := pg_catalog.octet_length(p_factors::text);
    END IF;
    IF size > (lim ->> 'factors_bytes')::integer THEN
        RAISE EXCEPTION 'pattern_episode_events.factors of episode % is % bytes, limit %',
            p_label, size, lim ->> 'factors_bytes'
            USING ERRCODE = 'program_limit_exceeded', COLUMN = 'factors', TABLE = 'pattern_episode_events', SCHEMA = 'public';
    END IF;
    IF pg_catalog.jsonb_typeof(samples) = 'array' THEN
        size := pg_catalog.jsonb_array_length(samples);
        IF size > (lim ->> 'samples')::integer THEN
            RAISE EXCEPTION 'pattern_episode_events.factors.samples of episode % has % samples, limit %',
                p_label, size, lim ->> 'samples'
                USING ERRCODE = 'program_limit_exceeded', COLUMN = 'factors', TABLE = 'pattern_episode_events', SCHEMA = 'public';
        END IF;
        size := pg_catalog.pg_column_size(samples);
        IF size > (lim ->> 'factors_bytes')::integer THEN
            RAISE EXCEPTION 'pattern_episode_events.factors.samples of episode % is % bytes, limit %',
                p_label, size, lim ->> 'factors_bytes'
                USING ERRCODE = 'program_limit_exceeded', COLUMN = 'factors', TABLE = 'pattern_episode_events', SCHEMA = 'public';
        END IF;
    END IF;
END;
$$;

-- learning.episode_summary: the episode summary rule (design §7) on a factors object: samples
-- replaced by their summary (learning.summarize_samples), plus the *_acted values of the last
-- sample (acted) or blocked_by (skipped; learning.blocked_by under learning.gate_thresholds).
-- Samples that are not an array are kept as given, with capture_error. warning: what the trigger
-- logs about the samples (NULL when nothing).
CREATE OR REPLACE FUNCTION learning.episode_summary(
    p_factors jsonb,
    p_decision text,
    OUT factors jsonb,
    OUT warning text
)
RETURNS record
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    last_sample jsonb;
BEGIN
    factors := p_factors;
    IF NOT p_factors ? 'samples' THEN
        RETURN;
    END IF;
    IF pg_catalog.jsonb_typeof(p_factors -> 'samples') IS DISTINCT FROM 'array' THEN
        factors := p_factors || pg_catalog.jsonb_build_object(
            'capture_error', 'samples is ' || pg_catalog.jsonb_typeof(p_factors -> 'samples') || ', not an array'
        );
        warning := 'samples is ' || pg_catalog.jsonb_typeof(p_factors -> 'samples') || ', not an array | kept as given';
        RETURN;
    END IF;
    s := learning.summarize_samples(p_factors -> 'samples');
    last_sample := s.summary -> 'decision_sample';
    factors := (p_factors - 'samples') || s.summary;
    IF p_decision = 'acted' THEN
        factors := factors || pg_catalog.jsonb_build_object(
            'ts_score_acted', last_sample -> 'ts_score',
            'halo_distance_acted', last_sample -> 'halo_distance',
            'slope_acted', last_sample -> 'ema60_slope'
        );
    ELSIF p_decision = 'skipped' THEN
        factors := factors || pg_catalog.jsonb_build_object(
            'blocked_by', learning.blocked_by(last_sample, learning.gate_thresholds(factors))
        );
    END IF;
    IF pg_catalog.cardinality(s.problems) > 0 THEN
        warning := pg_catalog.array_to_string(s.problems, '; ');
    END IF;
END;
$$;

-- learning.trg_pattern_episode_events_capture: BEFORE INSERT, refuses a window over the size limits
-- (learning._check_episode_limits), then replaces factors by learning.episode_summary and logs the
-- event (design §7). A malformed factors value never fails the bot's insert: the row is kept as
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
    is_insert CONSTANT boolean := TG_OP = 'INSERT';
    s record;
    missing text [];
BEGIN
    IF is_insert THEN
        PERFORM learning._check_episode_limits(NEW.episode_id, NEW.pattern_key, NEW.episode_id, NEW.scope, NEW.factors);
    ELSE
        PERFORM learning._check_episode_limits(
            NEW.episode_id,
            CASE WHEN NEW.pattern_key IS DISTINCT FROM OLD.pattern_key THEN NEW.pattern_key END,
            CASE WHEN NEW.episode_id IS DISTINCT FROM OLD.episode_id THEN NEW.episode_id END,
            CASE WHEN NEW.scope IS DISTINCT FROM OLD.scope THEN NEW.scope END,
            CASE WHEN NEW.factors IS DISTINCT FROM OLD.factors THEN NEW.factors END
        );
        RETURN NEW;
    END IF;

    IF pg_catalog.jsonb_typeof(NEW.factors) IS DISTINCT FROM 'object' THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'EPISODE EVENT: Invalid factors | episode_id=%s | reason=factors is %s, not an object | kept as given',
            NEW.episode_id, coalesce(pg_catalog.jsonb_typeof(NEW.factors), 'null')
        ));
        PERFORM learning._log('INFO', pg_catalog.format(
            'EPISODE EVENT: pattern=%s | decision=%s | episode_id=%s', NEW.pattern_key, NEW.decision, NEW.episode_id
        ));
        RETURN NEW;
    END IF;

    s := learning.episode_summary(NEW.factors, NEW.decision);
    IF s.warning IS NOT NULL THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'EPISODE EVENT: Invalid samples | episode_id=%s | reason=%s', NEW.episode_id, s.warning
        ));
    END IF;
    missing := learning._missing_thresholds(s.factors);
    IF pg_catalog.cardinality(missing) > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'EPISODE EVENT: Missing threshold data | episode_id=%s | missing=[%s]',
            NEW.episode_id, pg_catalog.array_to_string(missing, ', ')
        ));
    END IF;

    NEW.factors := s.factors;
    PERFORM learning._log('INFO', pg_catalog.format(
        'EPISODE EVENT: pattern=%s | decision=%s | episode_id=%s%s',
        NEW.pattern_key, NEW.decision, NEW.episode_id,
        CASE
            WHEN NEW.decision = 'skipped' AND pg_catalog.jsonb_typeof(s.factors -> 'blocked_by') = 'array'
                THEN ' | blocked_by=[' || coalesce((
                    SELECT pg_catalog.string_agg(b.g, ', ' ORDER BY b.ord)
                    FROM pg_catalog.jsonb_array_elements_text(s.factors -> 'blocked_by') WITH ORDINALITY AS b (g, ord)
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
