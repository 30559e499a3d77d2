-- Adapters to the bot as it is (design §18, BOT_SHAPES.md): its position_closed strands in public.ad_strands
-- become closed_trades rows. Nothing is created on the bot's side when ad_strands does not exist.

-- learning._strand_timestamp: a strand time field (ISO text or epoch seconds) as timestamptz.
-- The bot writes ISO strings; epoch numbers are accepted too. STABLE: text without offset uses TimeZone.
CREATE OR REPLACE FUNCTION learning._strand_timestamp(p_value jsonb)
RETURNS timestamptz
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT CASE pg_catalog.jsonb_typeof(p_value)
        WHEN 'number' THEN pg_catalog.to_timestamp((p_value #>> '{}')::double precision)
        WHEN 'string' THEN (p_value #>> '{}')::timestamptz
    END;
END;

-- learning._strand_pattern_key: the bot's long pattern key (`module=pm|pattern_key=uptrend.S3.trim`)
-- in the closed_trades form (`pm.uptrend.S3.trim`), which the runtime and the S3 rule (a key
-- containing `.S3.`) read. A key without `pattern_key=` is kept as it is; without `module=`, the inner
-- key alone is used.
CREATE OR REPLACE FUNCTION learning._strand_pattern_key(p_key text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT
        CASE
            WHEN inner_key IS NULL OR inner_key = '' THEN p_key
            WHEN module_name IS NULL OR module_name = '' OR pg_catalog.starts_with(inner_key, module_name || '.')
                THEN inner_key
            ELSE module_name || '.' || inner_key
        END
    FROM (
        SELECT
            pg_catalog.substring(p_key, '(?:^|\|)pattern_key=([^|]*)') AS inner_key,
            pg_catalog.substring(p_key, '(?:^|\|)module=([^|]*)') AS module_name
    ) AS k;
END;

-- learning._strand_closed_trade: the closed_trades row a position_closed strand's content says
-- (design §18; BOT_SHAPES.md): its last completed trade's summary, trade_id (the trade's, the row's,
-- the content's), exit time, and the actions in the closed_trades shape (elements without
-- pattern_key/action_category are dropped, counted in n_dropped). Raises, with the reason, on a
-- strand it cannot read.
CREATE OR REPLACE FUNCTION learning._strand_closed_trade(
    p_content jsonb,
    p_trade_id text,
    p_timeframe text,
    OUT trade_id text,
    OUT timeframe text,
    OUT rpnl_pct double precision,
    OUT closed_at timestamptz,
    OUT actions jsonb,
    OUT n_actions integer,
    OUT n_dropped integer,
    OUT reached_s3 boolean
)
RETURNS record
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last jsonb := p_content -> 'completed_trades' -> -1;
    summary jsonb := last -> 'summary';
BEGIN
    IF pg_catalog.jsonb_typeof(p_content) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'content is not a JSON object';
    END IF;
    IF pg_catalog.jsonb_typeof(p_content -> 'completed_trades') IS DISTINCT FROM 'array'
        OR pg_catalog.jsonb_array_length(p_content -> 'completed_trades') = 0 THEN
        RAISE EXCEPTION 'content.completed_trades is missing or empty';
    END IF;
    IF pg_catalog.jsonb_typeof(last) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'completed_trades[-1] is not an object';
    END IF;
    IF pg_catalog.jsonb_typeof(summary) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'completed_trades[-1].summary is missing';
    END IF;
    -- 0.0 is a real rpnl_pct: only a missing or non-numeric value is refused.
    IF pg_catalog.jsonb_typeof(summary -> 'rpnl_pct') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'completed_trades[-1].summary.rpnl_pct is missing or not a number (got %)',
            coalesce((summary -> 'rpnl_pct')::text, 'nothing');
    END IF;
    rpnl_pct := (summary ->> 'rpnl_pct')::double precision;
    trade_id := coalesce(nullif(last ->> 'trade_id', ''), p_trade_id, nullif(p_content ->> 'trade_id', ''));
    IF trade_id IS NULL THEN
        RAISE EXCEPTION 'no trade_id (completed_trades[-1].trade_id, the row, content.trade_id)';
    END IF;
    timeframe := coalesce(p_timeframe, p_content ->> 'timeframe');
    closed_at := coalesce(
        learning._strand_timestamp(summary -> 'exit_timestamp'),
        learning._strand_timestamp(p_content -> 'ts')
    );
    IF closed_at IS NULL THEN
        RAISE EXCEPTION 'no exit time (summary.exit_timestamp, content.ts)';
    END IF;
    SELECT
        coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'pattern_key', learning._strand_pattern_key(a.e ->> 'pattern_key'),
            'action_category', a.e ->> 'action_category',
            'scope', CASE WHEN pg_catalog.jsonb_typeof(a.e -> 'scope') = 'object' THEN a.e -> 'scope' END,
            'decision_type', a.e ->> 'decision_type',
            'state', a.e ->> 'state',
            'ts', a.e -> 'ts'
        )) ORDER BY a.ord) FILTER (WHERE a.ok), '[]'::jsonb),
        pg_catalog.count(*)::integer,
        (pg_catalog.count(*) FILTER (WHERE NOT a.ok))::integer
    INTO actions, n_actions, n_dropped
    FROM (
        SELECT
            x.e,
            x.ord,
            pg_catalog.jsonb_typeof(x.e) = 'object'
            AND pg_catalog.jsonb_typeof(x.e -> 'pattern_key') IS NOT DISTINCT FROM 'string'
            AND x.e ->> 'pattern_key' <> ''
            AND pg_catalog.jsonb_typeof(x.e -> 'action_category') IS NOT DISTINCT FROM 'string' AS ok
        FROM pg_catalog.jsonb_array_elements(
            CASE WHEN pg_catalog.jsonb_typeof(last -> 'actions') = 'array' THEN last -> 'actions' ELSE '[]'::jsonb END
        ) WITH ORDINALITY AS x (e, ord)
    ) AS a;
    -- A time_to_s3 says S3 was reached; a null or missing one says nothing (the bot clears the S3
    -- start before it closes), so reached_s3 stays unknown and the S3 pattern-key rule decides.
    reached_s3 := CASE WHEN pg_catalog.jsonb_typeof(summary -> 'time_to_s3') = 'number' THEN true END;
