-- Strength facts are read by time window only: the (pattern_key, timestamp) index revision 0001
-- created is maintained at every fact row and read by no job (design §1, §11).
DROP INDEX IF EXISTS public.pattern_trade_events_pattern_ts_idx;
