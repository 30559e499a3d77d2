-- Configuration: tunables (module learning), feature flags (module pm), the log writer.

-- learning._log: append one line to learning.learning_log and wake `logs follow`.
-- Every database-side event goes through here so the exporter sees one stream.
CREATE OR REPLACE FUNCTION learning._log(p_level text, p_message text)
RETURNS void
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO learning.learning_log (level, message) VALUES (p_level, p_message);
    SELECT pg_catalog.pg_notify('learning_log', '');
END;

-- learning._effective_tunables: the tunables in effect now: every tunable of learning.tunable_specs,
-- its value in the learning row of learning_configs or else its default (design §3). The row may be
-- absent or partial; a key of it that is not a tunable (one kept from an older version) is left out.
CREATE OR REPLACE FUNCTION learning._effective_tunables()
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog.jsonb_object_agg(s.key, coalesce(c.config_data -> s.key, s.default_value))
    FROM learning.tunable_specs AS s
    LEFT JOIN public.learning_configs AS c ON c.module_id = 'learning';
END;

-- learning.tunables: every tunable (design §3), stored value or default, as one jsonb: the row of
-- learning.effective_tunables, or, should that row be missing, the same merge made here.
CREATE OR REPLACE FUNCTION learning.tunables()
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tun jsonb;
BEGIN
    SELECT t.tunables INTO tun FROM learning.effective_tunables AS t;
    IF NOT FOUND THEN
        tun := learning._effective_tunables();
    END IF;
    RETURN tun;
END;
$$;

-- learning._refresh_tunables: rewrite learning.effective_tunables from the learning row and the
-- specs as they are now. When the effective tau_short_days or tau_long_days changed, the EWMA state
-- is rebuilt from closed_trades (design §4), whoever changed them and however: a write of the row,
-- its removal, a TRUNCATE, a new default. Called by the triggers below, after the row is written (and
-- locked): the effective row is locked next and the decision_maker row (by recompute_roi_state) last,
-- the lock order of set_tunable, so a trade waiting on that row folds with the new tau. The merge is
-- read after that lock, so of two concurrent refreshes the second sees the first's change. A missing
-- effective row (only the owner can delete it) is made again as '{}' first, so there is always a row
-- to lock; its tau is unknown, so the state is rebuilt.
CREATE OR REPLACE FUNCTION learning._refresh_tunables()
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_tunables jsonb;
    new_tunables jsonb;
BEGIN
    INSERT INTO learning.effective_tunables (singleton, tunables) VALUES (true, '{}')
    ON CONFLICT (singleton) DO NOTHING;
    SELECT t.tunables INTO old_tunables FROM learning.effective_tunables AS t FOR UPDATE;
    new_tunables := learning._effective_tunables();
    IF old_tunables = new_tunables THEN
        RETURN;
    END IF;
    UPDATE learning.effective_tunables SET tunables = new_tunables;
    IF (old_tunables -> 'tau_short_days', old_tunables -> 'tau_long_days')
        IS DISTINCT FROM (new_tunables -> 'tau_short_days', new_tunables -> 'tau_long_days') THEN
        PERFORM learning.recompute_roi_state();
    END IF;
END;
$$;

