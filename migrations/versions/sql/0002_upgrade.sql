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
    -- A trade from the future would become the EWMA reference and weigh every real trade to 0.
    -- now() only moves forward, so a row that passed once always passes (dump/restore safe).
    CONSTRAINT closed_trades_closed_at_check
    CHECK (closed_at > '-infinity' AND closed_at <= now() + interval '1 day')
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

-- Runtime matching: active overrides of one pattern whose scope_subset is contained in a scope. It
-- covers every column the strength runtime reads, so the ~1,000 containment tests of one call run
-- on an index-only scan (contiguous pages) instead of one heap page per candidate row.
DROP INDEX IF EXISTS public.pm_overrides_active_pattern_idx; -- its predecessor (pattern_key, action_category)
CREATE INDEX IF NOT EXISTS pm_overrides_active_match_idx
ON public.pm_overrides (pattern_key, action_category, scope_subset)
INCLUDE (id, dira, dire, confidence_score, edge_raw_roi, n)
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

-- Which rule took the step, the evidence rule's per-timeframe z (ROI difference from the other
-- timeframes over its standard error) and the split it asked for (NULL under the plan's rule).
ALTER TABLE learning.allocation_history ADD COLUMN IF NOT EXISTS rule text;
ALTER TABLE learning.allocation_history ADD COLUMN IF NOT EXISTS evidence double precision [];
ALTER TABLE learning.allocation_history ADD COLUMN IF NOT EXISTS split double precision [];

-- ---------------------------------------------------------------------------------------------
-- learning.allocation_state: the learning state of the timeframe allocation, one row per series.
-- The exact time-decayed sums at ref_epoch (the newest closed_at folded) for each horizon: sum_w,
-- sum_w_roi, sum_w_roi2 and sum_w2 give the mean, the second moment and the effective count
-- (sum_w^2 / sum_w2). The decision_maker row shows what this table holds; the trigger rewrites it.
CREATE TABLE IF NOT EXISTS learning.allocation_state (
    series text PRIMARY KEY,
    ref_epoch double precision NOT NULL DEFAULT 0,
    short_sum_w double precision NOT NULL DEFAULT 0,
    short_sum_w_roi double precision NOT NULL DEFAULT 0,
    short_sum_w_roi2 double precision NOT NULL DEFAULT 0,
    short_sum_w2 double precision NOT NULL DEFAULT 0,
    long_sum_w double precision NOT NULL DEFAULT 0,
    long_sum_w_roi double precision NOT NULL DEFAULT 0,
    long_sum_w_roi2 double precision NOT NULL DEFAULT 0,
    long_sum_w2 double precision NOT NULL DEFAULT 0,
    n integer NOT NULL DEFAULT 0,
    current_allocation double precision,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocation_state_series_check CHECK (series IN ('15m', '1h', '4h', 'global')),
    CONSTRAINT allocation_state_n_check CHECK (n >= 0),
    CONSTRAINT allocation_state_allocation_check
    CHECK ((series = 'global') = (current_allocation IS NULL))
);

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
-- learning.pm_overrides_changes: one row per transaction that changed pm_overrides (statement
-- triggers in 060_overrides.sql), merged from time to time into the row of a later one. The sum of
-- the weights visible to a snapshot is the *generation* of pm_overrides in it: the creation time in
-- microseconds plus the number of committed changing transactions it sees. That set only grows from
-- one snapshot of a session to the next, so an equal sum means the same pm_overrides; the runtime
-- keeps a pattern's overrides in memory under it. Writers only insert their own row (a unique key
-- of their own transaction id): no shared row lock, no wait, no serialization conflict.
CREATE TABLE IF NOT EXISTS learning.pm_overrides_changes (
    xact xid8 PRIMARY KEY DEFAULT pg_catalog.pg_current_xact_id(),
    weight bigint NOT NULL DEFAULT 1,
    CONSTRAINT pm_overrides_changes_weight_check CHECK (weight > 0)
);

-- The first row starts the count at the creation time in microseconds, so a downgrade and upgrade
-- never gives a generation a running process has seen before.
INSERT INTO learning.pm_overrides_changes (xact, weight)
SELECT
    pg_catalog.pg_current_xact_id(),
    (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000)::bigint
WHERE NOT EXISTS (SELECT FROM learning.pm_overrides_changes);

-- ---------------------------------------------------------------------------------------------
-- learning.tunable_specs: every tunable of SPEC section 10 with its default and allowed range.
CREATE TABLE IF NOT EXISTS learning.tunable_specs (
    key text PRIMARY KEY,
    default_value jsonb NOT NULL,
    kind text NOT NULL,
    min_value double precision,
    max_value double precision,
    description text NOT NULL
);
-- A choice tunable names its allowed strings (SPEC 13's allocation_rule and tuning_rule).
ALTER TABLE learning.tunable_specs ADD COLUMN IF NOT EXISTS choices text [];
ALTER TABLE learning.tunable_specs DROP CONSTRAINT IF EXISTS tunable_specs_kind_check;
ALTER TABLE learning.tunable_specs ADD CONSTRAINT tunable_specs_kind_check
CHECK (kind IN ('number', 'integer', 'string_array', 'choice'));

INSERT INTO learning.tunable_specs (
    key, default_value, kind, min_value, max_value, description, choices
)
VALUES
('max_step', '0.003', 'number', 0, 1, 'largest allocation move per trade', null),
('min_trades_full', '5', 'integer', 1, 1000000, 'trades per timeframe before the full step', null),
('min_allocation', '0.05', 'number', 0, 0.33, 'floor of a traded timeframe allocation', null),
('tau_short_days', '14', 'number', 0.01, 36500, 'short EWMA time constant (days)', null),
('tau_long_days', '90', 'number', 0.01, 36500, 'long EWMA time constant (days)', null),
('n_min', '33', 'integer', 1, 1000000, 'rows (or trades) a slice needs to make a lesson', null),
('lookback_days', '90', 'number', 0.01, 36500, 'mining window (days)', null),
('max_slice_dims', '4', 'integer', 0, 8, 'most scope dimensions in a slice', null),
('scope_dims', '[]', 'string_array', null, null, 'scope keys mined; empty means every key', null),
(
    'max_strength_lessons', '250000', 'integer', 1, 5000000,
    'most strength slices one lesson-builder run may mine (patterns with most trades first)', null
),
(
    'max_tuning_lessons', '50000', 'integer', 1, 500000,
    'most tuning slices one tuning-miner run may mine (patterns with most events first)', null
),
('min_gain', '3', 'integer', 1, 1000000, 'fewest events a tuning candidate must gain', null),
('min_ratio', '2.0', 'number', 1, 1000000, 'least gained/lost ratio of a tuning candidate', null),
('max_p_value', '1.0', 'number', 0, 1, 'largest sign-test p-value under tuning_rule plan (1 = off; evidence ignores it)', null),
('dodge_high', '0.85', 'number', 0, 1, 'dodge rate above which loosening is guarded', null),
('dodge_max_drop', '0.05', 'number', 0, 1, 'largest dodge-rate drop allowed when guarded', null),
('roi_scale', '0.10', 'number', 0.0001, 100, 'ROI scale of the tanh trade weight', null),
('conf_min', '0.40', 'number', 0, 1, 'confidence that makes weaker matches drop out', null),
('steer_base', '0.03', 'number', 0, 1, 'steering strength at zero confidence', null),
('steer_gain', '0.20', 'number', 0, 1, 'steering strength gained per unit of confidence', null),
('steer_max_hard', '0.22', 'number', 0, 1, 'hard cap of the steering strength', null),
('base_bias', '0.0', 'number', -1, 1, 'A nudge per unit of blended edge_raw_roi', null),
(
    'max_false_override', '0.05', 'number', 0.000001, 0.5,
    'family-wise error of one tuning lesson''s candidates under tuning_rule evidence', null
),
(
    'allocation_rule', '"evidence"', 'choice', null, null,
    'evidence: move only on ROI differences beyond their noise; plan: the plan''s rule exactly',
    ARRAY['evidence', 'plan']
),
(
    'evidence_z', '1.5', 'number', 0, 100,
    'standard errors a timeframe''s ROI must differ from the others'' by before the split moves', null
),
(
    'evidence_gain', '8', 'number', 0, 1000,
    'tilt of the split per ROI difference beyond the noise, in global ROI standard deviations', null
),
(
    'evidence_prior_n', '5', 'number', 0, 1000000,
    'pseudo-trades of the global ROI variance in each timeframe''s variance', null
),
(
    'tuning_rule', '"evidence"', 'choice', null, null,
    'evidence: each changed lever''s flips must beat the base rates; plan: the plan''s rule exactly',
    ARRAY['evidence', 'plan']
)
ON CONFLICT (key) DO UPDATE
    SET
        default_value = excluded.default_value,
        kind = excluded.kind,
        min_value = excluded.min_value,
        max_value = excluded.max_value,
        description = excluded.description,
        choices = excluded.choices;

-- ---------------------------------------------------------------------------------------------
-- learning.pending_redistribution: tokens a redistribution skipped because another transaction
-- held one of their position rows. The next trade (or learning.redistribute_pending, from the jobs)
-- redistributes them with the allocation current then, and removes the mark.
CREATE TABLE IF NOT EXISTS learning.pending_redistribution (
    token_contract text NOT NULL,
    token_chain text NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_contract, token_chain)
);

-- file: sql/010_config.sql
-- Configuration: tunables (module learning), feature flags (module pm), the log writer.

-- learning._log: append one line to learning.learning_log and wake `logs follow`.
-- Every database-side event goes through here so the exporter sees one stream.
CREATE OR REPLACE FUNCTION learning._log(p_level text, p_message text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO learning.learning_log (level, message) VALUES (p_level, p_message);
    SELECT pg_catalog.pg_notify('learning_log', '');
END;

-- learning.tunables: every tunable of SPEC section 10, stored value or default, as one jsonb.
-- A missing key means its default, so the learning row may be absent or partial. plpgsql so the
-- plan is cached per session (PostgreSQL 15 re-plans a SQL function on every trigger call).
CREATE OR REPLACE FUNCTION learning.tunables()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
        SELECT
            pg_catalog.jsonb_object_agg(
                s.key,
                coalesce(c.config_data -> s.key, s.default_value)
                ORDER BY s.key
            )
        FROM learning.tunable_specs AS s
        LEFT JOIN public.learning_configs AS c ON c.module_id = 'learning'
    );
END;
$$;

