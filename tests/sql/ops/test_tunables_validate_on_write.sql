-- Validate on write (design §3) for every write of the learning row, not only learning.set_tunable:
-- a direct INSERT or UPDATE of public.learning_configs is refused with set_tunable's own message
-- and SQLSTATE (22023) when a tunable is bad; other modules' rows are never validated; a tau change
-- written directly recomputes the EWMA state exactly as set_tunable does (which no longer does it
-- itself, so it happens once); the trade trigger still works on a directly written row.
BEGIN;
SELECT plan(77);

-- err(sql): the SQLSTATE and message a statement raises (NULL when it succeeds), to compare paths.
CREATE FUNCTION pg_temp.err(p_sql text)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE p_sql;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;

CREATE FUNCTION pg_temp.recomputes()
RETURNS integer
LANGUAGE sql
AS $$ SELECT count(*)::integer FROM learning.learning_log WHERE message LIKE 'ROI RECOMPUTE:%' $$;

-- dm(): the decision_maker row, with the typed state (learning.allocation_state, less its write
-- times) under learning_state.
CREATE FUNCTION pg_temp.dm()
RETURNS jsonb
LANGUAGE sql
AS $$
    SELECT c.config_data || jsonb_build_object('learning_state', (
        SELECT jsonb_object_agg(s.series, to_jsonb(s) - 'updated_at') FROM learning.allocation_state AS s
    ))
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker'
$$;

CREATE FUNCTION pg_temp.learning_row()
RETURNS jsonb
LANGUAGE sql
AS $$ SELECT config_data FROM public.learning_configs WHERE module_id = 'learning' $$;

-- ------------------------------------------------------------------------------------------ shape
SELECT is(
    (SELECT count(*)::integer FROM pg_catalog.pg_trigger
     WHERE tgrelid = 'public.learning_configs'::regclass AND NOT tgisinternal
        AND tgfoid IN ('learning.trg_learning_configs_validate'::regproc, 'learning.trg_refresh_tunables'::regproc)
        AND tgqual IS NOT NULL
        AND pg_catalog.pg_get_triggerdef(oid) ~ 'WHEN \(.*module_id = ''learning''::text'),
    4,
    'four triggers on learning_configs, each with a WHEN clause on module_id = ''learning''');
SELECT is(
    (SELECT count(*)::integer FROM pg_catalog.pg_proc
     WHERE oid IN ('learning.trg_learning_configs_validate'::regproc, 'learning.trg_refresh_tunables'::regproc)
        AND prosecdef AND proconfig @> ARRAY['search_path=pg_catalog, pg_temp']),
    2,
    'both trigger functions are SECURITY DEFINER with search_path pg_catalog, pg_temp');

-- --------------------------------------------------------------------------- INSERT, row absent
SELECT is(pg_temp.learning_row(), NULL, 'no learning row to start with');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs VALUES ('learning', '{"tau_short_days": 0}')$$,
    '22023', 'tunable tau_short_days must be a number in [0.01, 36500], got 0',
    'INSERT: tau_short_days 0 (out of range) is refused, naming the key and its range');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"steer_gain": "abc"}')$$,
    '22023', 'tunable steer_gain must be a number in [0, 1], got "abc"',
    'INSERT: steer_gain "abc" (wrong type) is refused');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"max_step": 1e400}')$$,
    '22023', 'tunable max_step must be a number in [0, 1], got 1' || repeat('0', 400),
    'INSERT: max_step 1e400 (beyond float8) is refused');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"max_step": "NaN"}')$$,
    '22023', 'tunable max_step must be a number in [0, 1], got "NaN"',
    'INSERT: max_step "NaN" (JSON has no NaN: a string) is refused');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"tau_long_days": "-Infinity"}')$$,
    '22023', 'tunable tau_long_days must be a number in [0.01, 36500], got "-Infinity"',
    'INSERT: tau_long_days "-Infinity" is refused');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"n_min": 5.5}')$$,
    '22023', 'tunable n_min must be an integer in [1, 1000000], got 5.5',
    'INSERT: n_min 5.5 (not an integer) is refused');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"scope_dims": ["chain", 1]}')$$,
    '22023', 'tunable scope_dims must be a JSON array of strings, got ["chain", 1]',
    'INSERT: scope_dims with a number element is refused');
