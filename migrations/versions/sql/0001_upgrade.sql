-- FROZEN by scripts/freeze_migration.py from sql/MANIFEST: do not edit; edit sql/ and re-freeze.
-- file: sql/000_schema.sql
-- lowcap-learning: schema and tables.
-- Shared data tables live in public (the bot reads and writes them) and are adopted when they
-- exist: CREATE TABLE IF NOT EXISTS, ADD COLUMN IF NOT EXISTS, constraints NOT VALID. Everything
-- that is ours alone lives in schema learning.

CREATE SCHEMA IF NOT EXISTS learning;

COMMENT ON SCHEMA learning IS
'lowcap-learning: functions, triggers, audit and log tables. Data tables are in public.';

-- Which shared tables existed before us: downgrade drops only the ones we created.
CREATE TABLE IF NOT EXISTS learning.adopted_tables (
    table_name text PRIMARY KEY,
    existed_before boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO learning.adopted_tables (table_name, existed_before)
SELECT
    t.table_name,
    pg_catalog.to_regclass('public.' || t.table_name) IS NOT NULL
FROM (
    VALUES
    ('learning_configs'),
    ('lowcap_positions'),
    ('closed_trades'),
    ('pattern_episode_events'),
    ('pattern_trade_events'),
    ('learning_lessons'),
    ('pm_overrides')
) AS t (table_name)
ON CONFLICT (table_name) DO NOTHING;

-- ---------------------------------------------------------------------------------------------
-- learning_configs: one jsonb document per module (decision_maker, pm, learning).
CREATE TABLE IF NOT EXISTS public.learning_configs (
    module_id text PRIMARY KEY,
    config_data jsonb NOT NULL,
    updated_at timestamptz DEFAULT now(),
    updated_by text,
    notes text
);

-- ---------------------------------------------------------------------------------------------
-- lowcap_positions: the bot's positions; we only rewrite total_allocation_pct.
CREATE TABLE IF NOT EXISTS public.lowcap_positions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_chain text NOT NULL,
    token_contract text NOT NULL,
    timeframe text NOT NULL,
    status text NOT NULL DEFAULT 'watchlist',
    total_allocation_pct double precision,
    alloc_policy jsonb,
    current_trade_id uuid,
    completed_trades jsonb DEFAULT '[]'::jsonb,
    closed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lowcap_positions_token_timeframe_key
    UNIQUE (token_contract, token_chain, timeframe),
    CONSTRAINT lowcap_positions_timeframe_check
    CHECK (timeframe IN ('1m', '15m', '1h', '4h', '1d')),
    CONSTRAINT lowcap_positions_status_check
    CHECK (
        status IN (
            'dormant', 'watchlist', 'active', 'shadow', 'paused', 'archived', 'regime_driver'
        )
    )
) WITH (fillfactor = 80);

-- The redistribution groups by token and filters by status.
CREATE INDEX IF NOT EXISTS lowcap_positions_token_idx
ON public.lowcap_positions (token_contract, token_chain);

-- ---------------------------------------------------------------------------------------------
-- closed_trades: the input of timeframe learning and strength facts. Append-only.
CREATE TABLE IF NOT EXISTS public.closed_trades (
    trade_id text PRIMARY KEY,
    position_id text,
    token_contract text,
    token_chain text,
    timeframe text NOT NULL,
    rpnl_pct double precision NOT NULL,
    closed_at timestamptz NOT NULL,
    actions jsonb NOT NULL DEFAULT '[]'::jsonb,
    did_trim boolean,
    reached_s3 boolean,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT closed_trades_trade_id_check CHECK (trade_id <> ''),
    CONSTRAINT closed_trades_timeframe_check
    CHECK (timeframe IN ('1m', '15m', '1h', '4h', '1d')),
    -- NaN compares above every number in PostgreSQL, so this refuses NaN and +-inf too.
    CONSTRAINT closed_trades_rpnl_pct_check
    CHECK (rpnl_pct >= -100 AND rpnl_pct <= 1000000),
    CONSTRAINT closed_trades_actions_check
    CHECK (pg_catalog.jsonb_typeof(actions) = 'array'),
    CONSTRAINT closed_trades_closed_at_check
    CHECK (closed_at > '-infinity' AND closed_at < 'infinity')
);

CREATE INDEX IF NOT EXISTS closed_trades_closed_at_idx
ON public.closed_trades (closed_at, trade_id);

-- ---------------------------------------------------------------------------------------------
-- pattern_episode_events: one row per window of a PM decision episode.
CREATE TABLE IF NOT EXISTS public.pattern_episode_events (
    id bigserial PRIMARY KEY,
    scope jsonb NOT NULL,
    pattern_key text NOT NULL,
    episode_id text NOT NULL,
    trade_id text,
    decision text NOT NULL,
    outcome text,
    factors jsonb NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pattern_episode_events_decision_check
    CHECK (decision IN ('acted', 'skipped')),
    CONSTRAINT pattern_episode_events_outcome_check
    CHECK (outcome IN ('success', 'failure', 'neutral'))
);

CREATE INDEX IF NOT EXISTS pattern_episode_events_episode_idx
ON public.pattern_episode_events (episode_id);

CREATE INDEX IF NOT EXISTS pattern_episode_events_pattern_ts_idx
ON public.pattern_episode_events (pattern_key, timestamp);

-- ---------------------------------------------------------------------------------------------
-- pattern_trade_events: one row per PM action of a closed trade (strength facts).
CREATE TABLE IF NOT EXISTS public.pattern_trade_events (
    id bigserial PRIMARY KEY,
    pattern_key text NOT NULL,
    action_category text NOT NULL,
    scope jsonb NOT NULL,
    rr double precision,
    pnl_usd double precision,
    trade_id text NOT NULL,
    timestamp timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz DEFAULT now()
);

ALTER TABLE public.pattern_trade_events
ADD COLUMN IF NOT EXISTS roi double precision,
ADD COLUMN IF NOT EXISTS did_trim boolean,
ADD COLUMN IF NOT EXISTS reached_s3 boolean;

-- The bot's rows always carry rr; ours carry roi instead.
ALTER TABLE public.pattern_trade_events ALTER COLUMN rr DROP NOT NULL;

