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
