-- Episode capture (design §7): the summary, blocked_by judged as the simulation judges gates,
-- warnings for missing thresholds and malformed samples, set_episode_outcome.
BEGIN;
SELECT plan(23);

INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors) VALUES
-- ts fails alone (value below ts_min; the flags say otherwise and are ignored when the value is there)
('{}', 'cap.p', 'cap_ts', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_score": 0.9, "halo_distance": 0.5, "ema60_slope": 0.01, "ema144_slope": 0.01, "ts_ok": true},
  {"ts_score": 0.55, "halo_distance": 0.5, "ema60_slope": 0.01, "ema144_slope": 0.01, "ts_ok": true}]}'),
-- ts and halo fail: halo must be listed too (the plan's rule drops it)
('{}', 'cap.p', 'cap_ts_halo', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_score": 0.5, "halo_distance": 1.5, "ema60_slope": 0.01, "ema144_slope": 0.0,
   "ts_ok": false, "entry_zone_ok": false, "slope_ok": true}]}'),
-- slope: ema60 not above slope_min but ema144 at it passes; a second event fails both
('{}', 'cap.p', 'cap_slope_ok', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_score": 0.5, "halo_distance": 0.5, "ema60_slope": 0.0, "ema144_slope": 0.0}]}'),
('{}', 'cap.p', 'cap_all', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_score": 0.5, "halo_distance": 1.01, "ema60_slope": -0.001, "ema144_slope": -0.001}]}'),
-- values missing: flags decide; flag missing too: the gate fails
('{}', 'cap.p', 'cap_flags', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_ok": true, "slope_ok": false}]}'),
-- acted: representative values; numeric fields summarised; flags any-over-samples
('{}', 'cap.p', 'cap_acted', 'acted', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_score": 0.4, "halo_distance": 0.2, "ema60_slope": 0.003, "ts_ok": false, "entry_zone_ok": true},
  {"ts_score": 0.8, "halo_distance": 0.6, "ema60_slope": 0.001, "ts_ok": true, "entry_zone_ok": true},
  {"ts_score": 0.7, "halo_distance": 0.4, "ema60_slope": 0.002, "ts_ok": true, "entry_zone_ok": false}]}'),
-- thresholds missing (and a non-positive halo_max counts as missing): defaults 0.60 / 1.0 / 0.0 judge
('{}', 'cap.p', 'cap_missing', 'skipped', '{"halo_max": 0, "samples": [
  {"ts_score": 0.61, "halo_distance": 0.99, "ema60_slope": 0.001}]}'),
-- malformed samples: the row is kept as given, with a warning
('{}', 'cap.p', 'cap_bad', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": "nope"}'),
('{}', 'cap.p', 'cap_junk', 'skipped', '{"ts_min": 0.6, "halo_max": 1.0, "slope_min": 0.0, "samples": [
  {"ts_score": "high", "halo_distance": 0.5, "ema60_slope": 0.01}, 7]}');

SELECT is((SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_ts'),
    '["ts"]'::jsonb, 'ts below ts_min blocks by ts alone (values win over flags)');
SELECT is((SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_ts_halo'),
    '["ts", "halo"]'::jsonb, 'halo is listed even when ts also failed');
SELECT is((SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_slope_ok'),
    '["ts"]'::jsonb, 'ema144_slope >= slope_min passes the slope gate');
SELECT is((SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_all'),
    '["ts", "slope", "halo"]'::jsonb, 'every failed gate is listed, in ts, slope, halo order');
SELECT is((SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_flags'),
    '["slope", "halo"]'::jsonb, 'without values the flags judge; a missing flag fails its gate');
SELECT is((SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_missing'),
    '[]'::jsonb, 'missing thresholds default to 0.60 / 1.0 / 0.0');

SELECT ok((SELECT NOT (factors ? 'samples') FROM public.pattern_episode_events WHERE episode_id = 'cap_acted'),
    'samples are replaced by the summary');
SELECT is(
    (SELECT jsonb_build_array(factors -> 'ts_score_min', factors -> 'ts_score_max', factors -> 'ts_score_median',
        factors -> 'halo_distance_median', factors -> 'n_samples')
     FROM public.pattern_episode_events WHERE episode_id = 'cap_acted'),
    '[0.4, 0.8, 0.7, 0.4, 3]'::jsonb, 'numeric fields get _min, _max, _median (percentile_cont)');
SELECT is(
    (SELECT jsonb_build_array(factors -> 'ts_ok', factors -> 'entry_zone_ok', factors ? 'slope_ok')
     FROM public.pattern_episode_events WHERE episode_id = 'cap_acted'),
    '[true, true, false]'::jsonb, 'gate flags are any-over-samples; absent when no sample has them');
SELECT is(
    (SELECT jsonb_build_array(factors -> 'ts_score_acted', factors -> 'halo_distance_acted', factors -> 'slope_acted')
     FROM public.pattern_episode_events WHERE episode_id = 'cap_acted'),
    '[0.7, 0.4, 0.002]'::jsonb, 'acted events keep the last sample as *_acted');
SELECT is(
    (SELECT factors -> 'decision_sample' FROM public.pattern_episode_events WHERE episode_id = 'cap_acted'),
    '{"ts_score": 0.7, "halo_distance": 0.4, "ema60_slope": 0.002, "ts_ok": true, "entry_zone_ok": false}'::jsonb,
    'decision_sample is the last sample''s values and flags');
SELECT ok((SELECT NOT (factors ? 'blocked_by') FROM public.pattern_episode_events WHERE episode_id = 'cap_acted'),
    'acted events carry no blocked_by');

SELECT is(
    (SELECT count(*)::int FROM learning.learning_log
     WHERE message = 'EPISODE EVENT: Missing threshold data | episode_id=cap_missing | missing=[ts_min, halo_max, slope_min]'
        AND level = 'WARNING'),
    1, 'missing thresholds log one warning naming them (a non-positive halo_max counts)');
SELECT is(
    (SELECT count(*)::int FROM learning.learning_log
     WHERE message = 'EPISODE EVENT: pattern=cap.p | decision=skipped | episode_id=cap_ts_halo | blocked_by=[ts, halo]'),
    1, 'the EPISODE EVENT line carries blocked_by');
SELECT is(
    (SELECT factors -> 'samples' FROM public.pattern_episode_events WHERE episode_id = 'cap_bad'),
    '"nope"'::jsonb, 'samples that are not an array are kept as given');
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log WHERE level = 'WARNING'
        AND message LIKE 'EPISODE EVENT: Invalid samples | episode_id=cap_bad | reason=samples is string%'),
    'and a warning says why');
SELECT is(
    (SELECT factors -> 'blocked_by' FROM public.pattern_episode_events WHERE episode_id = 'cap_junk'),
    '["ts"]'::jsonb, 'a non-numeric ts_score counts as missing (no flag: the gate fails)');
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log WHERE level = 'WARNING'
        AND message = 'EPISODE EVENT: Invalid samples | episode_id=cap_junk | reason=1 of 2 samples are not objects; non-numeric values ignored: ts_score(1)'),
    'junk values and non-object samples are reported');

INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors) VALUES
('{}', 'cap.p', 'cap_tiny', 'skipped', '{"samples": [{"ts_score": 1e400, "halo_distance": 1e-400, "ema60_slope": -1e-400}]}');
SELECT is(
    (SELECT factors -> 'decision_sample' FROM public.pattern_episode_events WHERE episode_id = 'cap_tiny'),
    '{"halo_distance": 0, "ema60_slope": 0}'::jsonb,
    'numbers beyond float8 do not fail the insert: huge ones are missing, tiny ones are 0');

INSERT INTO public.pattern_episode_events (scope, pattern_key, episode_id, decision, factors)
SELECT '{}', 'cap.p', 'cap_multi', 'skipped', '{"samples": []}' FROM generate_series(1, 3);
SELECT is(learning.set_episode_outcome('cap_multi', 'success'), 3, 'set_episode_outcome counts every window');
SELECT is(
    (SELECT array_agg(DISTINCT outcome) FROM public.pattern_episode_events WHERE episode_id = 'cap_multi'),
    ARRAY['success'], 'every window of the episode has the outcome');
SELECT ok(
    EXISTS (SELECT FROM learning.learning_log
        WHERE message = 'EPISODE OUTCOME: episode_id=cap_multi | outcome=success | windows_updated=3'),
    'EPISODE OUTCOME line');
SELECT throws_ok($$SELECT learning.set_episode_outcome('cap_multi', 'win')$$, '22023',
    'outcome must be success, failure or neutral, got win', 'an invalid outcome is refused');

SELECT * FROM finish();
ROLLBACK;
