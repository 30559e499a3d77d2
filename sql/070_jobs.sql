-- Jobs (design §14): every run of an hourly job is a row of learning.job_runs. The row is
-- claimed before the job runs, unique on (job, slot_start), so two schedulers never run one slot twice.

CREATE TABLE IF NOT EXISTS learning.job_runs (
    id bigserial PRIMARY KEY,
    job text NOT NULL,
    slot_start timestamptz NOT NULL,
    as_of timestamptz,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'running',
    counts jsonb,
    error text,
    host text,
    pid integer,
    CONSTRAINT job_runs_job_slot_key UNIQUE (job, slot_start),
    CONSTRAINT job_runs_status_check CHECK (status IN ('running', 'succeeded', 'failed'))
);

-- status reads the newest run of each job.
CREATE INDEX IF NOT EXISTS job_runs_job_started_idx
ON learning.job_runs (job, started_at DESC);

-- learning.claim_job_slot: record the start of one run of p_job for p_slot_start; NULL when taken.
-- INSERT ... ON CONFLICT DO NOTHING is the whole election: the loser sees no row and does not run.
CREATE OR REPLACE FUNCTION learning.claim_job_slot(
    p_job text,
    p_slot_start timestamptz,
    p_as_of timestamptz DEFAULT NULL,
    p_host text DEFAULT NULL,
    p_pid integer DEFAULT NULL
)
RETURNS bigint
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO learning.job_runs (job, slot_start, as_of, host, pid)
    VALUES (p_job, p_slot_start, p_as_of, p_host, p_pid)
    ON CONFLICT (job, slot_start) DO NOTHING
    RETURNING id;
END;

-- learning.finish_job_run: close a claimed run with its status, counts or error, and log it.
-- Separate from the claim so that a job's failure (rolled back) still leaves its record behind.
CREATE OR REPLACE FUNCTION learning.finish_job_run(
    p_id bigint,
    p_status text,
    p_counts jsonb DEFAULT NULL,
    p_error text DEFAULT NULL
)
RETURNS learning.job_runs
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run learning.job_runs;
BEGIN
    IF p_status NOT IN ('succeeded', 'failed') THEN
        RAISE EXCEPTION 'job status must be succeeded or failed, got %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE learning.job_runs
    SET status = p_status,
        counts = p_counts,
        error = p_error,
        finished_at = pg_catalog.clock_timestamp()
    WHERE id = p_id AND status = 'running'
    RETURNING * INTO run;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job run % is not running', p_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM learning._log(
        CASE p_status WHEN 'succeeded' THEN 'INFO' ELSE 'ERROR' END,
        pg_catalog.format(
            'JOB %s: job=%s | slot=%s | as_of=%s | duration=%ss | %s',
            pg_catalog.upper(p_status), run.job,
            pg_catalog.to_char(run.slot_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
            coalesce(
                pg_catalog.to_char(run.as_of AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'now'
            ),
            pg_catalog.round(EXTRACT(EPOCH FROM run.finished_at - run.started_at)::numeric, 3),
            CASE p_status
                WHEN 'succeeded' THEN 'counts=' || coalesce(p_counts::text, '{}')
                ELSE 'error=' || coalesce(p_error, 'unknown')
            END
        )
    );
    RETURN run;
END;
$$;

-- learning.last_job_runs: the newest run of each job (for status), one row per job.
-- DISTINCT ON over the (job, started_at) index stays one short pass however long the history grows.
CREATE OR REPLACE FUNCTION learning.last_job_runs()
RETURNS SETOF learning.job_runs
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT DISTINCT ON (r.job) r.*
    FROM learning.job_runs AS r
    ORDER BY r.job ASC, r.started_at DESC;
END;