-- learning._validate_tunable: raise unless value is allowed for key; returns the value.
-- One place for the rule: set_tunable, the CLI and every direct write of the learning row (the
-- trigger below) see the same message and SQLSTATE (22023 invalid_parameter_value).
CREATE OR REPLACE FUNCTION learning._validate_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    spec learning.tunable_specs;
    num numeric;
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
        IF pg_catalog.jsonb_typeof(p_value) IS DISTINCT FROM 'array' OR EXISTS (
            SELECT FROM pg_catalog.jsonb_array_elements(p_value) AS e (v)
            WHERE pg_catalog.jsonb_typeof(e.v) <> 'string'
        ) THEN
            RAISE EXCEPTION 'tunable % must be a JSON array of strings, got %', p_key, coalesce(p_value::text, 'null')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN p_value;
    END IF;
    IF spec.kind = 'choice' THEN
        IF pg_catalog.jsonb_typeof(p_value) IS DISTINCT FROM 'string' OR NOT (p_value #>> '{}') = ANY(spec.choices) THEN
            RAISE EXCEPTION 'tunable % must be one of %, got %', p_key,
                pg_catalog.array_to_string(spec.choices, ', '), coalesce(p_value::text, 'null')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN p_value;
    END IF;
    IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) <> 'number' THEN
        RAISE EXCEPTION 'tunable % must be a number in [%, %], got %',
            p_key, spec.min_value, spec.max_value, coalesce(p_value::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Compared as numeric first: a JSON number beyond float8 (1e400) is out of range, not a crash.
    -- An integer is written without a fraction or exponent (5, not 5.0): readers cast it ::integer.
    num := (p_value #>> '{}')::numeric;
    IF num < spec.min_value::numeric OR num > spec.max_value::numeric
        OR (spec.kind = 'integer' AND (p_value #>> '{}') !~ '^-?[0-9]+$') THEN
        RAISE EXCEPTION 'tunable % must be % in [%, %], got %',
            p_key, CASE spec.kind WHEN 'integer' THEN 'an integer' ELSE 'a number' END,
            spec.min_value, spec.max_value, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A nonzero number too small for a normal float8 (1e-400 fails the readers' cast) is refused too.
    IF num <> 0 AND pg_catalog.abs(num) < 2.2250738585072014e-308 THEN
        RAISE EXCEPTION 'tunable % must be 0 or at least 2.2250738585072014e-308 in magnitude (a float8), got %',
            p_key, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_value;
END;
$$;

-- learning._validate_tunables_row: the rules between tunables, on a whole learning row (a missing key
-- means its default). Checked after each key passed learning._validate_tunable, by the row's trigger
-- (so set_tunable, unset_tunable and direct writes alike) and by the migration for an adopted row.
CREATE OR REPLACE FUNCTION learning._validate_tunables_row(p_config jsonb)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    eff jsonb;
BEGIN
    SELECT pg_catalog.jsonb_object_agg(s.key, coalesce(p_config -> s.key, s.default_value))
    INTO eff
    FROM learning.tunable_specs AS s
    WHERE s.key IN ('tau_short_days', 'tau_long_days', 'min_allocation');
    IF (eff ->> 'tau_short_days')::numeric >= (eff ->> 'tau_long_days')::numeric THEN
        RAISE EXCEPTION 'tunable tau_short_days must be below tau_long_days, got tau_short_days % and tau_long_days %',
            eff -> 'tau_short_days', eff -> 'tau_long_days'
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'to move both, set tau_long_days first when raising them and tau_short_days first when lowering';
    END IF;
    -- Three tracked timeframes (15m, 1h, 4h): their floors must fit in the whole.
    IF (eff ->> 'min_allocation')::numeric * 3 > 1 THEN
        RAISE EXCEPTION 'tunable min_allocation times the 3 tracked timeframes must be at most 1, got %',
            eff -> 'min_allocation'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- learning.set_tunable: validate and store one tunable. The learning row is locked so two writers
-- never lose each other's keys. A tau change recomputes the EWMA state through the row's AFTER
-- trigger (below), as any direct write of the row does: once, not here as well.
CREATE OR REPLACE FUNCTION learning.set_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_value jsonb;
BEGIN
    -- Refused before any lock or write; the row's trigger applies the same rule again.
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
    PERFORM learning._log('INFO', pg_catalog.format(
        'CONFIG SET: key=%s | old=%s | new=%s', p_key, coalesce(old_value::text, 'default'), p_value
    ));
    RETURN p_value;
END;
$$;

-- learning.unset_tunable: remove a stored tunable so its default applies again; returns the value now
-- in effect. Unknown keys are refused as set_tunable refuses them; removing a key that is not set
-- changes nothing. The row's triggers validate the result (cross-field rules) and recompute tau.
CREATE OR REPLACE FUNCTION learning.unset_tunable(p_key text)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_value jsonb;
BEGIN
    IF NOT EXISTS (SELECT FROM learning.tunable_specs WHERE key = p_key) THEN
        RAISE EXCEPTION 'unknown tunable "%"', p_key
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'known: ' || (
                    SELECT pg_catalog.string_agg(key, ', ' ORDER BY key)
                    FROM learning.tunable_specs
                );
    END IF;
    SELECT config_data -> p_key INTO old_value
    FROM public.learning_configs WHERE module_id = 'learning' FOR UPDATE;
    IF old_value IS NOT NULL THEN
        UPDATE public.learning_configs
        SET config_data = config_data - p_key,
            updated_at = pg_catalog.now(),
            updated_by = 'lowcap-learning'
        WHERE module_id = 'learning';
        PERFORM learning._log('INFO', pg_catalog.format(
            'CONFIG UNSET: key=%s | old=%s | new=default', p_key, old_value
        ));
    END IF;
    RETURN (SELECT default_value FROM learning.tunable_specs WHERE key = p_key);
END;
$$;

-- learning.trg_learning_configs_validate: BEFORE INSERT OR UPDATE of the learning row (its WHEN
-- clause skips every other module's row, e.g. the decision_maker row written on every trade).
-- SPEC 10 "validate on write" for direct writes too: the row must be a JSON object; every tunable
-- key in it must pass learning._validate_tunable, so no row version written since this trigger
-- exists holds a bad tunable; a key that is not a tunable is refused when the write adds it or
-- changes its value (as set_tunable refuses it) and kept when carried over unchanged (a key of an
-- older version). Definer: the bot's role need not reach schema learning to write its table.
CREATE OR REPLACE FUNCTION learning.trg_learning_configs_validate()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_cfg jsonb;
    kv record;
BEGIN
    IF pg_catalog.jsonb_typeof(NEW.config_data) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'learning_configs.config_data of module learning must be a JSON object of tunables, got %',
            pg_catalog.left(NEW.config_data::text, 200)
            USING ERRCODE = 'invalid_parameter_value',
                COLUMN = 'config_data', TABLE = 'learning_configs', SCHEMA = 'public';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.module_id = 'learning' THEN
            old_cfg := OLD.config_data;
        END IF;
    END IF;
    FOR kv IN
        SELECT e.key, e.value
        FROM pg_catalog.jsonb_each(NEW.config_data) AS e (key, value)
        WHERE EXISTS (SELECT FROM learning.tunable_specs AS s WHERE s.key = e.key)
            OR (old_cfg -> e.key) IS DISTINCT FROM e.value
        ORDER BY e.key COLLATE "C"
    LOOP
        PERFORM learning._validate_tunable(kv.key, kv.value);
    END LOOP;
    PERFORM learning._validate_tunables_row(NEW.config_data);
    RETURN NEW;
END;
$$;

-- learning.trg_learning_configs_tau: AFTER INSERT, UPDATE or DELETE of the learning row (WHEN
-- clauses as above). When the effective tau_short_days or tau_long_days (stored value, else the
-- default) changes, the EWMA state is rebuilt from closed_trades (SPEC 4), whoever wrote the row.
-- The row is written (and locked) before recompute_roi_state locks the decision_maker row: the
-- lock order of set_tunable, so a trade waiting on it folds with the new tau.
CREATE OR REPLACE FUNCTION learning.trg_learning_configs_tau()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_cfg jsonb;
    new_cfg jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.module_id = 'learning' THEN
            old_cfg := OLD.config_data;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.module_id = 'learning' THEN
            new_cfg := NEW.config_data;
        END IF;
    END IF;
    IF EXISTS (
        SELECT FROM learning.tunable_specs AS s
        WHERE s.key IN ('tau_short_days', 'tau_long_days')
            AND coalesce(old_cfg -> s.key, s.default_value)
            IS DISTINCT FROM coalesce(new_cfg -> s.key, s.default_value)
    ) THEN
        PERFORM learning.recompute_roi_state();
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS _100_validate_tunables ON public.learning_configs;
CREATE TRIGGER _100_validate_tunables
BEFORE INSERT OR UPDATE ON public.learning_configs
FOR EACH ROW WHEN (new.module_id = 'learning')
EXECUTE FUNCTION learning.trg_learning_configs_validate();

-- One trigger per event: an INSERT trigger's WHEN cannot name OLD, a DELETE trigger's not NEW.
DROP TRIGGER IF EXISTS _900_tau_recompute_insert ON public.learning_configs;
CREATE TRIGGER _900_tau_recompute_insert
AFTER INSERT ON public.learning_configs
FOR EACH ROW WHEN (new.module_id = 'learning')
EXECUTE FUNCTION learning.trg_learning_configs_tau();

DROP TRIGGER IF EXISTS _900_tau_recompute_update ON public.learning_configs;
CREATE TRIGGER _900_tau_recompute_update
AFTER UPDATE ON public.learning_configs
FOR EACH ROW WHEN (old.module_id = 'learning' OR new.module_id = 'learning')
EXECUTE FUNCTION learning.trg_learning_configs_tau();

DROP TRIGGER IF EXISTS _900_tau_recompute_delete ON public.learning_configs;
CREATE TRIGGER _900_tau_recompute_delete
AFTER DELETE ON public.learning_configs
FOR EACH ROW WHEN (old.module_id = 'learning')
EXECUTE FUNCTION learning.trg_learning_configs_tau();

-- A learning row that was written before the validation trigger existed (the bot's own, adopted by
-- a migration) is held to the same rule now: an unusable tunable would fail every trade later
-- (tau_short_days 0 divides by zero), so the migration is refused, naming the key, and nothing is
-- changed; resetting it silently would change how the bot trades (docs/decisions.md, "adopted
-- tunables").
DO $adopted_tunables$
DECLARE
    kv record;
BEGIN
    FOR kv IN
        SELECT e.key, e.value
        FROM public.learning_configs AS c
        CROSS JOIN LATERAL pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(c.config_data) = 'object' THEN c.config_data ELSE '{}' END
        ) AS e (key, value)
        INNER JOIN learning.tunable_specs AS s ON e.key = s.key
        WHERE c.module_id = 'learning'
        ORDER BY e.key COLLATE "C"
    LOOP
        BEGIN
            PERFORM learning._validate_tunable(kv.key, kv.value);
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'the existing learning row of learning_configs holds an unusable tunable: %', sqlerrm
                USING ERRCODE = 'invalid_parameter_value',
                    HINT = pg_catalog.format(
                        'fix or remove the key first, e.g. UPDATE public.learning_configs SET config_data '
                        '= config_data - %L WHERE module_id = ''learning'' (its default is then used)', kv.key
                    );
        END;
    END LOOP;
    BEGIN
        PERFORM learning._validate_tunables_row(c.config_data)
        FROM public.learning_configs AS c
        WHERE c.module_id = 'learning' AND pg_catalog.jsonb_typeof(c.config_data) = 'object';
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'the existing learning row of learning_configs holds unusable tunables: %', sqlerrm
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'fix or remove the keys first (a removed key takes its default)';
    END;
END
$adopted_tunables$;

-- learning.feature_flag: the flag's value in module's feature_flags, false when anything is missing.
CREATE OR REPLACE FUNCTION learning.feature_flag(p_module text, p_flag text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
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
SET search_path = pg_catalog, pg_temp
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
        'FEATURE FLAG: module=%s | flag=%s | value=%s', p_module, p_flag, p_value::text
    ));
    RETURN p_value;
END;
$$;

-- file: sql/020_allocation.sql
-- Timeframe allocation learning (SPEC section 4): the ROI EWMA, the capped allocation step,
-- position redistribution, and the closed_trades triggers that run them.
--
-- search_path: every function pins it, except the pure IMMUTABLE SQL helpers with a RETURN body
-- (tracked_timeframes, trade_roi, _decay, _scaled, ewma_*, _fmt*, ...). A SET clause would stop the
-- planner from inlining them in the per-trade path, and a SQL-standard body binds its references
-- when it is created, so no search_path can redirect them (SPEC 12's exception; the list is pinned
-- by tests/test_functions_search_path.py).

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
-- state = {ref_epoch, sum_short, weight_short, sum_long, weight_long, sumsq_short, weight2_short,
-- sumsq_long, weight2_long}: per horizon sum w*roi, sum w, sum w*roi^2 and sum w^2, taken at
-- ref_epoch (the newest time seen): equal times weigh equally and a late observation folds in
-- exactly. The first five give the means; the rest the second moment and the effective count.
-- A squared weight exp(-2a/tau) is _decay(a, tau / 2): exactly 0 past 115 tau, so no product
-- leaves float8's range (and every argument stays cheap enough for the planner to inline).
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
        THEN ARRAY[at_epoch, roi, 1, roi, 1, roi * roi, 1, roi * roi, 1]
    WHEN at_epoch >= state[1]
        THEN ARRAY[
            at_epoch,
            learning._scaled(state[2], learning._decay(at_epoch - state[1], tau_short_seconds)) + roi,
            learning._scaled(state[3], learning._decay(at_epoch - state[1], tau_short_seconds)) + 1,
            learning._scaled(state[4], learning._decay(at_epoch - state[1], tau_long_seconds)) + roi,
            learning._scaled(state[5], learning._decay(at_epoch - state[1], tau_long_seconds)) + 1,
            learning._scaled(state[6], learning._decay(at_epoch - state[1], tau_short_seconds)) + roi * roi,
            learning._scaled(state[7], learning._decay(at_epoch - state[1], tau_short_seconds / 2)) + 1,
            learning._scaled(state[8], learning._decay(at_epoch - state[1], tau_long_seconds)) + roi * roi,
            learning._scaled(state[9], learning._decay(at_epoch - state[1], tau_long_seconds / 2)) + 1
        ]
    ELSE ARRAY[
        state[1],
        state[2] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_short_seconds)),
        state[3] + learning._decay(state[1] - at_epoch, tau_short_seconds),
        state[4] + learning._scaled(roi, learning._decay(state[1] - at_epoch, tau_long_seconds)),
        state[5] + learning._decay(state[1] - at_epoch, tau_long_seconds),
        state[6] + learning._scaled(roi * roi, learning._decay(state[1] - at_epoch, tau_short_seconds)),
        state[7] + learning._decay(state[1] - at_epoch, tau_short_seconds / 2),
        state[8] + learning._scaled(roi * roi, learning._decay(state[1] - at_epoch, tau_long_seconds)),
        state[9] + learning._decay(state[1] - at_epoch, tau_long_seconds / 2)
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

-- learning.allocation_step: one capped move of the allocation toward the desired split.
-- The desired split is the plan's (sign-safe ROI scores, SPEC 4) or, given p_split, that split of
-- the group's total (learning.evidence_split's); both go through the same floor, and one scale
-- factor on the whole change vector keeps the sum, the direction and the cap exactly, and
-- timeframes without trades keep their value bit for bit.
-- No input can make it raise: float8 products that round to exactly 0 raise "underflow" in
-- PostgreSQL, so every magnitude below 1e-140 (allocations, ROIs, the step, the floor) counts as 0;
-- then no product of two or three of them, nor a quotient by a number at most 1, leaves float8's
-- normal range (docs/decisions.md, "allocation arithmetic").
DROP FUNCTION IF EXISTS learning.allocation_step(
    double precision [], double precision [], integer [], double precision, double precision, double precision
);
CREATE OR REPLACE FUNCTION learning.allocation_step(
    p_current double precision [],
    p_roi_short double precision [],
    p_trade_counts integer [],
    p_max_step double precision DEFAULT 0.003,
    p_min_trades_full double precision DEFAULT 5,
    p_min_allocation double precision DEFAULT 0.05,
    p_split double precision [] DEFAULT NULL
)
RETURNS learning.allocation_step_result
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k integer := pg_catalog.cardinality(p_current);
    result learning.allocation_step_result;
    members integer [] := '{}'::integer [];
    m integer;
    group_total double precision := 0;
    min_roi double precision;
    min_n integer;
    score_sum double precision := 0;
    split_sum double precision := 0;
    floor_value double precision;
    max_change double precision := 0;
    cur double precision [] := p_current;
    roi double precision [] := p_roi_short;
    tiny CONSTANT double precision := 1e-140;
    max_step double precision := p_max_step;
    min_allocation double precision := p_min_allocation;
    full_share double precision;
    spread double precision;
    i integer;
BEGIN
    -- The group's total is 1 minus the timeframes outside it, not the sum of its members: the sum
    -- would carry each step's rounding into the next, and the drift grows without bound (the
    -- allocation left SPEC's 1e-12 after ~19,000 trades). Anchored, it stays within a few ulps.
    group_total := 1;
    FOR i IN 1..k LOOP
        IF p_current[i] IS NULL OR p_current[i] = 'NaN' THEN
            RAISE EXCEPTION 'allocation_step: p_current[%] is %, not an allocation', i, coalesce(p_current[i]::text, 'NULL')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF p_trade_counts[i] >= 1 THEN
            IF p_roi_short[i] IS NULL OR p_roi_short[i] = 'NaN' THEN
                RAISE EXCEPTION 'allocation_step: p_roi_short[%] is % for a timeframe with trades', i,
                    coalesce(p_roi_short[i]::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            members := members || i;
            -- A member's allocation or ROI below tiny counts as 0 (min_allocation 0 shrinks the
            -- worst timeframe geometrically toward 0; a trade may earn 1e-300 percent).
            IF pg_catalog.abs(cur[i]) < tiny THEN
                cur[i] := 0;
            END IF;
            IF pg_catalog.abs(roi[i]) < tiny THEN
                roi[i] := 0;
            END IF;
            min_roi := LEAST(min_roi, roi[i]);
            min_n := LEAST(min_n, p_trade_counts[i]);
        ELSE
            group_total := group_total - p_current[i];
        END IF;
    END LOOP;
    m := pg_catalog.cardinality(members);
    result.new_allocation := p_current;
    IF pg_catalog.abs(group_total) < tiny THEN
        group_total := 0;
    END IF;
    IF max_step < tiny THEN
        max_step := 0;
    END IF;
    IF min_allocation < tiny THEN
        min_allocation := 0;
    END IF;
    IF m < 2 THEN
        result.reason := 'skip_one_timeframe';
        RETURN result;
    END IF;

    floor_value := LEAST(min_allocation, group_total / m);
    spread := group_total - m * floor_value;
    IF pg_catalog.abs(spread) < tiny THEN
        spread := 0;
    END IF;

    result.scores := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    result.desired := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    IF p_split IS NULL THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := roi[i] - LEAST(0, min_roi);
            IF result.scores[i] < tiny THEN
                result.scores[i] := 0;
            END IF;
            score_sum := score_sum + result.scores[i];
        END LOOP;
    ELSE
        -- A given split of the group's total, floored like the plan's: a member's score is its
        -- share above the floor, so a split that clears the floor is the desired split exactly.
        FOREACH i IN ARRAY members LOOP
            IF p_split[i] IS NULL OR NOT p_split[i] BETWEEN 1e-50 AND 1e50 THEN
                RAISE EXCEPTION 'allocation_step: p_split[%] is %, not a weight in [1e-50, 1e50]', i,
                    coalesce(p_split[i]::text, 'NULL')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            split_sum := split_sum + p_split[i];
        END LOOP;
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := group_total * (p_split[i] / split_sum) - floor_value;
            IF result.scores[i] < tiny THEN
                result.scores[i] := 0;
            END IF;
            score_sum := score_sum + result.scores[i];
        END LOOP;
    END IF;
    IF NOT score_sum > 0 THEN
        FOREACH i IN ARRAY members LOOP
            result.scores[i] := 1;
        END LOOP;
        score_sum := m;
    END IF;

    FOREACH i IN ARRAY members LOOP
        result.desired[i] := floor_value + spread * result.scores[i] / score_sum;
        max_change := GREATEST(max_change, abs(result.desired[i] - cur[i]));
    END LOOP;

    full_share := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    result.step_limit := CASE WHEN full_share < tiny THEN 0 ELSE max_step * full_share END;
    IF max_change <= result.step_limit THEN
        result.reason := 'reached_desired';
        FOREACH i IN ARRAY members LOOP
            result.new_allocation[i] := result.desired[i];
        END LOOP;
    ELSE
        result.reason := 'step';
        FOREACH i IN ARRAY members LOOP
            -- A move whose product with the step would leave float8's range is below any
            -- allocation that matters: it is 0.
            IF result.step_limit = 0 OR pg_catalog.abs(result.desired[i] - cur[i]) < 1e-300 / result.step_limit THEN
                result.new_allocation[i] := cur[i];
            ELSE
                result.new_allocation[i] := cur[i]
                    + (result.desired[i] - cur[i]) * result.step_limit / max_change;
            END IF;
        END LOOP;
    END IF;
    FOREACH i IN ARRAY members LOOP
        IF result.new_allocation[i] < tiny THEN
            result.new_allocation[i] := 0;
        END IF;
    END LOOP;
    RETURN result;
END;
$$;

-- learning.evidence_split: the evidence rule's desired split (SPEC 13), the starting split tilted
-- only by ROI differences that stand out of their noise. From the long-horizon sums of each
-- timeframe with trades (p_states: 15m, 1h, 4h, global, 9 values each as ewma_fold keeps them):
-- the mean m, the variance v and the effective count n_eff = (sum w)^2 / sum w^2; the variance is
-- shrunk toward the global one by p_prior_n pseudo-trades, so one or two trades are not precise;
-- se^2 = v / n_eff. Each timeframe is compared with the n_eff-weighted mean of the others:
-- d = m - m_rest, se_d^2 = se^2 + 1 / sum(1 / se_rest^2), z = d / se_d. Only the part of |d|
-- beyond p_threshold standard errors counts (a soft threshold: no step at the threshold), and it
-- tilts the starting split: split = start * exp(sign(d) * p_gain * (|d| - p_threshold * se_d) /
-- sigma_global), the exponent capped at 50. While a timeframe has fewer than p_min_trades_full
-- trades the threshold is scaled by the same n / p_min_trades_full as the step (the step is
-- already that small; the plan's walkthrough moves at its second trade).
-- Returns split (NULL for timeframes without trades, all NULL below two of them), evidence (z)
-- and std_error (se_d). Never raises: magnitudes below 1e-100 count as 0 and variances and
-- standard errors have floors, so no product or quotient leaves float8's normal range.
CREATE OR REPLACE FUNCTION learning.evidence_split(
    p_states double precision [],
    p_counts integer [],
    p_threshold double precision DEFAULT 1.5,
    p_gain double precision DEFAULT 8,
    p_prior_n double precision DEFAULT 5,
    p_min_trades_full double precision DEFAULT 5,
    OUT split double precision [],
    OUT evidence double precision [],
    OUT std_error double precision []
)
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k CONSTANT integer := 3;
    g CONSTANT integer := 4;
    stride CONSTANT integer := 9;
    tiny CONSTANT double precision := 1e-100;
    start CONSTANT double precision [] := learning.starting_allocation();
    mean double precision [] := ARRAY[0, 0, 0, 0]::double precision [];
    var double precision [] := ARRAY[0, 0, 0, 0]::double precision [];
    neff double precision [] := ARRAY[1, 1, 1, 1]::double precision [];
    se2 double precision [] := ARRAY[0, 0, 0]::double precision [];
    members integer [] := '{}'::integer [];
    threshold double precision := coalesce(p_threshold, 0);
    gain double precision := coalesce(p_gain, 0);
    prior double precision := coalesce(p_prior_n, 0);
    w double precision;
    x double precision;
    min_n integer;
    share double precision;
    sigma double precision;
    rest_w double precision;
    rest_m double precision;
    rest_inv double precision;
    d double precision;
    se double precision;
    excess double precision;
    tilt double precision;
    i integer;
    j integer;
BEGIN
    IF threshold < tiny THEN
        threshold := 0;
    END IF;
    IF gain < tiny THEN
        gain := 0;
    END IF;
    IF prior < tiny THEN
        prior := 0;
    END IF;
    FOR i IN 1..g LOOP
        w := p_states[(i - 1) * stride + 5];
        IF (i = g OR p_counts[i] >= 1) AND w >= 1 AND p_states[(i - 1) * stride + 9] >= 1 THEN
            x := p_states[(i - 1) * stride + 4];
            mean[i] := CASE WHEN pg_catalog.abs(x) < 1e-200 THEN 0 ELSE x / w END;
            IF pg_catalog.abs(mean[i]) < tiny THEN
                mean[i] := 0;
            END IF;
            x := p_states[(i - 1) * stride + 8];
            x := CASE WHEN x > 1e-200 THEN x / w ELSE 0 END - mean[i] * mean[i];
            var[i] := CASE WHEN x > 1e-200 THEN x ELSE 0 END;
            neff[i] := GREATEST(w * (w / p_states[(i - 1) * stride + 9]), 1);
        END IF;
        IF i < g AND p_counts[i] >= 1 THEN
            members := members || i;
            min_n := LEAST(min_n, p_counts[i]);
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(members) < 2 THEN
        RETURN;
    END IF;
    sigma := GREATEST(pg_catalog.sqrt(var[g]), 1e-50);
    share := CASE WHEN p_min_trades_full > min_n THEN min_n / p_min_trades_full ELSE 1 END;
    FOREACH i IN ARRAY members LOOP
        x := (neff[i] * var[i] + prior * var[g]) / (neff[i] + prior);
        se2[i] := GREATEST(CASE WHEN x > 1e-200 THEN x / neff[i] ELSE 0 END, 1e-100);
    END LOOP;
    split := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    evidence := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    std_error := pg_catalog.array_fill(NULL::double precision, ARRAY[k]);
    FOREACH i IN ARRAY members LOOP
        rest_w := 0;
        rest_m := 0;
        rest_inv := 0;
        FOREACH j IN ARRAY members LOOP
            IF j <> i THEN
                rest_w := rest_w + neff[j];
                rest_m := rest_m + neff[j] * mean[j];
                rest_inv := rest_inv + 1 / se2[j];
            END IF;
        END LOOP;
        d := mean[i] - rest_m / rest_w;
        IF pg_catalog.abs(d) < tiny THEN
            d := 0;
        END IF;
        se := pg_catalog.sqrt(se2[i] + 1 / rest_inv);
        evidence[i] := d / se;
        std_error[i] := se;
        excess := pg_catalog.abs(d) - threshold * share * se;
        tilt := CASE WHEN excess > tiny AND gain > 0 THEN LEAST(50, gain * (excess / sigma)) ELSE 0 END;
        split[i] := start[i] * pg_catalog.exp(pg_catalog.sign(d) * tilt);
    END LOOP;
END;
$$;

-- learning.redistribute_positions: rewrite each token's tracked positions to its total split by
-- the allocation (SPEC 4); with p_pending_only, only the tokens marked in pending_redistribution.
-- Lock first, read after: one statement locks the tracked rows, skipping rows another transaction
-- holds (NULL totals too: the bot may be filling one in); the next statement reads the totals, so
-- they are the rows as committed after any concurrent change, never a snapshot from before a wait.
-- A token with a tracked row this call does not hold (the bot's, or one committed in between) is
-- left as it is and marked pending: a trade never waits on the bot's position rows, so it cannot
-- deadlock with it, whatever order the bot locks them in. The rows locked stay tracked, so when the
-- second statement counts as many tracked rows as were locked it holds them all; only otherwise are
-- the held ids collected and matched per token (a second pass).
-- A row whose total_allocation_pct is not a percent in [0, 1e9] (NaN, infinite, negative, absurd)
-- keeps its token as it is, with one WARNING line naming the rows (at most 10); the sum of a token's
-- at most three sane rows cannot overflow. A token total below 1e-150 counts as 0 (left as it is) and
-- a row's share of it below 1e-160 as 0: PostgreSQL raises when a float8 product rounds to 0.
-- Rows whose value would not change are not written. One generic plan serves every call
-- (BENCHMARKS.md, "redistribution").
DROP FUNCTION IF EXISTS learning.redistribute_positions(double precision []);
CREATE OR REPLACE FUNCTION learning.redistribute_positions(
    p_allocation double precision [],
    p_pending_only boolean DEFAULT false
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    held integer;
    ids uuid [];
    complete boolean;
    updated integer;
    bad_rows integer;
    bad_list text;
BEGIN
    SELECT pg_catalog.count(*) INTO held
    FROM (
        SELECT
        FROM public.lowcap_positions AS p
        WHERE p.status IN ('watchlist', 'active', 'dormant')
            AND p.timeframe = ANY(learning.tracked_timeframes())
            AND (NOT p_pending_only OR EXISTS (
                SELECT FROM learning.pending_redistribution AS m
                WHERE m.token_contract = p.token_contract AND m.token_chain = p.token_chain
            ))
        FOR NO KEY UPDATE OF p SKIP LOCKED
    ) AS l;

    -- Once, or twice when a row was skipped: then with the ids this call holds, to tell its tokens.
    LOOP
        WITH alloc AS (
            SELECT a.timeframe, a.alloc
            FROM unnest(learning.tracked_timeframes(), p_allocation) AS a (timeframe, alloc)
        ),

        -- Every token in scope, from its tracked rows as committed now.
        summed AS (
            SELECT
                p.token_contract,
                p.token_chain,
                pg_catalog.count(*) AS n,
                pg_catalog.bool_and(m.id IS NOT NULL) AS ids_held,
                pg_catalog.count(*) FILTER (WHERE NOT p.total_allocation_pct BETWEEN 0 AND 1e9) AS bad_rows,
                pg_catalog.sum(p.total_allocation_pct) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9)
                AS token_total,
                pg_catalog.sum(a.alloc) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9) AS alloc_sum
            FROM public.lowcap_positions AS p
            INNER JOIN alloc AS a ON p.timeframe = a.timeframe
            LEFT JOIN unnest(ids) AS m (id) ON p.id = m.id
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND (NOT p_pending_only OR EXISTS (
                    SELECT FROM learning.pending_redistribution AS pr
                    WHERE pr.token_contract = p.token_contract AND pr.token_chain = p.token_chain
                ))
            GROUP BY p.token_contract, p.token_chain
        ),

        -- Every row locked above is still tracked, so as many rows as locked means this call holds them all.
        whole AS (
            SELECT coalesce(pg_catalog.sum(s.n), 0) = held AS all_held FROM summed AS s
        ),

        token AS (
            SELECT
                s.token_contract,
                s.token_chain,
                s.bad_rows,
                s.token_total,
                s.alloc_sum,
                w.all_held OR s.ids_held AS held,
                (w.all_held OR s.ids_held) AND s.bad_rows = 0 AND s.token_total >= 1e-150
                AND s.alloc_sum > 0 AS ready
            FROM summed AS s
            CROSS JOIN whole AS w
        ),

        -- The same snapshot as summed: a token's rows here are the rows it summed. A row holding all
        -- of its token's allocation (a token with one tracked row) gets the total itself: total * a / a
        -- can round to a neighbouring float, and the row would be rewritten.
        written AS (
            UPDATE public.lowcap_positions AS p
            SET total_allocation_pct = CASE
                WHEN a.alloc = t.alloc_sum THEN t.token_total
                WHEN a.alloc >= 1e-150 THEN t.token_total * a.alloc / t.alloc_sum
                WHEN a.alloc / t.alloc_sum >= 1e-160 THEN t.token_total * (a.alloc / t.alloc_sum)
                ELSE 0
            END
            FROM token AS t, alloc AS a
            WHERE p.token_contract = t.token_contract AND p.token_chain = t.token_chain
                AND p.timeframe = a.timeframe
                AND p.status IN ('watchlist', 'active', 'dormant')
                AND p.total_allocation_pct IS NOT NULL
                AND t.ready
                AND p.total_allocation_pct IS DISTINCT FROM (
                    CASE
                        WHEN a.alloc = t.alloc_sum THEN t.token_total
                        WHEN a.alloc >= 1e-150 THEN t.token_total * a.alloc / t.alloc_sum
                        WHEN a.alloc / t.alloc_sum >= 1e-160 THEN t.token_total * (a.alloc / t.alloc_sum)
                        ELSE 0
                    END
                )
            RETURNING 1
        ),

        marked AS (
            INSERT INTO learning.pending_redistribution (token_contract, token_chain)
            SELECT t.token_contract, t.token_chain
            FROM token AS t
            WHERE NOT t.held AND ids IS NOT NULL
            ON CONFLICT DO NOTHING
        ),

        -- Every other mark is done: redistributed now, left for a bad row, or without rows.
        cleared AS (
            DELETE FROM learning.pending_redistribution AS pr
            WHERE NOT EXISTS (
                SELECT FROM token AS t
                WHERE t.token_contract = pr.token_contract AND t.token_chain = pr.token_chain AND NOT t.held
            )
        )

        SELECT
            (SELECT w.all_held FROM whole AS w),
            (SELECT pg_catalog.count(*) FROM written),
            (SELECT pg_catalog.sum(t.bad_rows) FROM token AS t)
        INTO complete, updated, bad_rows;

        EXIT WHEN complete OR ids IS NOT NULL;
        -- Locking again returns the rows this call holds (and any that came free since).
        ids := ARRAY(
            SELECT p.id
            FROM public.lowcap_positions AS p
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND p.timeframe = ANY(learning.tracked_timeframes())
                AND (NOT p_pending_only OR EXISTS (
                    SELECT FROM learning.pending_redistribution AS m
                    WHERE m.token_contract = p.token_contract AND m.token_chain = p.token_chain
                ))
            FOR NO KEY UPDATE OF p SKIP LOCKED
        );
    END LOOP;

    IF bad_rows > 0 THEN
        SELECT
            pg_catalog.count(*),
            pg_catalog.string_agg(pg_catalog.format(
                'id=%s token=%s chain=%s timeframe=%s total_allocation_pct=%s',
                b.id, pg_catalog.to_jsonb(b.token_contract), pg_catalog.to_jsonb(b.token_chain), b.timeframe,
                b.total_allocation_pct
            ), ', ' ORDER BY b.rn) FILTER (WHERE b.rn <= 10)
        INTO bad_rows, bad_list
        FROM (
            SELECT
                p.id, p.token_contract, p.token_chain, p.timeframe, p.total_allocation_pct,
                pg_catalog.row_number() OVER (ORDER BY p.token_contract, p.token_chain, p.timeframe) AS rn
            FROM public.lowcap_positions AS p
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND p.timeframe = ANY(learning.tracked_timeframes())
                AND NOT p.total_allocation_pct BETWEEN 0 AND 1e9
        ) AS b;
        PERFORM learning._log('WARNING', pg_catalog.format(
            'POSITIONS SKIPPED: %s row(s) with total_allocation_pct not a percent in [0, 1e9] keep their '
            || 'token as it is | %s%s',
            bad_rows, bad_list, CASE WHEN bad_rows > 10 THEN ', ...' ELSE '' END
        ));
    END IF;
    RETURN updated;
END;
$$;

-- learning.redistribute_pending: redistribute the tokens a trade had to skip, with the current
-- allocation, under the decision_maker row lock (the trigger's lock order: that row, then
-- positions). For the hourly jobs; the next trade does the same. Returns the rows written.
-- A transaction holding that row longer than lock_timeout (a bot's open transaction that inserted
-- a trade) makes it return 0, writing nothing: that trade, or the next one, takes the marks.
CREATE OR REPLACE FUNCTION learning.redistribute_pending()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    alloc double precision [];
BEGIN
    IF NOT EXISTS (SELECT FROM learning.pending_redistribution) THEN
        RETURN 0;
    END IF;
    PERFORM FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    alloc := ARRAY(
        SELECT s.current_allocation
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
        INNER JOIN learning.allocation_state AS s ON x.tf = s.series
        ORDER BY x.ord
    );
    IF pg_catalog.cardinality(alloc) <> pg_catalog.cardinality(learning.tracked_timeframes()) THEN
        RETURN 0;
    END IF;
    RETURN learning.redistribute_positions(alloc, true);
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END;
$$;

-- The decision_maker row is output since the state moved to learning.allocation_state: nothing
-- restores it or checks it any more; the next trade rewrites it.
DROP FUNCTION IF EXISTS learning._decision_maker_intact(jsonb, boolean);
DROP FUNCTION IF EXISTS learning._series_intact(jsonb, text, integer);
DROP FUNCTION IF EXISTS learning._allocation_intact(jsonb);
DROP FUNCTION IF EXISTS learning._series_state(jsonb, text);
DROP FUNCTION IF EXISTS learning._initial_decision_maker_config();
DROP FUNCTION IF EXISTS learning.ensure_decision_maker_config(boolean);

-- learning._series_json: one series' entry in the decision_maker row (roi_short, roi_long, n,
-- updated_at = the newest trade folded in).
-- SQL with no SET clause so it inlines; STABLE like jsonb_build_object (an IMMUTABLE function
-- whose body is STABLE is never inlined).
CREATE OR REPLACE FUNCTION learning._series_json(p_state double precision [], p_n integer)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'roi_short', learning.ewma_short(p_state),
    'roi_long', learning.ewma_long(p_state),
    'n', p_n,
    'updated_at', CASE WHEN p_n > 0 THEN pg_catalog.to_timestamp(p_state[1]) END
);

-- learning._decision_maker_config: the plan's timeframe_allocation and global_roi keys of the
-- decision_maker row (output for the bot) for an allocation and fold states. states holds 4 series
-- of 9 values (15m, 1h, 4h, global); counts holds their n.
-- Written out for the three tracked timeframes as one expression, no sub-select and no SET clause:
-- it inlines into the trigger's UPDATE, whose plan is cached (a query here cost ~0.15 ms a trade).
CREATE OR REPLACE FUNCTION learning._decision_maker_config(
    p_allocation double precision [],
    p_states double precision [],
    p_counts integer []
)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'timeframe_allocation', pg_catalog.jsonb_build_object(
        (learning.tracked_timeframes())[1],
        learning._series_json(p_states[1:9], p_counts[1])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[1]),
        (learning.tracked_timeframes())[2],
        learning._series_json(p_states[10:18], p_counts[2])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[2]),
        (learning.tracked_timeframes())[3],
        learning._series_json(p_states[19:27], p_counts[3])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[3])
    ),
    'global_roi', learning._series_json(p_states[28:36], p_counts[4])
);