-- learning._validate_tunable: raise unless value is allowed for key; returns the value.
-- One place for the rule: set_tunable, the CLI and every direct write of the learning row (the
-- trigger below) see the same message and SQLSTATE (22023 invalid_parameter_value).
CREATE OR REPLACE FUNCTION learning._validate_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
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
        IF pg_catalog.jsonb_typeof(p_value) IS DISTINCT FROM 'array' OR EXISTS (
            SELECT FROM pg_catalog.jsonb_array_elements(p_value) AS e (v)
            WHERE pg_catalog.jsonb_typeof(e.v) <> 'string'
        ) THEN
            RAISE EXCEPTION 'tunable % must be a JSON array of strings, got %', p_key, coalesce(p_value::text, 'null')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN p_value;
    END IF;
    IF spec.kind = 'choice' THEN
        IF pg_catalog.jsonb_typeof(p_value) IS DISTINCT FROM 'string' OR NOT (p_value #>> '{}') = ANY(spec.choices) THEN
            RAISE EXCEPTION 'tunable % must be one of %, got %', p_key,
                pg_catalog.array_to_string(spec.choices, ', '), coalesce(p_value::text, 'null')
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
    -- An integer is written without a fraction or exponent (5, not 5.0): readers cast it ::integer.
    num := (p_value #>> '{}')::numeric;
    IF num < spec.min_value::numeric OR num > spec.max_value::numeric
        OR (spec.kind = 'integer' AND (p_value #>> '{}') !~ '^-?[0-9]+$') THEN
        RAISE EXCEPTION 'tunable % must be % in [%, %], got %',
            p_key, CASE spec.kind WHEN 'integer' THEN 'an integer' ELSE 'a number' END,
            spec.min_value, spec.max_value, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A nonzero number too small for a normal float8 (1e-400 fails the readers' cast) is refused too.
    IF num <> 0 AND pg_catalog.abs(num) < 2.2250738585072014e-308 THEN
        RAISE EXCEPTION 'tunable % must be 0 or at least 2.2250738585072014e-308 in magnitude (a float8), got %',
            p_key, p_value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN p_value;
END;
$$;

-- learning._validate_tunables_row: the rules between tunables, on a whole learning row (a missing key
-- means its default). Checked after each key passed learning._validate_tunable, by the row's trigger
-- (so set_tunable, unset_tunable and direct writes alike) and by the migration for an adopted row.
CREATE OR REPLACE FUNCTION learning._validate_tunables_row(p_config jsonb)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    eff jsonb;
BEGIN
    SELECT pg_catalog.jsonb_object_agg(s.key, coalesce(p_config -> s.key, s.default_value))
    INTO eff
    FROM learning.tunable_specs AS s
    WHERE s.key IN ('tau_short_days', 'tau_long_days', 'min_allocation');
    IF (eff ->> 'tau_short_days')::numeric >= (eff ->> 'tau_long_days')::numeric THEN
        RAISE EXCEPTION 'tunable tau_short_days must be below tau_long_days, got tau_short_days % and tau_long_days %',
            eff -> 'tau_short_days', eff -> 'tau_long_days'
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'to move both, set tau_long_days first when raising them and tau_short_days first when lowering';
    END IF;
    -- Three tracked timeframes (15m, 1h, 4h): their floors must fit in the whole.
    IF (eff ->> 'min_allocation')::numeric * 3 > 1 THEN
        RAISE EXCEPTION 'tunable min_allocation times the 3 tracked timeframes must be at most 1, got %',
            eff -> 'min_allocation'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END;
$$;

-- learning.set_tunable: validate and store one tunable. The learning row is locked so two writers
-- never lose each other's keys. A tau change recomputes the EWMA state through the row's AFTER
-- trigger (below), as any direct write of the row does: once, not here as well.
CREATE OR REPLACE FUNCTION learning.set_tunable(p_key text, p_value jsonb)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_value jsonb;
BEGIN
    -- Refused before any lock or write; the row's trigger applies the same rule again.
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
    PERFORM learning._log('INFO', pg_catalog.format(
        'CONFIG SET: key=%s | old=%s | new=%s', p_key, coalesce(old_value::text, 'default'), p_value
    ));
    RETURN p_value;
END;
$$;

-- learning.unset_tunable: remove a stored tunable so its default applies again; returns the value now
-- in effect. Unknown keys are refused as set_tunable refuses them; removing a key that is not set
-- changes nothing. The row's triggers validate the result (cross-field rules) and recompute tau.
CREATE OR REPLACE FUNCTION learning.unset_tunable(p_key text)
RETURNS jsonb
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_value jsonb;
BEGIN
    IF NOT EXISTS (SELECT FROM learning.tunable_specs WHERE key = p_key) THEN
        RAISE EXCEPTION 'unknown tunable "%"', p_key
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'known: ' || (
                    SELECT pg_catalog.string_agg(key, ', ' ORDER BY key)
                    FROM learning.tunable_specs
                );
    END IF;
    SELECT config_data -> p_key INTO old_value
    FROM public.learning_configs WHERE module_id = 'learning' FOR UPDATE;
    IF old_value IS NOT NULL THEN
        UPDATE public.learning_configs
        SET config_data = config_data - p_key,
            updated_at = pg_catalog.now(),
            updated_by = 'lowcap-learning'
        WHERE module_id = 'learning';
        PERFORM learning._log('INFO', pg_catalog.format(
            'CONFIG UNSET: key=%s | old=%s | new=default', p_key, old_value
        ));
    END IF;
    RETURN (SELECT default_value FROM learning.tunable_specs WHERE key = p_key);
END;
$$;

-- learning.trg_learning_configs_validate: BEFORE INSERT OR UPDATE of the learning row (its WHEN
-- clause skips every other module's row, e.g. the decision_maker row written on every trade).
-- Validate on write (design §3), for direct writes too: the row must be a JSON object; every tunable
-- key in it must pass learning._validate_tunable, so no row version written since this trigger
-- exists holds a bad tunable; a key that is not a tunable is refused when the write adds it or
-- changes its value (as set_tunable refuses it) and kept when carried over unchanged (a key of an
-- older version). Definer: the bot's role need not reach schema learning to write its table.
CREATE OR REPLACE FUNCTION learning.trg_learning_configs_validate()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_cfg jsonb;
    kv record;
BEGIN
    IF pg_catalog.jsonb_typeof(NEW.config_data) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'learning_configs.config_data of module learning must be a JSON object of tunables, got %',
            pg_catalog.left(NEW.config_data::text, 200)
            USING ERRCODE = 'invalid_parameter_value',
                COLUMN = 'config_data', TABLE = 'learning_configs', SCHEMA = 'public';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF OLD.module_id = 'learning' THEN
            old_cfg := OLD.config_data;
        END IF;
    END IF;
    FOR kv IN
        SELECT e.key, e.value
        FROM pg_catalog.jsonb_each(NEW.config_data) AS e (key, value)
        WHERE EXISTS (SELECT FROM learning.tunable_specs AS s WHERE s.key = e.key)
            OR (old_cfg -> e.key) IS DISTINCT FROM e.value
        ORDER BY e.key COLLATE "C"
    LOOP
        PERFORM learning._validate_tunable(kv.key, kv.value);
    END LOOP;
    PERFORM learning._validate_tunables_row(NEW.config_data);
    RETURN NEW;
END;
$$;

-- learning.trg_refresh_tunables: AFTER any change of the learning row (WHEN clauses below), a
-- TRUNCATE of learning_configs or any change of tunable_specs: learning._refresh_tunables. Definer:
-- whoever wrote the row need not reach the tables it rewrites.
CREATE OR REPLACE FUNCTION learning.trg_refresh_tunables()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM learning._refresh_tunables();
    RETURN NULL;
END;
$$;

CREATE TRIGGER _100_validate_tunables
BEFORE INSERT OR UPDATE ON public.learning_configs
FOR EACH ROW WHEN (new.module_id = 'learning')
EXECUTE FUNCTION learning.trg_learning_configs_validate();

-- One trigger per event: an INSERT trigger's WHEN cannot name OLD, a DELETE trigger's not NEW. Row
-- triggers with a WHEN clause, so the decision_maker row written at every trade fires none of them.
CREATE TRIGGER _900_refresh_tunables_insert
AFTER INSERT ON public.learning_configs
FOR EACH ROW WHEN (new.module_id = 'learning')
EXECUTE FUNCTION learning.trg_refresh_tunables();

CREATE TRIGGER _900_refresh_tunables_update
AFTER UPDATE ON public.learning_configs
FOR EACH ROW WHEN (old.module_id = 'learning' OR new.module_id = 'learning')
EXECUTE FUNCTION learning.trg_refresh_tunables();

CREATE TRIGGER _900_refresh_tunables_delete
AFTER DELETE ON public.learning_configs
FOR EACH ROW WHEN (old.module_id = 'learning')
EXECUTE FUNCTION learning.trg_refresh_tunables();

CREATE TRIGGER _900_refresh_tunables_truncate
AFTER TRUNCATE ON public.learning_configs
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_refresh_tunables();

CREATE TRIGGER _900_refresh_tunables
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON learning.tunable_specs
FOR EACH STATEMENT EXECUTE FUNCTION learning.trg_refresh_tunables();

-- A learning row that was written before the validation trigger existed (the bot's own, adopted by
-- a migration) is held to the same rule now: an unusable tunable would fail every trade later
-- (tau_short_days 0 divides by zero), so the migration is refused, naming the key, and nothing is
-- changed; resetting it silently would change how the bot trades (design §3,
-- "adopted tunables").
DO $adopted_tunables$
DECLARE
    kv record;
BEGIN
    FOR kv IN
        SELECT e.key, e.value
        FROM public.learning_configs AS c
        CROSS JOIN LATERAL pg_catalog.jsonb_each(
            CASE WHEN pg_catalog.jsonb_typeof(c.config_data) = 'object' THEN c.config_data ELSE '{}' END
        ) AS e (key, value)
        INNER JOIN learning.tunable_specs AS s ON e.key = s.key
        WHERE c.module_id = 'learning'
        ORDER BY e.key COLLATE "C"
    LOOP
        BEGIN
            PERFORM learning._validate_tunable(kv.key, kv.value);
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'the existing learning row of learning_configs holds an unusable tunable: %', sqlerrm
                USING ERRCODE = 'invalid_parameter_value',
                    HINT = pg_catalog.format(
                        'fix or remove the key first, e.g. UPDATE public.learning_configs SET config_data '
                        '= config_data - %L WHERE module_id = ''learning'' (its default is then used)', kv.key
                    );
        END;
    END LOOP;
    BEGIN
        PERFORM learning._validate_tunables_row(c.config_data)
        FROM public.learning_configs AS c
        WHERE c.module_id = 'learning' AND pg_catalog.jsonb_typeof(c.config_data) = 'object';
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'the existing learning row of learning_configs holds unusable tunables: %', sqlerrm
            USING ERRCODE = 'invalid_parameter_value',
                HINT = 'fix or remove the keys first (a removed key takes its default)';
    END;
END
$adopted_tunables$;

-- The tunables in effect at install (the triggers above keep them from now on).
INSERT INTO learning.effective_tunables (singleton, tunables)
VALUES (true, learning._effective_tunables())
ON CONFLICT (singleton) DO NOTHING;

-- learning.feature_flag: the flag's value in module's feature_flags, false when anything is missing.
CREATE OR REPLACE FUNCTION learning.feature_flag(p_module text, p_flag text)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
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
SET search_path = pg_catalog, pg_temp
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
