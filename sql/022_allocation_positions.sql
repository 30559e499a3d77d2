-- Position redistribution (design §6): every token's tracked positions (watchlist, active and
-- dormant rows of the tracked timeframes) hold its total split by the allocation. The bot's own
-- writes always win: a trade never waits on a position row the bot holds, never writes over a
-- change it did not read, and leaves a token it cannot take whole to the next trade.

-- learning._position_share: a row's part of its token's total, total * alloc / alloc_sum, without
-- float underflow errors (PostgreSQL raises when a float8 product rounds to 0): a share below
-- 1e-160 counts as 0. A row holding all of its token's allocation (a token with one tracked row)
-- gets the total itself: total * a / a can round to a neighbouring float, and the row would be
-- rewritten at every trade. The caller makes sure token_total >= 1e-150 and alloc_sum > 0.
CREATE OR REPLACE FUNCTION learning._position_share(
    token_total double precision,
    alloc double precision,
    alloc_sum double precision
)
RETURNS double precision
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN CASE
    WHEN alloc = alloc_sum THEN token_total
    WHEN alloc >= 1e-150 THEN token_total * alloc / alloc_sum
    WHEN alloc / alloc_sum >= 1e-160 THEN token_total * (alloc / alloc_sum)
    ELSE 0
END;

-- learning._redistribute_unlocked: the optimistic pass (design §6). One statement sums every token
-- in scope from the rows as this statement sees them and rewrites the rows of each token at once,
-- taking no lock beforehand: the UPDATE's own row locks are the only ones, and only on rows whose
-- value changes. Two things keep the bot's writes safe without a lock pass:
-- - A token with a row another transaction holds or held after this statement's snapshot (its
--   xmax is a transaction the snapshot does not see as finished) is not touched here; it is
--   returned as busy, for the locking pass. So the UPDATE never waits on a row the bot holds now.
-- - A row the bot changed between this statement's snapshot and its UPDATE (a race of
--   microseconds) is re-checked by PostgreSQL against its new version: the guard on the value the
--   token was summed with then fails and the row keeps the bot's value, as if the bot had written
--   it right after this trade. Should the bot lock a row in that window, the UPDATE waits at most
--   lock_timeout and the whole pass is undone (its subtransaction): the caller then takes the
--   locking pass for every token.
-- Returns NULL for that fallback; else the rows written, whether any row was not a sane percent,
-- and the busy tokens (contracts and chains, parallel arrays). Marks of tokens it redistributed
-- are cleared when no token was busy; otherwise the locking pass settles the marks.
CREATE OR REPLACE FUNCTION learning._redistribute_unlocked(
    p_allocation double precision [],
    p_pending_only boolean,
    OUT updated integer,
    OUT any_bad boolean,
    OUT busy_contracts text [],
    OUT busy_chains text []
)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET lock_timeout = '50ms'
AS $$
BEGIN
    WITH alloc AS (
        SELECT a.timeframe, a.alloc, a.ord
        FROM unnest(learning.tracked_timeframes(), p_allocation) WITH ORDINALITY AS a (timeframe, alloc, ord)
    ),

    -- The transactions this statement's snapshot does not see as finished: those running at its
    -- start (xip) and any from its xmax on; this transaction's own are finished for this purpose.
    snap AS (
        SELECT
            ARRAY(SELECT x::xid FROM pg_catalog.pg_snapshot_xip(pg_catalog.pg_current_snapshot()) AS x) AS running,
            pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::xid::text::bigint AS horizon,
            coalesce(pg_catalog.pg_current_xact_id_if_assigned()::xid, '0'::xid) AS own
    ),

    token AS (
        SELECT
            p.token_contract,
            p.token_chain,
            pg_catalog.bool_or(
                p.xmax <> '0'::xid AND p.xmax <> x.own
                -- At or after the horizon, modulo 2^32 (xids wrap around).
                AND (p.xmax = ANY(x.running) OR (p.xmax::text::bigint - x.horizon + 4294967296) % 4294967296 < 2147483648)
            ) AS busy,
            pg_catalog.count(*) FILTER (WHERE NOT p.total_allocation_pct BETWEEN 0 AND 1e9) AS bad_rows,
            pg_catalog.sum(p.total_allocation_pct) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9)
            AS token_total,
            pg_catalog.sum(a.alloc) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9) AS alloc_sum,
            -- The value each timeframe's row was summed with (one tracked row per timeframe).
            ARRAY[
                pg_catalog.max(p.total_allocation_pct) FILTER (WHERE a.ord = 1),
                pg_catalog.max(p.total_allocation_pct) FILTER (WHERE a.ord = 2),
                pg_catalog.max(p.total_allocation_pct) FILTER (WHERE a.ord = 3)
            ] AS seen
        FROM public.lowcap_positions AS p
        INNER JOIN alloc AS a ON p.timeframe = a.timeframe
        CROSS JOIN snap AS x
        WHERE p.status IN ('watchlist', 'active', 'dormant')
            AND (NOT p_pending_only OR EXISTS (
                SELECT FROM learning.pending_redistribution AS m
                WHERE m.token_contract = p.token_contract AND m.token_chain = p.token_chain
            ))
        GROUP BY p.token_contract, p.token_chain
    ),

    written AS (
        UPDATE public.lowcap_positions AS p
        SET total_allocation_pct = learning._position_share(t.token_total, a.alloc, t.alloc_sum)
        FROM token AS t, alloc AS a
        WHERE p.token_contract = t.token_contract AND p.token_chain = t.token_chain
            AND p.timeframe = a.timeframe
            AND p.status IN ('watchlist', 'active', 'dormant')
            AND NOT t.busy AND t.bad_rows = 0 AND t.token_total >= 1e-150 AND t.alloc_sum > 0
            -- Re-checked on a row changed since the snapshot: the bot's new value is kept.
            AND p.total_allocation_pct = t.seen[a.ord]
            AND p.total_allocation_pct <> learning._position_share(t.token_total, a.alloc, t.alloc_sum)
        RETURNING 1
    ),

    cleared AS (
        DELETE FROM learning.pending_redistribution
        WHERE NOT EXISTS (SELECT FROM token AS t WHERE t.busy)
    )

    SELECT
        (SELECT pg_catalog.count(*) FROM written),
        coalesce((SELECT pg_catalog.sum(t.bad_rows) > 0 FROM token AS t), false),
        ARRAY(SELECT t.token_contract FROM token AS t WHERE t.busy ORDER BY t.token_contract, t.token_chain),
        ARRAY(SELECT t.token_chain FROM token AS t WHERE t.busy ORDER BY t.token_contract, t.token_chain)
    INTO updated, any_bad, busy_contracts, busy_chains;
EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
    updated := NULL;
END;
$$;

-- learning._redistribute_locked: the locking pass (design §6), for the tokens given (all in scope
-- when p_contracts is NULL). Lock first, read after: one statement locks the tracked rows,
-- skipping rows another transaction holds (NULL totals too: the bot may be filling one in); the
-- next statement reads the totals, so they are the rows as committed after any concurrent change.
-- A token with a tracked row this call does not hold is left as it is and marked pending: a trade
-- never waits on the bot's position rows, so it cannot deadlock with it, whatever order the bot
-- locks them in. The rows locked stay tracked, so when the second statement counts as many
-- tracked rows as were locked it holds them all; only otherwise are the held ids collected and
-- matched per token (a second pass). Every other mark is cleared.
CREATE OR REPLACE FUNCTION learning._redistribute_locked(
    p_allocation double precision [],
    p_pending_only boolean,
    p_contracts text [],
    p_chains text [],
    OUT updated integer,
    OUT any_bad boolean
)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    held integer;
    ids uuid [];
    complete boolean;
BEGIN
    held := pg_catalog.cardinality(learning._lock_tracked_positions(p_pending_only, p_contracts, p_chains));
    -- Once, or twice when a row was skipped: then with the ids this call holds, to tell its tokens.
    LOOP
        WITH alloc AS (
            SELECT a.timeframe, a.alloc
            FROM unnest(learning.tracked_timeframes(), p_allocation) AS a (timeframe, alloc)
        ),

        summed AS (
            SELECT
                p.token_contract,
                p.token_chain,
                pg_catalog.count(*) AS n,
                pg_catalog.bool_and(m.id IS NOT NULL) AS ids_held,
                pg_catalog.count(*) FILTER (WHERE NOT p.total_allocation_pct BETWEEN 0 AND 1e9) AS bad_rows,
                pg_catalog.sum(p.total_allocation_pct) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9)
                AS token_total,
                pg_catalog.sum(a.alloc) FILTER (WHERE p.total_allocation_pct BETWEEN 0 AND 1e9) AS alloc_sum
            FROM public.lowcap_positions AS p
            INNER JOIN alloc AS a ON p.timeframe = a.timeframe
            LEFT JOIN unnest(ids) AS m (id) ON p.id = m.id
            WHERE p.status IN ('watchlist', 'active', 'dormant')
                AND (NOT p_pending_only OR EXISTS (
                    SELECT FROM learning.pending_redistribution AS pr
                    WHERE pr.token_contract = p.token_contract AND pr.token_chain = p.token_chain
                ))
                AND (p_contracts IS NULL OR (p.token_contract, p.token_chain) IN (
                    SELECT c.contract, c.chain FROM unnest(p_contracts, p_chains) AS c (contract, chain)
                ))
            GROUP BY p.token_contract, p.token_chain
        ),

        -- Every row locked above is still tracked: as many rows as locked means this call holds them all.
        token AS (
            SELECT
                s.*,
                held_all.yes OR s.ids_held AS held
            FROM summed AS s
            CROSS JOIN (SELECT coalesce(pg_catalog.sum(s2.n), 0) = held AS yes FROM summed AS s2) AS held_all
        ),

        -- The same snapshot as summed: a token's rows here are the rows it summed.
        written AS (
            UPDATE public.lowcap_positions AS p
            SET total_allocation_pct = learning._position_share(t.token_total, a.alloc, t.alloc_sum)
            FROM token AS t, alloc AS a
            WHERE p.token_contract = t.token_contract AND p.token_chain = t.token_chain
                AND p.timeframe = a.timeframe
                AND p.status IN ('watchlist', 'active', 'dormant')
                AND t.held AND t.bad_rows = 0 AND t.token_total >= 1e-150 AND t.alloc_sum > 0
                AND p.total_allocation_pct <> learning._position_share(t.token_total, a.alloc, t.alloc_sum)
            RETURNING 1
        ),

        marked AS (
            INSERT INTO learning.pending_redistribution (token_contract, token_chain)
            SELECT t.token_contract, t.token_chain
            FROM token AS t
            WHERE NOT t.held AND ids IS NOT NULL
            ON CONFLICT DO NOTHING
        ),

        -- Every other mark is done: redistributed now, left for a bad row, or without rows.
        cleared AS (
            DELETE FROM learning.pending_redistribution AS pr
            WHERE NOT EXISTS (
                SELECT FROM token AS t
                WHERE t.token_contract = pr.token_contract AND t.token_chain = pr.token_chain AND NOT t.held
            )
        )

        SELECT
            coalesce((SELECT bool_and(t.held) FROM token AS t), true),
            (SELECT pg_catalog.count(*) FROM written),
            coalesce((SELECT pg_catalog.sum(t.bad_rows) > 0 FROM token AS t), false)
        INTO complete, updated, any_bad;

        EXIT WHEN complete OR ids IS NOT NULL;
        -- Locking again returns the rows this call holds (and any that came free since).
        ids := learning._lock_tracked_positions(p_pending_only, p_contracts, p_chains);
    END LOOP;
