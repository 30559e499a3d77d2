"""Growth of the live trade with the number of positions it redistributes (design §6)."""

from __future__ import annotations

import psycopg

from bench.harness import SPAN_DAYS, START
from bench.table import Table
from bench.workload import insert_one_statement, load_positions, reset, timed_inserts, tracked_rows
from lowcap_learning import synthetic

SIZES = {False: {"growth": ((100, 300), (1000, 200), (10000, 40))}, True: {"growth": ((100, 30), (1000, 20))}}
WARM_UP = 20  # the first trades of a fresh history skip the step


def job_growth(url: str, size: dict) -> dict:
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        learn = insert_one_statement("public.closed_trades")
        for tokens, n in size["growth"]:
            reset(conn)
            pos = load_positions(conn, tokens)
            rows = synthetic.closed_trades(n + WARM_UP, seed=51, start=START, span_days=SPAN_DAYS, tokens=pos)
            timed_inserts(conn, learn, rows[:WARM_UP])
            seconds = timed_inserts(conn, learn, rows[WARM_UP:])
            out.append({"positions": len(pos), "tracked_rows": tracked_rows(conn), "n": n, "trades_per_s": n / seconds})
    return {"points": out}


JOBS = {"growth": job_growth}


def rows(t: dict) -> list:
    return []  # a table of its own below the figures (paragraphs)


def paragraphs(t: dict) -> list:
    points = t.get("points")
    if points is None:
        return []
    return [
        "Growth of the live trade with the number of positions:",
        Table(
            ("positions", "tracked rows", "live trades/s"),
            [(f"{p['positions']:,}", f"{p['tracked_rows']:,}", f"{p['trades_per_s']:.1f}") for p in points],
        ),
    ]


def memory(t: dict) -> list:
    return []  # the live trade's job at other sizes: not a figure of its own