SELECT throws_ok(
    $$SELECT learning._validate_tunable('scope_dims', NULL)$$,
    '22023', 'tunable scope_dims must be a JSON array of strings, got null',
    'the validator itself refuses a NULL scope_dims (set_tunable refuses it before any lock)');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"max_step": 0.004, "tau_shrot_days": 7}')$$,
    '22023', 'unknown tunable "tau_shrot_days"',
    'INSERT: a key that is not a tunable (a typo) is refused, as set_tunable refuses it');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '[{"max_step": 0.004}]')$$,
    '22023', 'learning_configs.config_data of module learning must be a JSON object of tunables, got [{"max_step": 0.004}]',
    'INSERT: a config_data that is not a JSON object is refused');

-- Renaming another module's row into the learning row is a write of the learning row.
INSERT INTO public.learning_configs (module_id, config_data) VALUES ('pgtap_other', '{"tau_short_days": 0}');
SELECT is(
    (SELECT config_data FROM public.learning_configs WHERE module_id = 'pgtap_other'),
    '{"tau_short_days": 0}'::jsonb,
    'another module''s row is not validated (tau_short_days 0 is stored)');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET module_id = 'learning' WHERE module_id = 'pgtap_other'$$,
    '22023', 'tunable tau_short_days must be a number in [0.01, 36500], got 0',
    'UPDATE: renaming a row to module learning validates it');
DELETE FROM public.learning_configs WHERE module_id = 'pgtap_other';

SELECT lives_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data, updated_by)
      VALUES ('learning', '{"max_step": 0.003, "min_trades_full": 5, "min_allocation": 0.05,
              "allocation_rule": "plan"}', 'pgtap')$$,
    'INSERT: a valid learning row is accepted');
SELECT is(pg_temp.recomputes(), 0, 'a row with default taus does not recompute the EWMA state');

-- ---------------------------------------------------------- the trade trigger on a direct row
-- The plan walkthrough's pinned numbers (design §5) with the directly written row: 15m +5% -> no change; 1h -2% -> 0.1506 / 0.4994.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('v1', '15m', 5, '2026-01-01T00:00:00Z');
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('v2', '1h', -2, '2026-01-05T00:00:00Z');
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 10) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.1506), ('1h', 0.4994), ('4h', 0.35)$$,
    'the trade trigger reads the directly written row: the plan''s walkthrough numbers');

-- The decision_maker row the trade trigger updates never runs our learning_configs triggers.
SET LOCAL track_functions = 'all';
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('v3', '4h', 3, '2026-01-09T00:00:00Z');
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 6) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.151128), ('1h', 0.498800), ('4h', 0.350072)$$,
    'and the third pinned trade');
SELECT is(
    (SELECT coalesce(sum(pg_catalog.pg_stat_get_xact_function_calls(f)), 0)::integer
     FROM unnest(ARRAY['learning.trg_learning_configs_validate'::regproc::oid,
        'learning.trg_refresh_tunables'::regproc::oid]) AS f),
    0,
    'a trade (which updates the decision_maker row) calls neither learning_configs trigger function');
UPDATE public.learning_configs SET config_data = config_data || '{"max_step": 0.004, "min_trades_full": 1}'
WHERE module_id = 'learning';
SELECT is(
    (SELECT pg_catalog.pg_stat_get_xact_function_calls('learning.trg_learning_configs_validate'::regproc)::integer),
    1,
    'an UPDATE of the learning row calls the validating trigger once');

-- The directly written max_step (and min_trades_full 1: full step) is the step limit of the next trade.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('v4', '1h', 1, '2026-01-10T00:00:00Z');
SELECT is(
    (SELECT step_limit FROM learning.allocation_history WHERE trade_id = 'v4'),
    0.004::float8,
    'the next trade steps with the directly written max_step');

