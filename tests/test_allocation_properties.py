"""Hypothesis: design §5's invariants hold for any stream of closed trades, through the real trigger.

Streams mix timeframes (1m and 1d included), rois (negative, zero, -100%), equal and late closed_at,
single- and multi-row INSERTs, over random positions (every status, untracked timeframes, NULL and
zero rows). Every example runs in a transaction that is rolled back, so each starts from the
freshly migrated state (and no TRUNCATE per example keeps the suite fast).
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRACKED = ("15m", "1h", "4h")
START = [0.15, 0.50, 0.35]
ELIGIBLE = ("watchlist", "active", "dormant")
STATUSES = ("dormant", "watchlist", "active", "shadow", "paused", "archived", "regime_driver")
MAX_STEP, MIN_TRADES_FULL = 0.003, 5
EPOCH0 = datetime(2026, 3, 1, tzinfo=UTC)

INSERT_MANY = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
SELECT t.trade_id, t.timeframe, t.rpnl_pct, t.closed_at
FROM unnest(%(ids)s::text[], %(tfs)s::text[], %(pcts)s::float8[], %(ats)s::timestamptz[])
    AS t (trade_id, timeframe, rpnl_pct, closed_at)
"""
INSERT_POSITIONS = """
INSERT INTO public.lowcap_positions (token_contract, token_chain, timeframe, status, total_allocation_pct)
SELECT * FROM unnest(%(tokens)s::text[], %(chains)s::text[], %(tfs)s::text[], %(statuses)s::text[],
    %(pcts)s::float8[])
"""
READ_POSITIONS = """
SELECT id::text, token_contract, token_chain, timeframe, status, total_allocation_pct
FROM public.lowcap_positions ORDER BY id
"""
READ_ALLOCATION = "SELECT current_allocation FROM learning.timeframe_allocation()"
READ_STATE = "SELECT timeframe, current_allocation, roi_short, roi_long, n FROM learning.timeframe_allocation()"
READ_HISTORY = """
SELECT seq, trade_id, timeframe, reason, allocation_before, allocation_after, desired, roi_short, trade_counts,
    step_limit
FROM learning.allocation_history WHERE seq > %(after)s::bigint ORDER BY seq
"""
READ_EVIDENCE = """
SELECT rule, evidence, split FROM learning.allocation_history WHERE seq > %(after)s::bigint ORDER BY seq
"""
RULES = ("evidence", "plan")
EVIDENCE_Z = 1.5

# LL_HYPOTHESIS_EXAMPLES=500 for a long random hunt; the suite runs a fixed, modest set.
EXAMPLES = int(os.environ.get("LL_HYPOTHESIS_EXAMPLES", "50"))
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize="LL_HYPOTHESIS_EXAMPLES" not in os.environ,
)

timeframes = st.sampled_from(["15m", "1h", "4h", "15m", "1h", "4h", "1m", "1d"])
pcts = st.one_of(
    st.sampled_from([0.0, -100.0, 5.0, -2.0, 3.0, -0.5]),
    st.floats(min_value=-100, max_value=400, allow_nan=False),
)
# Few distinct instants (ties) spread over 60 days, in any order (late trades).
instants = st.integers(min_value=0, max_value=240).map(lambda k: EPOCH0 + timedelta(hours=6 * k))
trade = st.tuples(timeframes, pcts, instants)
statements = st.lists(st.lists(trade, min_size=1, max_size=6), min_size=1, max_size=10)

position_row = st.tuples(
    st.sampled_from(["15m", "1h", "4h", "1m", "1d"]),
    st.sampled_from(STATUSES + ELIGIBLE + ELIGIBLE),
    st.one_of(st.none(), st.just(0.0), st.floats(min_value=0.01, max_value=40)),
)
token = st.lists(position_row, min_size=1, max_size=5, unique_by=lambda r: r[0])
portfolios = st.lists(token, min_size=0, max_size=6)


