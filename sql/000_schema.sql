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

-- Facts are read by time window only (design §11). Revision 0001 also indexed (pattern_key, timestamp),
-- which no job reads through and every fact row paid for; revision 0005 drops it (design §1).
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
    -- Which rule took the step, the evidence rule's per-timeframe z (ROI difference from the other
    -- timeframes over its standard error) and the split it asked for (NULL under the plan's rule).
    rule text,
    evidence double precision [],
    split double precision [],
    CONSTRAINT allocation_history_reason_check
    CHECK (reason IN ('step', 'reached_desired', 'skip_one_timeframe', 'skip_untracked'))
);

CREATE INDEX IF NOT EXISTS allocation_history_trade_idx
ON learning.allocation_history (trade_id);

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
-- learning.tunable_specs: every tunable (design §3) with its default and allowed range.
CREATE TABLE IF NOT EXISTS learning.tunable_specs (
    key text PRIMARY KEY,
    default_value jsonb NOT NULL,
    kind text NOT NULL,
    min_value double precision,
    max_value double precision,
    description text NOT NULL,
    -- A choice tunable names its allowed strings (allocation_rule and tuning_rule).
    choices text [],
    CONSTRAINT tunable_specs_kind_check CHECK (kind IN ('number', 'integer', 'string_array', 'choice'))
);

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

-- learning.effective_tunables: every tunable's value in effect (the learning row's, else its
-- default) as one jsonb, one row. learning.tunables() reads it; triggers on the learning row and on
-- tunable_specs rewrite it (design §3), so a trade reads one row instead of merging the specs.
CREATE TABLE IF NOT EXISTS learning.effective_tunables (
    singleton boolean PRIMARY KEY DEFAULT true,
    tunables jsonb NOT NULL,
    CONSTRAINT effective_tunables_singleton_check CHECK (singleton)
);

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