-- ---------------------------------------------------------------------------- UPDATE, row present
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"steer_gain": 5, "steer_max_hard": 5}'
      WHERE module_id = 'learning'$$,
    '22023', 'tunable steer_gain must be a number in [0, 1], got 5',
    'UPDATE: steer_gain 5 is refused (the first bad key in key order is named)');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"max_step": -0.5}' WHERE module_id = 'learning'$$,
    '22023', 'tunable max_step must be a number in [0, 1], got -0.5',
    'UPDATE: max_step -0.5 (out of range) is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = jsonb_set(config_data, '{min_trades_full}', 'true')
      WHERE module_id = 'learning'$$,
    '22023', 'tunable min_trades_full must be a number in [1, 1000000], got true',
    'UPDATE: min_trades_full true (wrong type) is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"steer_base": null}' WHERE module_id = 'learning'$$,
    '22023', 'tunable steer_base must be a number in [0, 1], got null',
    'UPDATE: steer_base JSON null is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"min_gain": 3.0}' WHERE module_id = 'learning'$$,
    '22023', 'tunable min_gain must be an integer in [1, 1000000], got 3.0',
    'UPDATE: an integer tunable written as 3.0 is refused (readers cast it ::integer)');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"tau_long_days": -1e400}' WHERE module_id = 'learning'$$,
    '22023', 'tunable tau_long_days must be a number in [0.01, 36500], got -1' || repeat('0', 400),
    'UPDATE: tau_long_days -1e400 (beyond float8) is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"min_allocation": 1e-400}' WHERE module_id = 'learning'$$,
    '22023',
    'tunable min_allocation must be 0 or at least 2.2250738585072014e-308 in magnitude (a float8), got 0.'
    || repeat('0', 399) || '1',
    'UPDATE: min_allocation 1e-400 (underflows float8) is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"scope_dims": "chain"}' WHERE module_id = 'learning'$$,
    '22023', 'tunable scope_dims must be a JSON array of strings, got "chain"',
    'UPDATE: scope_dims as a string is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"feature_flags": {"x": true}}'
      WHERE module_id = 'learning'$$,
    '22023', 'unknown tunable "feature_flags"',
    'UPDATE: a key that is not a tunable is refused when the write adds it');
SELECT throws_ok(
    $$SELECT learning.set_feature_flag('learning', 'x', true)$$,
    '22023', 'unknown tunable "feature_flags"',
    'set_feature_flag cannot put feature flags into the learning row either');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = 'null' WHERE module_id = 'learning'$$,
    '22023', 'learning_configs.config_data of module learning must be a JSON object of tunables, got null',
    'UPDATE: a JSON null config_data is refused');
SELECT throws_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"tau_short_days": 0}')
      ON CONFLICT (module_id) DO UPDATE SET config_data = learning_configs.config_data || excluded.config_data$$,
    '22023', 'tunable tau_short_days must be a number in [0.01, 36500], got 0',
    'INSERT ... ON CONFLICT DO UPDATE with a bad value is refused');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"n_min": 0}'
      WHERE module_id IN ('learning', 'decision_maker')$$,
    '22023', 'tunable n_min must be an integer in [1, 1000000], got 0',
    'a statement touching several rows fails as a whole on the learning row');

SELECT lives_ok(
    $$UPDATE public.learning_configs
      SET config_data = config_data || '{"steer_gain": 0.5, "scope_dims": ["chain"], "n_min": 1e2, "base_bias": -1}'
      WHERE module_id = 'learning'$$,
    'UPDATE: valid values are accepted (1e2 is the integer 100)');
SELECT is(
    (SELECT jsonb_build_object('steer_gain', t -> 'steer_gain', 'scope_dims', t -> 'scope_dims',
        'n_min', t -> 'n_min', 'base_bias', t -> 'base_bias', 'max_step', t -> 'max_step')
     FROM learning.tunables() AS t),
    '{"steer_gain": 0.5, "scope_dims": ["chain"], "n_min": 100, "base_bias": -1, "max_step": 0.004}'::jsonb,
    'learning.tunables() returns the directly written values');