def seed_positions(conn: psycopg.Connection, portfolio) -> list[tuple]:
    rows = [(f"tok{k}", "solana", tf, status, pct) for k, rows in enumerate(portfolio) for tf, status, pct in rows]
    if rows:
        cols = [list(c) for c in zip(*rows, strict=True)]
        conn.execute(
            INSERT_POSITIONS,
            {"tokens": cols[0], "chains": cols[1], "tfs": cols[2], "statuses": cols[3], "pcts": cols[4]},
        )
    return conn.execute(READ_POSITIONS).fetchall()


def insert_statement(conn: psycopg.Connection, rows: list[tuple[str, str, float, datetime]]) -> None:
    cols = [list(c) for c in zip(*rows, strict=True)]
    conn.execute(INSERT_MANY, {"ids": cols[0], "tfs": cols[1], "pcts": cols[2], "ats": cols[3]})


def number_trades(stream) -> list[list[tuple[str, str, float, datetime]]]:
    out, k = [], 0
    for statement in stream:
        numbered = []
        for tf, pct, at in statement:
            numbered.append((f"h{k:04d}", tf, pct, at))
            k += 1
        out.append(numbered)
    return out


def use_rule(conn: psycopg.Connection, rule: str) -> None:
    """Select the allocation rule (inside the example's rolled-back transaction)."""
    conn.execute("SELECT learning.set_tunable('allocation_rule', %s::jsonb)", (json.dumps(rule),))


def check_step(row, rule: str = "plan", evidence=None) -> None:
    """One history row obeys design §5 steps 1-5 (the plan's ranking by roi_short, or the evidence
    rule's: the desired split is the starting split while no timeframe stands out of its noise)."""
    _seq, trade_id, tf, reason, before, after, desired, roi_short, counts, limit = row
    assert abs(sum(after) - 1) <= 1e-12, (trade_id, after)
    members = [i for i in range(3) if counts[i] >= 1]
    # Timeframes without trades keep their allocation bit for bit (so do skips entirely).
    for i in range(3):
        if i not in members or reason.startswith("skip"):
            assert after[i] == before[i], (trade_id, i, before, after)
    if tf not in TRACKED:
        assert reason == "skip_untracked"
        return
    if len(members) < 2:
        assert reason == "skip_one_timeframe"
        return
    assert reason in ("step", "reached_desired")
    cap = MAX_STEP * min(1, min(counts[i] for i in members) / MIN_TRADES_FULL)
    assert limit == pytest.approx(cap, abs=1e-15)
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) <= cap + 1e-12, trade_id
    group = sum(before[i] for i in members)
    assert sum(desired[i] for i in members) == pytest.approx(group, abs=1e-12)
    floor = min(0.05, group / len(members))
    for i in members:
        # Each member moves toward its own desired value (never past it).
        assert (after[i] - before[i]) * (desired[i] - before[i]) >= 0, (trade_id, i)
        assert abs(after[i] - desired[i]) <= abs(before[i] - desired[i]) + 1e-15, (trade_id, i)
        assert desired[i] >= floor - 1e-12
    if rule == "evidence":
        row_rule, z, split = evidence
        assert row_rule == "evidence" and split is not None
        share = min(1, min(counts[i] for i in members) / MIN_TRADES_FULL)
        start_group = sum(START[i] for i in members)
        for i in members:
            if abs(z[i]) <= EVIDENCE_Z * share:
                assert split[i] == START[i], (trade_id, z, split)  # no evidence: the start's weight
            else:
                assert (split[i] - START[i]) * z[i] > 0, (trade_id, z, split)  # toward the better one
        if all(abs(z[i]) <= EVIDENCE_Z * share for i in members) and all(
            group * START[i] / start_group >= floor for i in members
        ):
            for i in members:
                assert desired[i] == pytest.approx(group * START[i] / start_group, abs=1e-12), (trade_id, desired)
        return
    for i in members:
        for j in members:
            if roi_short[i] > roi_short[j]:
                # The better roi_short has the larger desired value (strictly, when there is room above
                # the floor and the scores differ by more than rounding).
                assert desired[i] >= desired[j] - 1e-15, (trade_id, roi_short, desired)
                if group - len(members) * floor > 1e-9 and roi_short[i] - roi_short[j] > 1e-9:
                    assert desired[i] > desired[j], (trade_id, roi_short, desired)


