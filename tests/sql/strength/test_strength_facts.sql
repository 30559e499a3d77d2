-- Trade facts (design §11): the closed_trades trigger writes one pattern_trade_events row per action.
BEGIN;
SELECT plan(11);

INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions, did_trim, reached_s3)
VALUES
(
    'f1', '1h', 12.5, '2026-02-01T10:00:00Z',
    '[{"pattern_key": "pm.uptrend.S1.entry", "action_category": "entry", "scope": {"chain": "sol"}, "state": "S1"},
      {"pattern_key": "pm.uptrend.S2.trim", "action_category": "trim", "scope": {"chain": "sol"}, "state": "S2"},
      {"pattern_key": "pm.uptrend.S3.add", "action_category": "add", "state": "S2"}]',
    NULL, NULL
),
(
    'f2', '4h', -4, '2026-02-02T10:00:00Z',
    '[{"pattern_key": "pm.x", "action_category": "entry", "decision_type": "trim", "scope": {"chain": "eth"}},
      {"pattern_key": "pm.y", "action_category": "add", "scope": null, "state": "S3"}]',
    NULL, NULL
),
(
    'f3', '15m', 3, '2026-02-03T10:00:00Z',
    '[{"pattern_key": "pm.z", "action_category": "trim", "scope": {}, "state": "S3"}]',
    false, false
),
('f4', '1h', 7, '2026-02-04T10:00:00Z', '[]', NULL, NULL),
('f5', '1m', 2, '2026-02-05T10:00:00Z', '[{"pattern_key": "pm.m", "action_category": "entry", "scope": {}}]', NULL, NULL);

SELECT is(
    (SELECT count(*)::integer FROM public.pattern_trade_events WHERE trade_id = 'f1'),
    3,
    'one row per action (3 actions, 3 rows)'
);
SELECT is(
    (SELECT count(*)::integer FROM public.pattern_trade_events WHERE trade_id = 'f4'),
    0,
    'a trade without actions writes no strength fact'
);
SELECT is(
    (SELECT pg_catalog.array_agg(DISTINCT roi) FROM public.pattern_trade_events WHERE trade_id = 'f1'),
    ARRAY[0.125::float8],
    'roi is the trade''s rpnl_pct as a fraction on every row'
);
SELECT ok(
    (SELECT bool_and(did_trim) FROM public.pattern_trade_events WHERE trade_id = 'f1'),
    'did_trim derived: an action with action_category trim marks every row of the trade'
);
SELECT ok(
    (SELECT bool_and(reached_s3) FROM public.pattern_trade_events WHERE trade_id = 'f1'),
    'reached_s3 derived: a pattern_key containing .S3. marks every row of the trade'
);
SELECT ok(
    (SELECT bool_and(did_trim) FROM public.pattern_trade_events WHERE trade_id = 'f2'),
    'did_trim derived from decision_type trim'
);
SELECT ok(
    (SELECT bool_and(reached_s3) FROM public.pattern_trade_events WHERE trade_id = 'f2'),
    'reached_s3 derived from state S3'
);
SELECT ok(
    (SELECT NOT bool_or(did_trim) AND NOT bool_or(reached_s3) FROM public.pattern_trade_events WHERE trade_id = 'f3'),
    'the columns, when given, win over the actions (false despite a trim at S3)'
);
SELECT results_eq(
    $$SELECT pattern_key, action_category, scope, "timestamp" FROM public.pattern_trade_events
      WHERE trade_id = 'f2' ORDER BY id$$,
    $$VALUES ('pm.x', 'entry', '{"chain": "eth"}'::jsonb, '2026-02-02T10:00:00Z'::timestamptz),
             ('pm.y', 'add', '{}'::jsonb, '2026-02-02T10:00:00Z'::timestamptz)$$,
    'pattern, category and scope from the action (null scope stored as {}); timestamp = closed_at'
);
SELECT is(
    (SELECT roi FROM public.pattern_trade_events WHERE trade_id = 'f2' LIMIT 1),
    -0.04::float8,
    'a loss is a negative fraction'
);
SELECT is(
    (SELECT count(*)::integer FROM public.pattern_trade_events WHERE trade_id = 'f5'),
    1,
    'a 1m trade still writes its strength facts'
);

SELECT * FROM finish();
ROLLBACK;