END;
$$;

-- learning.trg_ad_strands_closed_trade: one position_closed strand -> one closed_trades row (once),
-- read by learning._strand_closed_trade in a sub-block: a strand it cannot read is logged (WARNING,
-- id, reason); the bot's INSERT stands (design §18).
CREATE OR REPLACE FUNCTION learning.trg_ad_strands_closed_trade()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t record;
    inserted integer;
BEGIN
    BEGIN
        t := learning._strand_closed_trade(NEW.content, NEW.trade_id::text, NEW.timeframe::text);
        INSERT INTO public.closed_trades (
            trade_id, position_id, token_contract, token_chain, timeframe, rpnl_pct, closed_at,
            actions, did_trim, reached_s3
        )
        VALUES (
            t.trade_id,
            coalesce(NEW.position_id::text, NEW.content ->> 'position_id'),
            NEW.content ->> 'token_contract',
            coalesce(NEW.content ->> 'chain', NEW.content ->> 'token_chain'),
            t.timeframe,
            t.rpnl_pct,
            t.closed_at,
            t.actions,
            EXISTS (
                SELECT FROM pg_catalog.jsonb_array_elements(t.actions) AS x (e)
                WHERE pg_catalog.lower(x.e ->> 'decision_type') = 'trim'
            ),
            t.reached_s3
        )
        ON CONFLICT (trade_id) DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF t.n_dropped > 0 THEN
            PERFORM learning._log('WARNING', pg_catalog.format(
                'STRAND ADAPTER: Dropped unreadable actions | strand_id=%s | trade_id=%s | dropped=%s of %s',
                NEW.id, t.trade_id, t.n_dropped, t.n_actions
            ));
        END IF;
        IF inserted = 0 THEN
            PERFORM learning._log('INFO', pg_catalog.format(
                'STRAND ADAPTER: Trade already recorded | strand_id=%s | trade_id=%s', NEW.id, t.trade_id
            ));
        END IF;
    EXCEPTION
        -- Transient failures (lock timeout, deadlock, serialization, cancel, resources) fail the bot's
        -- INSERT so it retries: swallowing them would keep the strand and lose its trade.
        WHEN transaction_rollback OR lock_not_available OR insufficient_resources
            OR operator_intervention OR system_error OR internal_error THEN
            RAISE;
        WHEN OTHERS THEN
        PERFORM learning._log('WARNING', pg_catalog.format(
            'STRAND ADAPTER: Cannot read position_closed strand | strand_id=%s | reason=%s',
            NEW.id, SQLERRM
        ));
    END;
    RETURN NULL;
END;
$$;

-- learning.install_ad_strands_adapter: put the trigger on public.ad_strands if it exists (and we own it).
-- Run by the migration and by `adapter install`; warns and returns false rather than failing a migration.
CREATE OR REPLACE FUNCTION learning.install_ad_strands_adapter()
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    strands CONSTANT regclass := pg_catalog.to_regclass('public.ad_strands');
BEGIN
    IF strands IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_attribute
        WHERE attrelid = strands AND attname = 'kind' AND NOT attisdropped
    ) THEN
        RAISE WARNING 'public.ad_strands has no column kind: adapter not installed';
        RETURN false;
    END IF;
    -- Dynamic: the table may not exist when this function is created or checked.
    EXECUTE 'DROP TRIGGER IF EXISTS _500_lowcap_learning_closed_trade ON public.ad_strands';
    EXECUTE 'CREATE TRIGGER _500_lowcap_learning_closed_trade AFTER INSERT ON public.ad_strands '
        'FOR EACH ROW WHEN (new.kind = ''position_closed'') '
        'EXECUTE FUNCTION learning.trg_ad_strands_closed_trade()';
    RETURN true;
EXCEPTION WHEN insufficient_privilege THEN
    -- A migration run by a role that does not own the bot's table must not fail for the adapter.
    RAISE WARNING 'cannot put the adapter trigger on public.ad_strands: %', SQLERRM
        USING HINT = 'run `lowcap-learning adapter install` as the owner of ad_strands';
    RETURN false;
END;
$$;

SELECT learning.install_ad_strands_adapter();