def check_positions(before_rows, after_rows, allocation, moved: bool) -> None:
    after_by_id = {r[0]: r for r in after_rows}
    assert set(after_by_id) == {r[0] for r in before_rows}
    tokens: dict[tuple[str, str], list[tuple]] = {}
    for row in before_rows:
        pid, contract, chain, tf, status, pct = row
        if status in ELIGIBLE and tf in TRACKED and pct is not None:
            tokens.setdefault((contract, chain), []).append(row)
        else:
            assert after_by_id[pid] == row, "a row outside the redistribution changed"
    alloc = dict(zip(TRACKED, allocation, strict=True))
    for rows in tokens.values():
        total = sum(r[5] for r in rows)
        new = [after_by_id[r[0]][5] for r in rows]
        assert math.fsum(new) == pytest.approx(total, rel=1e-12, abs=1e-12), "per-token total not preserved"
        if not moved or total == 0:
            assert new == [r[5] for r in rows], "an untouched token changed"
            continue
        share = sum(alloc[r[3]] for r in rows)
        for r, value in zip(rows, new, strict=True):
            assert value == pytest.approx(total * alloc[r[3]] / share, rel=1e-12, abs=1e-12)


def fresh(conn: psycopg.Connection):
    """A transaction that is always rolled back: the example sees the migrated state and leaves it."""
    assert conn.execute("SELECT count(*) FROM public.closed_trades").fetchone()[0] == 0
    return conn.transaction(force_rollback=True)


def run_stream(conn, stream, portfolio, rule: str = "plan"):
    use_rule(conn, rule)
    positions = seed_positions(conn, portfolio)
    moved = False
    last_seq = 0
    for statement in number_trades(stream):
        insert_statement(conn, statement)
        history = conn.execute(READ_HISTORY, {"after": last_seq}).fetchall()
        evidence = conn.execute(READ_EVIDENCE, {"after": last_seq}).fetchall()
        # Every trade of the statement is one step, in (closed_at, trade_id) order.
        assert [h[1] for h in history] == [t[0] for t in sorted(statement, key=lambda t: (t[3], t[0]))]
        for k, row in enumerate(history):
            check_step(row, rule, evidence[k])
            if k:
                assert row[4] == history[k - 1][5], "the path does not chain"
            moved = moved or row[5] != row[4]
        last_seq = history[-1][0]
        allocation = [r[0] for r in conn.execute(READ_ALLOCATION).fetchall()]
        assert allocation == history[-1][5]
        assert abs(sum(allocation) - 1) <= 1e-12
    state = conn.execute(READ_STATE).fetchall()
    traded = {tf for statement in stream for tf, _pct, _at in statement}
    for (tf, current, roi_short, _roi_long, n), start in zip(state, START, strict=True):
        if tf not in traded:
            assert n == 0 and roi_short is None
            assert current == start, "a timeframe without trades moved"
    check_positions(positions, conn.execute(READ_POSITIONS).fetchall(), allocation, moved)
    assert not conn.execute("SELECT message FROM learning.learning_log WHERE level = 'WARNING'").fetchall()
    return allocation


@pytest.mark.parametrize("rule", RULES)
@PROFILE
@given(stream=statements, portfolio=portfolios)
def test_any_stream_keeps_the_invariants(conn, rule, stream, portfolio):
    with fresh(conn):
        run_stream(conn, stream, portfolio, rule)


negative = st.tuples(st.sampled_from(TRACKED), st.floats(min_value=-100, max_value=-0.01, allow_nan=False), instants)
mixed = st.tuples(
    st.sampled_from(TRACKED),
    st.one_of(st.floats(min_value=-100, max_value=-0.01), st.floats(min_value=0.01, max_value=300)),
    instants,
)


@PROFILE
@given(stream=st.lists(st.lists(negative, min_size=1, max_size=4), min_size=2, max_size=10))
def test_all_negative_rois_move_toward_desired_and_rank_by_roi(conn, stream):
    with fresh(conn):
        run_stream(conn, stream, [])
        rows = conn.execute(READ_HISTORY, {"after": 0}).fetchall()
        assert all(r[3] != "skip_untracked" for r in rows)


