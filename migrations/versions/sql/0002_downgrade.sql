-- Downgrade 0002 -> 0001: remove what revision 0002 added; the migration then re-applies 0001's
-- upgrade script, which restores every function, trigger and grant of 0001 (it is written to
-- re-apply). What 0001 had is listed here as it shipped, so anything else of ours goes.

-- 0001 keeps the learning state in the decision_maker row (learning_state: per series [ref_epoch,
-- sum_short, weight_short, sum_long, weight_long] and the counts n): it goes back there, exactly,
-- before learning.allocation_state is dropped. The row's timeframe_allocation and global_roi are
-- already what 0001 shows. extra_float_digits 1: float8 to jsonb without rounding.
DO $state$
BEGIN
    IF pg_catalog.to_regclass('learning.allocation_state') IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('extra_float_digits', '1', true);
    UPDATE public.learning_configs AS c
    SET config_data = c.config_data || pg_catalog.jsonb_build_object('learning_state', (
        SELECT CASE
            WHEN coalesce(pg_catalog.max(s.n) FILTER (WHERE s.series = 'global'), 0) = 0 THEN '{}'::jsonb
            ELSE pg_catalog.jsonb_object_agg(
                s.series,
                pg_catalog.jsonb_build_array(
                    s.ref_epoch, s.short_sum_w_roi, s.short_sum_w, s.long_sum_w_roi, s.long_sum_w
                )
            ) || pg_catalog.jsonb_build_object('n', pg_catalog.jsonb_build_array(
                pg_catalog.max(s.n) FILTER (WHERE s.series = '15m'),
                pg_catalog.max(s.n) FILTER (WHERE s.series = '1h'),
                pg_catalog.max(s.n) FILTER (WHERE s.series = '4h'),
                pg_catalog.max(s.n) FILTER (WHERE s.series = 'global')
            ))
        END
        FROM learning.allocation_state AS s
    ))
    WHERE c.module_id = 'decision_maker';
END
$state$;

ALTER TABLE learning.allocation_history DROP COLUMN IF EXISTS rule;
ALTER TABLE learning.allocation_history DROP COLUMN IF EXISTS evidence;
ALTER TABLE learning.allocation_history DROP COLUMN IF EXISTS split;

