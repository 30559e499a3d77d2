-- The tunables in effect (design §3): learning.effective_tunables holds the merge of the learning row
-- and the defaults after every way either can change (set_tunable, unset_tunable, a direct write, a
-- DELETE or TRUNCATE of the row, a changed default); learning.tunables() reads it and makes the merge
-- itself should the row be missing; a change of the effective tau, however made, rebuilds the EWMA
-- state once; only the triggers write the row.
BEGIN;
SELECT plan(30);

-- in_sync(): the stored row is the merge of the learning row as it is now.
CREATE FUNCTION pg_temp.in_sync()
RETURNS boolean
LANGUAGE sql
AS $$
    SELECT (SELECT t.tunables FROM learning.effective_tunables AS t)
        = learning._effective_tunables()
$$;

-- run(sql): run a statement, its result kept out of the TAP output.
CREATE FUNCTION pg_temp.run(p_sql text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE p_sql;
END;
$$;

CREATE FUNCTION pg_temp.recomputes()
RETURNS integer
LANGUAGE sql
AS $$ SELECT count(*)::integer FROM learning.learning_log WHERE message LIKE 'ROI RECOMPUTE:%' $$;

CREATE FUNCTION pg_temp.tau_short()
RETURNS double precision
LANGUAGE sql
AS $$ SELECT (learning.tunables() ->> 'tau_short_days')::double precision $$;

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES
('et-1', '15m', 4, '2026-01-01T00:00:00Z'),
('et-2', '1h', -2, '2026-01-03T00:00:00Z'),
('et-3', '4h', 6, '2026-01-05T00:00:00Z');

-- ------------------------------------------------------------------------------------------ shape
SELECT is((SELECT count(*)::integer FROM learning.effective_tunables), 1, 'one row of tunables in effect');
SELECT ok(pg_temp.in_sync(), 'it is the merge of the learning row and the defaults');
SELECT is(
    (SELECT count(*)::integer FROM jsonb_object_keys(learning.tunables())),
    (SELECT count(*)::integer FROM learning.tunable_specs),
    'tunables() names every tunable once');
SELECT is(learning.tunables(), (SELECT t.tunables FROM learning.effective_tunables AS t), 'tunables() reads it');

-- ------------------------------------------------------------------------------------ every write
SELECT pg_temp.run($$SELECT learning.set_tunable('max_step', '0.004')$$);
SELECT is(learning.tunables() -> 'max_step', '0.004'::jsonb, 'set_tunable is in effect at once');
SELECT ok(pg_temp.in_sync(), 'and the row follows it');
UPDATE public.learning_configs SET config_data = config_data || '{"steer_gain": 0.5}' WHERE module_id = 'learning';
SELECT is(learning.tunables() -> 'steer_gain', '0.5'::jsonb, 'a direct UPDATE of the learning row is in effect');
SELECT pg_temp.run($$SELECT learning.unset_tunable('max_step')$$);
SELECT is(learning.tunables() -> 'max_step', '0.003'::jsonb, 'unset_tunable restores the default');
SELECT ok(pg_temp.in_sync(), 'and the row follows it');
SELECT is(pg_temp.recomputes(), 0, 'no tau changed: no recompute');

-- ------------------------------------------------------------------------------ tau, however changed
SELECT pg_temp.run($$SELECT learning.set_tunable('tau_short_days', '5')$$);
SELECT is(pg_temp.recomputes(), 1, 'set_tunable of tau_short_days recomputes once');
SELECT is(pg_temp.tau_short(), 5::double precision, 'at tau_short 5');
UPDATE public.learning_configs SET config_data = config_data || '{"tau_short_days": 5.0}'
WHERE module_id = 'learning';
SELECT is(pg_temp.recomputes(), 1, '5.0 over 5: the tau in effect is the same, no recompute');
DELETE FROM public.learning_configs WHERE module_id = 'learning';
SELECT is(pg_temp.recomputes(), 2, 'deleting the learning row recomputes (tau_short back to its default)');
SELECT is(pg_temp.tau_short(), 14::double precision, 'at tau_short 14');
SELECT ok(pg_temp.in_sync(), 'and the row holds the defaults');
SELECT pg_temp.run($$SELECT learning.set_tunable('tau_long_days', '60')$$);
SELECT is(pg_temp.recomputes(), 3, 'tau_long_days recomputes too');
TRUNCATE public.learning_configs;
SELECT is(pg_temp.recomputes(), 4, 'TRUNCATE of learning_configs recomputes (tau_long back to its default)');
SELECT is((learning.tunables() ->> 'tau_long_days')::double precision, 90::double precision, 'at tau_long 90');
SELECT ok(pg_temp.in_sync(), 'and the row holds the defaults');
SELECT ok(
    (SELECT bool_and(s.n > 0) FROM learning.allocation_state AS s)
    AND (SELECT count(*) FROM public.learning_configs WHERE module_id = 'decision_maker') = 1,
    'the state was rebuilt from closed_trades and the decision_maker row made again');

-- ---------------------------------------------------------------------------------- a new default
UPDATE learning.tunable_specs SET default_value = '7' WHERE key = 'tau_short_days';
SELECT is(pg_temp.recomputes(), 5, 'a changed tau default (as a migration writes it) recomputes');
SELECT is(pg_temp.tau_short(), 7::double precision, 'at the new default');
UPDATE learning.tunable_specs SET description = description || '.' WHERE key = 'n_min';
SELECT is(pg_temp.recomputes(), 5, 'a change that leaves the tunables in effect as they were does nothing');

-- --------------------------------------------------------------------------------- a retired key
ALTER TABLE public.learning_configs DISABLE TRIGGER _100_validate_tunables;
INSERT INTO public.learning_configs (module_id, config_data) VALUES ('learning', '{"retired_key": 1}');
ALTER TABLE public.learning_configs ENABLE TRIGGER _100_validate_tunables;
SELECT ok(NOT learning.tunables() ? 'retired_key', 'a key that is not a tunable is not in effect');

-- --------------------------------------------------------------------------------- a missing row
DELETE FROM learning.effective_tunables;
SELECT is(
    learning.tunables(),
    learning._effective_tunables(),
    'a missing row: tunables() makes the merge itself');
SELECT pg_temp.run($$SELECT learning._refresh_tunables()$$);
SELECT ok(pg_temp.in_sync(), '_refresh_tunables writes it again');
SELECT is(pg_temp.recomputes(), 6, 'and, the tau of a missing row being unknown, rebuilds the state');

-- ----------------------------------------------------------------------------- only the triggers
SET LOCAL ROLE learning_admin;
SELECT throws_ok(
    $$UPDATE learning.effective_tunables SET tunables = tunables || '{"max_step": 0.5}'$$, '42501', NULL,
    'the admin cannot write the tunables in effect (max_step 0.5 is out of range)');
SELECT pg_temp.run($$SELECT learning.set_tunable('max_step', '0.005')$$);
RESET ROLE;
SELECT is(learning.tunables() -> 'max_step', '0.005'::jsonb, 'set_tunable by the admin is in effect (definer trigger)');

SELECT * FROM finish();
ROLLBACK;
