-- The closed_trades trigger (design §1): each INSERT statement learns its trades under the
-- decision_maker row lock, writes the typed state and the bot's view of it (the decision_maker row,
-- output only: nothing reads it back), history and log, redistributes positions and writes the
-- strength facts, all in the same transaction.

-- learning._series_json: one series' entry in the decision_maker row (roi_short, roi_long, n,
-- updated_at = the newest trade folded in), series number p_series of p_states.
-- SQL with no SET clause so it inlines; STABLE like jsonb_build_object (an IMMUTABLE function
-- whose body is STABLE is never inlined).
CREATE OR REPLACE FUNCTION learning._series_json(p_states double precision [], p_series integer, p_n integer)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'roi_short', learning.ewma_short(p_states, p_series),
    'roi_long', learning.ewma_long(p_states, p_series),
    'n', p_n,
    'updated_at', CASE WHEN p_n > 0 THEN pg_catalog.to_timestamp(p_states[p_series * 9 - 8]) END
);

-- learning._decision_maker_config: the plan's timeframe_allocation and global_roi keys of the
-- decision_maker row (output for the bot) for an allocation and fold states. states holds 4 series
-- of 9 values (15m, 1h, 4h, global); counts holds their n.
-- Written out for the three tracked timeframes as one expression, no sub-select and no SET clause:
-- it inlines into the trigger's UPDATE, whose plan is cached (a query here cost ~0.15 ms a trade).
CREATE OR REPLACE FUNCTION learning._decision_maker_config(
    p_allocation double precision [],
    p_states double precision [],
    p_counts integer []
)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN pg_catalog.jsonb_build_object(
    'timeframe_allocation', pg_catalog.jsonb_build_object(
        (learning.tracked_timeframes())[1],
        learning._series_json(p_states, 1, p_counts[1])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[1]),
        (learning.tracked_timeframes())[2],
        learning._series_json(p_states, 2, p_counts[2])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[2]),
        (learning.tracked_timeframes())[3],
        learning._series_json(p_states, 3, p_counts[3])
        || pg_catalog.jsonb_build_object('current_allocation', p_allocation[3])
    ),
    'global_roi', learning._series_json(p_states, 4, p_counts[4])
);

-- learning._decision_maker_output: the decision_maker row with our keys written over it. What the
-- bot wrote stays, except that a row that is not a JSON object is replaced; the bot's own row shape
-- (its global_roi in percent, no timeframe_allocation) keeps that value aside once, as
-- global_roi_legacy_pct, never over a value kept before. STABLE like jsonb_build_object, so it inlines.
CREATE OR REPLACE FUNCTION learning._decision_maker_output(p_cfg jsonb, p_output jsonb)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
RETURN CASE WHEN pg_catalog.jsonb_typeof(p_cfg) = 'object' THEN p_cfg ELSE '{}'::jsonb END
|| CASE
    WHEN p_cfg ? 'global_roi' AND NOT p_cfg ? 'global_roi_legacy_pct' AND NOT p_cfg ? 'timeframe_allocation'
        THEN pg_catalog.jsonb_build_object('global_roi_legacy_pct', p_cfg -> 'global_roi')
    ELSE '{}'::jsonb
END
|| p_output;

-- learning.ensure_decision_maker_config: create or adopt the decision_maker row and write our keys
-- into it from learning.allocation_state; returns it, locked.
CREATE OR REPLACE FUNCTION learning.ensure_decision_maker_config()
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
AS $$
DECLARE
    cfg jsonb;
    st record;
BEGIN
    INSERT INTO public.learning_configs (module_id, config_data, updated_by, notes)
    VALUES ('decision_maker', '{}', 'lowcap-learning', 'timeframe allocation learned from closed_trades')
    ON CONFLICT (module_id) DO NOTHING;
    SELECT c.config_data INTO cfg
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    PERFORM learning._ensure_state_rows();
    SELECT * INTO st FROM learning._state_arrays();
    cfg := learning._decision_maker_output(cfg, learning._decision_maker_config(st.allocation, st.states, st.counts));
    UPDATE public.learning_configs
    SET config_data = cfg, updated_at = pg_catalog.now(), updated_by = 'lowcap-learning'
    WHERE module_id = 'decision_maker' AND config_data IS DISTINCT FROM cfg;
    RETURN cfg;
