"""Oracles for design §4 and §5: the stored EWMAs against pandas, and the allocation path against a plain-Python
re-statement of the allocation step written from the spec (not from the SQL).

Trades go through the real trigger (single- and multi-row INSERTs, late trades, equal timestamps).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from conftest import reset_learning, use_allocation_rule

TRACKED = ("15m", "1h", "4h")
START = (0.15, 0.50, 0.35)
TAU_SHORT_DAYS = 14.0
TAU_LONG_DAYS = 90.0
EPOCH0 = datetime(2026, 1, 1, tzinfo=UTC)

INSERT_ONE = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
VALUES (%(trade_id)s::text, %(timeframe)s::text, %(rpnl_pct)s::float8, %(closed_at)s::timestamptz)
"""
INSERT_MANY = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
SELECT t.trade_id, t.timeframe, t.rpnl_pct, t.closed_at
FROM unnest(%(ids)s::text[], %(tfs)s::text[], %(pcts)s::float8[], %(ats)s::timestamptz[])
    AS t (trade_id, timeframe, rpnl_pct, closed_at)
"""
READ_TF = "SELECT timeframe, current_allocation, roi_short, roi_long, n FROM learning.timeframe_allocation()"
READ_GLOBAL = "SELECT roi_short, roi_long, n FROM learning.global_roi()"
READ_PATH = """
SELECT trade_id, reason, allocation_before, allocation_after, desired, step_limit
FROM learning.allocation_history ORDER BY seq
"""


@dataclass(frozen=True)
class Trade:
    trade_id: str
    timeframe: str
    rpnl_pct: float
    micros: int  # closed_at as microseconds after EPOCH0 (PostgreSQL's resolution)

    @property
    def closed_at(self) -> datetime:
        return EPOCH0 + timedelta(microseconds=self.micros)

    @property
    def roi(self) -> float:
        return self.rpnl_pct / 100

    @property
    def epoch(self) -> float:
        return (EPOCH0.timestamp() * 1_000_000 + self.micros) / 1_000_000


def insert(conn: psycopg.Connection, trades: list[Trade]) -> None:
    if len(trades) == 1:
        t = trades[0]
        conn.execute(
            INSERT_ONE,
            {"trade_id": t.trade_id, "timeframe": t.timeframe, "rpnl_pct": t.rpnl_pct, "closed_at": t.closed_at},
        )
    else:
        conn.execute(
            INSERT_MANY,
            {
                "ids": [t.trade_id for t in trades],
                "tfs": [t.timeframe for t in trades],
                "pcts": [t.rpnl_pct for t in trades],
                "ats": [t.closed_at for t in trades],
            },
        )


def random_trades(rng: random.Random, n: int, timeframes=TRACKED + ("1m", "1d"), zero_share=0.05) -> list[Trade]:
    """An irregular series: gaps from seconds to weeks, about 1 in 6 times repeated exactly."""
    trades: list[Trade] = []
    for k in range(n):
        if trades and rng.random() < 0.17:
            micros = rng.choice(trades).micros  # an equal timestamp
        else:
            micros = rng.randrange(0, 200 * 86_400 * 1_000_000)
        pct = 0.0 if rng.random() < zero_share else rng.uniform(-60, 80)
        trades.append(Trade(f"t{k:04d}", rng.choice(timeframes), pct, micros))
    return trades  # in random time order: most inserts after the first are late or early


def pandas_ewm(trades: list[Trade], tau_days: float) -> float:
    """pandas' ewm(halflife=tau*ln2, times=closed_at, adjust=True).mean() at the newest trade."""
    ordered = sorted(trades, key=lambda t: t.micros)
    series = pd.Series([t.roi for t in ordered])
    times = pd.DatetimeIndex([pd.Timestamp(t.closed_at) for t in ordered])
    halflife = pd.Timedelta(days=tau_days * math.log(2))
    return float(series.ewm(halflife=halflife, times=times).mean().iloc[-1])


def test_ewma_equals_pandas_after_every_insert(conn):
    reset_learning(conn)
    use_allocation_rule(conn, "plan")  # the oracle is the plan's rule (design §5)
    rng = random.Random(20261126)
    trades = random_trades(rng, 90)
    seen: list[Trade] = []
    checked = 0
    for trade in trades:
        insert(conn, [trade])
        seen.append(trade)
        rows = {r[0]: r for r in conn.execute(READ_TF).fetchall()}
        for tf in TRACKED:
            mine = [t for t in seen if t.timeframe == tf]
            _, _, roi_short, roi_long, n = rows[tf]
            assert n == len(mine)
            if not mine:
                assert roi_short is None and roi_long is None
                continue
            assert roi_short == pytest.approx(pandas_ewm(mine, TAU_SHORT_DAYS), abs=1e-9), (tf, trade)
            assert roi_long == pytest.approx(pandas_ewm(mine, TAU_LONG_DAYS), abs=1e-9), (tf, trade)
            checked += 2
        tracked = [t for t in seen if t.timeframe in TRACKED]
        g_short, g_long, g_n = conn.execute(READ_GLOBAL).fetchone()
        assert g_n == len(tracked)
        if tracked:
            assert g_short == pytest.approx(pandas_ewm(tracked, TAU_SHORT_DAYS), abs=1e-9)
            assert g_long == pytest.approx(pandas_ewm(tracked, TAU_LONG_DAYS), abs=1e-9)
            checked += 2
    # The series really was irregular: late trades, ties and untracked trades all occurred.
    assert any(b.micros < a.micros for a, b in zip(trades, trades[1:], strict=False))
    assert len({t.micros for t in trades}) < len(trades)
    assert {t.timeframe for t in trades} >= {"1m", "1d", *TRACKED}
    assert checked > 400