-- The bot keys trades by uuid, closed_trades by text: one text column serves both (lossless).
DO $adopt$
BEGIN
    IF (
        SELECT a.atttypid = 'uuid'::regtype
        FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = 'public.pattern_trade_events'::regclass
            AND a.attname = 'trade_id'
    ) THEN
        ALTER TABLE public.pattern_trade_events ALTER COLUMN trade_id TYPE text;
    END IF;
END
$adopt$;

CREATE INDEX IF NOT EXISTS pattern_trade_events_pattern_ts_idx
ON public.pattern_trade_events (pattern_key, timestamp);

CREATE INDEX IF NOT EXISTS pattern_trade_events_ts_idx
ON public.pattern_trade_events (timestamp);

-- ---------------------------------------------------------------------------------------------
-- learning_lessons: mined lessons (pm_strength, tuning_rates).
CREATE TABLE IF NOT EXISTS public.learning_lessons (
    id bigserial PRIMARY KEY,
    module text NOT NULL,
    pattern_key text NOT NULL,
    action_category text NOT NULL,
    scope_subset jsonb NOT NULL DEFAULT '{}'::jsonb,
    n integer NOT NULL DEFAULT 0,
    stats jsonb NOT NULL DEFAULT '{}'::jsonb,
    lesson_type text NOT NULL DEFAULT 'pm_strength',
    status text NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT learning_lessons_scope_key
    UNIQUE (module, pattern_key, action_category, scope_subset)
);

-- ---------------------------------------------------------------------------------------------
-- pm_overrides: what the PM applies at runtime (tuning_* and pm_strength).
CREATE TABLE IF NOT EXISTS public.pm_overrides (
    id bigserial PRIMARY KEY,
    pattern_key text NOT NULL,
    action_category text NOT NULL,
    scope_subset jsonb NOT NULL,
    multiplier double precision NOT NULL DEFAULT 1.0,
    tuning_params jsonb,
    confidence_score double precision,
    dira double precision,
    dire double precision,
    n integer,
    last_updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pm_overrides_scope_key
    UNIQUE (pattern_key, action_category, scope_subset)
);

ALTER TABLE public.pm_overrides
ADD COLUMN IF NOT EXISTS edge_raw_roi double precision,
ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'active';

-- Runtime matching: active overrides of one pattern whose scope_subset is contained in a scope.
CREATE INDEX IF NOT EXISTS pm_overrides_active_pattern_idx
ON public.pm_overrides (pattern_key, action_category)
WHERE status = 'active';

-- Constraints on tables the bot may already own are NOT VALID: its old rows may not meet them.
DO $constraints$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_constraint
        WHERE conname = 'pm_overrides_status_check'
            AND conrelid = 'public.pm_overrides'::regclass
    ) THEN
        ALTER TABLE public.pm_overrides ADD CONSTRAINT pm_overrides_status_check
        CHECK (status IN ('active', 'inactive')) NOT VALID;
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_constraint
        WHERE conname = 'learning_lessons_status_check'
            AND conrelid = 'public.learning_lessons'::regclass
    ) THEN
        ALTER TABLE public.learning_lessons ADD CONSTRAINT learning_lessons_status_check
        CHECK (status IN ('active', 'inactive')) NOT VALID;
    END IF;
END
$constraints$;

-- ---------------------------------------------------------------------------------------------
-- learning.allocation_history: every step (or skip) of the timeframe allocation, in order.
CREATE TABLE IF NOT EXISTS learning.allocation_history (
    seq bigserial PRIMARY KEY,
    trade_id text NOT NULL,
    timeframe text NOT NULL,
    closed_at timestamptz NOT NULL,
    trade_roi double precision NOT NULL,
    reason text NOT NULL,
    -- Arrays are in the order of learning.tracked_timeframes(): 15m, 1h, 4h.
    allocation_before double precision [] NOT NULL,
    allocation_after double precision [] NOT NULL,
    desired double precision [],
    scores double precision [],
    roi_short double precision [] NOT NULL,
    trade_counts integer [] NOT NULL,
    step_limit double precision,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocation_history_reason_check
    CHECK (reason IN ('step', 'reached_desired', 'skip_one_timeframe', 'skip_untracked'))
);

CREATE INDEX IF NOT EXISTS allocation_history_trade_idx
ON learning.allocation_history (trade_id);

-- ---------------------------------------------------------------------------------------------
-- learning.learning_log: database-side log lines; the exporter claims each row once.
CREATE TABLE IF NOT EXISTS learning.learning_log (
    id bigserial PRIMARY KEY,
    logged_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    level text NOT NULL DEFAULT 'INFO',
    message text NOT NULL,
    exported_at timestamptz,
    CONSTRAINT learning_log_level_check CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR'))
);

CREATE INDEX IF NOT EXISTS learning_log_unexported_idx
ON learning.learning_log (id)
WHERE exported_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- learning.tunable_specs: every tunable of SPEC section 10 with its default and allowed range.
CREATE TABLE IF NOT EXISTS learning.tunable_specs (
    key text PRIMARY KEY,
    default_value jsonb NOT NULL,
    kind text NOT NULL,
    min_value double precision,
    max_value double precision,
    description text NOT NULL,
    CONSTRAINT tunable_specs_kind_check CHECK (kind IN ('number', 'integer', 'string_array'))
);