-- ---------------------------------------------------------------------------------- set_tunable
SELECT is(learning.set_tunable('conf_min', '0.5'), '0.5'::jsonb, 'set_tunable still stores a valid value');
SELECT is(pg_temp.learning_row() -> 'conf_min', '0.5'::jsonb, 'and it is in the row');
SELECT throws_ok(
    $$SELECT learning.set_tunable('steer_gain', '5')$$,
    '22023', 'tunable steer_gain must be a number in [0, 1], got 5',
    'set_tunable still refuses an out-of-range value with the same message');
SELECT throws_ok(
    $$SELECT learning.set_tunable('no_such_key', '1')$$,
    '22023', 'unknown tunable "no_such_key"',
    'set_tunable still refuses an unknown key');
SELECT throws_ok(
    $$SELECT learning.set_tunable('n_min', '33.0')$$,
    '22023', 'tunable n_min must be an integer in [1, 1000000], got 33.0',
    'set_tunable refuses an integer written as 33.0 (same validator)');
SELECT is(
    (SELECT array_agg(DISTINCT pg_temp.err(q))
     FROM unnest(ARRAY[
        $$SELECT learning.set_tunable('max_step', '-0.5')$$,
        $$UPDATE public.learning_configs SET config_data = config_data || '{"max_step": -0.5}' WHERE module_id = 'learning'$$,
        $$INSERT INTO public.learning_configs VALUES ('learning', '{"max_step": -0.5}')
          ON CONFLICT (module_id) DO UPDATE SET config_data = excluded.config_data$$
     ]) AS q),
    ARRAY['22023: tunable max_step must be a number in [0, 1], got -0.5'],
    'set_tunable, UPDATE and upsert give one and the same error');

-- ------------------------------------------------------- keys of older versions, rows already bad
-- Rows written before this trigger existed are planted with it disabled (as an upgrade finds them).
ALTER TABLE public.learning_configs DISABLE TRIGGER _100_validate_tunables;
UPDATE public.learning_configs SET config_data = config_data || '{"old_knob": {"v": 1}}' WHERE module_id = 'learning';
ALTER TABLE public.learning_configs ENABLE TRIGGER _100_validate_tunables;
SELECT lives_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"max_step": 0.005}' WHERE module_id = 'learning'$$,
    'a key of an older version carried over unchanged does not block a write');
SELECT is(pg_temp.learning_row() -> 'old_knob', '{"v": 1}'::jsonb, 'and it is kept');
SELECT is(learning.set_tunable('max_step', '0.003'), '0.003'::jsonb, 'set_tunable works beside it');
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"old_knob": 2}' WHERE module_id = 'learning'$$,
    '22023', 'unknown tunable "old_knob"',
    'changing the value of such a key is refused');
SELECT lives_ok(
    $$UPDATE public.learning_configs SET config_data = config_data - 'old_knob' WHERE module_id = 'learning'$$,
    'removing it is accepted');

ALTER TABLE public.learning_configs DISABLE TRIGGER _100_validate_tunables;
UPDATE public.learning_configs SET config_data = config_data || '{"dodge_high": 7}' WHERE module_id = 'learning';
ALTER TABLE public.learning_configs ENABLE TRIGGER _100_validate_tunables;
SELECT throws_ok(
    $$SELECT learning.set_tunable('max_step', '0.004')$$,
    '22023', 'tunable dodge_high must be a number in [0, 1], got 7',
    'a bad tunable already in the row blocks other writes, naming it');
SELECT is(learning.set_tunable('dodge_high', '0.85'), '0.85'::jsonb, 'writing a valid value over it is accepted');
SELECT is(learning.set_tunable('max_step', '0.004'), '0.004'::jsonb, 'and then the other write is accepted');

-- --------------------------------------------------------------------------- tau: EWMA recompute
-- Late trades make the incremental state differ from a recompute, so each path is seen to act.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('v5', '15m', -3, '2026-01-02T00:00:00Z'), ('v6', '1h', 7, '2026-01-20T00:00:00Z');
CREATE TEMP TABLE states (label text PRIMARY KEY, cfg jsonb, recomputes integer);
INSERT INTO states VALUES ('start', pg_temp.dm(), pg_temp.recomputes());