-- learning._decision_maker_output: the decision_maker row with our keys written over it. What the
-- bot wrote stays, except that a row that is not a JSON object is replaced; the bot's own row shape
-- (its global_roi in percent, no timeframe_allocation) keeps that value aside once, as
-- global_roi_legacy_pct, never over a value kept before. STABLE like jsonb_build_object, so it inlines.
CREATE OR REPLACE FUNCTION learning._decision_maker_output(p_cfg jsonb, p_output jsonb)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(p_cfg) = 'object' THEN p_cfg ELSE '{}'::jsonb END
|| CASE
    WHEN p_cfg ? 'global_roi' AND NOT p_cfg ? 'global_roi_legacy_pct' AND NOT p_cfg ? 'timeframe_allocation'
        THEN pg_catalog.jsonb_build_object('global_roi_legacy_pct', p_cfg -> 'global_roi')
    ELSE '{}'::jsonb
END
|| p_output;

-- learning._state_arrays: the typed state as the trigger's arrays: 4 series x 9 fold values (15m,
-- 1h, 4h, global; ewma_fold's order), their n, the tracked timeframes' allocation, and how many
-- of the four rows exist (a missing row reads as no trades at the starting split).
-- plpgsql, so its plans are cached per session (a SQL function's are made again at every call).
CREATE OR REPLACE FUNCTION learning._state_arrays(
    OUT states double precision [],
    OUT counts integer [],
    OUT allocation double precision [],
    OUT present integer
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- One row of the four series; a missing series reads as no trades at the starting split.
    SELECT
        ARRAY[
            coalesce(a.ref_epoch, 0), coalesce(a.short_sum_w_roi, 0), coalesce(a.short_sum_w, 0),
            coalesce(a.long_sum_w_roi, 0), coalesce(a.long_sum_w, 0), coalesce(a.short_sum_w_roi2, 0),
            coalesce(a.short_sum_w2, 0), coalesce(a.long_sum_w_roi2, 0), coalesce(a.long_sum_w2, 0),
            coalesce(b.ref_epoch, 0), coalesce(b.short_sum_w_roi, 0), coalesce(b.short_sum_w, 0),
            coalesce(b.long_sum_w_roi, 0), coalesce(b.long_sum_w, 0), coalesce(b.short_sum_w_roi2, 0),
            coalesce(b.short_sum_w2, 0), coalesce(b.long_sum_w_roi2, 0), coalesce(b.long_sum_w2, 0),
            coalesce(c.ref_epoch, 0), coalesce(c.short_sum_w_roi, 0), coalesce(c.short_sum_w, 0),
            coalesce(c.long_sum_w_roi, 0), coalesce(c.long_sum_w, 0), coalesce(c.short_sum_w_roi2, 0),
            coalesce(c.short_sum_w2, 0), coalesce(c.long_sum_w_roi2, 0), coalesce(c.long_sum_w2, 0),
            coalesce(g.ref_epoch, 0), coalesce(g.short_sum_w_roi, 0), coalesce(g.short_sum_w, 0),
            coalesce(g.long_sum_w_roi, 0), coalesce(g.long_sum_w, 0), coalesce(g.short_sum_w_roi2, 0),
            coalesce(g.short_sum_w2, 0), coalesce(g.long_sum_w_roi2, 0), coalesce(g.long_sum_w2, 0)
        ],
        ARRAY[coalesce(a.n, 0), coalesce(b.n, 0), coalesce(c.n, 0), coalesce(g.n, 0)],
        ARRAY[
            coalesce(a.current_allocation, (learning.starting_allocation())[1]),
            coalesce(b.current_allocation, (learning.starting_allocation())[2]),
            coalesce(c.current_allocation, (learning.starting_allocation())[3])
        ],
        (a.series IS NOT NULL)::integer + (b.series IS NOT NULL)::integer + (c.series IS NOT NULL)::integer
        + (g.series IS NOT NULL)::integer
    INTO states, counts, allocation, present
    FROM (SELECT) AS one
    LEFT JOIN learning.allocation_state AS a ON a.series = (learning.tracked_timeframes())[1]
    LEFT JOIN learning.allocation_state AS b ON b.series = (learning.tracked_timeframes())[2]
    LEFT JOIN learning.allocation_state AS c ON c.series = (learning.tracked_timeframes())[3]
    LEFT JOIN learning.allocation_state AS g ON g.series = 'global';
END;
$$;

-- learning._ensure_state_rows: the typed state's rows, at the starting split with no trades, for
-- any series that has none (a fresh database).
CREATE OR REPLACE FUNCTION learning._ensure_state_rows()
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO learning.allocation_state (series, current_allocation)
    SELECT
        x.name,
        x.start
    FROM unnest(learning.tracked_timeframes(), learning.starting_allocation()) AS x (name, start)
    UNION ALL
    SELECT
        'global',
        NULL
    ON CONFLICT (series) DO NOTHING;
END;

-- learning._write_state: store fold states, counts and an allocation (arrays as _state_arrays
-- gives them) in learning.allocation_state; rows that do not change are not written. The caller
-- holds the decision_maker row: its lock guards this table (one lock order: that row, this
-- table, positions), and every writer here takes it first.
CREATE OR REPLACE FUNCTION learning._write_state(
    p_states double precision [],
    p_counts integer [],
    p_allocation double precision []
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE learning.allocation_state AS s
    SET
        ref_epoch = v.ref_epoch,
        short_sum_w_roi = v.short_sum_w_roi,
        short_sum_w = v.short_sum_w,
        long_sum_w_roi = v.long_sum_w_roi,
        long_sum_w = v.long_sum_w,
        short_sum_w_roi2 = v.short_sum_w_roi2,
        short_sum_w2 = v.short_sum_w2,
        long_sum_w_roi2 = v.long_sum_w_roi2,
        long_sum_w2 = v.long_sum_w2,
        n = v.n,
        current_allocation = v.current_allocation,
        updated_at = pg_catalog.now()
    FROM (
        SELECT
            x.name,
            p_states[(x.ord - 1) * 9 + 1] AS ref_epoch,
            p_states[(x.ord - 1) * 9 + 2] AS short_sum_w_roi,
            p_states[(x.ord - 1) * 9 + 3] AS short_sum_w,
            p_states[(x.ord - 1) * 9 + 4] AS long_sum_w_roi,
            p_states[(x.ord - 1) * 9 + 5] AS long_sum_w,
            p_states[(x.ord - 1) * 9 + 6] AS short_sum_w_roi2,
            p_states[(x.ord - 1) * 9 + 7] AS short_sum_w2,
            p_states[(x.ord - 1) * 9 + 8] AS long_sum_w_roi2,
            p_states[(x.ord - 1) * 9 + 9] AS long_sum_w2,
            p_counts[x.ord] AS n,
            p_allocation[x.ord] AS current_allocation
        FROM pg_catalog.unnest(learning.tracked_timeframes() || 'global'::text) WITH ORDINALITY AS x (name, ord)
    ) AS v
    WHERE s.series = v.name
        AND (
            s.ref_epoch, s.short_sum_w_roi, s.short_sum_w, s.long_sum_w_roi, s.long_sum_w, s.short_sum_w_roi2,
            s.short_sum_w2, s.long_sum_w_roi2, s.long_sum_w2, s.n, s.current_allocation
        ) IS DISTINCT FROM (
            v.ref_epoch, v.short_sum_w_roi, v.short_sum_w, v.long_sum_w_roi, v.long_sum_w, v.short_sum_w_roi2,
            v.short_sum_w2, v.long_sum_w_roi2, v.long_sum_w2, v.n, v.current_allocation
        );
END;
$$;

-- learning.ensure_decision_maker_config: create or adopt the decision_maker row and write our keys
-- into it from learning.allocation_state; returns it, locked.
CREATE OR REPLACE FUNCTION learning.ensure_decision_maker_config()
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
DECLARE
    cfg jsonb;
    st record;
BEGIN
    INSERT INTO public.learning_configs (module_id, config_data, updated_by, notes)
    VALUES ('decision_maker', '{}', 'lowcap-learning', 'timeframe allocation learned from closed_trades')
    ON CONFLICT (module_id) DO NOTHING;
    SELECT c.config_data INTO cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    PERFORM learning._ensure_state_rows();
    SELECT * INTO st FROM learning._state_arrays();
    cfg := learning._decision_maker_output(cfg, learning._decision_maker_config(st.allocation, st.states, st.counts));
    UPDATE public.learning_configs
    SET config_data = cfg, updated_at = pg_catalog.now(), updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker' AND config_data IS DISTINCT FROM cfg;
    RETURN cfg;
END;
$$;

-- learning._fmt: a number for log lines (4 to 6 decimals, no float noise).
-- No SET clause so it inlines into the trigger's log statement (called per history row).
CREATE OR REPLACE FUNCTION learning._fmt(x double precision, digits integer DEFAULT 4)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(pg_catalog.round(x::numeric, digits)::text, 'null');

-- learning._fmt_allocation: {15m: 0.15, 1h: 0.5, 4h: 0.35} as the plan's log lines show it.
-- Written out for the three tracked timeframes with || only (array_to_string is STABLE, and an
-- IMMUTABLE function calling it is never inlined: it was planned again for each log row, 0.15 ms).
CREATE OR REPLACE FUNCTION learning._fmt_allocation(p_allocation double precision [])
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN '{'
|| (learning.tracked_timeframes())[1] || ': ' || learning._fmt(p_allocation[1], 6) || ', '
|| (learning.tracked_timeframes())[2] || ': ' || learning._fmt(p_allocation[2], 6) || ', '
|| (learning.tracked_timeframes())[3] || ': ' || learning._fmt(p_allocation[3], 6)
|| '}';

-- learning.trg_closed_trades_learn: AFTER INSERT (statement) on closed_trades.
-- Takes each new trade as one step in (closed_at, trade_id) order under the decision_maker row
-- lock, then redistributes positions once and writes strength facts, all in the same statement.
-- jit off: transition-table row estimates are far too high, and JIT compiling cost more than it saved.
-- extra_float_digits 1: the decision_maker row shows the state exactly, whatever the client session set.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_learn()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
SET jit = off
AS $$
DECLARE
    tun jsonb;
    tau_short double precision;
    tau_long double precision;
    max_step double precision;
    min_trades_full double precision;
    min_allocation double precision;
    tracked CONSTANT text [] := learning.tracked_timeframes();
    alloc double precision [];
    present integer;
    rule text;
    evidence_z double precision;
    evidence_gain double precision;
    evidence_prior_n double precision;
    ev record;
    ev_split double precision [];
    ev_z double precision [];
    alloc_moved boolean := false;
    states double precision [];
    counts integer [];
    roi_short double precision [];
    step learning.allocation_step_result;
    t record;
    i integer;
    g CONSTANT integer := 4;
    at_epoch double precision;
    st double precision [];
    -- History rows, written once at the end: one array of the table's own row type, appended in
    -- place (one append a trade; twelve arrays of text cast back cost ~10 us a trade more).
    steps learning.allocation_history [] := '{}'::learning.allocation_history [];
    bad record;
    cfg_tid tid;
BEGIN
    -- At most 1,000 actions and 1 MiB of JSON text a trade: each action is a strength fact written
    -- under the decision_maker lock and a scope the builder compares within its trade (100,000
    -- actions held the lock 3.4 s). The text, not the stored size: a value may arrive compressed.
    SELECT n.trade_id, pg_catalog.jsonb_array_length(n.actions) AS actions,
        pg_catalog.octet_length(n.actions::text) AS bytes INTO bad
    FROM new_trades AS n
    WHERE pg_catalog.jsonb_typeof(n.actions) = 'array'
        AND (pg_catalog.jsonb_array_length(n.actions) > 1000 OR pg_catalog.octet_length(n.actions::text) > 1048576)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions of trade % has % actions in % bytes; at most 1000 actions '
            'and 1048576 bytes are allowed', bad.trade_id, bad.actions, bad.bytes
            USING ERRCODE = 'program_limit_exceeded', COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    -- Actions are validated before anything is learned: a bad element fails the whole INSERT.
    SELECT n.trade_id, e.ord, e.action INTO bad
    FROM new_trades AS n
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    WHERE pg_catalog.jsonb_typeof(e.action) <> 'object'
        OR pg_catalog.jsonb_typeof(e.action -> 'pattern_key') IS DISTINCT FROM 'string'
        OR e.action ->> 'pattern_key' = ''
        -- Keys are index keys downstream (lessons, overrides): bounded so they always fit.
        OR pg_catalog.length(e.action ->> 'pattern_key') > 200
        OR pg_catalog.jsonb_typeof(e.action -> 'action_category') IS DISTINCT FROM 'string'
        OR pg_catalog.length(e.action ->> 'action_category') > 200
        OR coalesce(pg_catalog.jsonb_typeof(e.action -> 'scope'), 'object') NOT IN ('object', 'null')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions[%] of trade % must be an object with string pattern_key and action_category (1 to 200 characters) and an object scope',
            bad.ord - 1, bad.trade_id
            USING ERRCODE = 'check_violation', DETAIL = 'got ' || pg_catalog.left(bad.action::text, 200),
                COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    -- The decision_maker row lock serializes concurrent trade inserts and guards the typed state
    -- (every writer of learning.allocation_state takes it first): no lost update. The state and
    -- the tunables are read after it, so a trade that waited on a tau change folds with the tau
    -- that rebuilt the state. The row's ctid is kept so the final UPDATE is a TID fetch: when
    -- another session's snapshot holds back pruning, an index lookup walks every dead version of
    -- this row (twice per trade).
    SELECT c.ctid INTO cfg_tid
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    IF cfg_tid IS NULL THEN
        -- No row (the bot deleted it): made again; the state is ours, so nothing is lost.
        PERFORM learning.ensure_decision_maker_config();
        SELECT c.ctid INTO cfg_tid
        FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    END IF;
    -- The typed state, read as learning._state_arrays reads it.
    SELECT
        ARRAY[
            coalesce(a.ref_epoch, 0), coalesce(a.short_sum_w_roi, 0), coalesce(a.short_sum_w, 0),
            coalesce(a.long_sum_w_roi, 0), coalesce(a.long_sum_w, 0), coalesce(a.short_sum_w_roi2, 0),
            coalesce(a.short_sum_w2, 0), coalesce(a.long_sum_w_roi2, 0), coalesce(a.long_sum_w2, 0),
            coalesce(b.ref_epoch, 0), coalesce(b.short_sum_w_roi, 0), coalesce(b.short_sum_w, 0),
            coalesce(b.long_sum_w_roi, 0), coalesce(b.long_sum_w, 0), coalesce(b.short_sum_w_roi2, 0),
            coalesce(b.short_sum_w2, 0), coalesce(b.long_sum_w_roi2, 0), coalesce(b.long_sum_w2, 0),
            coalesce(c.ref_epoch, 0), coalesce(c.short_sum_w_roi, 0), coalesce(c.short_sum_w, 0),
            coalesce(c.long_sum_w_roi, 0), coalesce(c.long_sum_w, 0), coalesce(c.short_sum_w_roi2, 0),
            coalesce(c.short_sum_w2, 0), coalesce(c.long_sum_w_roi2, 0), coalesce(c.long_sum_w2, 0),
            coalesce(g.ref_epoch, 0), coalesce(g.short_sum_w_roi, 0), coalesce(g.short_sum_w, 0),
            coalesce(g.long_sum_w_roi, 0), coalesce(g.long_sum_w, 0), coalesce(g.short_sum_w_roi2, 0),
            coalesce(g.short_sum_w2, 0), coalesce(g.long_sum_w_roi2, 0), coalesce(g.long_sum_w2, 0)
        ],
        ARRAY[coalesce(a.n, 0), coalesce(b.n, 0), coalesce(c.n, 0), coalesce(g.n, 0)],
        ARRAY[
            coalesce(a.current_allocation, (learning.starting_allocation())[1]),
            coalesce(b.current_allocation, (learning.starting_allocation())[2]),
            coalesce(c.current_allocation, (learning.starting_allocation())[3])
        ],
        (a.series IS NOT NULL)::integer + (b.series IS NOT NULL)::integer + (c.series IS NOT NULL)::integer
        + (g.series IS NOT NULL)::integer
    INTO states, counts, alloc, present
    FROM (SELECT) AS one
    LEFT JOIN learning.allocation_state AS a ON a.series = (learning.tracked_timeframes())[1]
    LEFT JOIN learning.allocation_state AS b ON b.series = (learning.tracked_timeframes())[2]
    LEFT JOIN learning.allocation_state AS c ON c.series = (learning.tracked_timeframes())[3]
    LEFT JOIN learning.allocation_state AS g ON g.series = 'global';
    IF present < g THEN
        PERFORM learning._ensure_state_rows();
    END IF;
    tun := learning.tunables();
    tau_short := (tun ->> 'tau_short_days')::double precision * 86400;
    tau_long := (tun ->> 'tau_long_days')::double precision * 86400;
    max_step := (tun ->> 'max_step')::double precision;
    min_trades_full := (tun ->> 'min_trades_full')::double precision;
    min_allocation := (tun ->> 'min_allocation')::double precision;
    rule := tun ->> 'allocation_rule';
    evidence_z := (tun ->> 'evidence_z')::double precision;
    evidence_gain := (tun ->> 'evidence_gain')::double precision;
    evidence_prior_n := (tun ->> 'evidence_prior_n')::double precision;
    roi_short := pg_catalog.array_fill(NULL::double precision, ARRAY[g - 1]);
    FOR i IN 1..g - 1 LOOP
        IF counts[i] > 0 THEN
            roi_short[i] := learning.ewma_short(states[(i - 1) * 9 + 1:i * 9]);
        END IF;
    END LOOP;

    FOR t IN
        SELECT n.trade_id, n.timeframe, n.closed_at, learning.trade_roi(n.rpnl_pct) AS roi
        FROM new_trades AS n
        ORDER BY n.closed_at, n.trade_id COLLATE "C"
    LOOP
        i := pg_catalog.array_position(tracked, t.timeframe);
        IF i IS NULL THEN
            -- Columns in the table's order: seq and recorded_at are left to their defaults.
            steps := steps || ROW(
                NULL, t.trade_id, t.timeframe, t.closed_at, t.roi, 'skip_untracked', alloc, alloc,
                NULL, NULL, roi_short, counts[1:g - 1], NULL, NULL, NULL, NULL, NULL
            )::learning.allocation_history;
        ELSE
            at_epoch := EXTRACT(EPOCH FROM t.closed_at);
            st := states[(i - 1) * 9 + 1:i * 9];
            st := learning.ewma_fold(st, t.roi, at_epoch, tau_short, tau_long);
            states[(i - 1) * 9 + 1:i * 9] := st;
            roi_short[i] := learning.ewma_short(st);
            st := states[(g - 1) * 9 + 1:g * 9];
            states[(g - 1) * 9 + 1:g * 9] := learning.ewma_fold(st, t.roi, at_epoch, tau_short, tau_long);
            counts[i] := counts[i] + 1;
            counts[g] := counts[g] + 1;
            ev_split := NULL;
            ev_z := NULL;
            IF rule = 'evidence' THEN
                ev := learning.evidence_split(
                    states, counts, evidence_z, evidence_gain, evidence_prior_n, min_trades_full
                );
                ev_split := ev.split;
                ev_z := ev.evidence;
            END IF;
            step := learning.allocation_step(
                alloc, roi_short, counts[1:g - 1], max_step, min_trades_full, min_allocation, ev_split
            );
            alloc_moved := alloc_moved OR step.new_allocation IS DISTINCT FROM alloc;
            steps := steps || ROW(
                NULL, t.trade_id, t.timeframe, t.closed_at, t.roi, step.reason, alloc,
                step.new_allocation, step.desired, step.scores, roi_short, counts[1:g - 1],
                step.step_limit, NULL, rule, ev_z, ev_split
            )::learning.allocation_history;
            alloc := step.new_allocation;
        END IF;
    END LOOP;

    IF pg_catalog.cardinality(steps) = 0 THEN
        RETURN NULL;
    END IF;

    PERFORM learning._write_state(states, counts, alloc);
    -- The bot's view, rewritten from the state whatever the bot did to the row.
    UPDATE public.learning_configs
    SET config_data = learning._decision_maker_output(
            config_data, learning._decision_maker_config(alloc, states, counts)
        ),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE ctid = cfg_tid;

    WITH history AS (
        INSERT INTO learning.allocation_history (
            trade_id, timeframe, closed_at, trade_roi, reason, allocation_before,
            allocation_after, desired, scores, roi_short, trade_counts, step_limit, rule, evidence, split
        )
        SELECT
            h.trade_id, h.timeframe, h.closed_at, h.trade_roi, h.reason, h.allocation_before,
            h.allocation_after, h.desired, h.scores, h.roi_short, h.trade_counts, h.step_limit,
            h.rule, h.evidence, h.split
        FROM unnest(steps) WITH ORDINALITY AS h
        ORDER BY h.ordinality
        RETURNING *
    )

    -- Each history row's two lines come from unnest(ARRAY[...]), not a VALUES list: a lateral VALUES
    -- list sets its expressions up again for every row (~15 us a trade in a bulk insert).
    INSERT INTO learning.learning_log (level, message)
    SELECT 'INFO', l.message
    FROM history AS h
    CROSS JOIN LATERAL (
        SELECT pg_catalog.array_position(tracked, h.timeframe) AS i
    ) AS x
    CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[
        CASE WHEN x.i IS NOT NULL THEN pg_catalog.format(
            'ROI UPDATE: timeframe=%s | roi_short=%s | n=%s | trade_roi=%s | trade_id=%s',
            h.timeframe, learning._fmt(h.roi_short[x.i], 6), h.trade_counts[x.i],
            learning._fmt(h.trade_roi, 6), h.trade_id
        ) END,
        CASE h.reason
            WHEN 'skip_untracked' THEN pg_catalog.format(
                'ALLOCATION SKIP: %s is not a learning timeframe (learning: 15m, 1h, 4h) | trade_id=%s',
                h.timeframe, h.trade_id
            )
            WHEN 'skip_one_timeframe' THEN pg_catalog.format(
                'ALLOCATION SKIP: Only %s timeframe has trades (need 2+) | timeframes_with_trades=[%s] | trade_id=%s',
                (SELECT pg_catalog.count(*) FROM pg_catalog.unnest(h.trade_counts) AS c (n) WHERE c.n > 0),
                (
                    SELECT pg_catalog.string_agg(tf, ', ' ORDER BY o)
                    FROM unnest(tracked, h.trade_counts) WITH ORDINALITY AS c (tf, n, o)
                    WHERE c.n > 0
                ),
                h.trade_id
            )
            ELSE pg_catalog.format(
                'ALLOCATION UPDATE: trigger=%s trade closed | old=%s | new=%s | change=%s%% | limit=%s | trade_id=%s',
                h.timeframe, learning._fmt_allocation(h.allocation_before),
                learning._fmt_allocation(h.allocation_after),
                -- Written out for the three tracked timeframes, like _fmt_allocation.
                learning._fmt(100 * GREATEST(
                    abs(h.allocation_after[1] - h.allocation_before[1]),
                    abs(h.allocation_after[2] - h.allocation_before[2]),
                    abs(h.allocation_after[3] - h.allocation_before[3])
                ), 4),
                learning._fmt(h.step_limit, 6), h.trade_id
            )
        END
    ]) WITH ORDINALITY AS l (message, ord)
    WHERE l.message IS NOT NULL
    ORDER BY h.seq, l.ord;
    PERFORM pg_catalog.pg_notify('learning_log', '');

    -- Any step that moved counts, even if the statement ends where it began: one-by-one inserts
    -- would have redistributed, and a multi-row INSERT must give the same positions.
    IF alloc_moved THEN
        PERFORM learning.redistribute_positions(alloc);
    -- Tokens an earlier trade had to skip (the bot held a row) are redistributed by the next one.
    ELSIF EXISTS (SELECT FROM learning.pending_redistribution) THEN
        PERFORM learning.redistribute_positions(alloc, true);
    END IF;

    -- Strength facts (SPEC section 5): one row per action, with the trade's roi and outcome shape.
    INSERT INTO public.pattern_trade_events (
        pattern_key, action_category, scope, trade_id, roi, did_trim, reached_s3, "timestamp"
    )
    -- did_trim / reached_s3 are judged once per trade (one pass over its actions), not per action.
    SELECT
        e.action ->> 'pattern_key',
        e.action ->> 'action_category',
        coalesce(nullif(e.action -> 'scope', 'null'::jsonb), '{}'::jsonb),
        n.trade_id,
        learning.trade_roi(n.rpnl_pct),
        f.did_trim,
        f.reached_s3,
        n.closed_at
    FROM new_trades AS n
    CROSS JOIN LATERAL (
        SELECT
            coalesce(n.did_trim, coalesce(pg_catalog.bool_or(
                x.a ->> 'action_category' = 'trim' OR x.a ->> 'decision_type' = 'trim'
            ), false)) AS did_trim,
            coalesce(n.reached_s3, coalesce(pg_catalog.bool_or(
                x.a ->> 'state' = 'S3' OR pg_catalog.strpos(x.a ->> 'pattern_key', '.S3.') > 0
            ), false)) AS reached_s3
        FROM pg_catalog.jsonb_array_elements(n.actions) AS x (a)
    ) AS f
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    ORDER BY n.closed_at, n.trade_id COLLATE "C", e.ord;

    RETURN NULL;
END;
$$;

-- learning.trg_closed_trades_append_only: closed_trades is append-only (a correction is a new
-- trade), so the learning state is always a function of its rows. Per statement, so even an
-- UPDATE of no row is refused: PostgreSQL fires it for every INSERT ... ON CONFLICT DO UPDATE too,
-- and a bot that upserts trades fails on its first trade, in testing, not at its first duplicate.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'closed_trades is append-only: UPDATE is refused (insert a correcting trade instead)'
            USING ERRCODE = 'prohibited_sql_statement_attempted', TABLE = 'closed_trades', SCHEMA = 'public',
                HINT = 'INSERT ... ON CONFLICT DO UPDATE counts as an UPDATE, even for a new trade; '
                    || 'to skip a trade already stored, use ON CONFLICT (trade_id) DO NOTHING.';
    END IF;
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
-- `check`, the tau-change recompute and the move of a 0001 state into learning.allocation_state.
DROP FUNCTION IF EXISTS learning.recomputed_roi_state(double precision, double precision, boolean);
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

-- A database of revision 0001 kept the learning state in the decision_maker row (learning_state:
-- per series [ref_epoch, sum_short, weight_short, sum_long, weight_long] and the counts n). It moves
-- into learning.allocation_state once, when that table is empty: the sums and n exactly as they
-- were, the second moments (which 0001 did not keep) in closed form from closed_trades at the same
-- reference time, the allocation from the row. A series whose stored sums are not usable, or whose
-- n or reference time disagrees with closed_trades, takes the closed form whole.
DO $adopt$
DECLARE
    cfg jsonb;
    states double precision [] := pg_catalog.array_fill(0::double precision, ARRAY[36]);
    counts integer [] := ARRAY[0, 0, 0, 0];
    alloc double precision [];
    r record;
    kept double precision [];
BEGIN
    IF EXISTS (SELECT FROM learning.allocation_state) THEN
        RETURN;
    END IF;
    SELECT c.config_data INTO cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    IF pg_catalog.jsonb_typeof(cfg -> 'learning_state') IS DISTINCT FROM 'object' THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM learning.recomputed_roi_state() LOOP
        states[(r.ord - 1) * 9 + 1:r.ord * 9] := r.state;
        counts[r.ord] := r.n;
        kept := NULL;
        IF pg_catalog.jsonb_path_exists(
            cfg -> 'learning_state' -> r.series,
            'strict $ ? (@.type() == "array" && @.size() == 5 && !exists(@[*] ? (@.type() != "number")))'
        ) AND pg_catalog.jsonb_path_exists(
            cfg -> 'learning_state' -> 'n' -> (r.ord - 1), 'strict $ ? (@.type() == "number")'
        ) THEN
            kept := pg_catalog.translate((cfg -> 'learning_state' -> r.series)::text, '[]', '{}')::double precision [];
            IF kept[1] = r.state[1] AND kept[3] >= 1 AND kept[5] >= 1
                AND (cfg -> 'learning_state' -> 'n' ->> (r.ord - 1))::numeric = r.n
            THEN
                states[(r.ord - 1) * 9 + 1:(r.ord - 1) * 9 + 5] := kept;
            END IF;
        END IF;
    END LOOP;
    alloc := ARRAY(
        SELECT (cfg -> 'timeframe_allocation' -> x.tf ->> 'current_allocation')::double precision
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
        WHERE pg_catalog.jsonb_typeof(cfg -> 'timeframe_allocation' -> x.tf -> 'current_allocation') = 'number'
        ORDER BY x.ord
    );
    IF pg_catalog.cardinality(alloc) <> 3
        OR pg_catalog.abs((SELECT pg_catalog.sum(a.x) FROM pg_catalog.unnest(alloc) AS a (x)) - 1) > 1e-9
        OR EXISTS (SELECT FROM pg_catalog.unnest(alloc) AS a (x) WHERE NOT a.x BETWEEN 0 AND 1)
    THEN
        SELECT h.allocation_after INTO alloc
        FROM learning.allocation_history AS h
        ORDER BY h.seq DESC
        LIMIT 1;
    END IF;
    PERFORM learning._ensure_state_rows();
    PERFORM learning._write_state(states, counts, coalesce(alloc, learning.starting_allocation()));
END
$adopt$;

-- Output only from now on: the state is in learning.allocation_state.
UPDATE public.learning_configs
SET config_data = config_data - 'learning_state'
WHERE module_id = 'decision_maker' AND config_data ? 'learning_state';

SELECT learning._ensure_state_rows();
SELECT learning.ensure_decision_maker_config();

-- file: sql/025_slices.sql
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

-- file: sql/030_episodes.sql
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

-- file: sql/040_tuning.sql
-- Tuning miner (SPEC section 7): per pattern_key and scope slice of the episode windows in the
-- lookback window, the rates WR, FPR, MR, DR as learning_lessons of type tuning_rates.

-- learning._tuning_stats: the lesson stats of one slice from its summed counts
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

-- learning.mine_tuning_lessons: mine tuning_rates lessons in (as_of - lookback, as_of]; returns the
-- number of lessons. Unchanged lessons are not written; lessons not re-mined become inactive.
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
    dims text [] := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(tun -> 'scope_dims'));
    budget bigint := (tun ->> 'max_tuning_lessons')::bigint;
    started timestamptz := pg_catalog.clock_timestamp();
    n_events bigint;
    n_lessons integer;
    n_written integer;
    n_changed integer;
    n_deactivated integer;
    window_info jsonb;
    n_too_long bigint;
    n_too_many bigint;
    n_unmined bigint;
    unmined_ids text [];
    n_unstored bigint;
    unstored_patterns text;
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

    DROP TABLE IF EXISTS pg_temp.slice_cells;
    -- Counted per distinct (pattern_key, scope) first, so _mining_dimensions runs once per distinct
    -- scope, not once per row; frequent_slices adds up cells that share dims. A scope that cannot
    -- be sliced whole is mined without what it cannot be (its scope kept in unmined_scope, for the
    -- one WARNING below), and every window is still learned from.
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
        WHERE e.timestamp > as_of - lookback AND e.timestamp <= as_of
            AND e.outcome IN ('success', 'failure', 'neutral')
        GROUP BY e.pattern_key, e.scope
    ) AS g
    CROSS JOIN LATERAL learning._mining_dimensions(g.scope, dims) AS m;

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
            WHERE e.timestamp > as_of - lookback AND e.timestamp <= as_of
                AND e.outcome IN ('success', 'failure', 'neutral')
        ) AS x;
        PERFORM learning._log_unmined_scopes('TuningMiner', 'episodes', n_unmined, unmined_ids, n_too_long, n_too_many);
    END IF;

    SELECT coalesce(pg_catalog.sum(c.stats[1]), 0)::bigint INTO n_events FROM pg_temp.slice_cells AS c;
    PERFORM learning._log('INFO', pg_catalog.format(
        'TuningMiner starting | events=%s | lookback_days=%s', n_events, window_info ->> 'lookback_days'
    ));

    -- The run's slice budget: patterns that would not fit are left out before any slice is
    -- enumerated (learning._admit_slice_budget), and keep their stored lessons.
    PERFORM learning._admit_slice_budget('TuningMiner', n_min, max_dims, budget, 'max_tuning_lessons');

    DROP TABLE IF EXISTS pg_temp._tm_lessons;
    CREATE TEMP TABLE _tm_lessons ON COMMIT DROP AS
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
    -- A lesson whose key cannot be stored (learning_lessons_scope_key and pm_overrides' keys are
    -- btree rows of at most 2704 bytes) is left out with one WARNING, not the run's failure.
    WITH unstored AS (
        DELETE FROM pg_temp._tm_lessons AS t
        WHERE pg_catalog.octet_length(t.pattern_key) + pg_catalog.pg_column_size(t.scope_subset) > 2400
        RETURNING t.pattern_key
    )

    SELECT
        pg_catalog.count(*),
        pg_catalog.string_agg(DISTINCT pg_catalog.left(u.pattern_key, 64), ',')
    INTO n_unstored, unstored_patterns
    FROM unstored AS u;
    IF n_unstored > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'TuningMiner: lessons not stored | lessons=%s | patterns=%s | reason=pattern_key and scope_subset over 2400 bytes',
            n_unstored, pg_catalog.left(unstored_patterns, 640)
        ));
    END IF;
    SELECT pg_catalog.count(*) INTO n_lessons FROM pg_temp._tm_lessons;

    WITH written AS (
        INSERT INTO public.learning_lessons AS l (
            module, pattern_key, action_category, scope_subset, n, stats, lesson_type, status
        )
        SELECT 'pm', t.pattern_key, 'tuning', t.scope_subset, t.n, t.stats, 'tuning_rates', 'active'
        FROM pg_temp._tm_lessons AS t
        ORDER BY t.pattern_key, t.scope_subset
        ON CONFLICT (module, pattern_key, action_category, scope_subset) DO UPDATE
        SET
            n = excluded.n,
            stats = excluded.stats,
            lesson_type = excluded.lesson_type,
            status = 'active',
            updated_at = pg_catalog.now()
        WHERE
            l.n IS DISTINCT FROM excluded.n
            OR l.stats IS DISTINCT FROM excluded.stats
            OR l.status IS DISTINCT FROM 'active'
            OR l.lesson_type IS DISTINCT FROM excluded.lesson_type
        RETURNING l.id
    )

    SELECT pg_catalog.count(*)::integer INTO n_written FROM written;

    -- A lesson whose window only moved is rewritten silently; new or changed evidence is logged.
    PERFORM learning._log('INFO', pg_catalog.format(
        'TuningMiner: Created lesson | pattern=%s | scope=%s | n=%s | wr=%s fpr=%s mr=%s dr=%s',
        w.pattern_key, learning._fmt_slice(w.scope_subset), w.n,
        learning._fmt((w.stats ->> 'wr')::double precision, 3),
        learning._fmt((w.stats ->> 'fpr')::double precision, 3),
        learning._fmt((w.stats ->> 'mr')::double precision, 3),
        learning._fmt((w.stats ->> 'dr')::double precision, 3)
    ))
    FROM pg_temp._tm_lessons AS w
    WHERE w.changed
    ORDER BY w.pattern_key, w.scope_subset;
    GET DIAGNOSTICS n_changed = ROW_COUNT;

    PERFORM learning._log('DEBUG', pg_catalog.format(
        'TuningMiner: Scope slice passed | pattern=%s | scope=%s | n=%s',
        t.pattern_key, learning._fmt_slice(t.scope_subset), t.n
    ))
    FROM pg_temp._tm_lessons AS t
    WHERE t.scope_subset <> '{}'::jsonb
    ORDER BY t.pattern_key, t.scope_subset;

    -- Stale lessons by id: the keys of the active lessons and of this run's grouped together (a key
    -- of stored lessons only is stale), so no plan can rescan the run's lessons per stored row.
    UPDATE public.learning_lessons AS l
    SET status = 'inactive', updated_at = pg_catalog.now()
    WHERE l.module = 'pm' AND l.lesson_type = 'tuning_rates' AND l.status = 'active'
        AND NOT EXISTS (SELECT FROM pg_temp.slice_skipped AS k WHERE k.pattern_key = l.pattern_key)
        AND l.id = any(ARRAY(
            SELECT pg_catalog.max(k.id)
            FROM (
                SELECT s.id, s.pattern_key, s.action_category, s.scope_subset
                FROM public.learning_lessons AS s
                WHERE s.module = 'pm' AND s.lesson_type = 'tuning_rates' AND s.status = 'active'
                UNION ALL
                SELECT NULL, t.pattern_key, 'tuning', t.scope_subset
                FROM pg_temp._tm_lessons AS t
            ) AS k
            GROUP BY k.pattern_key, k.action_category, k.scope_subset
            HAVING pg_catalog.count(k.id) = pg_catalog.count(*)
        ));
    GET DIAGNOSTICS n_deactivated = ROW_COUNT;

    PERFORM learning._log('INFO', pg_catalog.format(
        'TuningMiner completed | lessons_created=%s | changed=%s | written=%s | deactivated=%s | duration=%ss',
        n_lessons, n_changed, n_written, n_deactivated,
        pg_catalog.round(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - started)::numeric, 3)
    ));
    DROP TABLE IF EXISTS pg_temp.slice_cells, pg_temp._tm_lessons, pg_temp.slice_skipped;
    RETURN n_lessons;
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