DO $down$
DECLARE
    released_functions CONSTANT text [] := ARRAY[
        'learning._allocation_intact(jsonb)',
        'learning._decay(double precision,double precision)',
        'learning._decision_maker_config(double precision[],double precision[],integer[])',
        'learning._decision_maker_intact(jsonb,boolean)',
        'learning._flag(jsonb)',
        'learning._fmt(double precision,integer)',
        'learning._fmt_allocation(double precision[])',
        'learning._fmt_slice(jsonb)',
        'learning._initial_decision_maker_config()',
        'learning._jsonb_intersect(jsonb,jsonb)',
        'learning._log(text,text)',
        'learning._missing_thresholds(jsonb)',
        'learning._num(jsonb)',
        'learning._num_close(double precision,double precision)',
        'learning._scaled(double precision,double precision)',
        'learning._series_intact(jsonb,text,integer)',
        'learning._series_json(double precision[],integer)',
        'learning._series_state(jsonb,text)',
        'learning._slices_enumeration_limit()',
        'learning._slices_grouping_sets()',
        'learning._stats_close(jsonb,jsonb)',
        'learning._strand_timestamp(jsonb)',
        'learning._tuning_stats(double precision[])',
        'learning._validate_tunable(text,jsonb)',
        'learning.allocation_step(double precision[],double precision[],integer[],double precision,double precision,double precision)',
        'learning.blocked_by(jsonb,double precision[])',
        'learning.build_strength_lessons(timestamp with time zone,interval,integer)',
        'learning.claim_job_slot(text,timestamp with time zone,timestamp with time zone,text,integer)',
        'learning.ensure_decision_maker_config(boolean)',
        'learning.ewma_fold(double precision[],double precision,double precision,double precision,double precision)',
        'learning.ewma_long(double precision[])',
        'learning.ewma_short(double precision[])',
        'learning.feature_flag(text,text)',
        'learning.finish_job_run(bigint,text,jsonb,text)',
        'learning.frequent_slices(integer,integer)',
        'learning.gate_thresholds(jsonb)',
        'learning.global_roi()',
        'learning.install_ad_strands_adapter()',
        'learning.last_job_runs()',
        'learning.materialize_strength_overrides()',
        'learning.mine_tuning_lessons(timestamp with time zone,interval,integer)',
        'learning.recompute_roi_state()',
        'learning.recomputed_roi_state(double precision,double precision,boolean)',
        'learning.redistribute_positions(double precision[])',
        'learning.scope_dimensions(jsonb,text[])',
        'learning.select_execution_overrides(text,jsonb)',
        'learning.set_episode_outcome(text,text)',
        'learning.set_feature_flag(text,text,boolean)',
        'learning.set_tunable(text,jsonb)',
        'learning.starting_allocation()',
        'learning.strength_outcome(double precision,boolean,boolean,double precision)',
        'learning.strength_stats(double precision[],double precision)',
        'learning.strength_stats_of(double precision[],double precision)',
        'learning.summarize_samples(jsonb)',
        'learning.timeframe_allocation()',
        'learning.tracked_timeframes()',
        'learning.trade_roi(double precision)',
        'learning.trg_ad_strands_closed_trade()',
        'learning.trg_closed_trades_append_only()',
        'learning.trg_closed_trades_learn()',
        'learning.trg_learning_configs_tau()',
        'learning.trg_learning_configs_validate()',
        'learning.trg_pattern_episode_events_capture()',
        'learning.trg_pm_overrides_changed()',
        'learning.tunables()',
        'learning.tuning_lesson_window(jsonb,timestamp with time zone)'
    ];
    released_relations CONSTANT text [] := ARRAY[
        'learning.adopted_tables_pkey',
        'learning_configs_pkey',
        'lowcap_positions_pkey',
        'lowcap_positions_token_timeframe_key',
        'lowcap_positions_token_idx',
        'closed_trades_pkey',
        'closed_trades_closed_at_idx',
        'pattern_episode_events_pkey',
        'pattern_episode_events_episode_idx',
        'pattern_episode_events_pattern_ts_idx',
        'pattern_trade_events_pkey',
        'pattern_trade_events_pattern_ts_idx',
        'pattern_trade_events_ts_idx',
        'learning_lessons_pkey',
        'learning_lessons_scope_key',
        'pm_overrides_pkey',
        'pm_overrides_scope_key',
        'pm_overrides_active_match_idx',
        'learning.allocation_history_pkey',
        'learning.allocation_history_trade_idx',
        'learning.learning_log_pkey',
        'learning.learning_log_unexported_idx',
        'learning.pm_overrides_changes_pkey',
        'learning.tunable_specs_pkey',
        'learning.job_runs_pkey',
        'learning.job_runs_job_slot_key',
        'learning.job_runs_job_started_idx',
        'learning.allocation_history_seq_seq',
        'learning.learning_log_id_seq',
        'learning.job_runs_id_seq',
        'learning.adopted_tables',
        'learning.allocation_history',
        'learning.learning_log',
        'learning.pm_overrides_changes',
        'learning.tunable_specs',
        'learning.job_runs',
        'closed_trades',
        'pattern_episode_events',
        'pattern_episode_events_id_seq',
        'pattern_trade_events',
        'pattern_trade_events_id_seq',
        'learning_configs',
        'lowcap_positions',
        'learning_lessons',
        'learning_lessons_id_seq',
        'pm_overrides',
        'pm_overrides_id_seq'
    ];
    released_triggers CONSTANT text [] := ARRAY['_100_validate_tunables', '_900_tau_recompute_insert', '_900_tau_recompute_update', '_900_tau_recompute_delete', '_500_learn', '_100_append_only', '_100_capture', '_900_generation_insert', '_900_generation_update', '_900_generation_delete', '_900_generation_truncate'];
    r record;