@PROFILE
@given(stream=st.lists(st.lists(mixed, min_size=1, max_size=4), min_size=2, max_size=10))
def test_mixed_sign_rois_move_toward_desired_and_rank_by_roi(conn, stream):
    with fresh(conn):
        run_stream(conn, stream, [])


def test_negative_sum_does_not_invert_the_ranking(conn):
    """The plan's raw ratio inverts when the ROI sum is negative; the sign-safe score must not."""
    with fresh(conn):
        use_rule(conn, "plan")
        insert_statement(
            conn,
            [
                ("n1", "15m", -1.0, EPOCH0),
                ("n2", "1h", -5.0, EPOCH0 + timedelta(hours=1)),
                ("n3", "4h", -9.0, EPOCH0 + timedelta(hours=2)),
            ],
        )
        _seq, _t, _tf, reason, before, after, desired, roi_short, _c, _l = conn.execute(
            READ_HISTORY, {"after": 0}
        ).fetchall()[-1]
        assert reason == "step"
        assert desired[0] > desired[1] > desired[2]  # 15m best (-1%), 4h worst (-9%)
        assert desired[2] == pytest.approx(0.05, abs=1e-15)  # the worst sits on the floor
        assert after[0] > before[0] and after[2] < before[2]


def test_equal_negative_rois_give_equal_scores(conn):
    with fresh(conn):
        use_rule(conn, "plan")
        insert_statement(conn, [("e1", "15m", -4.0, EPOCH0), ("e2", "4h", -4.0, EPOCH0)])
        row = conn.execute(READ_HISTORY, {"after": 0}).fetchall()[-1]
        desired, roi_short = row[6], row[7]
        assert roi_short[0] == roi_short[2] == -0.04
        # Sigma s = 0: equal scores, so the group (0.15 + 0.35) splits evenly.
        assert desired[0] == pytest.approx(0.25, abs=1e-15) and desired[2] == pytest.approx(0.25, abs=1e-15)
        scores = conn.execute("SELECT scores FROM learning.allocation_history ORDER BY seq DESC LIMIT 1").fetchone()[0]
        assert scores == [1, None, 1]


@pytest.mark.parametrize("rule", RULES)
@PROFILE
@given(batch=st.lists(trade, min_size=2, max_size=25), portfolio=portfolios)
def test_multi_row_insert_equals_one_by_one(conn, rule, batch, portfolio):
    rows = number_trades([batch])[0]
    with fresh(conn):
        use_rule(conn, rule)
        seed_positions(conn, portfolio)
        insert_statement(conn, rows)
        multi_state = conn.execute(READ_STATE).fetchall()
        multi_global = conn.execute("SELECT roi_short, roi_long, n FROM learning.global_roi()").fetchone()
        multi_path = [h[4:6] for h in conn.execute(READ_HISTORY, {"after": 0}).fetchall()]
        multi_positions = [(r[1], r[3], r[5]) for r in conn.execute(READ_POSITIONS).fetchall()]
    with fresh(conn):
        use_rule(conn, rule)
        seed_positions(conn, portfolio)
        for row in sorted(rows, key=lambda t: (t[3], t[0])):
            insert_statement(conn, [row])
        assert conn.execute(READ_STATE).fetchall() == multi_state
        assert conn.execute("SELECT roi_short, roi_long, n FROM learning.global_roi()").fetchone() == multi_global
        assert [h[4:6] for h in conn.execute(READ_HISTORY, {"after": 0}).fetchall()] == multi_path
        single_positions = [(r[1], r[3], r[5]) for r in conn.execute(READ_POSITIONS).fetchall()]
    for (tok_a, tf_a, a), (tok_b, tf_b, b) in zip(
        sorted(multi_positions, key=str), sorted(single_positions, key=str), strict=True
    ):
        assert (tok_a, tf_a) == (tok_b, tf_b)
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12) if a is not None else b is None