-- file: sql/050_strength.sql
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

-- file: sql/060_overrides.sql
-- Execution overrides (SPEC section 7, plan "Override Selection Behavior"): the runtime picks the
-- single most specific active tuning override per category; no blending.

-- learning.select_execution_overrides: per tuning_* category, the active override of p_pattern_key
-- whose scope_subset is contained in p_scope with the most keys (ties: higher n, then
-- scope_subset::text), so every category of one slice comes from the same lesson.
CREATE OR REPLACE FUNCTION learning.select_execution_overrides(p_pattern_key text, p_scope jsonb)
RETURNS TABLE (
    action_category text,
    multiplier double precision,
    delta double precision,
    scope_subset jsonb,
    n integer,
    tuning_params jsonb,
    override_id bigint
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT DISTINCT ON (o.action_category)
        o.action_category,
        o.multiplier,
        learning._num(o.tuning_params -> 'delta') AS delta,
        o.scope_subset,
        o.n,
        o.tuning_params,
        o.id
    FROM public.pm_overrides AS o
    WHERE
        o.pattern_key = p_pattern_key
        AND o.status = 'active'
        AND o.action_category LIKE 'tuning\_%'
        AND pg_catalog.jsonb_typeof(o.scope_subset) = 'object'
        AND (
            CASE WHEN pg_catalog.jsonb_typeof(p_scope) = 'object' THEN p_scope ELSE '{}'::jsonb END
        ) @> o.scope_subset
    ORDER BY
        o.action_category ASC,
        (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(o.scope_subset)) DESC,
        o.n DESC NULLS LAST,
        o.scope_subset::text ASC;
END;

-- learning.trg_pm_overrides_changed: after each statement that changed pm_overrides rows (ours, the
-- bot's, a TRUNCATE), the transaction's row in pm_overrides_changes (once per transaction). A
-- statement that changed no row adds nothing, so re-running a job on the same data changes nothing.
-- The first statement of a READ COMMITTED transaction also merges the others' rows into its own
-- once there are more than 32 (the weights' sum is unchanged for every snapshot: the deletions and
-- the merged weight commit together). One merger at a time (a try-lock: a writer never waits); not
-- under REPEATABLE READ, where deleting a row another merger deleted is a serialization failure.
CREATE OR REPLACE FUNCTION learning.trg_pm_overrides_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    merge_lock CONSTANT bigint := 7201046117; -- pg_try_advisory_xact_lock key of the merge
BEGIN
    -- Nested, not AND: the TRUNCATE trigger has no transition table to plan a query on.
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT FROM changed_rows) THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO learning.pm_overrides_changes (xact) VALUES (pg_catalog.pg_current_xact_id())
    ON CONFLICT (xact) DO NOTHING;
    IF FOUND
        AND pg_catalog.current_setting('transaction_isolation') = 'read committed'
        AND (SELECT pg_catalog.count(*) FROM learning.pm_overrides_changes) > 32
        AND pg_catalog.pg_try_advisory_xact_lock(merge_lock)
    THEN
        WITH merged AS (
            DELETE FROM learning.pm_overrides_changes AS c
            WHERE c.xact <> pg_catalog.pg_current_xact_id()
            RETURNING c.weight
        )

        UPDATE learning.pm_overrides_changes AS c
        SET weight = c.weight + (SELECT coalesce(pg_catalog.sum(m.weight), 0) FROM merged AS m)::bigint
        WHERE c.xact = pg_catalog.pg_current_xact_id();
    END IF;
    RETURN NULL;
END;
$$;

-- A trigger with a transition table takes one event: one per kind of statement.
DROP TRIGGER IF EXISTS _900_generation_insert ON public.pm_overrides;
CREATE TRIGGER _900_generation_insert
AFTER INSERT ON public.pm_overrides
REFERENCING NEW TABLE AS changed_rows
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

DROP TRIGGER IF EXISTS _900_generation_update ON public.pm_overrides;
CREATE TRIGGER _900_generation_update
AFTER UPDATE ON public.pm_overrides
REFERENCING NEW TABLE AS changed_rows
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

DROP TRIGGER IF EXISTS _900_generation_delete ON public.pm_overrides;
CREATE TRIGGER _900_generation_delete
AFTER DELETE ON public.pm_overrides
REFERENCING OLD TABLE AS changed_rows
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

DROP TRIGGER IF EXISTS _900_generation_truncate ON public.pm_overrides;
CREATE TRIGGER _900_generation_truncate
AFTER TRUNCATE ON public.pm_overrides
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

-- file: sql/070_jobs.sql
-- Jobs (SPEC section 9): every run of an hourly job is a row of learning.job_runs. The row is
-- claimed before the job runs, unique on (job, slot_start), so two schedulers never run one slot twice.

CREATE TABLE IF NOT EXISTS learning.job_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    slot_start timestamptz NOT NULL,
    as_of timestamptz,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'running',
    counts jsonb,
    error text,
    host text,
    pid integer,
    CONSTRAINT job_runs_job_slot_key UNIQUE (job, slot_start),
    CONSTRAINT job_runs_status_check CHECK (status IN ('running', 'succeeded', 'failed'))
);