INSERT INTO learning.tunable_specs (
    key, default_value, kind, min_value, max_value, description
)
VALUES
('max_step', '0.003', 'number', 0, 1, 'largest allocation move per trade'),
('min_trades_full', '5', 'integer', 1, 1000000, 'trades per timeframe before the full step'),
('min_allocation', '0.05', 'number', 0, 0.33, 'floor of a traded timeframe allocation'),
('tau_short_days', '14', 'number', 0.01, 36500, 'short EWMA time constant (days)'),
('tau_long_days', '90', 'number', 0.01, 36500, 'long EWMA time constant (days)'),
('n_min', '33', 'integer', 1, 1000000, 'rows (or trades) a slice needs to make a lesson'),
('lookback_days', '90', 'number', 0.01, 36500, 'mining window (days)'),
('max_slice_dims', '4', 'integer', 0, 8, 'most scope dimensions in a slice'),
('scope_dims', '[]', 'string_array', null, null, 'scope keys mined; empty means every key'),
('min_gain', '3', 'integer', 1, 1000000, 'fewest events a tuning candidate must gain'),
('min_ratio', '2.0', 'number', 1, 1000000, 'least gained/lost ratio of a tuning candidate'),
('max_p_value', '1.0', 'number', 0, 1, 'largest sign-test p-value (1 = off)'),
('dodge_high', '0.85', 'number', 0, 1, 'dodge rate above which loosening is guarded'),
('dodge_max_drop', '0.05', 'number', 0, 1, 'largest dodge-rate drop allowed when guarded'),
('roi_scale', '0.10', 'number', 0.0001, 100, 'ROI scale of the tanh trade weight'),
('conf_min', '0.40', 'number', 0, 1, 'confidence that makes weaker matches drop out'),
('steer_base', '0.03', 'number', 0, 1, 'steering strength at zero confidence'),
('steer_gain', '0.20', 'number', 0, 1, 'steering strength gained per unit of confidence'),
('steer_max_hard', '0.22', 'number', 0, 1, 'hard cap of the steering strength'),
('base_bias', '0.0', 'number', -1, 1, 'A nudge per unit of blended edge_raw_roi')
ON CONFLICT (key) DO UPDATE
    SET
        default_value = excluded.default_value,
        kind = excluded.kind,
        min_value = excluded.min_value,
        max_value = excluded.max_value,
        description = excluded.description;

-- file: sql/010_config.sql
-- Configuration: tunables (module learning), feature flags (module pm), the log writer.

