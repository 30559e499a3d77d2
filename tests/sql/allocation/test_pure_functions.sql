-- learning.allocation_step and learning.ewma_fold on their own, on hand-computed cases (design §4, §5).
BEGIN;
SELECT plan(31);

-- near(a, b): element-wise |a - b| <= 1e-12, NULLs in the same places.
CREATE FUNCTION pg_temp.near(a double precision [], b double precision [])
RETURNS boolean
LANGUAGE sql
IMMUTABLE
RETURN cardinality(a) = cardinality(b) AND NOT EXISTS (
    SELECT FROM unnest(a, b) AS x (p, q)
    WHERE (x.p IS NULL) <> (x.q IS NULL) OR abs(x.p - x.q) > 1e-12
);

-- 1. Floor: scores [0.15, 0, 0.05] (shifted by the most negative roi_short), desired 0.05 + 0.85 * s / 0.2.
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,-0.05,0.0}', '{5,5,5}')).desired,
    '{0.6875,0.05,0.2625}'),
    'floor: the worst timeframe is desired at min_allocation 0.05, the rest split by score');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,-0.05,0.0}', '{5,5,5}')).scores,
    '{0.15,0,0.05}'),
    'sign-safe scores: roi_short - min(0, min roi_short)');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,-0.05,0.0}', '{5,5,5}')).new_allocation,
    ARRAY[0.153, 0.5 - 0.45 * 0.003 / 0.5375, 0.35 - 0.0875 * 0.003 / 0.5375]),
    'step: the whole change vector is scaled so the largest move is exactly max_step');
SELECT is((learning.allocation_step('{0.15,0.5,0.35}', '{0.10,-0.05,0.0}', '{5,5,5}')).reason, 'step', 'reason step');
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,-0.05,0.0}', '{5,5,5}')).step_limit, 0.003::float8,
    'limit = max_step once every traded timeframe has min_trades_full trades');

-- 2. Sigma s = 0 (equal negative roi_short): equal scores; the plan's walkthrough trade 2.
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{-0.02,-0.02,NULL}', '{1,1,0}')).scores, '{1,1,NULL}'),
    'Sigma s = 0: equal scores, the untraded timeframe has none');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{-0.02,-0.02,NULL}', '{1,1,0}')).desired, '{0.325,0.325,NULL}'),
    'Sigma s = 0: the group splits evenly');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{-0.02,-0.02,NULL}', '{1,1,0}')).new_allocation,
    '{0.1506,0.4994,0.35}'),
    'Sigma s = 0 with one trade each: 15m 0.1506, 1h 0.4994');
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{-0.02,-0.02,NULL}', '{1,1,0}')).new_allocation[3], 0.35::float8,
    'the untraded timeframe keeps its value bit for bit');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0,0,0}', '{2,2,2}')).desired, ARRAY[1 / 3.0, 1 / 3.0, 1 / 3.0]::float8 []),
    'all-zero roi_short: equal scores too');

-- 3. reached_desired: the desired split is within the limit, so it is taken exactly.
SELECT is(
    (learning.allocation_step('{0.301,0.299,0.4}', '{0.01,0.01,NULL}', '{5,5,0}')).reason, 'reached_desired',
    'a change within the limit reaches the desired value');
SELECT is(
    (learning.allocation_step('{0.301,0.299,0.4}', '{0.01,0.01,NULL}', '{5,5,0}')).new_allocation,
    '{0.3,0.3,0.4}'::float8 [],
    'reached_desired: the new allocation is the desired split (untraded 0.4 kept)');

-- 4. Min-trades discount: L = max_step * min(1, min n / min_trades_full).
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,0.0,0.1}', '{2,10,7}')).step_limit, 0.003::float8 * 2 / 5,
    'the fewest trades (2) discount the limit to 2/5 of max_step');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,0.0,0.1}', '{2,10,7}')).new_allocation,
    ARRAY[0.15 + 0.325 * 0.0012 / 0.45, 0.4988, 0.35 + 0.125 * 0.0012 / 0.45]),
    'discounted step: the largest move is 0.0012');
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,0.0,NULL}', '{1,40,0}')).step_limit, 0.003::float8 / 5,
    'min over the traded timeframes only (the untraded one has n = 0)');
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,0.0,NULL}', '{6,40,0}', 0.01, 3, 0.05)).step_limit,
    0.01::float8,
    'tunables as arguments: max_step 0.01, min_trades_full 3');

-- 5. Floor when the group is small: f = min(min_allocation, G / |T|).
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.04,0.03,0.93}', '{0.5,-0.5,NULL}', '{1,1,0}')).desired, '{0.035,0.035,NULL}'),
    'G / |T| below min_allocation: every member is desired at G / |T|');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.04,0.03,0.93}', '{0.5,-0.5,NULL}', '{1,1,0}')).new_allocation,
    '{0.0394,0.0306,0.93}'),
    'and the group still moves one capped step toward it');
