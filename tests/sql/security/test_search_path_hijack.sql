-- Objects named like ours, planted in schemas first on the caller's search_path (a schema evil,
-- public, pg_temp, even ahead of pg_catalog), change nothing our functions do: they pin
-- search_path = '' and qualify every name, and SQL-standard bodies are bound when created.
BEGIN;
SELECT plan(12);

CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE FUNCTION evil.hijacked() RETURNS jsonb LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'hijacked: a planted function ran'; END$$;
CREATE FUNCTION evil.tunables() RETURNS jsonb LANGUAGE sql AS $$SELECT evil.hijacked()$$;
CREATE FUNCTION public.tunables() RETURNS jsonb LANGUAGE sql AS $$SELECT evil.hijacked()$$;
CREATE FUNCTION evil.tracked_timeframes() RETURNS text [] LANGUAGE sql AS $$SELECT ARRAY['1m']$$;
CREATE FUNCTION public.tracked_timeframes() RETURNS text [] LANGUAGE sql AS $$SELECT ARRAY['1m']$$;
CREATE FUNCTION evil.exp(double precision) RETURNS double precision LANGUAGE sql AS $$SELECT 0::float8$$;
CREATE FUNCTION evil.abs(double precision) RETURNS double precision LANGUAGE sql AS $$SELECT -1::float8$$;
CREATE FUNCTION evil.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$SELECT 'array'$$;
CREATE FUNCTION evil.add_planted(double precision, double precision) RETURNS double precision
LANGUAGE sql AS $$SELECT 1e6::float8$$;
CREATE OPERATOR evil.+ (LEFTARG = double precision, RIGHTARG = double precision, FUNCTION = evil.add_planted);
CREATE TABLE evil.learning_configs (LIKE public.learning_configs INCLUDING ALL);
CREATE TABLE evil.lowcap_positions (LIKE public.lowcap_positions INCLUDING ALL);
CREATE TABLE evil.tunable_specs (LIKE learning.tunable_specs INCLUDING ALL);
CREATE TABLE evil.allocation_history (LIKE learning.allocation_history INCLUDING ALL);
GRANT ALL ON ALL TABLES IN SCHEMA evil TO PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA evil TO PUBLIC;
INSERT INTO evil.tunable_specs (key, default_value, kind, description)
VALUES ('max_step', '0.5', 'number', 'planted');

INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
VALUES ('0xhj', 'solana', '15m', 'active', 3.0), ('0xhj', 'solana', '1h', 'active', 10.0),
('0xhj', 'solana', '4h', 'active', 7.0);

SET LOCAL ROLE learning_writer;
-- The writer itself may plant temp objects: pg_temp is searched first for relations.
CREATE TEMP TABLE learning_configs (
    module_id text, config_data jsonb, updated_at timestamptz, updated_by text, notes text
);
CREATE TEMP TABLE lowcap_positions (
    id uuid, token_contract text, token_chain text, timeframe text, status text,
    total_allocation_pct float8
);
CREATE TEMP TABLE allocation_history (seq bigint, trade_id text, timeframe text);
CREATE TEMP TABLE pattern_trade_events (
    pattern_key text, action_category text, scope jsonb, trade_id text, roi float8,
    did_trim boolean, reached_s3 boolean, "timestamp" timestamptz
);
CREATE TEMP TABLE learning_log (level text, message text);
SET LOCAL search_path = pg_temp, evil, pg_catalog, public, learning;

SELECT lives_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('hj1', '15m', 5, '2026-01-01T00:00:00Z', '[{"pattern_key": "p.hj", "action_category": "entry"}]'),
             ('hj2', '1h', -2, '2026-01-02T00:00:00Z', '[]')$$,
    'a writer with a hostile search_path inserts trades; no planted function runs'
);
SELECT is((SELECT count(*)::integer FROM pg_temp.learning_configs), 0, 'the temp learning_configs is untouched');
SELECT is((SELECT count(*)::integer FROM pg_temp.allocation_history), 0, 'the temp allocation_history is untouched');
SELECT is((SELECT count(*)::integer FROM pg_temp.pattern_trade_events) + (SELECT count(*)::integer FROM pg_temp.learning_log)
    + (SELECT count(*)::integer FROM pg_temp.lowcap_positions), 0, 'temp facts, log and positions are untouched');

RESET ROLE;
SET LOCAL search_path = pg_temp, evil, pg_catalog, public, learning;
SET LOCAL ROLE learning_reader;
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 10) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m'::text, 0.1506), ('1h', 0.4994), ('4h', 0.35)$$,
    'the allocation is the walkthrough''s, read under the hostile search_path too'
);
SELECT is((learning.tunables() ->> 'max_step')::float8, 0.003::float8,
    'learning.tunables() ignores the planted tunable_specs');
SELECT is(learning.trade_roi(5::float8) OPERATOR(pg_catalog.=) 0.05::float8, true,
    'SQL-standard bodies were bound at creation (planted abs and + are not used)');
SELECT is(learning.feature_flag('pm', 'ae_v2_enabled'), false, 'learning.feature_flag() reads the real table');
RESET ROLE;
RESET search_path;

SELECT results_eq(
    $$SELECT timeframe, round(total_allocation_pct::numeric, 10) FROM public.lowcap_positions
      WHERE token_contract = '0xhj' ORDER BY timeframe$$,
    $$VALUES ('15m', 3.012), ('1h', 9.988), ('4h', 7.0)$$,
    'the real positions were redistributed'
);
SELECT is((SELECT count(*)::integer FROM evil.learning_configs) + (SELECT count(*)::integer FROM evil.lowcap_positions)
    + (SELECT count(*)::integer FROM evil.allocation_history), 0, 'the planted tables in schema evil are untouched');
SELECT is((SELECT count(*)::integer FROM learning.allocation_history WHERE trade_id IN ('hj1', 'hj2')), 2,
    'the real allocation_history got both steps');
SELECT is((SELECT count(*)::integer FROM public.pattern_trade_events WHERE trade_id = 'hj1'), 1,
    'the real pattern_trade_events got the strength fact');

SELECT * FROM finish();
ROLLBACK;