-- learning._log: append one line to learning.learning_log and wake `logs follow`.
-- Every database-side event goes through here so the exporter sees one stream.
CREATE OR REPLACE FUNCTION learning._log(p_level text, p_message text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = ''
BEGIN ATOMIC
    INSERT INTO learning.learning_log (level, message) VALUES (p_level, p_message);
    SELECT pg_catalog.pg_notify('learning_log', '');
END;

-- learning.tunables: every tunable of SPEC section 10, stored value or default, as one jsonb.
-- A missing key means its default, so the learning row may be absent or partial.
CREATE OR REPLACE FUNCTION learning.tunables()
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
BEGIN ATOMIC
    SELECT
        pg_catalog.jsonb_object_agg(
            s.key,
            coalesce(c.config_data -> s.key, s.default_value)
            ORDER BY s.key
        )
    FROM learning.tunable_specs AS s
    LEFT JOIN public.learning_configs AS c ON c.module_id = 'learning';
END;

-- learning._validate_tunable: raise unless value is allowed for key; returns the value.
-- One place for the rule so SQL callers and the CLI see the same message.
CREATE OR REPLACE FUNCTION learning._validate_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    spec learning.tunable_specs;
    num double precision;
BEGIN
    SELECT * INTO spec FROM learning.tunable_specs WHERE key = p_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown tunable "%"', p_key
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'known: ' || (
                    SELECT pg_catalog.string_agg(key, ', ' ORDER BY key)
                    FROM learning.tunable_specs
                );
    END IF;
    IF spec.kind = 'string_array' THEN
        IF pg_catalog.jsonb_typeof(p_value) <> 'array' OR EXISTS (
            SELECT FROM pg_catalog.jsonb_array_elements(p_value) AS e (v)
            WHERE pg_catalog.jsonb_typeof(e.v) <> 'string'
        ) THEN
            RAISE EXCEPTION 'tunable % must be a JSON array of strings, got %', p_key, p_value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN p_value;
    END IF;
    IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) <> 'number' THEN
        RAISE EXCEPTION 'tunable % must be a number in [%, %], got %',
            p_key, spec.min_value, spec.max_value, coalesce(p_value::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    num := (p_value #>> '{}')::double precision;
    IF num < spec.min_value OR num > spec.max_value
        OR (spec.kind = 'integer' AND num <> pg_catalog.trunc(num)) THEN
        RAISE EXCEPTION 'tunable % must be % in [%, %], got %',
            p_key, CASE spec.kind WHEN 'integer' THEN 'an integer' ELSE 'a number' END,
            spec.min_value, spec.max_value, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_value;
END;
$$;

-- learning.set_tunable: validate and store one tunable; a tau change recomputes the EWMA state.
-- The learning row is locked so two writers never lose each other's keys.
CREATE OR REPLACE FUNCTION learning.set_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    old_value jsonb;
BEGIN
    PERFORM learning._validate_tunable(p_key, p_value);
    INSERT INTO public.learning_configs (module_id, config_data, updated_by)
    VALUES ('learning', '{}'::jsonb, 'lowcap-learning')
    ON CONFLICT (module_id) DO NOTHING;
    SELECT config_data -> p_key INTO old_value
    FROM public.learning_configs WHERE module_id = 'learning' FOR UPDATE;
    UPDATE public.learning_configs
    SET config_data = config_data || pg_catalog.jsonb_build_object(p_key, p_value),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE module_id = 'learning';
    IF p_key IN ('tau_short_days', 'tau_long_days') AND old_value IS DISTINCT FROM p_value THEN
        PERFORM learning.recompute_roi_state();
    END IF;
    PERFORM learning._log('INFO', pg_catalog.format(
        'CONFIG SET: key=%s | old=%s | new=%s', p_key, coalesce(old_value::text, 'default'), p_value
    ));
    RETURN p_value;
END;
$$;

-- learning.feature_flag: the flag's value in module's feature_flags, false when anything is missing.
CREATE OR REPLACE FUNCTION learning.feature_flag(p_module text, p_flag text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
BEGIN ATOMIC
    SELECT coalesce(
        (
            SELECT
                CASE pg_catalog.jsonb_typeof(c.config_data -> 'feature_flags' -> p_flag)
                    WHEN 'boolean' THEN (c.config_data -> 'feature_flags' ->> p_flag)::boolean
                    ELSE false
                END
            FROM public.learning_configs AS c
            WHERE c.module_id = p_module
        ),
        false
    );
END;

-- learning.set_feature_flag: set one flag whether the row or its feature_flags key exists or not.
-- (jsonb_set on a missing feature_flags key silently does nothing; a merge does not.)
CREATE OR REPLACE FUNCTION learning.set_feature_flag(p_module text, p_flag text, p_value boolean)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    IF p_module IS NULL OR p_module = '' OR p_flag IS NULL OR p_flag = '' OR p_value IS NULL THEN
        RAISE EXCEPTION 'module, flag and value are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO public.learning_configs AS c (module_id, config_data, updated_by)
    VALUES (
        p_module,
        pg_catalog.jsonb_build_object(
            'feature_flags', pg_catalog.jsonb_build_object(p_flag, p_value)
        ),
        'lowcap-learning'
    )
    ON CONFLICT (module_id) DO UPDATE
    SET config_data = c.config_data || pg_catalog.jsonb_build_object(
        'feature_flags',
        CASE pg_catalog.jsonb_typeof(c.config_data -> 'feature_flags')
            WHEN 'object' THEN c.config_data -> 'feature_flags'
            ELSE '{}'::jsonb
        END || pg_catalog.jsonb_build_object(p_flag, p_value)
    ),
    updated_at = pg_catalog.now(),
    updated_by = 'lowcap-learning';
    PERFORM learning._log('INFO', pg_catalog.format(
        'FEATURE FLAG: module=%s | flag=%s | value=%s', p_module, p_flag, p_value
    ));
    RETURN p_value;
END;
$$;

-- file: sql/020_allocation.sql
-- Timeframe allocation learning (SPEC section 4): the ROI EWMA, the capped allocation step,
-- position redistribution, and the closed_trades triggers that run them.

-- learning.tracked_timeframes: the learning timeframes, in the order every array here uses.
CREATE OR REPLACE FUNCTION learning.tracked_timeframes()
RETURNS text []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN ARRAY['15m', '1h', '4h'];

-- learning.starting_allocation: the plan's starting split, same order as tracked_timeframes().
CREATE OR REPLACE FUNCTION learning.starting_allocation()
RETURNS double precision []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN ARRAY[0.15, 0.50, 0.35]::double precision [];

-- learning.trade_roi: a closed trade's ROI as a fraction (rpnl_pct is a percent).
-- |rpnl_pct| < 1e-9 counts as flat: such values carry no signal and would underflow float8 maths.
CREATE OR REPLACE FUNCTION learning.trade_roi(rpnl_pct double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN abs(rpnl_pct) < 1e-9 THEN 0 ELSE rpnl_pct / 100 END;

-- learning._decay: exp(-age/tau) for age >= 0, exactly 0 past 230 tau (1e-100).
-- PostgreSQL raises on float underflow, so tiny weights are cut to 0 instead.
CREATE OR REPLACE FUNCTION learning._decay(age_seconds double precision, tau_seconds double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN age_seconds / tau_seconds > 230 THEN 0 ELSE exp(-age_seconds / tau_seconds) END;

-- learning._scaled: x * factor where factor is a _decay() value, without float underflow errors.
CREATE OR REPLACE FUNCTION learning._scaled(x double precision, factor double precision)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN factor = 0 OR abs(x) < 1e-200 THEN 0 ELSE x * factor END;

-- learning.ewma_fold: fold one observation into the running sums of a time-decayed mean.
-- state = {ref_epoch, sum_short, weight_short, sum_long, weight_long}, sums taken at ref_epoch
-- (the newest time seen): equal times weigh equally and a late observation folds in exactly.
CREATE OR REPLACE FUNCTION learning.ewma_fold(
    state double precision [],
    roi double precision,
    at_epoch double precision,
    tau_short_seconds double precision,
    tau_long_seconds double precision
)
RETURNS double precision []
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE
    WHEN state IS NULL OR state[3] = 0
        THEN ARRAY[at_epoch, roi, 1, roi, 1]
    WHEN at_epoch >= state[1]
        THEN ARRAY[
            at_epoch,
            learning._scaled(state[2], learning._decay(at_epoch - state[1], tau_short_seconds)) + roi,
            learning._scaled(state[3], learning._decay(at_epoch - state[1], tau_short_seconds)) + 1,
            learning._scaled(state[4], learning._decay(at_epoch - state[1], tau_long_seconds)) + roi,
            learning._scaled(state[5], learning._decay(at_epoch - state[1], tau_long_seconds)) + 1
        ]
    ELSE ARRAY[
        state[1],
        state[2] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_short_seconds)),
        state[3] + learning._decay(state[1] - at_epoch, tau_short_seconds),
        state[4] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_long_seconds)),
        state[5] + learning._decay(state[1] - at_epoch, tau_long_seconds)
    ]
END;

-- learning.ewma_short / ewma_long: the means a fold state holds (NULL when empty).
CREATE OR REPLACE FUNCTION learning.ewma_short(state double precision [])
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN state[3] > 0 THEN state[2] / state[3] END;

CREATE OR REPLACE FUNCTION learning.ewma_long(state double precision [])
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE WHEN state[5] > 0 THEN state[4] / state[5] END;

DO $types$
BEGIN
    IF pg_catalog.to_regtype('learning.allocation_step_result') IS NULL THEN
        CREATE TYPE learning.allocation_step_result AS (
            new_allocation double precision [],
            desired double precision [],
            scores double precision [],
            step_limit double precision,
            reason text
        );
    END IF;
END
$types$;

-- learning.allocation_step: one capped move of the allocation toward the ROI-desired split.
-- Sign-safe scores, a floor, and one scale factor on the whole change vector so the sum, the
-- direction and the cap hold exactly and timeframes without trades keep their value bit for bit.
CREATE OR REPLACE FUNCTION learning.allocation_step(
    p_current double precision [],
    p_roi_short double precision [],
    p_trade_counts integer [],
    p_max_step double precision DEFAULT 0.003,
    p_min_trades_full double precision DEFAULT 5,
    p_min_allocation double precision DEFAULT 0.05
)
RETURNS learning.allocation_step_result
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = ''
AS $$
DECLARE
    k integer := pg_catalog.cardinality(p_current);
    result learning.allocation_step_result;
    members integer [] := '{}';
    m integer;
    group_total double precision := 0;
    min_roi double precision;
    min_n integer;
    score_sum double precision := 0;
    floor_value double precision;
    max_change double precision := 0;
    i integer;
BEGIN
    FOR i IN 1..k LOOP
        IF p_trade_counts[i] >= 1 THEN
            members := members || i;
            group_total := group_total + p_current[i];
            min_roi := LEAST(min_roi, p_roi_short[i]);
            min_n := LEAST(min_n, p_trade_counts[i]);
        END IF;
    END LOOP;
    m := pg_catalog.cardinality(members);
    result.new_allocation := p_current;
    IF m < 2 THEN
        result.reason := 'skip_one_timeframe';
        RETURN result;
    END IF;

    result.scores := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    result.desired := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    FOREACH i IN ARRAY members LOOP
        result.scores[i] := p_roi_short[i] - LEAST(0, min_roi);
        score_sum := score_sum + result.scores[i];
    END LOOP;
    IF NOT score_sum > 0 THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := 1;
        END LOOP;
        score_sum := m;
    END IF;

    floor_value := LEAST(p_min_allocation, group_total / m);
    FOREACH i IN ARRAY members LOOP
        result.desired[i] := floor_value
            + (group_total - m * floor_value) * result.scores[i] / score_sum;
        max_change := GREATEST(max_change, abs(result.desired[i] - p_current[i]));
    END LOOP;

    result.step_limit := p_max_step * LEAST(1, min_n / p_min_trades_full);
    IF max_change <= result.step_limit THEN
        result.reason := 'reached_desired';
        FOREACH i IN ARRAY members LOOP
            result.new_allocation[i] := result.desired[i];
        END LOOP;
    ELSE
        result.reason := 'step';
        FOREACH i IN ARRAY members LOOP
            result.new_allocation[i] := p_current[i]
                + (result.desired[i] - p_current[i]) * result.step_limit / max_change;
        END LOOP;
    END IF;
    RETURN result;
END;
$$;

-- learning.redistribute_positions: rewrite each token's tracked positions to its total split by
-- the allocation. One set-based UPDATE; rows whose value would not change are not written.
CREATE OR REPLACE FUNCTION learning.redistribute_positions(p_allocation double precision [])
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = ''
AS $$
DECLARE
    updated integer;
BEGIN
    WITH tracked AS (
        SELECT
            p.id,
            p.total_allocation_pct,
            a.alloc,
            pg_catalog.sum(p.total_allocation_pct) OVER token AS token_total,
            pg_catalog.sum(a.alloc) OVER token AS alloc_sum
        FROM public.lowcap_positions AS p
        INNER JOIN
            unnest(learning.tracked_timeframes(), p_allocation) AS a (timeframe, alloc)
            ON p.timeframe = a.timeframe
        WHERE p.status IN ('watchlist', 'active', 'dormant')
            AND p.total_allocation_pct IS NOT NULL
        WINDOW token AS (PARTITION BY p.token_contract, p.token_chain)
    ),

    target AS (
        SELECT
            t.id,
            t.token_total * t.alloc / t.alloc_sum AS new_pct
        FROM tracked AS t
        WHERE t.token_total <> 0 AND t.alloc_sum <> 0
            AND t.total_allocation_pct IS DISTINCT FROM t.token_total * t.alloc / t.alloc_sum
    )

    UPDATE public.lowcap_positions AS p
    SET total_allocation_pct = target.new_pct
    FROM target
    WHERE p.id = target.id;
    GET DIAGNOSTICS updated = ROW_COUNT;
    RETURN updated;
END;
$$;

-- learning._initial_decision_maker_config: our keys of the decision_maker row before any trade.
CREATE OR REPLACE FUNCTION learning._initial_decision_maker_config()
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = ''
RETURN pg_catalog.jsonb_build_object(
    'timeframe_allocation', (
        SELECT
            pg_catalog.jsonb_object_agg(
                tf,
                pg_catalog.jsonb_build_object(
                    'current_allocation', alloc, 'roi_short', NULL, 'roi_long', NULL,
                    'n', 0, 'updated_at', NULL
                )
            )
        FROM unnest(learning.tracked_timeframes(), learning.starting_allocation())
            AS a (tf, alloc)
    ),
    'global_roi', pg_catalog.jsonb_build_object(
        'roi_short', NULL, 'roi_long', NULL, 'n', 0, 'updated_at', NULL
    ),
    'learning_state', '{}'::jsonb
);

-- learning.ensure_decision_maker_config: create or adopt the decision_maker row; returns it locked.
-- The bot's legacy global_roi is in percent: it moves to global_roi_legacy_pct before ours replaces it.
CREATE OR REPLACE FUNCTION learning.ensure_decision_maker_config()
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    cfg jsonb;
BEGIN
    SELECT config_data INTO cfg
    FROM public.learning_configs WHERE module_id = 'decision_maker' FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO public.learning_configs (module_id, config_data, updated_by, notes)
        VALUES (
            'decision_maker', learning._initial_decision_maker_config(), 'lowcap-learning',
            'timeframe allocation learned from closed_trades'
        )
        ON CONFLICT (module_id) DO NOTHING;
        SELECT config_data INTO cfg
        FROM public.learning_configs WHERE module_id = 'decision_maker' FOR UPDATE;
    END IF;
    IF NOT cfg ? 'timeframe_allocation' OR NOT cfg ? 'learning_state' THEN
        cfg := cfg
            || CASE WHEN cfg ? 'global_roi' AND NOT cfg ? 'learning_state'
                THEN pg_catalog.jsonb_build_object('global_roi_legacy_pct', cfg -> 'global_roi')
                ELSE '{}'::jsonb END
            || learning._initial_decision_maker_config();
        UPDATE public.learning_configs
        SET config_data = cfg, updated_at = pg_catalog.now(), updated_by = 'lowcap-learning'
        WHERE module_id = 'decision_maker';
    END IF;
    RETURN cfg;
END;
$$;

-- learning._series_state: the fold state of one series from the decision_maker config.
CREATE OR REPLACE FUNCTION learning._series_state(p_cfg jsonb, p_series text)
RETURNS double precision []
LANGUAGE sql
IMMUTABLE
SET search_path = ''
RETURN CASE
    WHEN p_cfg -> 'learning_state' ? p_series
        THEN
            array(
                SELECT pg_catalog.jsonb_array_elements_text(p_cfg -> 'learning_state' -> p_series)::double precision
            )
END;

-- learning._decision_maker_config: the decision_maker keys for an allocation and fold states.
-- states holds 4 series of 5 values (15m, 1h, 4h, global); counts holds their n.
CREATE OR REPLACE FUNCTION learning._decision_maker_config(
    p_allocation double precision [],
    p_states double precision [],
    p_counts integer []
)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = ''
RETURN (
    WITH series AS (
        SELECT
            s.idx,
            s.name,
            p_states[(s.idx - 1) * 5 + 1:s.idx * 5] AS state,
            p_counts[s.idx] AS n
        FROM
            pg_catalog.unnest(learning.tracked_timeframes() || 'global'::text)
            WITH ORDINALITY AS s (name, idx)
    )

    SELECT
        pg_catalog.jsonb_build_object(
            'timeframe_allocation', pg_catalog.jsonb_object_agg(
                s.name,
                pg_catalog.jsonb_build_object(
                    'current_allocation', p_allocation[s.idx],
                    'roi_short', learning.ewma_short(s.state),
                    'roi_long', learning.ewma_long(s.state),
                    'n', s.n,
                    'updated_at', CASE WHEN s.n > 0 THEN pg_catalog.to_timestamp(s.state[1]) END
                )
            ) FILTER (WHERE s.name <> 'global'),
            'global_roi', (pg_catalog.array_agg(
                pg_catalog.jsonb_build_object(
                    'roi_short', learning.ewma_short(s.state),
                    'roi_long', learning.ewma_long(s.state),
                    'n', s.n,
                    'updated_at', CASE WHEN s.n > 0 THEN pg_catalog.to_timestamp(s.state[1]) END
                )
            ) FILTER (WHERE s.name = 'global'))[1],
            'learning_state', pg_catalog.jsonb_object_agg(s.name, pg_catalog.to_jsonb(s.state))
            || pg_catalog.jsonb_build_object(
                'n', pg_catalog.to_jsonb(p_counts)
            )
        )
    FROM series AS s
);

-- learning._fmt: a number for log lines (4 to 6 decimals, no float noise).
CREATE OR REPLACE FUNCTION learning._fmt(x double precision, digits integer DEFAULT 4)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = ''
RETURN coalesce(pg_catalog.round(x::numeric, digits)::text, 'null');

-- learning._fmt_allocation: {15m: 0.15, 1h: 0.5, 4h: 0.35} as the plan's log lines show it.
CREATE OR REPLACE FUNCTION learning._fmt_allocation(p_allocation double precision [])
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = ''
RETURN '{' || (
    SELECT pg_catalog.string_agg(tf || ': ' || learning._fmt(a, 6), ', ' ORDER BY i)
    FROM unnest(learning.tracked_timeframes(), p_allocation) WITH ORDINALITY AS x (tf, a, i)
) || '}';

-- learning.trg_closed_trades_learn: AFTER INSERT (statement) on closed_trades.
-- Takes each new trade as one step in (closed_at, trade_id) order under the decision_maker row
-- lock, then redistributes positions once and writes strength facts, all in the same statement.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_learn()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    tun jsonb;
    tau_short double precision;
    tau_long double precision;
    max_step double precision;
    min_trades_full double precision;
    min_allocation double precision;
    tracked CONSTANT text [] := learning.tracked_timeframes();
    cfg jsonb;
    alloc double precision [];
    alloc_start double precision [];
    states double precision [];
    counts integer [];
    roi_short double precision [];
    step learning.allocation_step_result;
    t record;
    i integer;
    g CONSTANT integer := 4;
    at_epoch double precision;
    -- history rows, written once at the end
    h_trade text [] := '{}';
    h_tf text [] := '{}';
    h_closed timestamptz [] := '{}';
    h_roi double precision [] := '{}';
    h_reason text [] := '{}';
    h_before text [] := '{}';
    h_after text [] := '{}';
    h_desired text [] := '{}';
    h_scores text [] := '{}';
    h_roi_short text [] := '{}';
    h_counts text [] := '{}';
    h_limit double precision [] := '{}';
    bad record;
BEGIN
    -- Actions are validated before anything is learned: a bad element fails the whole INSERT.
    SELECT n.trade_id, e.ord, e.action INTO bad
    FROM new_trades AS n
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    WHERE pg_catalog.jsonb_typeof(e.action) <> 'object'
        OR pg_catalog.jsonb_typeof(e.action -> 'pattern_key') IS DISTINCT FROM 'string'
        OR e.action ->> 'pattern_key' = ''
        OR pg_catalog.jsonb_typeof(e.action -> 'action_category') IS DISTINCT FROM 'string'
        OR coalesce(pg_catalog.jsonb_typeof(e.action -> 'scope'), 'object') NOT IN ('object', 'null')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions[%] of trade % must be an object with string pattern_key and action_category and an object scope',
            bad.ord - 1, bad.trade_id
            USING ERRCODE = 'check_violation', DETAIL = 'got ' || pg_catalog.left(bad.action::text, 200),
                COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    tun := learning.tunables();
    tau_short := (tun ->> 'tau_short_days')::double precision * 86400;
    tau_long := (tun ->> 'tau_long_days')::double precision * 86400;
    max_step := (tun ->> 'max_step')::double precision;
    min_trades_full := (tun ->> 'min_trades_full')::double precision;
    min_allocation := (tun ->> 'min_allocation')::double precision;

    -- The row lock serializes concurrent trade inserts: no lost update.
    cfg := learning.ensure_decision_maker_config();
    alloc := ARRAY(
        SELECT (cfg -> 'timeframe_allocation' -> tf ->> 'current_allocation')::double precision
        FROM pg_catalog.unnest(tracked) WITH ORDINALITY AS x (tf, ord) ORDER BY x.ord
    );
    alloc_start := alloc;
    states := pg_catalog.array_fill(0::double precision, ARRAY[g * 5]);
    counts := coalesce(
        ARRAY(SELECT pg_catalog.jsonb_array_elements_text(cfg -> 'learning_state' -> 'n')::integer),
        '{}'
    );
    IF pg_catalog.cardinality(counts) <> g THEN
        counts := pg_catalog.array_fill(0, ARRAY[g]);
    END IF;
    roi_short := pg_catalog.array_fill(NULL::double precision, ARRAY[g - 1]);
    FOR i IN 1..g LOOP
        IF cfg -> 'learning_state' ? (tracked || 'global'::text)[i] THEN
            states[(i - 1) * 5 + 1:i * 5] := learning._series_state(cfg, (tracked || 'global'::text)[i]);
            IF i < g THEN
                roi_short[i] := learning.ewma_short(states[(i - 1) * 5 + 1:i * 5]);
            END IF;
        END IF;
    END LOOP;

    FOR t IN
        SELECT n.trade_id, n.timeframe, n.closed_at, learning.trade_roi(n.rpnl_pct) AS roi
        FROM new_trades AS n
        ORDER BY n.closed_at, n.trade_id
    LOOP
        i := pg_catalog.array_position(tracked, t.timeframe);
        h_trade := h_trade || t.trade_id;
        h_tf := h_tf || t.timeframe;
        h_closed := h_closed || t.closed_at;
        h_roi := h_roi || t.roi;
        h_before := h_before || alloc::text;
        IF i IS NULL THEN
            h_reason := h_reason || 'skip_untracked'::text;
            h_desired := h_desired || NULL::text;
            h_scores := h_scores || NULL::text;
            h_limit := h_limit || NULL::double precision;
        ELSE
            at_epoch := EXTRACT(EPOCH FROM t.closed_at);
            states[(i - 1) * 5 + 1:i * 5] := learning.ewma_fold(
                states[(i - 1) * 5 + 1:i * 5], t.roi, at_epoch, tau_short, tau_long
            );
            states[(g - 1) * 5 + 1:g * 5] := learning.ewma_fold(
                states[(g - 1) * 5 + 1:g * 5], t.roi, at_epoch, tau_short, tau_long
            );
            counts[i] := counts[i] + 1;
            counts[g] := counts[g] + 1;
            roi_short[i] := learning.ewma_short(states[(i - 1) * 5 + 1:i * 5]);
            step := learning.allocation_step(
                alloc, roi_short, counts[1:g - 1], max_step, min_trades_full, min_allocation
            );
            alloc := step.new_allocation;
            h_reason := h_reason || step.reason;
            h_desired := h_desired || step.desired::text;
            h_scores := h_scores || step.scores::text;
            h_limit := h_limit || step.step_limit;
        END IF;
        h_after := h_after || alloc::text;
        h_roi_short := h_roi_short || roi_short::text;
        h_counts := h_counts || counts[1:g - 1]::text;
    END LOOP;

    IF pg_catalog.cardinality(h_trade) = 0 THEN
        RETURN NULL;
    END IF;

    UPDATE public.learning_configs
    SET config_data = config_data || learning._decision_maker_config(alloc, states, counts),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker';

    WITH history AS (
        INSERT INTO learning.allocation_history (
            trade_id, timeframe, closed_at, trade_roi, reason, allocation_before,
            allocation_after, desired, scores, roi_short, trade_counts, step_limit
        )
        SELECT
            h.trade_id, h.timeframe, h.closed_at, h.roi, h.reason, h.before::double precision [],
            h.after::double precision [], h.desired::double precision [],
            h.scores::double precision [], h.roi_short::double precision [],
            h.counts::integer [], h.step_limit
        FROM unnest(
            h_trade, h_tf, h_closed, h_roi, h_reason, h_before, h_after, h_desired, h_scores,
            h_roi_short, h_counts, h_limit
        ) WITH ORDINALITY AS h (
            trade_id, timeframe, closed_at, roi, reason, before, after, desired, scores,
            roi_short, counts, step_limit, ord
        )
        ORDER BY h.ord
        RETURNING *
    )

    INSERT INTO learning.learning_log (level, message)
    SELECT l.level, l.message
    FROM history AS h
    CROSS JOIN LATERAL (
        SELECT pg_catalog.array_position(tracked, h.timeframe) AS i
    ) AS x
    CROSS JOIN LATERAL (
        VALUES
        (
            1,
            'INFO',
            CASE WHEN x.i IS NOT NULL THEN pg_catalog.format(
                'ROI UPDATE: timeframe=%s | roi_short=%s | n=%s | trade_roi=%s | trade_id=%s',
                h.timeframe, learning._fmt(h.roi_short[x.i], 6), h.trade_counts[x.i],
                learning._fmt(h.trade_roi, 6), h.trade_id
            ) END
        ),
        (
            2,
            'INFO',
            CASE h.reason
                WHEN 'skip_untracked' THEN pg_catalog.format(
                    'ALLOCATION SKIP: %s is not a learning timeframe (learning: 15m, 1h, 4h) | trade_id=%s',
                    h.timeframe, h.trade_id
                )
                WHEN 'skip_one_timeframe' THEN pg_catalog.format(
                    'ALLOCATION SKIP: Only %s timeframe has trades (need 2+) | timeframes_with_trades=[%s]',
                    (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(h.trade_counts) AS c (n) WHERE c.n > 0),
                    (
                        SELECT pg_catalog.string_agg(tf, ', ' ORDER BY o)
                        FROM unnest(tracked, h.trade_counts) WITH ORDINALITY AS c (tf, n, o)
                        WHERE c.n > 0
                    )
                )
                ELSE pg_catalog.format(
                    'ALLOCATION UPDATE: trigger=%s trade closed | old=%s | new=%s | change=%s%% | limit=%s | trade_id=%s',
                    h.timeframe, learning._fmt_allocation(h.allocation_before),
                    learning._fmt_allocation(h.allocation_after),
                    learning._fmt(100 * (
                        SELECT pg_catalog.max(abs(a - b))
                        FROM unnest(h.allocation_after, h.allocation_before) AS d (a, b)
                    ), 4),
                    learning._fmt(h.step_limit, 6), h.trade_id
                )
            END
        )
    ) AS l (ord, level, message)
    WHERE l.message IS NOT NULL
    ORDER BY h.seq, l.ord;
    PERFORM pg_catalog.pg_notify('learning_log', '');

    IF alloc IS DISTINCT FROM alloc_start THEN
        PERFORM learning.redistribute_positions(alloc);
    END IF;

    -- Strength facts (SPEC section 5): one row per action, with the trade's roi and outcome shape.
    INSERT INTO public.pattern_trade_events (
        pattern_key, action_category, scope, trade_id, roi, did_trim, reached_s3, "timestamp"
    )
    SELECT
        e.action ->> 'pattern_key',
        e.action ->> 'action_category',
        coalesce(nullif(e.action -> 'scope', 'null'::jsonb), '{}'::jsonb),
        n.trade_id,
        learning.trade_roi(n.rpnl_pct),
        coalesce(n.did_trim, EXISTS (
            SELECT FROM pg_catalog.jsonb_array_elements(n.actions) AS x (a)
            WHERE x.a ->> 'action_category' = 'trim' OR x.a ->> 'decision_type' = 'trim'
        )),
        coalesce(n.reached_s3, EXISTS (
            SELECT FROM pg_catalog.jsonb_array_elements(n.actions) AS x (a)
            WHERE x.a ->> 'state' = 'S3' OR pg_catalog.strpos(x.a ->> 'pattern_key', '.S3.') > 0
        )),
        n.closed_at
    FROM new_trades AS n
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    ORDER BY n.closed_at, n.trade_id, e.ord;

    RETURN NULL;
END;
$$;

-- learning.trg_closed_trades_append_only: closed_trades is append-only (a correction is a new
-- trade), so the learning state is always a function of its rows.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RAISE EXCEPTION 'closed_trades is append-only: % is refused (insert a correcting trade instead)', TG_OP
        USING ERRCODE = 'prohibited_sql_statement_attempted', TABLE = 'closed_trades', SCHEMA = 'public';
END;
$$;

DROP TRIGGER IF EXISTS _500_learn ON public.closed_trades;
CREATE TRIGGER _500_learn
AFTER INSERT ON public.closed_trades
REFERENCING NEW TABLE AS new_trades
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_closed_trades_learn();

DROP TRIGGER IF EXISTS _100_append_only ON public.closed_trades;
CREATE TRIGGER _100_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON public.closed_trades
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_closed_trades_append_only();

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
SET search_path = ''
BEGIN ATOMIC
    SELECT
        x.tf,
        coalesce(
            (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'current_allocation')::double precision,
            x.start
        ),
        (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'roi_short')::double precision,
        (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'roi_long')::double precision,
        coalesce((c.config_data -> 'timeframe_allocation' -> x.tf ->> 'n')::integer, 0),
        (c.config_data -> 'timeframe_allocation' -> x.tf ->> 'updated_at')::timestamptz
    FROM
        unnest(learning.tracked_timeframes(), learning.starting_allocation())
        WITH ORDINALITY AS x (tf, start, ord)
    LEFT JOIN public.learning_configs AS c ON c.module_id = 'decision_maker'
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
SET search_path = ''
BEGIN ATOMIC
    SELECT
        (c.config_data -> 'global_roi' ->> 'roi_short')::double precision,
        (c.config_data -> 'global_roi' ->> 'roi_long')::double precision,
        coalesce((c.config_data -> 'global_roi' ->> 'n')::integer, 0),
        (c.config_data -> 'global_roi' ->> 'updated_at')::timestamptz
    FROM (SELECT 1) AS one
    LEFT JOIN public.learning_configs AS c ON c.module_id = 'decision_maker';
END;

-- learning.recomputed_roi_state: the EWMA state every series would have from closed_trades alone.
-- Closed form (sums at the newest closed_at): the oracle for `check` and the tau-change recompute.
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
SET search_path = ''
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
    )

    SELECT
        tr.series,
        tr.ord,
        ARRAY[
            r.ref,
            pg_catalog.sum(learning._scaled(tr.roi, learning._decay(r.ref - tr.at_epoch, taus.tau_short))),
            pg_catalog.sum(learning._decay(r.ref - tr.at_epoch, taus.tau_short)),
            pg_catalog.sum(learning._scaled(tr.roi, learning._decay(r.ref - tr.at_epoch, taus.tau_long))),
            pg_catalog.sum(learning._decay(r.ref - tr.at_epoch, taus.tau_long))
        ],
        pg_catalog.count(*)::integer
    FROM trades AS tr
    INNER JOIN refs AS r ON tr.series = r.series
    CROSS JOIN taus
    GROUP BY tr.series, tr.ord, r.ref
    ORDER BY tr.ord;