END;
$$;

-- learning._lock_tracked_positions: lock the tracked rows in scope that no other transaction
-- holds (SKIP LOCKED: a trade never waits on the bot) and return their ids.
CREATE OR REPLACE FUNCTION learning._lock_tracked_positions(
    p_pending_only boolean,
    p_contracts text [],
    p_chains text []
)
RETURNS uuid []
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN ARRAY(
        SELECT p.id
        FROM public.lowcap_positions AS p
        WHERE p.status IN ('watchlist', 'active', 'dormant')
            AND p.timeframe = ANY(learning.tracked_timeframes())
            AND (NOT p_pending_only OR EXISTS (
                SELECT FROM learning.pending_redistribution AS m
                WHERE m.token_contract = p.token_contract AND m.token_chain = p.token_chain
            ))
            AND (p_contracts IS NULL OR (p.token_contract, p.token_chain) IN (
                SELECT c.contract, c.chain FROM unnest(p_contracts, p_chains) AS c (contract, chain)
            ))
        FOR NO KEY UPDATE OF p SKIP LOCKED
    );
END;
$$;

-- learning._warn_positions_skipped: one WARNING naming the tracked rows whose total_allocation_pct
-- is not a percent in [0, 1e9] (NaN, infinite, negative, absurd; at most 10 named). Such a row
-- keeps its token as it is (design §6): the sum of a token's at most three sane rows cannot overflow.
CREATE OR REPLACE FUNCTION learning._warn_positions_skipped()
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad_rows integer;
    bad_list text;