BEGIN
    IF pg_catalog.to_regclass('public.closed_trades') IS NOT NULL THEN
        REVOKE SELECT (trade_id) ON public.closed_trades FROM learning_writer;
    END IF;
    -- Row-level security is 0002's: its policy goes, and RLS is disabled again on the tables it
    -- enabled it on (ours); the bot's tables were never touched. Privileges revoked from Supabase's
    -- anon and authenticated are not given back.
    FOR r IN
        SELECT c.oid::regclass AS rel
        FROM pg_catalog.pg_class AS c
        LEFT JOIN learning.adopted_tables AS a ON a.table_name = c.relname
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
            AND (NOT a.existed_before OR c.relname = 'lowcap_learning_alembic_version')
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS lowcap_learning_roles ON %s', r.rel);
        EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', r.rel);
    END LOOP;
    -- Choice tunables (allocation_rule, tuning_rule), max_false_override, the evidence rule's and the
    -- miners' per-run slice budgets are 0002's.
    DELETE FROM learning.tunable_specs
    WHERE key IN (
        'allocation_rule', 'tuning_rule', 'max_false_override', 'evidence_z', 'evidence_gain', 'evidence_prior_n',
        'max_strength_lessons', 'max_tuning_lessons'
    ) OR kind = 'choice';
    ALTER TABLE learning.tunable_specs DROP CONSTRAINT IF EXISTS tunable_specs_kind_check;
    ALTER TABLE learning.tunable_specs DROP COLUMN IF EXISTS choices;
    ALTER TABLE learning.tunable_specs ADD CONSTRAINT tunable_specs_kind_check
    CHECK (kind IN ('number', 'integer', 'string_array'));
    -- Triggers of ours that 0001 did not have (on any table, the bot's included).
    FOR r IN
        SELECT t.tgname, t.tgrelid::regclass AS rel
        FROM pg_catalog.pg_trigger AS t
        INNER JOIN pg_catalog.pg_proc AS p ON t.tgfoid = p.oid
        WHERE p.pronamespace = 'learning'::regnamespace AND NOT t.tgisinternal
            AND t.tgname <> ALL(released_triggers)
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
    END LOOP;
    -- Tables, sequences and indexes of schema learning that 0001 did not have (the bot's own
    -- indexes on its tables are never touched).
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind
        FROM pg_catalog.pg_class AS c
        WHERE c.relkind IN ('r', 'S', 'v', 'm', 'p')
            AND c.relnamespace = 'learning'::regnamespace
            AND c.oid::regclass::text <> ALL(released_relations)
    LOOP
        EXECUTE pg_catalog.format(
            'DROP %s IF EXISTS %s CASCADE',
            CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                ELSE 'TABLE' END,
            r.rel
        );
    END LOOP;
    FOR r IN
        SELECT c.oid::regclass AS rel
        FROM pg_catalog.pg_class AS c
        INNER JOIN pg_catalog.pg_index AS i ON c.oid = i.indexrelid
        INNER JOIN pg_catalog.pg_class AS t ON i.indrelid = t.oid
        WHERE c.relkind = 'i'
            AND t.relnamespace = 'learning'::regnamespace
            AND c.oid::regclass::text <> ALL(released_relations)
            AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS k WHERE k.conindid = c.oid)
    LOOP
        EXECUTE pg_catalog.format('DROP INDEX %s', r.rel);
    END LOOP;
    -- Functions 0001 did not have (0001's own are replaced by its re-applied definitions). A
    -- function whose body names another is dropped with it (CASCADE), so each is looked up again.
    FOR r IN
        SELECT p.oid, p.oid::regprocedure::text AS signature
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'learning'::regnamespace
            AND p.oid::regprocedure::text <> ALL(released_functions)
    LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_proc AS p WHERE p.oid = r.oid) THEN
            EXECUTE pg_catalog.format('DROP FUNCTION %s CASCADE', r.signature);
        END IF;
    END LOOP;
END
$down$;