END;

-- learning.recompute_roi_state: rebuild the stored EWMA state from closed_trades (after a tau
-- change); the allocation is left as it is.
CREATE OR REPLACE FUNCTION learning.recompute_roi_state()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    cfg jsonb;
    alloc double precision [];
    states double precision [] := pg_catalog.array_fill(0::double precision, ARRAY[20]);
    counts integer [] := ARRAY[0, 0, 0, 0];
    r record;
BEGIN
    cfg := learning.ensure_decision_maker_config();
    alloc := ARRAY(
        SELECT (cfg -> 'timeframe_allocation' -> tf ->> 'current_allocation')::double precision
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord) ORDER BY x.ord
    );
    FOR r IN SELECT * FROM learning.recomputed_roi_state() LOOP
        states[(r.ord - 1) * 5 + 1:r.ord * 5] := r.state;
        counts[r.ord] := r.n;
    END LOOP;
    UPDATE public.learning_configs
    SET config_data = config_data || learning._decision_maker_config(alloc, states, counts),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker';
    PERFORM learning._log('INFO', pg_catalog.format(
        'ROI RECOMPUTE: trades=%s | tau_short_days=%s | tau_long_days=%s',
        counts[4], learning.tunables() ->> 'tau_short_days', learning.tunables() ->> 'tau_long_days'
    ));
    RETURN counts[4];
END;
$$;

SELECT learning.ensure_decision_maker_config();

-- file: sql/030_episodes.sql
-- episodes: filled in by its issue.

-- file: sql/040_tuning.sql
-- tuning: filled in by its issue.

-- file: sql/050_strength.sql
-- strength: filled in by its issue.

-- file: sql/060_overrides.sql
-- overrides: filled in by its issue.

-- file: sql/070_jobs.sql
-- jobs: filled in by its issue.

-- file: sql/080_adapters.sql
-- adapters: filled in by its issue.

-- file: sql/090_roles.sql
-- roles: filled in by its issue.