END;
$$;

-- learning._fmt: a number for log lines (4 to 6 decimals, no float noise).
-- No SET clause so it inlines into the trigger's log statement (called per history row).
CREATE OR REPLACE FUNCTION learning._fmt(x double precision, digits integer DEFAULT 4)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN coalesce(pg_catalog.round(x::numeric, digits)::text, 'null');

-- learning._fmt_allocation: {15m: 0.15, 1h: 0.5, 4h: 0.35} as the plan's log lines show it.
-- Written out for the three tracked timeframes with || only (array_to_string is STABLE, and an
-- IMMUTABLE function calling it is never inlined: it was planned again for each log row, 0.15 ms).
CREATE OR REPLACE FUNCTION learning._fmt_allocation(p_allocation double precision [])
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN '{'
|| (learning.tracked_timeframes())[1] || ': ' || learning._fmt(p_allocation[1], 6) || ', '
|| (learning.tracked_timeframes())[2] || ': ' || learning._fmt(p_allocation[2], 6) || ', '
|| (learning.tracked_timeframes())[3] || ': ' || learning._fmt(p_allocation[3], 6)
|| '}';

-- learning._lock_decision_maker: lock the decision_maker row and return its ctid. The lock
-- serializes concurrent trade inserts and guards the typed state (every writer of
-- learning.allocation_state takes it first, design §4): no lost update. The ctid makes the final
-- UPDATE a TID fetch: when another session's snapshot holds back pruning, an index lookup walks
-- every dead version of this row (twice per trade). A row the bot deleted is made again: the state
-- is ours, so nothing is lost.
CREATE OR REPLACE FUNCTION learning._lock_decision_maker()
RETURNS tid
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cfg_tid tid;
BEGIN
    SELECT c.ctid INTO cfg_tid
    FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    IF cfg_tid IS NULL THEN
        PERFORM learning.ensure_decision_maker_config();
        SELECT c.ctid INTO cfg_tid
        FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    END IF;
    RETURN cfg_tid;
END;
$$;

-- learning._learn_trades: the trades (history rows with only trade_id, timeframe, closed_at and
-- trade_roi filled in, in (closed_at, trade_id) order) learned one by one from the typed state:
-- each tracked trade is folded into its timeframe's and the global EWMA sums (design §4), then the
-- allocation takes one capped step (design §5) toward the split of the configured rule: the plan's
-- sign-safe ROI scores, or the evidence rule's split. Returns the completed history rows, the
-- state after the last trade and whether any step moved the allocation. The caller holds the
-- decision_maker row, so the state and the tunables are read after any tau change it waited on.
CREATE OR REPLACE FUNCTION learning._learn_trades(
    p_trades learning.allocation_history [],
    OUT steps learning.allocation_history [],
    OUT states double precision [],
    OUT counts integer [],
    OUT allocation double precision [],
    OUT moved boolean
)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tun CONSTANT jsonb := learning.tunables();
    tau_short CONSTANT double precision := (tun ->> 'tau_short_days')::double precision * 86400;
    tau_long CONSTANT double precision := (tun ->> 'tau_long_days')::double precision * 86400;
    max_step CONSTANT double precision := (tun ->> 'max_step')::double precision;
    min_trades_full CONSTANT double precision := (tun ->> 'min_trades_full')::double precision;
    min_allocation CONSTANT double precision := (tun ->> 'min_allocation')::double precision;
    rule CONSTANT text := tun ->> 'allocation_rule';
    evidence_z CONSTANT double precision := (tun ->> 'evidence_z')::double precision;
    evidence_gain CONSTANT double precision := (tun ->> 'evidence_gain')::double precision;
    evidence_prior_n CONSTANT double precision := (tun ->> 'evidence_prior_n')::double precision;
    g CONSTANT integer := 4;
    present integer;
    roi_short double precision [];
    ev record;
    split double precision [];
    z double precision [];
    step learning.allocation_step_result;
    t learning.allocation_history;
    i integer;
    at_epoch double precision;
    st double precision [];