BEGIN
    SELECT
        pg_catalog.count(*),
        pg_catalog.string_agg(pg_catalog.format(
            'id=%s token=%s chain=%s timeframe=%s total_allocation_pct=%s',
            b.id, pg_catalog.to_jsonb(b.token_contract), pg_catalog.to_jsonb(b.token_chain), b.timeframe,
            b.total_allocation_pct
        ), ', ' ORDER BY b.rn) FILTER (WHERE b.rn <= 10)
    INTO bad_rows, bad_list
    FROM (
        SELECT
            p.id, p.token_contract, p.token_chain, p.timeframe, p.total_allocation_pct,
            pg_catalog.row_number() OVER (ORDER BY p.token_contract, p.token_chain, p.timeframe) AS rn
        FROM public.lowcap_positions AS p
        WHERE p.status IN ('watchlist', 'active', 'dormant')
            AND p.timeframe = ANY(learning.tracked_timeframes())
            AND NOT p.total_allocation_pct BETWEEN 0 AND 1e9
    ) AS b;
    IF bad_rows > 0 THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'POSITIONS SKIPPED: %s row(s) with total_allocation_pct not a percent in [0, 1e9] keep their '
            || 'token as it is | %s%s',
            bad_rows, bad_list, CASE WHEN bad_rows > 10 THEN ', ...' ELSE '' END
        ));
    END IF;
END;
$$;

-- learning.redistribute_positions: rewrite each token's tracked positions to its total split by
-- the allocation (design §6); with p_pending_only, only the tokens marked in
-- pending_redistribution. The optimistic pass takes every token no other transaction holds, with
-- no lock pass (a lock on every tracked row cost a WAL record each, ~3 ms a trade at 2,800 rows);
-- the locking pass takes the rest, skipping and marking the tokens the bot holds. Returns the
-- rows written. With no tracked row at all there is nothing to lock or wait on: the marks are
-- done and neither pass runs (their subtransaction and lock_timeout cost ~0.1 ms a trade).
CREATE OR REPLACE FUNCTION learning.redistribute_positions(
    p_allocation double precision [],
    p_pending_only boolean DEFAULT false
)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fast record;
    slow_updated integer := 0;
    slow_bad boolean := false;
BEGIN
    IF NOT EXISTS (
        SELECT FROM public.lowcap_positions AS p
        WHERE p.status IN ('watchlist', 'active', 'dormant') AND p.timeframe = ANY(learning.tracked_timeframes())
    ) THEN
        DELETE FROM learning.pending_redistribution;
        RETURN 0;
    END IF;
    SELECT * INTO fast FROM learning._redistribute_unlocked(p_allocation, p_pending_only) AS u;
    IF fast.updated IS NULL THEN
        SELECT * INTO slow_updated, slow_bad FROM learning._redistribute_locked(p_allocation, p_pending_only, NULL, NULL);
    ELSIF pg_catalog.cardinality(fast.busy_contracts) > 0 THEN
        SELECT * INTO slow_updated, slow_bad
        FROM learning._redistribute_locked(p_allocation, p_pending_only, fast.busy_contracts, fast.busy_chains);
    END IF;
    IF fast.any_bad OR slow_bad THEN
        PERFORM learning._warn_positions_skipped();
    END IF;
    RETURN coalesce(fast.updated, 0) + slow_updated;
END;
$$;

-- learning.redistribute_pending: redistribute the tokens a trade had to skip, with the current
-- allocation, under the decision_maker row lock (the trigger's lock order: that row, then
-- positions). For the hourly jobs; the next trade does the same. Returns the rows written.
-- A transaction holding that row longer than lock_timeout (a bot's open transaction that inserted
-- a trade) makes it return 0, writing nothing: that trade, or the next one, takes the marks.
CREATE OR REPLACE FUNCTION learning.redistribute_pending()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
    alloc double precision [];
BEGIN
    IF NOT EXISTS (SELECT FROM learning.pending_redistribution) THEN
        RETURN 0;
    END IF;
    PERFORM FROM public.learning_configs AS c WHERE c.module_id = 'decision_maker' FOR UPDATE;
    alloc := ARRAY(
        SELECT s.current_allocation
        FROM pg_catalog.unnest(learning.tracked_timeframes()) WITH ORDINALITY AS x (tf, ord)
        INNER JOIN learning.allocation_state AS s ON x.tf = s.series
        ORDER BY x.ord
    );
    IF pg_catalog.cardinality(alloc) <> pg_catalog.cardinality(learning.tracked_timeframes()) THEN
        RETURN 0;
    END IF;
    RETURN learning.redistribute_positions(alloc, true);
EXCEPTION WHEN lock_not_available THEN
    RETURN 0;
END;
$$;