def test_first_trade_ewma_is_its_roi_and_ties_weigh_equally(conn):
    reset_learning(conn)
    use_allocation_rule(conn, "plan")  # the oracle is the plan's rule (design §5)
    at = Trade("a", "1h", 4.0, 10_000_000)
    insert(conn, [at])
    assert conn.execute(READ_TF).fetchall()[1][2:] == (0.04, 0.04, 1)
    # Two more trades at the same instant (one of them late in insertion terms): a plain mean.
    insert(conn, [Trade("b", "1h", -2.0, 10_000_000)])
    insert(conn, [Trade("c", "1h", 7.0, 10_000_000)])
    _, _, short, long_, n = conn.execute(READ_TF).fetchall()[1]
    assert n == 3
    assert short == pytest.approx(0.03, abs=1e-15)
    assert long_ == pytest.approx(0.03, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# The allocation step, restated from design §5 in plain Python.


def spec_ewma(trades: list[Trade], tau_days: float) -> float:
    """design §4: sum w*roi / sum w with w = exp(-age/tau), ages taken from the newest closed_at."""
    tau = tau_days * 86_400
    newest = max(t.epoch for t in trades)
    weights = [math.exp(-(newest - t.epoch) / tau) for t in trades]
    return sum(w * t.roi for w, t in zip(weights, trades, strict=True)) / sum(weights)


def spec_step(current, roi_short, counts, max_step=0.003, min_trades_full=5, min_allocation=0.05):
    """One allocation step (design §5, steps 1-5). Returns (new allocation, desired or None)."""
    members = [i for i in range(len(current)) if counts[i] >= 1]
    if len(members) < 2:
        return list(current), None
    group = sum(current[i] for i in members)
    shift = min(0.0, min(roi_short[i] for i in members))
    scores = {i: roi_short[i] - shift for i in members}
    if sum(scores.values()) == 0:
        scores = dict.fromkeys(members, 1.0)
    total_score = sum(scores.values())
    floor = min(min_allocation, group / len(members))
    desired = {i: floor + (group - len(members) * floor) * scores[i] / total_score for i in members}
    change = {i: desired[i] - current[i] for i in members}
    limit = max_step * min(1.0, min(counts[i] for i in members) / min_trades_full)
    biggest = max(abs(c) for c in change.values())
    new = list(current)
    for i in members:
        new[i] = desired[i] if biggest <= limit else current[i] + change[i] * limit / biggest
    return new, desired


class SpecModel:
    """The learning state of design §4 as a pure function of the trades taken so far."""

    def __init__(self):
        self.allocation = list(START)
        self.trades: dict[str, list[Trade]] = {tf: [] for tf in TRACKED}
        self.path: list[tuple[str, list[float], list[float]]] = []

    def take(self, trade: Trade) -> None:
        before = list(self.allocation)
        if trade.timeframe in TRACKED:
            self.trades[trade.timeframe].append(trade)
            roi_short = [spec_ewma(self.trades[tf], TAU_SHORT_DAYS) if self.trades[tf] else None for tf in TRACKED]
            counts = [len(self.trades[tf]) for tf in TRACKED]
            self.allocation, _ = spec_step(self.allocation, roi_short, counts)
        self.path.append((trade.trade_id, before, list(self.allocation)))

    def take_statement(self, trades: list[Trade]) -> None:
        for trade in sorted(trades, key=lambda t: (t.micros, t.trade_id)):
            self.take(trade)


def test_spec_step_reproduces_the_pinned_walkthrough():
    """The oracle itself is right: design §5's pinned numbers (trade 2 and trade 3)."""
    alloc, _ = spec_step(list(START), [0.05, None, None], [1, 0, 0])
    assert alloc == list(START)
    alloc, _ = spec_step(alloc, [0.05, -0.02, None], [1, 1, 0])
    assert [round(a, 10) for a in alloc] == [0.1506, 0.4994, 0.35]
    alloc, _ = spec_step(alloc, [0.05, -0.02, 0.03], [1, 1, 1])
    assert [round(a, 6) for a in alloc] == [0.151128, 0.4988, 0.350072]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_allocation_path_equals_the_spec_oracle(conn, seed):
    reset_learning(conn)
    use_allocation_rule(conn, "plan")  # the oracle is the plan's rule (design §5)
    rng = random.Random(seed)
    trades = random_trades(rng, 160, zero_share=0.0)  # continuous rois: no exact score ties
    # Statements of 1 to 12 trades; a multi-row INSERT takes its trades in (closed_at, trade_id) order.
    model = SpecModel()
    k = 0
    while k < len(trades):
        size = 1 if rng.random() < 0.5 else rng.randint(2, 12)
        statement = trades[k : k + size]
        insert(conn, statement)
        model.take_statement(statement)
        k += size
        got = [r[1] for r in conn.execute(READ_TF).fetchall()]
        assert got == pytest.approx(model.allocation, abs=1e-12)
    path = conn.execute(READ_PATH).fetchall()
    assert [p[0] for p in path] == [p[0] for p in model.path]
    for (trade_id, _reason, before, after, _desired, _limit), (_, m_before, m_after) in zip(
        path, model.path, strict=True
    ):
        assert before == pytest.approx(m_before, abs=1e-12), trade_id
        assert after == pytest.approx(m_after, abs=1e-12), trade_id
    assert model.allocation != list(START)  # the stream did move the allocation


def _fold_as_released(conn: psycopg.Connection) -> None:
    """pg_temp.ewma_fold_0005: ewma_fold as revisions 0002 to 0005 shipped it (weights written in place),
    taken from the frozen 0002 upgrade script."""
    from lowcap_learning.db import MIGRATIONS_DIR

    script = (MIGRATIONS_DIR / "versions" / "sql" / "0002_upgrade.sql").read_text()
    start = script.index("CREATE OR REPLACE FUNCTION learning.ewma_fold(")
    body = script[start : script.index(";\n", script.index("\nEND", start)) + 1]
    conn.execute(body.replace("FUNCTION learning.ewma_fold(", "FUNCTION pg_temp.ewma_fold_0005(", 1))


FOLD_DIFFERENCES = """
SELECT count(*) FILTER (WHERE learning.ewma_fold(s.state, s.roi, s.at_epoch, s.tau_s, s.tau_l)
        IS DISTINCT FROM pg_temp.ewma_fold_0005(s.state, s.roi, s.at_epoch, s.tau_s, s.tau_l)),
    count(*)
FROM (
    SELECT array_agg(v ORDER BY k) AS state, t.roi, t.at_epoch, t.tau_s, t.tau_l
    FROM unnest(%(roi)s::float8[], %(at)s::float8[], %(tau_s)s::float8[], %(tau_l)s::float8[])
        WITH ORDINALITY AS t (roi, at_epoch, tau_s, tau_l, i)
    CROSS JOIN LATERAL unnest((%(states)s::float8[])[(t.i - 1) * 9 + 1:t.i * 9]) WITH ORDINALITY AS x (v, k)
    GROUP BY t.i, t.roi, t.at_epoch, t.tau_s, t.tau_l
) AS s
"""


def test_fold_equals_the_released_fold_bit_for_bit(conn):
    """Computing the weights once (design §4) changes no bit: 60,000 folds of random states (empty, newer,
    older and equal times, weights past 230 tau, sums near float8's limits) against the released form."""
    _fold_as_released(conn)
    rng = random.Random(20261207)
    n = 60_000
    states, rois, ats, tau_s, tau_l = [], [], [], [], []
    for _ in range(n):
        ref = rng.choice([0.0, rng.uniform(1.6e9, 1.9e9)])
        empty = rng.random() < 0.05
        sums = [rng.choice([0.0, 1e-250, rng.uniform(-50, 50), rng.uniform(0, 1e6)]) for _ in range(8)]
        if empty:
            sums[1] = 0.0  # weight_short 0: the first trade of a series
        states += [ref, *sums]
        gap = rng.choice([0.0, rng.uniform(0, 600), rng.uniform(0, 86_400 * 400), rng.uniform(0, 86_400 * 40_000)])
        ats.append(ref + gap * rng.choice([1, -1]))
        rois.append(rng.choice([0.0, rng.uniform(-0.9, 5.0), 1e-9]))
        tau_s.append(rng.choice([1209600.0, rng.uniform(60, 1e8)]))
        tau_l.append(rng.choice([7776000.0, rng.uniform(60, 1e9)]))
    differences, total = conn.execute(
        FOLD_DIFFERENCES, {"states": states, "roi": rois, "at": ats, "tau_s": tau_s, "tau_l": tau_l}
    ).fetchone()
    assert total == n
    assert differences == 0
    assert conn.execute("SELECT learning.ewma_fold(NULL, 0.1, 5, 86400, 864000)").fetchone()[0] == [
        5.0, 0.1, 1.0, 0.1, 1.0, 0.010000000000000002, 1.0, 0.010000000000000002, 1.0
    ]