BEGIN
    SELECT * INTO states, counts, allocation, present FROM learning._state_arrays() AS s;
    IF present < g THEN
        PERFORM learning._ensure_state_rows();
    END IF;
    roi_short := ARRAY[
        learning.ewma_short(states, 1), learning.ewma_short(states, 2), learning.ewma_short(states, 3)
    ];
    steps := '{}';
    moved := false;
    FOREACH t IN ARRAY p_trades LOOP
        i := pg_catalog.array_position(learning.tracked_timeframes(), t.timeframe);
        IF i IS NULL THEN
            steps := steps || ROW(
                NULL, t.trade_id, t.timeframe, t.closed_at, t.trade_roi, 'skip_untracked', allocation, allocation,
                NULL, NULL, roi_short, counts[1:g - 1], NULL, NULL, NULL, NULL, NULL
            )::learning.allocation_history;
            CONTINUE;
        END IF;
        at_epoch := EXTRACT(EPOCH FROM t.closed_at);
        st := learning.ewma_fold(states[(i - 1) * 9 + 1:i * 9], t.trade_roi, at_epoch, tau_short, tau_long);
        states[(i - 1) * 9 + 1:i * 9] := st;
        roi_short[i] := learning.ewma_short(st);
        states[(g - 1) * 9 + 1:g * 9] := learning.ewma_fold(
            states[(g - 1) * 9 + 1:g * 9], t.trade_roi, at_epoch, tau_short, tau_long
        );
        counts[i] := counts[i] + 1;
        counts[g] := counts[g] + 1;
        -- The plan rule scores the ROIs; the evidence rule asks for its split (design §5).
        split := NULL;
        z := NULL;
        IF rule = 'evidence' THEN
            ev := learning.evidence_split(states, counts, evidence_z, evidence_gain, evidence_prior_n, min_trades_full);
            split := ev.split;
            z := ev.evidence;
        END IF;
        step := learning.allocation_step(
            allocation, roi_short, counts[1:g - 1], max_step, min_trades_full, min_allocation, split
        );
        moved := moved OR step.new_allocation IS DISTINCT FROM allocation;
        -- Columns in the table's order: seq and recorded_at are left to their defaults.
        steps := steps || ROW(
            NULL, t.trade_id, t.timeframe, t.closed_at, t.trade_roi, step.reason, allocation, step.new_allocation,
            step.desired, step.scores, roi_short, counts[1:g - 1], step.step_limit, NULL, rule, z, split
        )::learning.allocation_history;
        allocation := step.new_allocation;
    END LOOP;
END;
$$;