-- status reads the newest run of each job.
CREATE INDEX IF NOT EXISTS job_runs_job_started_idx
ON learning.job_runs (job, started_at DESC);

-- learning.claim_job_slot: record the start of one run of p_job for p_slot_start; NULL when taken.
-- INSERT ... ON CONFLICT DO NOTHING is the whole election: the loser sees no row and does not run.
CREATE OR REPLACE FUNCTION learning.claim_job_slot(
    p_job text,
    p_slot_start timestamptz,
    p_as_of timestamptz DEFAULT NULL,
    p_host text DEFAULT NULL,
    p_pid integer DEFAULT NULL
)
RETURNS bigint
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO learning.job_runs (job, slot_start, as_of, host, pid)
    VALUES (p_job, p_slot_start, p_as_of, p_host, p_pid)
    ON CONFLICT (job, slot_start) DO NOTHING
    RETURNING id;
END;

-- learning.finish_job_run: close a claimed run with its status, counts or error, and log it.
-- Separate from the claim so that a job's failure (rolled back) still leaves its record behind.
CREATE OR REPLACE FUNCTION learning.finish_job_run(
    p_id bigint,
    p_status text,
    p_counts jsonb DEFAULT NULL,
    p_error text DEFAULT NULL
)
RETURNS learning.job_runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run learning.job_runs;
BEGIN
    IF p_status NOT IN ('succeeded', 'failed') THEN
        RAISE EXCEPTION 'job status must be succeeded or failed, got %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE learning.job_runs
    SET status = p_status,
        counts = p_counts,
        error = p_error,
        finished_at = pg_catalog.clock_timestamp()
    WHERE id = p_id AND status = 'running'
    RETURNING * INTO run;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job run % is not running', p_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM learning._log(
        CASE p_status WHEN 'succeeded' THEN 'INFO' ELSE 'ERROR' END,
        pg_catalog.format(
            'JOB %s: job=%s | slot=%s | as_of=%s | duration=%ss | %s',
            pg_catalog.upper(p_status), run.job,
            pg_catalog.to_char(run.slot_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            coalesce(
                pg_catalog.to_char(run.as_of AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'now'
            ),
            pg_catalog.round(EXTRACT(EPOCH FROM run.finished_at - run.started_at)::numeric, 3),
            CASE p_status
                WHEN 'succeeded' THEN 'counts=' || coalesce(p_counts::text, '{}')
                ELSE 'error=' || coalesce(p_error, 'unknown')
            END
        )
    );
    RETURN run;
END;
$$;

-- learning.last_job_runs: the newest run of each job (for status), one row per job.
-- DISTINCT ON over the (job, started_at) index stays one short pass however long the history grows.
CREATE OR REPLACE FUNCTION learning.last_job_runs()
RETURNS SETOF learning.job_runs
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT DISTINCT ON (r.job) r.*
    FROM learning.job_runs AS r
    ORDER BY r.job ASC, r.started_at DESC;
END;

-- file: sql/080_adapters.sql
-- Adapters to the bot as it is (BOT_SHAPES.md): its position_closed strands in public.ad_strands
-- become closed_trades rows. Nothing is created on the bot's side when ad_strands does not exist.

-- learning._strand_timestamp: a strand time field (ISO text or epoch seconds) as timestamptz.
-- The bot writes ISO strings; epoch numbers are accepted too. STABLE: text without offset uses TimeZone.
CREATE OR REPLACE FUNCTION learning._strand_timestamp(p_value jsonb)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT CASE pg_catalog.jsonb_typeof(p_value)
        WHEN 'number' THEN pg_catalog.to_timestamp((p_value #>> '{}')::double precision)
        WHEN 'string' THEN (p_value #>> '{}')::timestamptz
    END;
END;

-- learning._strand_pattern_key: the bot's long pattern key (`module=pm|pattern_key=uptrend.S3.trim`)
-- in the closed_trades form (`pm.uptrend.S3.trim`), which the runtime and the S3 rule (a key
-- containing `.S3.`) read. A key without `pattern_key=` is kept as it is; without `module=`, the inner
-- key alone is used.
CREATE OR REPLACE FUNCTION learning._strand_pattern_key(p_key text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT
        CASE
            WHEN inner_key IS NULL OR inner_key = '' THEN p_key
            WHEN module_name IS NULL OR module_name = '' OR pg_catalog.starts_with(inner_key, module_name || '.')
                THEN inner_key
            ELSE module_name || '.' || inner_key
        END
    FROM (
        SELECT
            pg_catalog.substring(p_key, '(?:^|\|)pattern_key=([^|]*)') AS inner_key,
            pg_catalog.substring(p_key, '(?:^|\|)module=([^|]*)') AS module_name
    ) AS k;
END;

-- learning.trg_ad_strands_closed_trade: one position_closed strand -> one closed_trades row (once).
-- Read in a sub-block: a strand it cannot read is logged (WARNING, id, reason); the bot's INSERT stands.
CREATE OR REPLACE FUNCTION learning.trg_ad_strands_closed_trade()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    content jsonb;
    last jsonb;
    summary jsonb;
    trade text;
    tf text;
    rpnl double precision;
    closed timestamptz;
    actions jsonb;
    n_actions integer;
    n_dropped integer;
    inserted integer;
BEGIN
    BEGIN
        content := NEW.content;
        IF pg_catalog.jsonb_typeof(content) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'content is not a JSON object';
        END IF;
        IF pg_catalog.jsonb_typeof(content -> 'completed_trades') IS DISTINCT FROM 'array'
            OR pg_catalog.jsonb_array_length(content -> 'completed_trades') = 0 THEN
            RAISE EXCEPTION 'content.completed_trades is missing or empty';
        END IF;
        last := content -> 'completed_trades' -> -1;
        IF pg_catalog.jsonb_typeof(last) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'completed_trades[-1] is not an object';
        END IF;
        summary := last -> 'summary';
        IF pg_catalog.jsonb_typeof(summary) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'completed_trades[-1].summary is missing';
        END IF;
        -- 0.0 is a real rpnl_pct: only a missing or non-numeric value is refused.
        IF pg_catalog.jsonb_typeof(summary -> 'rpnl_pct') IS DISTINCT FROM 'number' THEN
            RAISE EXCEPTION 'completed_trades[-1].summary.rpnl_pct is missing or not a number (got %)',
                coalesce((summary -> 'rpnl_pct')::text, 'nothing');
        END IF;
        rpnl := (summary ->> 'rpnl_pct')::double precision;
        trade := coalesce(
            nullif(last ->> 'trade_id', ''), NEW.trade_id::text, nullif(content ->> 'trade_id', '')
        );
        IF trade IS NULL THEN
            RAISE EXCEPTION 'no trade_id (completed_trades[-1].trade_id, the row, content.trade_id)';
        END IF;
        tf := coalesce(NEW.timeframe, content ->> 'timeframe');
        closed := coalesce(
            learning._strand_timestamp(summary -> 'exit_timestamp'),
            learning._strand_timestamp(content -> 'ts')
        );
        IF closed IS NULL THEN
            RAISE EXCEPTION 'no exit time (summary.exit_timestamp, content.ts)';
        END IF;
        -- Actions in the closed_trades shape; elements without pattern_key/action_category are dropped.
        SELECT
            coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'pattern_key', learning._strand_pattern_key(a.e ->> 'pattern_key'),
                'action_category', a.e ->> 'action_category',
                'scope', CASE WHEN pg_catalog.jsonb_typeof(a.e -> 'scope') = 'object' THEN a.e -> 'scope' END,
                'decision_type', a.e ->> 'decision_type',
                'state', a.e ->> 'state',
                'ts', a.e -> 'ts'
            )) ORDER BY a.ord) FILTER (WHERE a.ok), '[]'::jsonb),
            pg_catalog.count(*)::integer,
            (pg_catalog.count(*) FILTER (WHERE NOT a.ok))::integer
        INTO actions, n_actions, n_dropped
        FROM (
            SELECT
                x.e,
                x.ord,
                pg_catalog.jsonb_typeof(x.e) = 'object'
                AND pg_catalog.jsonb_typeof(x.e -> 'pattern_key') IS NOT DISTINCT FROM 'string'
                AND x.e ->> 'pattern_key' <> ''
                AND pg_catalog.jsonb_typeof(x.e -> 'action_category') IS NOT DISTINCT FROM 'string' AS ok
            FROM pg_catalog.jsonb_array_elements(
                CASE WHEN pg_catalog.jsonb_typeof(last -> 'actions') = 'array' THEN last -> 'actions'
                    ELSE '[]'::jsonb END
            ) WITH ORDINALITY AS x (e, ord)
        ) AS a;

        INSERT INTO public.closed_trades (
            trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at,
            actions, did_trim, reached_s3
        )
        VALUES (
            trade,
            coalesce(NEW.position_id::text, content ->> 'position_id'),
            content ->> 'token_contract',
            coalesce(content ->> 'chain', content ->> 'token_chain'),
            tf,
            rpnl,
            closed,
            actions,
            EXISTS (
                SELECT FROM pg_catalog.jsonb_array_elements(actions) AS x (e)
                WHERE pg_catalog.lower(x.e ->> 'decision_type') = 'trim'
            ),
            -- A time_to_s3 says S3 was reached; a null or missing one says nothing (the bot clears the
            -- S3 start before it closes), so reached_s3 stays unknown and the S3 pattern-key rule decides.
            CASE WHEN pg_catalog.jsonb_typeof(summary -> 'time_to_s3') = 'number' THEN true END
        )
        ON CONFLICT (trade_id) DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF n_dropped > 0 THEN
            PERFORM learning._log('WARNING', pg_catalog.format(
                'STRAND ADAPTER: Dropped unreadable actions | strand_id=%s | trade_id=%s | dropped=%s of %s',
                NEW.id, trade, n_dropped, n_actions
            ));
        END IF;
        IF inserted = 0 THEN
            PERFORM learning._log('INFO', pg_catalog.format(
                'STRAND ADAPTER: Trade already recorded | strand_id=%s | trade_id=%s', NEW.id, trade
            ));
        END IF;
    EXCEPTION
        -- Transient failures (lock timeout, deadlock, serialization, cancel, resources) fail the bot's
        -- INSERT so it retries: swallowing them would keep the strand and lose its trade.
        WHEN transaction_rollback OR lock_not_available OR insufficient_resources
            OR operator_intervention OR system_error OR internal_error THEN
            RAISE;
        WHEN OTHERS THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'STRAND ADAPTER: Cannot read position_closed strand | strand_id=%s | reason=%s',
            NEW.id, SQLERRM
        ));
    END;
    RETURN NULL;
