-- Input rules (design §2): every bad trade is refused with a message naming the field, and no table
-- changes; closed_trades is append-only; a duplicate trade_id never counts twice.
BEGIN;
SELECT plan(36);

-- fingerprint(): row count and md5 of every table in public and learning, in one text.
CREATE FUNCTION pg_temp.fingerprint()
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    r record;
    part text;
    acc text := '';
BEGIN
    FOR r IN
        SELECT n.nspname, c.relname
        FROM pg_catalog.pg_class AS c
        INNER JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'learning') AND c.relkind IN ('r', 'p')
        ORDER BY 1, 2
    LOOP
        EXECUTE format(
            'SELECT count(*) || '':'' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), '''') FROM %I.%I AS t',
            r.nspname, r.relname
        ) INTO part;
        acc := acc || r.nspname || '.' || r.relname || '=' || part || ';';
    END LOOP;
    RETURN acc;
END;
$$;

SELECT lives_ok($$SELECT learning.set_tunable('allocation_rule', '"plan"')$$, 'the plan''s rule (design §5 figures)');

-- Some state to protect: two learned trades (the allocation has moved) and a position.
INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
VALUES ('tokA', 'solana', '15m', 'active', 3.0), ('tokA', 'solana', '1h', 'active', 10.0);
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
VALUES
('good1', '15m', 5, '2026-01-01T00:00:00Z', '[{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry", "scope": {"chain": "solana"}}]'),
('good2', '1h', -2, '2026-01-02T00:00:00Z', '[]');
CREATE TEMP TABLE before_fp AS SELECT pg_temp.fingerprint() AS fp;

SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b1', '1h', 'NaN', now())$$,
    '%rpnl_pct%', 'rpnl_pct NaN is refused, naming rpnl_pct');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b2', '1h', 'Infinity', now())$$,
    '%rpnl_pct%', 'rpnl_pct +inf is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b3', '1h', '-Infinity', now())$$,
    '%rpnl_pct%', 'rpnl_pct -inf is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b4', '1h', -100.0001, now())$$,
    '%rpnl_pct%', 'rpnl_pct below -100 is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b5', '1h', NULL, now())$$,
    '%rpnl_pct%', 'rpnl_pct null is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b6', '1h', 1, NULL)$$,
    '%closed_at%', 'null closed_at is refused, naming closed_at');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b7', '1h', 1, 'infinity')$$,
    '%closed_at%', 'infinite closed_at is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b8', NULL, 1, now())$$,
    '%timeframe%', 'null timeframe is refused, naming timeframe');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b9', '5m', 1, now())$$,
    '%timeframe%', 'unknown timeframe 5m is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('b10', '1H', 1, now())$$,
    '%timeframe%', 'timeframe is case-sensitive: 1H is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('b11', '1h', 1, now(), '{"pattern_key": "x"}')$$,
    '%actions%', 'actions that are an object, not an array, are refused naming actions');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('b12', '1h', 1, now(), NULL)$$,
    '%actions%', 'null actions are refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('b13', '1h', 1, now(), '[{"pattern_key": "pm.x", "action_category": "entry"}, 7]')$$,
    '%actions[1]%', 'a bad action element is refused with its index and the field');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('b14', '1h', 1, now(), '[{"action_category": "entry"}]')$$,
    '%actions[0]%', 'an action without pattern_key is refused');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('b15', '1h', 1, now(), '[{"pattern_key": "pm.x", "action_category": "entry", "scope": [1]}]')$$,
    '%actions[0]%', 'an action whose scope is not an object is refused');
SELECT throws_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('good1', '4h', 9, now())$$,
    '23505', NULL, 'a duplicate trade_id is a unique violation');
SELECT throws_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
      VALUES ('d1', '4h', 9, now()), ('d2', '15m', 1, now()), ('d1', '1h', -3, now())$$,
    '23505', NULL, 'a duplicate inside one multi-row INSERT fails the whole statement');
SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
      VALUES ('m1', '4h', 9, now()), ('m2', '15m', 'NaN', now())$$,
    '%rpnl_pct%', 'one bad row fails a multi-row INSERT of good rows');
SELECT throws_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES (NULL, '4h', 9, now())$$,
    '23502', NULL, 'a null trade_id is refused');

SELECT is(pg_temp.fingerprint(), (SELECT fp FROM before_fp), 'after every refused INSERT, no table has changed');

-- Append-only.
SELECT throws_ok($$UPDATE public.closed_trades SET rpnl_pct = 50 WHERE trade_id = 'good1'$$,
    '2F003', NULL, 'UPDATE of closed_trades is refused');
SELECT throws_like($$DELETE FROM public.closed_trades WHERE trade_id = 'good1'$$,
    '%append-only%', 'DELETE of closed_trades is refused, saying why');
SELECT throws_ok($$TRUNCATE public.closed_trades$$, '2F003', NULL, 'TRUNCATE of closed_trades is refused');
SELECT throws_ok($$UPDATE public.closed_trades SET rpnl_pct = rpnl_pct WHERE false$$,
    '2F003', NULL, 'even an UPDATE that matches no row is refused');
SELECT throws_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('up1', '4h', 1, now())
      ON CONFLICT (trade_id) DO UPDATE SET rpnl_pct = excluded.rpnl_pct$$,
    '2F003', NULL, 'an upsert is an UPDATE: refused even for a new trade, so a bot using it fails at once');
CREATE FUNCTION pg_temp.upsert_hint() RETURNS text LANGUAGE plpgsql AS $f$
DECLARE h text;
BEGIN
    INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at) VALUES ('up1', '4h', 1, now())
    ON CONFLICT (trade_id) DO UPDATE SET rpnl_pct = excluded.rpnl_pct;
    RETURN NULL;
EXCEPTION WHEN prohibited_sql_statement_attempted THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END $f$;
SELECT matches(pg_temp.upsert_hint(), 'ON CONFLICT \(trade_id\) DO NOTHING', 'its hint names the upsert that works');
SELECT lives_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
      VALUES ('good1', '4h', 99, now()) ON CONFLICT (trade_id) DO NOTHING$$,
    'ON CONFLICT DO NOTHING skips a stored trade');
SELECT is(pg_temp.fingerprint(), (SELECT fp FROM before_fp), 'after the refused UPDATE/DELETE/TRUNCATE, no table has changed');

-- Duplicates never count twice; the stored state is exactly the two good trades.
SELECT is((SELECT n FROM learning.global_roi()), 2, 'global n counts the two good trades only');
SELECT results_eq(
    $$SELECT timeframe, n FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 1), ('1h', 1), ('4h', 0)$$,
    'per-timeframe n: the refused 4h trades left no count');
SELECT is((SELECT count(*)::integer FROM learning.allocation_history), 2, 'one history row per good trade');

-- The same checks hold one statement later: a good trade after the refusals still learns normally.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('good3', '4h', 3, '2026-01-03T00:00:00Z');
SELECT results_eq(
    $$SELECT timeframe, round(current_allocation::numeric, 6) FROM learning.timeframe_allocation()$$,
    $$VALUES ('15m', 0.151128), ('1h', 0.498800), ('4h', 0.350072)$$,
    'after the refusals the next good trade gives the pinned trade-3 figures of design §5');
SELECT is(
    (SELECT count(*)::integer FROM public.pattern_trade_events WHERE trade_id = 'good1'), 1,
    'the good trade''s one action became one strength fact');

-- The bot's idempotent retry: ON CONFLICT DO NOTHING counts only the trades that are new.
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES ('good1', '15m', 50, '2026-01-05T00:00:00Z'), ('good4', '15m', -1, '2026-01-05T00:00:00Z')
ON CONFLICT (trade_id) DO NOTHING;
SELECT results_eq(
    $$SELECT trade_id FROM learning.allocation_history WHERE seq > (
        SELECT seq FROM learning.allocation_history WHERE trade_id = 'good3')$$,
    $$VALUES ('good4')$$,
    'a retried trade_id is skipped by ON CONFLICT DO NOTHING and learns nothing twice');
SELECT is((SELECT n FROM learning.global_roi()), 4, 'global n counts each trade once');

SELECT * FROM finish();
ROLLBACK;