-- learning._write_decision_maker: the bot's view, the decision_maker row (row ctid from
-- learning._lock_decision_maker), rewritten from the state whatever the bot did to the row.
CREATE OR REPLACE FUNCTION learning._write_decision_maker(
    p_cfg_tid tid,
    p_allocation double precision [],
    p_states double precision [],
    p_counts integer []
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE public.learning_configs
    SET config_data = learning._decision_maker_output(
            config_data, learning._decision_maker_config(p_allocation, p_states, p_counts)
        ),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE ctid = p_cfg_tid;
END;
$$;

-- learning._write_history: the history rows of the trades learned, and their log lines (the plan's
-- ROI UPDATE, ALLOCATION UPDATE and ALLOCATION SKIP), in one statement.
CREATE OR REPLACE FUNCTION learning._write_history(p_steps learning.allocation_history [])
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH history AS (
        INSERT INTO learning.allocation_history (
            trade_id, timeframe, closed_at, trade_roi, reason, allocation_before,
            allocation_after, desired, scores, roi_short, trade_counts, step_limit, rule, evidence, split
        )
        SELECT
            h.trade_id, h.timeframe, h.closed_at, h.trade_roi, h.reason, h.allocation_before,
            h.allocation_after, h.desired, h.scores, h.roi_short, h.trade_counts, h.step_limit,
            h.rule, h.evidence, h.split
        FROM unnest(p_steps) WITH ORDINALITY AS h
        ORDER BY h.ordinality
        RETURNING *
    )

    -- Each history row's two lines come from unnest(ARRAY[...]), not a VALUES list: a lateral VALUES
    -- list sets its expressions up again for every row (~15 us a trade in a bulk insert).
    INSERT INTO learning.learning_log (level, message)
    SELECT 'INFO', l.message
    FROM history AS h
    CROSS JOIN LATERAL (
        SELECT pg_catalog.array_position(learning.tracked_timeframes(), h.timeframe) AS i
    ) AS x
    CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[
        CASE WHEN x.i IS NOT NULL THEN pg_catalog.format(
            'ROI UPDATE: timeframe=%s | roi_short=%s | n=%s | trade_roi=%s | trade_id=%s',
            h.timeframe, learning._fmt(h.roi_short[x.i], 6), h.trade_counts[x.i],
            learning._fmt(h.trade_roi, 6), h.trade_id
        ) END,
        CASE h.reason
            WHEN 'skip_untracked' THEN pg_catalog.format(
                'ALLOCATION SKIP: %s is not a learning timeframe (learning: 15m, 1h, 4h) | trade_id=%s',
                h.timeframe, h.trade_id
            )
            WHEN 'skip_one_timeframe' THEN pg_catalog.format(
                'ALLOCATION SKIP: Only %s timeframe has trades (need 2+) | timeframes_with_trades=[%s] | trade_id=%s',
                -- Written out for the three tracked timeframes: a sub-select here is a plan that every
                -- statement sets up, though a skip is rare (design §4).
                (h.trade_counts[1] > 0)::integer + (h.trade_counts[2] > 0)::integer
                + (h.trade_counts[3] > 0)::integer,
                pg_catalog.concat_ws(', ',
                    CASE WHEN h.trade_counts[1] > 0 THEN (learning.tracked_timeframes())[1] END,
                    CASE WHEN h.trade_counts[2] > 0 THEN (learning.tracked_timeframes())[2] END,
                    CASE WHEN h.trade_counts[3] > 0 THEN (learning.tracked_timeframes())[3] END),
                h.trade_id
            )
            ELSE pg_catalog.format(
                'ALLOCATION UPDATE: trigger=%s trade closed | old=%s | new=%s | change=%s%% | limit=%s | trade_id=%s',
                h.timeframe, learning._fmt_allocation(h.allocation_before),
                learning._fmt_allocation(h.allocation_after),
                -- Written out for the three tracked timeframes, like _fmt_allocation.
                learning._fmt(100 * GREATEST(
                    abs(h.allocation_after[1] - h.allocation_before[1]),
                    abs(h.allocation_after[2] - h.allocation_before[2]),
                    abs(h.allocation_after[3] - h.allocation_before[3])
                ), 4),
                learning._fmt(h.step_limit, 6), h.trade_id
            )
        END
    ]) WITH ORDINALITY AS l (message, ord)
    WHERE l.message IS NOT NULL
    ORDER BY h.seq, l.ord;
    PERFORM pg_catalog.pg_notify('learning_log', '');
END;
$$;