END;
$$;

-- learning.install_ad_strands_adapter: put the trigger on public.ad_strands if it exists (and we own it).
-- Run by the migration and by `adapter install`; warns and returns false rather than failing a migration.
CREATE OR REPLACE FUNCTION learning.install_ad_strands_adapter()
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    strands CONSTANT regclass := pg_catalog.to_regclass('public.ad_strands');
BEGIN
    IF strands IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_attribute
        WHERE attrelid = strands AND attname = 'kind' AND NOT attisdropped
    ) THEN
        RAISE WARNING 'public.ad_strands has no column kind: adapter not installed';
        RETURN false;
    END IF;
    -- Dynamic: the table may not exist when this function is created or checked.
    EXECUTE 'DROP TRIGGER IF EXISTS _500_lowcap_learning_closed_trade ON public.ad_strands';
    EXECUTE 'CREATE TRIGGER _500_lowcap_learning_closed_trade AFTER INSERT ON public.ad_strands '
        'FOR EACH ROW WHEN (new.kind = ''position_closed'') '
        'EXECUTE FUNCTION learning.trg_ad_strands_closed_trade()';
    RETURN true;
EXCEPTION WHEN insufficient_privilege THEN
    -- A migration run by a role that does not own the bot's table must not fail for the adapter.
    RAISE WARNING 'cannot put the adapter trigger on public.ad_strands: %', SQLERRM
        USING HINT = 'run `lowcap-learning adapter install` as the owner of ad_strands';
    RETURN false;
