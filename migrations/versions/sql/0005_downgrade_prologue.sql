CREATE INDEX IF NOT EXISTS pattern_trade_events_pattern_ts_idx
ON public.pattern_trade_events (pattern_key, timestamp);