def test_statement_that_ends_where_it_began_still_redistributes(conn):
    """Regression (found by the test above): steps that net to zero inside one multi-row INSERT
    redistributed nothing, while the same trades one by one did."""
    with fresh(conn):
        use_rule(conn, "plan")
        seed_positions(conn, [[("15m", "dormant", 0.01), ("1h", "dormant", 0.0)]])
        insert_statement(conn, [("z1", "15m", 0.0, EPOCH0), ("z2", "4h", 0.0, EPOCH0), ("z3", "4h", 1.0, EPOCH0)])
        path = conn.execute(READ_HISTORY, {"after": 0}).fetchall()
        assert path[1][5] != path[1][4] and path[-1][5] == START  # moved, then back to the start
        pcts = dict(conn.execute("SELECT timeframe, total_allocation_pct FROM public.lowcap_positions").fetchall())
        assert pcts["15m"] == pytest.approx(0.01 * 0.15 / 0.65, rel=1e-12)
        assert pcts["1h"] == pytest.approx(0.01 * 0.50 / 0.65, rel=1e-12)


def test_learning_state_does_not_depend_on_the_sessions_float_output(conn):
    """The decision_maker row shows the state as jsonb: a client session with
    extra_float_digits = 0 (15 significant digits) must not round what the trigger stores or shows."""
    import random

    rng = random.Random(7)
    rows = [
        (
            f"f{k:03d}",
            rng.choice(TRACKED),
            rng.uniform(-30, 50),
            EPOCH0 + timedelta(seconds=rng.randrange(10**7) + 0.123457),
        )
        for k in range(40)
    ]
    results = []
    for digits in (0, 1):
        with fresh(conn):
            conn.execute(sql_set_digits(digits))
            for k in range(0, len(rows), 4):
                insert_statement(conn, rows[k : k + 4])
            conn.execute(sql_set_digits(1))
            results.append(
                (
                    conn.execute(READ_STATE).fetchall(),
                    conn.execute(
                        "SELECT config_data FROM public.learning_configs"
                        " WHERE module_id = 'decision_maker'"
                    ).fetchone()[0],
                    conn.execute(
                        "SELECT series, ref_epoch, short_sum_w, short_sum_w_roi, short_sum_w_roi2, short_sum_w2,"
                        " long_sum_w, long_sum_w_roi, long_sum_w_roi2, long_sum_w2, n, current_allocation"
                        " FROM learning.allocation_state ORDER BY series"
                    ).fetchall(),
                    [h[4:6] for h in conn.execute(READ_HISTORY, {"after": 0}).fetchall()],
                )
            )
    assert results[0] == results[1]


def sql_set_digits(digits: int) -> str:
    return {0: "SET LOCAL extra_float_digits = 0", 1: "SET LOCAL extra_float_digits = 1"}[digits]


def test_long_stream_keeps_the_sum_without_drift(conn):
    """Regression: the group total was the sum of its members, so each step's
    rounding carried into the next and the allocation drifted steadily off 1 (-1.6e-12 after this
    stream of 30,000 trades, past the 1e-12 of design §5 at ~19,000). Anchored to 1 it stays within ulps."""
    with fresh(conn):
        conn.execute(
            """
            INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
            SELECT 'd' || lpad(i::text, 7, '0'), (ARRAY['15m', '1h', '4h'])[1 + (i * 7) % 3],
                ((i * 7919) % 400) - 100, timestamptz '2020-01-01' + i * interval '30 min'
            FROM generate_series(1, 30000) AS i
            """
        )
        worst, steps = conn.execute(
            "SELECT max(abs((SELECT sum(a) FROM unnest(allocation_after) AS x (a)) - 1)),"
            " count(*) FILTER (WHERE reason IN ('step', 'reached_desired')) FROM learning.allocation_history"
        ).fetchone()
        assert steps > 25000
        assert worst <= 1e-14, worst
        assert abs(math.fsum(conn.execute(READ_ALLOCATION).fetchall()[i][0] for i in range(3)) - 1) <= 1e-14


