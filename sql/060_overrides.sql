-- Execution overrides (SPEC section 7, plan "Override Selection Behavior"): the runtime picks the
-- single most specific active tuning override per category; no blending.

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
SET search_path = ''
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
-- bot's, a TRUNCATE), the transaction is recorded as pending (once; no lock on a shared row). A
-- statement that changed no row records nothing, so re-running a job on the same data changes nothing.
CREATE OR REPLACE FUNCTION learning.trg_pm_overrides_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    -- Nested, not AND: the TRUNCATE trigger has no transition table to plan a query on.
    IF TG_OP <> 'TRUNCATE' THEN
        IF NOT EXISTS (SELECT FROM changed_rows) THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO learning.pm_overrides_pending (xact) VALUES (pg_catalog.pg_current_xact_id())
    ON CONFLICT (xact) DO NOTHING;
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

-- learning.trg_pm_overrides_commit: at commit of a transaction that changed pm_overrides, a new
-- generation. The shared row is locked only from here to the end of the commit, so writers of
-- different override rows never wait on each other mid-transaction nor deadlock through it (a
-- statement-time bump did both). Two REPEATABLE READ writers committing at once still conflict on it:
-- the later one gets a serialization failure, as its isolation level asks it to retry.
CREATE OR REPLACE FUNCTION learning.trg_pm_overrides_commit()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    UPDATE learning.pm_overrides_generation
    SET generation = pg_catalog.nextval('learning.pm_overrides_generation_seq');
    DELETE FROM learning.pm_overrides_pending WHERE xact = NEW.xact;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS _900_generation_at_commit ON learning.pm_overrides_pending;
CREATE CONSTRAINT TRIGGER _900_generation_at_commit
AFTER INSERT ON learning.pm_overrides_pending
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION learning.trg_pm_overrides_commit();
