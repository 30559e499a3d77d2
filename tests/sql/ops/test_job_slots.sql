BEGIN;
SELECT plan(8);

SELECT isnt(
    learning.claim_job_slot('pgtap-job', '2025-01-15 10:00+00', p_host => 'h', p_pid => 1),
    NULL,
    'the first claim of a slot gets a run id'
);
SELECT is(
    learning.claim_job_slot('pgtap-job', '2025-01-15 10:00+00'),
    NULL,
    'a second claim of the same slot gets nothing'
);
SELECT isnt(
    learning.claim_job_slot('pgtap-job', '2025-01-15 11:00+00'),
    NULL,
    'the next hour is another slot'
);
SELECT is(
    (
        SELECT (learning.finish_job_run(id, 'succeeded', '{"lessons": 2}')).status
        FROM learning.job_runs WHERE job = 'pgtap-job' AND slot_start = '2025-01-15 10:00+00'
    ),
    'succeeded',
    'finish closes the run'
);
SELECT throws_ok(
    $$SELECT learning.finish_job_run(
        (SELECT id FROM learning.job_runs WHERE job = 'pgtap-job' AND slot_start = '2025-01-15 10:00+00'),
        'failed'
    )$$,
    '22023',
    NULL,
    'a finished run cannot be finished again'
);
SELECT throws_ok(
    $$SELECT learning.finish_job_run(
        (SELECT id FROM learning.job_runs WHERE job = 'pgtap-job' AND slot_start = '2025-01-15 11:00+00'),
        'running'
    )$$,
    '22023',
    NULL,
    'only succeeded or failed close a run'
);
SELECT matches(
    (SELECT message FROM learning.learning_log ORDER BY id DESC LIMIT 1),
    '^JOB SUCCEEDED: job=pgtap-job \| slot=2025-01-15T10:00:00Z \| as_of=now \| duration=[0-9.]+s \| counts=\{"lessons": 2\}$',
    'the finish is logged in the plan''s shape'
);
SELECT is(
    (SELECT count(*)::integer FROM learning.last_job_runs() WHERE job = 'pgtap-job'),
    1,
    'last_job_runs gives one row per job'
);

SELECT * FROM finish();
ROLLBACK;