END;
$$;

SELECT learning.install_ad_strands_adapter();

-- file: sql/090_roles.sql
-- Roles and grants (SPEC section 12). Loaded last, so every function of sql/ exists here.
-- learning_writer: the bot's trade and episode writer; learning_reader: readers of allocation,
-- overrides and the runtime selectors; learning_admin: the operators of this system.
-- Roles are cluster-wide: created when missing, NOLOGIN (grant them to login roles), never
-- dropped by a downgrade. The grants below are idempotent and re-derived from pg_catalog, so
-- re-running this file after functions were added keeps every rule true.

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['learning_writer', 'learning_reader', 'learning_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent migration of another database of the cluster
            END;
        END IF;
    END LOOP;
END
$roles$;

COMMENT ON ROLE learning_writer IS
'lowcap-learning: INSERT closed_trades and pattern_episode_events, learning.set_episode_outcome';
COMMENT ON ROLE learning_reader IS
'lowcap-learning: SELECT the data tables, EXECUTE the reader and runtime functions';
COMMENT ON ROLE learning_admin IS
'lowcap-learning: everything in schema learning, tunables, flags and jobs';

-- ---------------------------------------------------------------------------------------------
-- Nothing in schema learning is callable by PUBLIC. PostgreSQL can revoke a default privilege
-- from PUBLIC only globally (per schema it can only add), which would also strip EXECUTE from
-- every later function and extension of the bot's migrating role; so it is not done. Later
-- functions are covered instead by this file running last on every migration, PUBLIC having no
-- USAGE on schema learning, and tests/test_security_search_path.py (see docs/decisions.md).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA learning FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON ALL TABLES IN SCHEMA learning FROM PUBLIC;  -- noqa: CP02
REVOKE ALL ON SCHEMA learning FROM PUBLIC;  -- noqa: CP02

GRANT USAGE ON SCHEMA learning TO learning_writer, learning_reader, learning_admin;

-- Later objects of schema learning: the admin reads and writes rows, the reader reads the tables.
-- Never ALL on tables: ALL includes TRIGGER, and a trigger the admin put on a table our SECURITY
-- DEFINER functions write (learning_log, job_runs, ...) would run as their owner.
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT EXECUTE ON FUNCTIONS TO learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning REVOKE ALL ON TABLES FROM learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT ALL ON SEQUENCES TO learning_admin;
ALTER DEFAULT PRIVILEGES IN SCHEMA learning GRANT SELECT ON TABLES TO learning_reader;

-- Revoked first so every table's ACL lists the admin, then the reader, whether the table got its
-- grants from the default privileges above (created by a later migration) or from here.
REVOKE ALL ON ALL TABLES IN SCHEMA learning FROM learning_admin, learning_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA learning TO learning_admin;
-- What the tunables may be, and which tables a downgrade may drop, are the migration's alone.
REVOKE INSERT, UPDATE, DELETE ON learning.tunable_specs, learning.adopted_tables FROM learning_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA learning TO learning_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA learning TO learning_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA learning TO learning_reader;

-- ---------------------------------------------------------------------------------------------
-- Shared data tables (public). A writer only appends: the SECURITY DEFINER triggers update the
-- configs, positions, history and log on its behalf, so it never holds UPDATE on them.
-- INSERT ... RETURNING needs SELECT too: a bot that reads back ids also holds learning_reader.
-- The one column a writer may read is closed_trades.trade_id: the retry idiom
-- `ON CONFLICT (trade_id) DO NOTHING` names it as its conflict target, which needs SELECT on it.
DO $tables$
DECLARE
    t record;
    seq text;
BEGIN
    FOR t IN
        SELECT x.name, x.writer, x.admin
        FROM (
            VALUES
            ('closed_trades', 'INSERT', 'SELECT, INSERT'),
            ('pattern_episode_events', 'INSERT', 'SELECT, INSERT, UPDATE'),
            ('pattern_trade_events', NULL, 'SELECT'),
            ('learning_configs', NULL, 'SELECT, INSERT, UPDATE'),
            ('lowcap_positions', NULL, 'SELECT'),
            ('learning_lessons', NULL, 'SELECT, INSERT, UPDATE, DELETE'),
            ('pm_overrides', NULL, 'SELECT, INSERT, UPDATE, DELETE')
        ) AS x (name, writer, admin)
        WHERE pg_catalog.to_regclass('public.' || x.name) IS NOT NULL
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON public.%I TO learning_reader', t.name);
        EXECUTE pg_catalog.format('GRANT %s ON public.%I TO learning_admin', t.admin, t.name);
        seq := NULL;
        IF EXISTS (
            SELECT FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = pg_catalog.to_regclass('public.' || t.name)
                AND a.attname = 'id' AND NOT a.attisdropped
        ) THEN
            seq := pg_catalog.pg_get_serial_sequence(pg_catalog.format('public.%I', t.name), 'id');
        END IF;
        IF seq IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT USAGE ON SEQUENCE %s TO learning_admin', seq);
        END IF;
        IF t.writer IS NOT NULL THEN
            EXECUTE pg_catalog.format('GRANT %s ON public.%I TO learning_writer', t.writer, t.name);
            IF seq IS NOT NULL THEN
                EXECUTE pg_catalog.format('GRANT USAGE ON SEQUENCE %s TO learning_writer', seq);
            END IF;
        END IF;
    END LOOP;
END
$tables$;

DO $retry$
BEGIN
    IF pg_catalog.to_regclass('public.closed_trades') IS NOT NULL THEN
        GRANT SELECT (trade_id) ON public.closed_trades TO learning_writer;
    END IF;
END
$retry$;

-- ---------------------------------------------------------------------------------------------
-- Functions. Named API functions are granted when they exist (helpers add functions in parallel;
-- a missing name is skipped, not an error). Besides the names:
-- - the reader may call every non-volatile function that runs with its own rights (read-only by
--   construction: PostgreSQL refuses writes in STABLE/IMMUTABLE functions, and its table grants apply);
-- - the writer may call every IMMUTABLE function that runs with its own rights (pure maths).
-- SECURITY DEFINER functions are only ever granted by name. Revoke-then-grant keeps a re-run exact.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA learning FROM learning_writer, learning_reader;

DO $functions$
DECLARE
    f record;
    writer_api CONSTANT text [] := ARRAY['set_episode_outcome'];
    reader_api CONSTANT text [] := ARRAY[
        'timeframe_allocation', 'global_roi', 'select_execution_overrides', 'select_strength_overrides',
        'match_strength_overrides', 'strength_overrides', 'feature_flag', 'tunables', 'scope_dimensions',
        'recomputed_roi_state', 'last_job_runs'
    ];
BEGIN
    FOR f IN
        SELECT
            p.oid::regprocedure AS signature,
            p.proname = any(writer_api)
            OR (p.provolatile = 'i' AND NOT p.prosecdef) AS to_writer,
            p.proname = any(reader_api)
            OR (p.provolatile IN ('i', 's') AND NOT p.prosecdef) AS to_reader
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'learning'::regnamespace
            AND p.prokind = 'f'
            AND p.prorettype <> 'trigger'::regtype
    LOOP
        IF f.to_writer THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO learning_writer', f.signature);
        END IF;
        IF f.to_reader THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO learning_reader', f.signature);
        END IF;
    END LOOP;
END
$functions$;

-- file: sql/095_rls.sql
-- Row-level security on the public tables this project created (Supabase exposes schema public over
-- its HTTP API and grants anon and authenticated everything on new tables there by default).
-- Tables the bot already had (learning.adopted_tables.existed_before) are left as the bot keeps
-- them: their RLS and grants are the bot's to decide. Alembic's version table is ours too.
--
-- A table with RLS and no policy admits only its owner (and roles with BYPASSRLS, such as Supabase's
-- service_role). Our SECURITY DEFINER triggers and functions run as the owner, so they are unaffected;
-- our roles, which read or write the tables directly, get one permissive policy that admits every row,
-- so their table privileges (sql/090_roles.sql) alone decide what they may do. anon and authenticated
-- get no policy and lose the privileges Supabase's default privileges gave them.
DO $rls$
DECLARE
    t record;
    seq text;
    to_roles text;
    web_roles text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ' ORDER BY r.rolname)
    INTO to_roles
    FROM pg_catalog.pg_roles AS r
    WHERE r.rolname IN ('learning_writer', 'learning_reader', 'learning_admin', 'service_role');
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(r.rolname), ', ' ORDER BY r.rolname)
    INTO web_roles
    FROM pg_catalog.pg_roles AS r
    WHERE r.rolname IN ('anon', 'authenticated');
    FOR t IN
        SELECT a.table_name AS name, true AS with_policy
        FROM learning.adopted_tables AS a
        WHERE NOT a.existed_before AND pg_catalog.to_regclass('public.' || a.table_name) IS NOT NULL
        UNION ALL
        SELECT 'lowcap_learning_alembic_version', false
        WHERE pg_catalog.to_regclass('public.lowcap_learning_alembic_version') IS NOT NULL
        ORDER BY name
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t.name);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS lowcap_learning_roles ON public.%I', t.name);
        IF t.with_policy THEN
            EXECUTE pg_catalog.format(
                'CREATE POLICY lowcap_learning_roles ON public.%I AS PERMISSIVE FOR ALL TO %s '
                'USING (true) WITH CHECK (true)',
                t.name, to_roles
            );
        END IF;
        IF web_roles IS NOT NULL THEN
            EXECUTE pg_catalog.format('REVOKE ALL ON public.%I FROM %s', t.name, web_roles);
            seq := NULL;
            IF EXISTS (
                SELECT FROM pg_catalog.pg_attribute AS a
                WHERE a.attrelid = pg_catalog.to_regclass('public.' || t.name)
                    AND a.attname = 'id' AND NOT a.attisdropped
            ) THEN
                seq := pg_catalog.pg_get_serial_sequence(pg_catalog.format('public.%I', t.name), 'id');
            END IF;
            IF seq IS NOT NULL THEN
                EXECUTE pg_catalog.format('REVOKE ALL ON SEQUENCE %s FROM %s', seq, web_roles);
            END IF;
        END IF;
    END LOOP;
END
$rls$;