def test_a_drifted_allocation_is_pulled_back_to_one(conn):
    """A stored allocation off 1 (an older version's drift) is not carried on: the group's total is
    1 minus the timeframes outside it, so desired sums to 1 and each step moves the sum toward it."""
    got = conn.execute(
        "SELECT desired, new_allocation FROM learning.allocation_step("
        "'{0.15,0.5,0.35000000001}', '{0.01,0.02,0.03}', '{5,5,5}')"
    ).fetchone()
    desired, after = got
    assert abs(math.fsum(desired) - 1) <= 1e-15
    assert abs(math.fsum(after) - 1) < 1e-11  # moved part of the way from 1 + 1e-11
    untraded = conn.execute(
        "SELECT desired, new_allocation FROM learning.allocation_step("
        "'{0.15,0.5,0.35000000001}', '{0.01,0.02,NULL}', '{5,5,0}')"
    ).fetchone()
    assert untraded[1][2] == 0.35000000001  # outside the group: bit for bit
    assert abs(math.fsum(untraded[0][:2]) - (1 - 0.35000000001)) <= 1e-15


def test_a_token_with_one_tracked_row_is_not_rewritten(conn):
    """design §6: rows whose value does not change are not written. A token's only tracked row keeps
    its total, even where total * a / a rounds to another float (12.24 became
    12.240000000000002 for about one allocation in ten)."""
    with fresh(conn):
        seed_positions(conn, [[("1h", "active", 12.24)], [("15m", "active", 3.0), ("4h", "dormant", 5.0)]])
        written = conn.execute(
            "SELECT learning.redistribute_positions(ARRAY[0.1, 0.7485662453394253, 0.1514337546605747])"
        ).fetchone()[0]
        pcts = {r[3]: r[5] for r in conn.execute(READ_POSITIONS).fetchall()}
        assert pcts["1h"] == 12.24
        assert written == 2  # the two-row token only


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE public.learning_configs SET config_data = '{\"global_roi\": {\"roi_short\": 2.5}}'"
        " WHERE module_id = 'decision_maker'",
        "DELETE FROM public.learning_configs WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs SET config_data = config_data #- '{timeframe_allocation,4h}'"
        " WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs SET config_data = jsonb_set(config_data,"
        " '{timeframe_allocation,1h,current_allocation}', '\"abc\"') WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs SET config_data = 'null' WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs SET config_data = jsonb_set(jsonb_set(config_data,"
        " '{timeframe_allocation,15m,current_allocation}', '-0.3'), '{timeframe_allocation,1h,current_allocation}',"
        " '0.95') WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs SET config_data = jsonb_set(config_data,"
        " '{timeframe_allocation,4h,current_allocation}', '1e-400') WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs SET config_data = jsonb_set(config_data, '{global_roi,n}', '3000000000')"
        " WHERE module_id = 'decision_maker'",
        "UPDATE public.learning_configs AS c SET config_data = s.config_data FROM stale_copy AS s"
        " WHERE c.module_id = 'decision_maker'",
    ],
    ids=[
        "row overwritten",
        "row deleted",
        "one allocation removed",
        "an allocation not a number",
        "config not an object",
        "an allocation out of [0, 1]",
        "an allocation float8 cannot read",
        "a count past integer",
        "a stale write-back",
    ],
)
def test_a_damaged_decision_maker_row_is_rewritten_by_the_next_trade(conn, damage):
    """The decision_maker row is output: the state lives in learning.allocation_state. Whatever the
    bot does to the row (it writes this row too), the next trade steps from where learning stood and
    rewrites our keys from the state; no restart, no restore, no warning."""
    rows = [(f"r{i:04d}", TRACKED[i % 3], float((i * 37) % 23 - 9), EPOCH0 + timedelta(hours=i)) for i in range(300)]
    late = ("r-late", "1h", 2.0, EPOCH0 + timedelta(hours=400))
    read_row = (
        "SELECT config_data -> 'timeframe_allocation', config_data -> 'global_roi' FROM public.learning_configs"
        " WHERE module_id = 'decision_maker'"
    )
    with fresh(conn):
        insert_statement(conn, rows)
        insert_statement(conn, [late])
        intact = conn.execute(READ_STATE).fetchall()
        intact_global = conn.execute("SELECT roi_short, roi_long, n FROM learning.global_roi()").fetchone()
        intact_row = conn.execute(read_row).fetchone()
    with fresh(conn):
        insert_statement(conn, rows[:250])
        conn.execute(  # what a bot that reads, then writes the whole row back, would write
            "CREATE TEMP TABLE stale_copy ON COMMIT DROP AS"
            " SELECT config_data FROM public.learning_configs WHERE module_id = 'decision_maker'"
        )
        insert_statement(conn, rows[250:])
        last_after = conn.execute(
            "SELECT allocation_after FROM learning.allocation_history ORDER BY seq DESC LIMIT 1"
        ).fetchone()[0]
        assert last_after != START
        conn.execute(damage)
        insert_statement(conn, [late])
        history = conn.execute(READ_HISTORY, {"after": 0}).fetchall()
        assert history[-1][4] == last_after  # the late trade stepped from where learning stood
        assert conn.execute(READ_STATE).fetchall() == intact
        assert conn.execute("SELECT roi_short, roi_long, n FROM learning.global_roi()").fetchone() == intact_global
        assert intact_global[2] == 301
        assert conn.execute(read_row).fetchone() == intact_row
        assert not conn.execute("SELECT message FROM learning.learning_log WHERE level = 'WARNING'").fetchall()