SELECT ok(pg_temp.near(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.10,0.0,NULL}', '{5,5,0}', 0.003, 5, 0)).desired,
    '{0.65,0,NULL}'),
    'min_allocation 0 disables the floor');

-- 6. Fewer than two traded timeframes: no change.
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.02,NULL,NULL}', '{3,0,0}')).reason, 'skip_one_timeframe',
    'one traded timeframe: skip');
SELECT is(
    (learning.allocation_step('{0.15,0.5,0.35}', '{0.02,NULL,NULL}', '{3,0,0}')).new_allocation,
    '{0.15,0.5,0.35}'::float8 [],
    'skip: the allocation is returned unchanged');

-- ewma_fold: state = [ref_epoch, sum_short, weight_short, sum_long, weight_long, sumsq_short,
-- weight2_short, sumsq_long, weight2_long] (tau 14 d, 90 d).
SELECT ok(pg_temp.near(learning.ewma_fold(NULL, 0.1, 1000, 1209600, 7776000),
    ARRAY[1000, 0.1, 1, 0.1, 1, 0.1::float8 * 0.1::float8, 1, 0.1::float8 * 0.1::float8, 1]),
    'first observation: its roi with weight 1');
SELECT ok(pg_temp.near(learning.ewma_fold('{0,0,0,0,0,0,0,0,0}', -0.3, 5, 1209600, 7776000),
    ARRAY[5, -0.3, 1, -0.3, 1, 0.09, 1, 0.09, 1]),
    'an empty (zero) state starts over');
SELECT ok(pg_temp.near(
    learning.ewma_fold('{0,0.1,1,0.1,1,0.01,1,0.01,1}', 0.2, 1209600, 1209600, 7776000),
    ARRAY[
        1209600, 0.1 * exp(-1) + 0.2, exp(-1) + 1, 0.1 * exp(-14.0 / 90) + 0.2, exp(-14.0 / 90) + 1,
        0.01 * exp(-1) + 0.04, exp(-2) + 1, 0.01 * exp(-14.0 / 90) + 0.04, exp(-28.0 / 90) + 1
    ]),
    'a newer observation decays the sums to its time (one tau: e^-1; squared weights e^-2)');
SELECT ok(
    abs(learning.ewma_short(learning.ewma_fold('{0,0.1,1,0.1,1,0.01,1,0.01,1}', 0.2, 1209600, 1209600, 7776000))
        - (0.1 * exp(-1) + 0.2) / (exp(-1) + 1)) < 1e-15,
    'ewma_short = sum w * roi / sum w');
SELECT ok(pg_temp.near(
    learning.ewma_fold('{50,0.1,1,0.1,1,0.01,1,0.01,1}', 0.3, 50, 1209600, 7776000),
    ARRAY[50, 0.4, 2, 0.4, 2, 0.1, 2, 0.1, 2]),
    'equal timestamps weigh equally (no decay between them)');
SELECT is(learning.ewma_short(learning.ewma_fold('{50,0.1,1,0.1,1,0.01,1,0.01,1}', 0.3, 50, 1209600, 7776000)),
    0.2::float8,
    'equal timestamps: a plain mean');
SELECT ok(pg_temp.near(
    learning.ewma_fold('{1209600,0.2,1,0.2,1,0.04,1,0.04,1}', 0.1, 0, 1209600, 7776000),
    ARRAY[
        1209600, 0.2 + 0.1 * exp(-1), 1 + exp(-1), 0.2 + 0.1 * exp(-14.0 / 90), 1 + exp(-14.0 / 90),
        0.04 + 0.01 * exp(-1), 1 + exp(-2), 0.04 + 0.01 * exp(-14.0 / 90), 1 + exp(-28.0 / 90)
    ]),
    'a late observation is folded in at its own age; the reference time stays');
SELECT ok(pg_temp.near(
    learning.ewma_fold('{1209600,0.2,1,0.2,1,0.04,1,0.04,1}', 0.1, 0, 1209600, 7776000),
    learning.ewma_fold('{0,0.1,1,0.1,1,0.01,1,0.01,1}', 0.2, 1209600, 1209600, 7776000)),
    'late or in order: the same sums');
SELECT ok(learning.ewma_short(NULL) IS NULL AND learning.ewma_long('{0,0,0,0,0,0,0,0,0}') IS NULL,
    'an empty state has no mean');
SELECT is(learning.ewma_fold('{1e12,0.5,1,0.5,1,0.25,1,0.25,1}', 0.1, 0, 86400, 86400),
    '{1e12,0.5,1,0.5,1,0.25,1,0.25,1}'::float8 [],
    'an observation older than 230 tau weighs exactly 0 (no float underflow error)');

SELECT * FROM finish();
ROLLBACK;