SELECT is(learning.set_tunable('tau_short_days', '7'), '7'::jsonb, 'set_tunable tau_short_days 7');
INSERT INTO states VALUES ('set_tunable 7', pg_temp.dm(), pg_temp.recomputes());
SELECT is(
    (SELECT recomputes FROM states WHERE label = 'set_tunable 7') - (SELECT recomputes FROM states WHERE label = 'start'),
    1,
    'set_tunable recomputes the state once (the trigger does it; set_tunable not as well)');
SELECT isnt(
    (SELECT cfg -> 'learning_state' FROM states WHERE label = 'set_tunable 7'),
    (SELECT cfg -> 'learning_state' FROM states WHERE label = 'start'),
    'the tau change rebuilt the EWMA state');
SELECT ok(
    (SELECT bool_and(abs(s.roi_short - learning.ewma_short(r.state)) < 1e-15)
     FROM learning.timeframe_allocation() AS s
     INNER JOIN learning.recomputed_roi_state() AS r ON r.series = s.timeframe),
    'the state is the closed form at tau_short 7');

SELECT is(learning.set_tunable('tau_short_days', '14'), '14'::jsonb, 'set_tunable tau_short_days back to 14');
INSERT INTO states VALUES ('set_tunable 14', pg_temp.dm(), pg_temp.recomputes());

UPDATE public.learning_configs SET config_data = config_data || '{"tau_short_days": 7}' WHERE module_id = 'learning';
INSERT INTO states VALUES ('update 7', pg_temp.dm(), pg_temp.recomputes());
SELECT is(
    (SELECT cfg -> 'learning_state' FROM states WHERE label = 'update 7'),
    (SELECT cfg -> 'learning_state' FROM states WHERE label = 'set_tunable 7'),
    'a direct UPDATE of tau_short_days gives exactly the learning_state of set_tunable');
SELECT is(
    (SELECT cfg - 'learning_state' FROM states WHERE label = 'update 7'),
    (SELECT cfg - 'learning_state' FROM states WHERE label = 'set_tunable 7'),
    'and exactly the same allocation and EWMAs');
SELECT is(
    (SELECT recomputes FROM states WHERE label = 'update 7') - (SELECT recomputes FROM states WHERE label = 'set_tunable 14'),
    1,
    'the direct UPDATE recomputed once');

UPDATE public.learning_configs SET config_data = config_data - 'tau_short_days' WHERE module_id = 'learning';
SELECT is(pg_temp.dm(), (SELECT cfg FROM states WHERE label = 'set_tunable 14'),
    'removing the key (back to the default 14) recomputes as set_tunable 14 did');

INSERT INTO states VALUES ('before same', pg_temp.dm(), pg_temp.recomputes());
UPDATE public.learning_configs SET config_data = config_data || '{"tau_short_days": 14.0, "max_step": 0.003}'
WHERE module_id = 'learning';
SELECT is(pg_temp.recomputes(), (SELECT recomputes FROM states WHERE label = 'before same'),
    'writing the tau it already has (14.0 = default 14) or another key does not recompute');

CREATE TEMP TABLE saved_learning AS SELECT * FROM public.learning_configs WHERE module_id = 'learning';
DELETE FROM public.learning_configs WHERE module_id = 'learning';
SELECT is(pg_temp.recomputes(), (SELECT recomputes FROM states WHERE label = 'before same'),
    'deleting a row with default taus does not recompute');
INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"tau_short_days": 7}');
SELECT is(pg_temp.dm() -> 'learning_state', (SELECT cfg -> 'learning_state' FROM states WHERE label = 'set_tunable 7'),
    'a direct INSERT with tau_short_days 7 gives exactly the learning_state of set_tunable');
DELETE FROM public.learning_configs WHERE module_id = 'learning';
SELECT is(pg_temp.dm(), (SELECT cfg FROM states WHERE label = 'set_tunable 14'),
    'deleting the row (taus back to their defaults) recomputes as set_tunable 14 did');
INSERT INTO public.learning_configs SELECT * FROM saved_learning;

