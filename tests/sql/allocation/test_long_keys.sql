-- An action whose pattern_key would not fit an index key downstream is refused up front, by name.
BEGIN;
SELECT plan(3);

SELECT throws_like(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('long1', '1h', 1, now(), jsonb_build_array(jsonb_build_object(
          'pattern_key', repeat('x', 9000), 'action_category', 'entry')))$$,
    '%actions[0] of trade long1%pattern_key%200 characters%',
    'a 9,000-character pattern_key is refused with the element and the limit named'
);
SELECT is((SELECT count(*) FROM public.closed_trades WHERE trade_id = 'long1'), 0::bigint, 'nothing written');
SELECT lives_ok(
    $$INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at, actions)
      VALUES ('long2', '1h', 1, now(), jsonb_build_array(jsonb_build_object(
          'pattern_key', repeat('x', 200), 'action_category', 'entry')))$$,
    'a 200-character pattern_key is accepted'
);

SELECT * FROM finish();
ROLLBACK;
