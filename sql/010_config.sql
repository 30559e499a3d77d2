-- Configuration: tunables (module learning), feature flags (module pm), the log writer.

-- learning._log: append one line to learning.learning_log and wake `logs follow`.
-- Every database-side event goes through here so the exporter sees one stream.
CREATE OR REPLACE FUNCTION learning._log(p_level text, p_message text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = ''
BEGIN ATOMIC
    INSERT INTO learning.learning_log (level, message) VALUES (p_level, p_message);
    SELECT pg_catalog.pg_notify('learning_log', '');
END;

-- learning.tunables: every tunable of SPEC section 10, stored value or default, as one jsonb.
-- A missing key means its default, so the learning row may be absent or partial. plpgsql so the
-- plan is cached per session (PostgreSQL 15 re-plans a SQL function on every trigger call).
CREATE OR REPLACE FUNCTION learning.tunables()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
BEGIN
    RETURN (
        SELECT
            pg_catalog.jsonb_object_agg(
                s.key,
                coalesce(c.config_data -> s.key, s.default_value)
                ORDER BY s.key
            )
        FROM learning.tunable_specs AS s
        LEFT JOIN public.learning_configs AS c ON c.module_id = 'learning'
    );
END;
$$;

-- learning._validate_tunable: raise unless value is allowed for key; returns the value.
-- One place for the rule so SQL callers and the CLI see the same message.
CREATE OR REPLACE FUNCTION learning._validate_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = ''
AS $$
DECLARE
    spec learning.tunable_specs;
    num numeric;
BEGIN
    SELECT * INTO spec FROM learning.tunable_specs WHERE key = p_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown tunable "%"', p_key
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'known: ' || (
                    SELECT pg_catalog.string_agg(key, ', ' ORDER BY key)
                    FROM learning.tunable_specs
                );
    END IF;
    IF spec.kind = 'string_array' THEN
        IF pg_catalog.jsonb_typeof(p_value) <> 'array' OR EXISTS (
            SELECT FROM pg_catalog.jsonb_array_elements(p_value) AS e (v)
            WHERE pg_catalog.jsonb_typeof(e.v) <> 'string'
        ) THEN
            RAISE EXCEPTION 'tunable % must be a JSON array of strings, got %', p_key, p_value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN p_value;
    END IF;
    IF p_value IS NULL OR pg_catalog.jsonb_typeof(p_value) <> 'number' THEN
        RAISE EXCEPTION 'tunable % must be a number in [%, %], got %',
            p_key, spec.min_value, spec.max_value, coalesce(p_value::text, 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Compared as numeric first: a JSON number beyond float8 (1e400) is out of range, not a crash.
    num := (p_value #>> '{}')::numeric;
    IF num < spec.min_value::numeric OR num > spec.max_value::numeric
        OR (spec.kind = 'integer' AND num <> pg_catalog.trunc(num)) THEN
        RAISE EXCEPTION 'tunable % must be % in [%, %], got %',
            p_key, CASE spec.kind WHEN 'integer' THEN 'an integer' ELSE 'a number' END,
            spec.min_value, spec.max_value, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_value;
END;
$$;

-- learning.set_tunable: validate and store one tunable; a tau change recomputes the EWMA state.
-- The learning row is locked so two writers never lose each other's keys.
CREATE OR REPLACE FUNCTION learning.set_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    old_value jsonb;
BEGIN
    PERFORM learning._validate_tunable(p_key, p_value);
    INSERT INTO public.learning_configs (module_id, config_data, updated_by)
    VALUES ('learning', '{}'::jsonb, 'lowcap-learning')
    ON CONFLICT (module_id) DO NOTHING;
    SELECT config_data -> p_key INTO old_value
    FROM public.learning_configs WHERE module_id = 'learning' FOR UPDATE;
    UPDATE public.learning_configs
    SET config_data = config_data || pg_catalog.jsonb_build_object(p_key, p_value),
        updated_at = pg_catalog.now(),
        updated_by = 'lowcap-learning'
    WHERE module_id = 'learning';
    IF p_key IN ('tau_short_days', 'tau_long_days') AND old_value IS DISTINCT FROM p_value THEN
        PERFORM learning.recompute_roi_state();
    END IF;
    PERFORM learning._log('INFO', pg_catalog.format(
        'CONFIG SET: key=%s | old=%s | new=%s', p_key, coalesce(old_value::text, 'default'), p_value
    ));
    RETURN p_value;
END;
$$;

-- learning.feature_flag: the flag's value in module's feature_flags, false when anything is missing.
CREATE OR REPLACE FUNCTION learning.feature_flag(p_module text, p_flag text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
BEGIN ATOMIC
    SELECT coalesce(
        (
            SELECT
                CASE pg_catalog.jsonb_typeof(c.config_data -> 'feature_flags' -> p_flag)
                    WHEN 'boolean' THEN (c.config_data -> 'feature_flags' ->> p_flag)::boolean
                    ELSE false
                END
            FROM public.learning_configs AS c
            WHERE c.module_id = p_module
        ),
        false
    );
END;

-- learning.set_feature_flag: set one flag whether the row or its feature_flags key exists or not.
-- (jsonb_set on a missing feature_flags key silently does nothing; a merge does not.)
CREATE OR REPLACE FUNCTION learning.set_feature_flag(p_module text, p_flag text, p_value boolean)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    IF p_module IS NULL OR p_module = '' OR p_flag IS NULL OR p_flag = '' OR p_value IS NULL THEN
        RAISE EXCEPTION 'module, flag and value are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO public.learning_configs AS c (module_id, config_data, updated_by)
    VALUES (
        p_module,
        pg_catalog.jsonb_build_object(
            'feature_flags', pg_catalog.jsonb_build_object(p_flag, p_value)
        ),
        'lowcap-learning'
    )
    ON CONFLICT (module_id) DO UPDATE
    SET config_data = c.config_data || pg_catalog.jsonb_build_object(
        'feature_flags',
        CASE pg_catalog.jsonb_typeof(c.config_data -> 'feature_flags')
            WHEN 'object' THEN c.config_data -> 'feature_flags'
            ELSE '{}'::jsonb
        END || pg_catalog.jsonb_build_object(p_flag, p_value)
    ),
    updated_at = pg_catalog.now(),
    updated_by = 'lowcap-learning';
    PERFORM learning._log('INFO', pg_catalog.format(
        'FEATURE FLAG: module=%s | flag=%s | value=%s', p_module, p_flag, p_value::text
    ));
    RETURN p_value;
END;
$$;