def test_the_bots_legacy_global_roi_is_kept_aside_once(conn):
    """The bot's percent global_roi is kept aside once, when its row is adopted; a later rewrite of
    our keys never overwrites it with our fractions."""
    with fresh(conn):
        conn.execute("DELETE FROM public.learning_configs WHERE module_id = 'decision_maker'")
        conn.execute(
            "INSERT INTO public.learning_configs (module_id, config_data) VALUES ('decision_maker',"
            " '{\"global_roi\": {\"roi_short\": 2.5, \"n\": 7}}')"
        )
        insert_statement(conn, [(f"k{i}", TRACKED[i % 3], 1.0 + i, EPOCH0 + timedelta(hours=i)) for i in range(6)])
        legacy = {"roi_short": 2.5, "n": 7}
        read = (
            "SELECT config_data -> 'global_roi_legacy_pct' FROM public.learning_configs"
            " WHERE module_id = 'decision_maker'"
        )
        assert conn.execute(read).fetchone()[0] == legacy
        conn.execute(
            "UPDATE public.learning_configs SET config_data = config_data - 'timeframe_allocation'"
            " WHERE module_id = 'decision_maker'"
        )
        insert_statement(conn, [("k-late", "1h", 1.0, EPOCH0 + timedelta(hours=10))])
        assert conn.execute(read).fetchone()[0] == legacy
        assert conn.execute("SELECT n FROM learning.global_roi()").fetchone()[0] == 7


def test_allocation_step_refuses_null_inputs(conn):
    """allocation_step refuses NULL inputs (and a split that is not a positive weight) instead of
    returning NULLs."""
    for bad in (
        "'{0.1,NULL,0.9}', '{0.1,0.1,0.1}', '{1,1,1}'",
        "'{0.1,0.5,0.4}', '{0.1,NULL,0.1}', '{1,1,1}'",
        "'{0.1,0.5,0.4}', '{0.1,0.1,0.1}', '{1,1,1}', 0.003, 5, 0.05, '{1,NULL,1}'",
        "'{0.1,0.5,0.4}', '{0.1,0.1,0.1}', '{1,1,1}', 0.003, 5, 0.05, '{1,0,1}'",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="allocation_step: p_"), conn.transaction():
            conn.execute(f"SELECT learning.allocation_step({bad})")


def test_an_allocation_shrinking_toward_zero_never_underflows(conn):
    """Fifth review: with min_allocation 0 a losing timeframe shrinks geometrically; below ~1e-300
    float8 arithmetic underflows, which PostgreSQL raises, and every trade failed. A member's
    allocation below 1e-300 counts as 0."""
    for current in ("1e-310", "1e-322", "5e-324", "1e-299"):
        new = conn.execute(
            "SELECT new_allocation FROM learning.allocation_step("
            f"ARRAY[{current}, 0.5, 0.5 - {current}]::float8[], '{{-0.5,0.1,0.1}}', '{{5,5,5}}', 0.003, 5, 0)"
        ).fetchone()[0]
        assert new[0] == 0.0 or new[0] >= 1e-300, (current, new)
        assert abs(math.fsum(new) - 1) <= 1e-15