-- learning.trg_closed_trades_learn: AFTER INSERT (statement) on closed_trades (design §1). Checks
-- the trades' actions (design §2), learns every new trade in (closed_at, trade_id) order under the
-- decision_maker row lock (design §4, §5), writes the state, the bot's view, history and log,
-- redistributes positions once (design §6) and writes the strength facts, all in the statement.
-- jit off: transition-table row estimates are far too high, and JIT compiling cost more than it saved.
-- extra_float_digits 1: the decision_maker row shows the state exactly, whatever the client session set.
-- work_mem 64MB: a bulk insert's sorts (trades, history, log lines) stay in memory for tens of
-- thousands of trades instead of spilling to disk (design §1); a single trade uses a few kB of it.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_learn()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 1
SET jit = off
SET work_mem = '64MB'
AS $$
DECLARE
    bad record;
    cfg_tid tid;
    learned record;
BEGIN
    -- At most 1,000 actions and 1 MiB of jsonb a trade: each action is a strength fact written
    -- under the decision_maker lock and a scope the builder compares within its trade (100,000
    -- actions held the lock 3.4 s). The size is the value's own: a value copied from the writer's
    -- table may arrive compressed, and `|| '[]'` hands it back whole (design §2: input limits).
    SELECT n.trade_id, pg_catalog.jsonb_array_length(n.actions) AS actions, s.bytes INTO bad
    FROM new_trades AS n
    CROSS JOIN LATERAL (
        SELECT CASE
            WHEN pg_catalog.pg_column_compression(n.actions) IS NULL THEN pg_catalog.pg_column_size(n.actions)
            ELSE pg_catalog.pg_column_size(n.actions || '[]'::jsonb)
        END AS bytes
        OFFSET 0  -- computed once a trade, not at each use below (a compressed value is decompressed)
    ) AS s
    WHERE CASE
        WHEN s.bytes > 1048576 THEN true
        -- 1,001 elements take at least 4,008 bytes (a 4-byte entry each): smaller arrays are not counted.
        WHEN s.bytes < 4000 THEN false
        ELSE pg_catalog.jsonb_array_length(n.actions) > 1000
    END
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions of trade % has % actions in % bytes; at most 1000 actions '
            'and 1048576 bytes are allowed', bad.trade_id, bad.actions, bad.bytes
            USING ERRCODE = 'program_limit_exceeded', COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    -- Actions are validated before anything is learned: a bad element fails the whole INSERT.
    SELECT n.trade_id, e.ord, e.action INTO bad
    FROM new_trades AS n
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) WITH ORDINALITY AS e (action, ord)
    WHERE pg_catalog.jsonb_typeof(e.action) <> 'object'
        OR pg_catalog.jsonb_typeof(e.action -> 'pattern_key') IS DISTINCT FROM 'string'
        OR e.action ->> 'pattern_key' = ''
        -- Keys are index keys downstream (lessons, overrides): bounded so they always fit.
        OR pg_catalog.length(e.action ->> 'pattern_key') > 200
        OR pg_catalog.jsonb_typeof(e.action -> 'action_category') IS DISTINCT FROM 'string'
        OR pg_catalog.length(e.action ->> 'action_category') > 200
        OR coalesce(pg_catalog.jsonb_typeof(e.action -> 'scope'), 'object') NOT IN ('object', 'null')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'closed_trades.actions[%] of trade % must be an object with string pattern_key and action_category (1 to 200 characters) and an object scope',
            bad.ord - 1, bad.trade_id
            USING ERRCODE = 'check_violation', DETAIL = 'got ' || pg_catalog.left(bad.action::text, 200),
                COLUMN = 'actions', TABLE = 'closed_trades', SCHEMA = 'public';
    END IF;

    cfg_tid := learning._lock_decision_maker();
    -- Each trade as its history row to be completed; seq and recorded_at are left to their defaults.
    -- An assignment, not SELECT ... FROM: a function in FROM hands its result over through a
    -- tuplestore, which spills the history rows of a bulk insert to disk.
    learned := learning._learn_trades(ARRAY(
        SELECT ROW(NULL, n.trade_id, n.timeframe, n.closed_at, learning.trade_roi(n.rpnl_pct),
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::learning.allocation_history
        FROM new_trades AS n
        ORDER BY n.closed_at, n.trade_id COLLATE "C"
    ));
    IF pg_catalog.cardinality(learned.steps) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM learning._write_state(learned.states, learned.counts, learned.allocation);
    PERFORM learning._write_decision_maker(cfg_tid, learned.allocation, learned.states, learned.counts);
    PERFORM learning._write_history(learned.steps);

    -- Any step that moved counts, even if the statement ends where it began: one-by-one inserts
    -- would have redistributed, and a multi-row INSERT must give the same positions.
    IF learned.moved THEN
        PERFORM learning.redistribute_positions(learned.allocation);
    -- Tokens an earlier trade had to skip (the bot held a row) are redistributed by the next one.
    ELSIF EXISTS (SELECT FROM learning.pending_redistribution) THEN
        PERFORM learning.redistribute_positions(learned.allocation, true);
    END IF;

    -- Strength facts (design §11): one row per action, with the trade's roi and outcome shape;
    -- did_trim / reached_s3 are judged once per trade (one pass over its actions), not per action.
    -- Not sorted: readers select facts by time window and trade, never by id (design §11).
    INSERT INTO public.pattern_trade_events (
        pattern_key, action_category, scope, trade_id, roi, did_trim, reached_s3, "timestamp"
    )
    SELECT
        e.action ->> 'pattern_key',
        e.action ->> 'action_category',
        coalesce(nullif(e.action -> 'scope', 'null'::jsonb), '{}'::jsonb),
        n.trade_id,
        learning.trade_roi(n.rpnl_pct),
        f.did_trim,
        f.reached_s3,
        n.closed_at
    FROM new_trades AS n
    CROSS JOIN LATERAL (
        SELECT
            coalesce(n.did_trim, coalesce(pg_catalog.bool_or(
                x.a ->> 'action_category' = 'trim' OR x.a ->> 'decision_type' = 'trim'
            ), false)) AS did_trim,
            coalesce(n.reached_s3, coalesce(pg_catalog.bool_or(
                x.a ->> 'state' = 'S3' OR pg_catalog.strpos(x.a ->> 'pattern_key', '.S3.') > 0
            ), false)) AS reached_s3
        FROM pg_catalog.jsonb_array_elements(n.actions) AS x (a)
    ) AS f
    CROSS JOIN LATERAL pg_catalog.jsonb_array_elements(n.actions) AS e (action);

    RETURN NULL;
END;
$$;

-- learning.trg_closed_trades_append_only: closed_trades is append-only (a correction is a new
-- trade), so the learning state is always a function of its rows. Per statement, so even an
-- UPDATE of no row is refused: PostgreSQL fires it for every INSERT ... ON CONFLICT DO UPDATE too,
-- and a bot that upserts trades fails on its first trade, in testing, not at its first duplicate.
CREATE OR REPLACE FUNCTION learning.trg_closed_trades_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'closed_trades is append-only: UPDATE is refused (insert a correcting trade instead)'
            USING ERRCODE = 'prohibited_sql_statement_attempted', TABLE = 'closed_trades', SCHEMA = 'public',
                HINT = 'INSERT ... ON CONFLICT DO UPDATE counts as an UPDATE, even for a new trade; '
                    || 'to skip a trade already stored, use ON CONFLICT (trade_id) DO NOTHING.';
    END IF;
    RAISE EXCEPTION 'closed_trades is append-only: % is refused (insert a correcting trade instead)', TG_OP
        USING ERRCODE = 'prohibited_sql_statement_attempted', TABLE = 'closed_trades', SCHEMA = 'public';
END;
$$;

CREATE TRIGGER _500_learn
AFTER INSERT ON public.closed_trades
REFERENCING NEW TABLE AS new_trades
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_closed_trades_learn();

CREATE TRIGGER _100_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON public.closed_trades
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_closed_trades_append_only();
