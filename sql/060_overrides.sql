-- Execution overrides (design §12): the runtime picks the single most specific active tuning
-- override per category; no blending.

-- learning.select_execution_overrides: per tuning_* category, the active override of p_pattern_key
-- whose scope_subset is contained in p_scope with the most keys (ties: higher n, then
-- scope_subset::text), so every category of one slice comes from the same lesson.
CREATE OR REPLACE FUNCTION learning.select_execution_overrides(p_pattern_key text, p_scope jsonb)
RETURNS TABLE (
    action_category text,
    multiplier double precision,
    delta double precision,
    scope_subset jsonb,
    n integer,
    tuning_params jsonb,
    override_id bigint
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT DISTINCT ON (o.action_category)
        o.action_category,
        o.multiplier,
        learning._num(o.tuning_params -> 'delta') AS delta,
        o.scope_subset,
        o.n,
        o.tuning_params,
        o.id
    FROM public.pm_overrides AS o
    WHERE
        o.pattern_key = p_pattern_key
        AND o.status = 'active'
        AND o.action_category LIKE 'tuning\_%'
        AND pg_catalog.jsonb_typeof(o.scope_subset) = 'object'
        AND (
            CASE WHEN pg_catalog.jsonb_typeof(p_scope) = 'object' THEN p_scope ELSE '{}'::jsonb END
        ) @> o.scope_subset
    ORDER BY
        o.action_category ASC,
        (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(o.scope_subset)) DESC,
        o.n DESC NULLS LAST,
        o.scope_subset::text ASC;
END;

-- learning.trg_pm_overrides_changed: after each statement that changed pm_overrides rows (ours, the
-- bot's, a TRUNCATE), the transaction's row in pm_overrides_changes (once per transaction): the
-- generation the runtime's per-connection cache is kept under (design §13). A
-- statement that changed no row adds nothing, so re-running a job on the same data changes nothing.
-- The first statement of a READ COMMITTED transaction also merges the others' rows into its own
-- once there are more than 32 (the weights' sum is unchanged for every snapshot: the deletions and
-- the merged weight commit together). One merger at a time (a try-lock: a writer never waits); not
-- under REPEATABLE READ, where deleting a row another merger deleted is a serialization failure.
CREATE OR REPLACE FUNCTION learning.trg_pm_overrides_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    merge_lock CONSTANT bigint := 7201046117; -- pg_try_advisory_xact_lock key of the merge
BEGIN
    -- Nested, not AND: the TRUNCATE trigger has no transition table to plan a query on.
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT FROM changed_rows) THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO learning.pm_overrides_changes (xact) VALUES (pg_catalog.pg_current_xact_id())
    ON CONFLICT (xact) DO NOTHING;
    IF FOUND
        AND pg_catalog.current_setting('transaction_isolation') = 'read committed'
        AND (SELECT pg_catalog.count(*) FROM learning.pm_overrides_changes) > 32
        AND pg_catalog.pg_try_advisory_xact_lock(merge_lock)
    THEN
        WITH merged AS (
            DELETE FROM learning.pm_overrides_changes AS c
            WHERE c.xact <> pg_catalog.pg_current_xact_id()
            RETURNING c.weight
        )

        UPDATE learning.pm_overrides_changes AS c
        SET weight = c.weight + (SELECT coalesce(pg_catalog.sum(m.weight), 0) FROM merged AS m)::bigint
        WHERE c.xact = pg_catalog.pg_current_xact_id();
    END IF;
    RETURN NULL;
END;
$$;

-- A trigger with a transition table takes one event: one per kind of statement.
DROP TRIGGER IF EXISTS _900_generation_insert ON public.pm_overrides;
CREATE TRIGGER _900_generation_insert
AFTER INSERT ON public.pm_overrides
REFERENCING NEW TABLE AS changed_rows
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

DROP TRIGGER IF EXISTS _900_generation_update ON public.pm_overrides;
CREATE TRIGGER _900_generation_update
AFTER UPDATE ON public.pm_overrides
REFERENCING NEW TABLE AS changed_rows
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

DROP TRIGGER IF EXISTS _900_generation_delete ON public.pm_overrides;
CREATE TRIGGER _900_generation_delete
AFTER DELETE ON public.pm_overrides
REFERENCING OLD TABLE AS changed_rows
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();

DROP TRIGGER IF EXISTS _900_generation_truncate ON public.pm_overrides;
CREATE TRIGGER _900_generation_truncate
AFTER TRUNCATE ON public.pm_overrides
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_pm_overrides_changed();