SELECT is(learning.set_tunable('tau_long_days', '30'), '30'::jsonb, 'set_tunable tau_long_days 30');
INSERT INTO states VALUES ('set_tunable long 30', pg_temp.dm(), pg_temp.recomputes());
SELECT is(learning.set_tunable('tau_long_days', '90'), '90'::jsonb, 'and back to 90');
INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"tau_long_days": 30}')
ON CONFLICT (module_id) DO UPDATE SET config_data = learning_configs.config_data || excluded.config_data;
SELECT is(pg_temp.dm(), (SELECT cfg FROM states WHERE label = 'set_tunable long 30'),
    'an upsert of tau_long_days 30 gives exactly the state of set_tunable');

-- A trade after a direct tau change folds with the new tau into the recomputed state.
UPDATE public.learning_configs SET config_data = config_data || '{"tau_short_days": 3}' WHERE module_id = 'learning';
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('v7', '4h', -1, '2026-01-25T00:00:00Z');
SELECT ok(
    (SELECT bool_and(abs(s.roi_short - learning.ewma_short(r.state)) < 1e-12
        AND abs(s.roi_long - learning.ewma_long(r.state)) < 1e-12)
     FROM learning.timeframe_allocation() AS s
     INNER JOIN learning.recomputed_roi_state() AS r ON r.series = s.timeframe),
    'a later trade folds with the directly written taus (3 / 30): the state is the closed form');

-- ------------------------------------------------------------------------------ other modules
SELECT lives_ok(
    $$UPDATE public.learning_configs
      SET config_data = config_data || '{"tau_short_days": 0, "steer_gain": "abc", "junk": [1]}'
      WHERE module_id = 'decision_maker'$$,
    'the decision_maker row is not validated (tunable names with bad values are stored)');
SELECT is(pg_temp.dm() -> 'steer_gain', '"abc"'::jsonb, 'the value is there');
UPDATE public.learning_configs SET config_data = config_data - 'tau_short_days' - 'steer_gain' - 'junk'
WHERE module_id = 'decision_maker';
SELECT lives_ok(
    $$INSERT INTO public.learning_configs (module_id, config_data)
      VALUES ('pm', '{"feature_flags": {"ae_v2_enabled": true}, "max_step": -1, "N_MIN": 40}')
      ON CONFLICT (module_id) DO UPDATE SET config_data = excluded.config_data$$,
    'the pm row is not validated');
SELECT is(learning.set_feature_flag('pm', 'learning_overrides_enabled', true), true, 'feature flags still set');
SELECT is(
    (SELECT config_data FROM public.learning_configs WHERE module_id = 'pm'),
    '{"feature_flags": {"ae_v2_enabled": true, "learning_overrides_enabled": true}, "max_step": -1, "N_MIN": 40}'::jsonb,
    'the pm row holds what was written');
SELECT is(pg_temp.learning_row() -> 'max_step', '0.003'::jsonb, 'and the learning row''s max_step is its own');

-- --------------------------------------------- the bot's own role: rights on the table, none in learning
CREATE ROLE pgtap_tunables_bot NOLOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.learning_configs TO pgtap_tunables_bot;
-- learning_configs is the bot's own table, adopted: the migration leaves its row-level security to the
-- bot (here the template created it, so RLS is on and admits only our roles: off, as the bot has it).
ALTER TABLE public.learning_configs DISABLE ROW LEVEL SECURITY;
SET LOCAL ROLE pgtap_tunables_bot;
SELECT throws_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"steer_gain": 5}' WHERE module_id = 'learning'$$,
    '22023', 'tunable steer_gain must be a number in [0, 1], got 5',
    'a role without rights in schema learning gets the validation error, not a permission error');
SELECT lives_ok(
    $$UPDATE public.learning_configs SET config_data = config_data || '{"tau_short_days": 5}' WHERE module_id = 'learning'$$,
    'and its valid tau change is accepted');
RESET ROLE;
SELECT ok(
    (SELECT bool_and(abs(s.roi_short - learning.ewma_short(r.state)) < 1e-15)
     FROM learning.timeframe_allocation() AS s
     INNER JOIN learning.recomputed_roi_state() AS r ON r.series = s.timeframe)
    AND (SELECT tau FROM (SELECT (learning.tunables() ->> 'tau_short_days')::float8 AS tau) AS t) = 5,
    'and recomputed the state at tau_short 5 (definer trigger)');

SELECT * FROM finish();
ROLLBACK;
