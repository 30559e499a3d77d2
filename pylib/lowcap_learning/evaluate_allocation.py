"""The allocation scenarios of design §16 through the real closed_trades trigger, for each allocation rule.

`run(url)` makes one fresh database per rule on the server of `url` (built from sql/, the rule set
with learning.set_tunable), and for every seed and scenario inserts the scenario's trades as one
multi-row INSERT in closed_at order (the trigger takes each as one step), reads the allocation path
from learning.allocation_history and rolls the transaction back, so every seed starts from the
migrated state. The rules run side by side (one connection each). It returns the figures against
the targets and the paths; `plots(figures, outdir)` writes fan charts of them.

The figures (design §16):
- null: the largest drift of any timeframe from its start after 3,000 trades (mean and p90 over
  seeds; the first release was measured this way: 0.28 / 0.45), and, stricter, the largest drift
  anywhere along the path;
- edge: 4h's gain over its start after 1,000 trades (mean) and the seeds where it is below its start;
- shift: the seeds where 15m is above its start after 3,000 trades (the edge moved from 4h at 1,500).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import conninfo, sql

from lowcap_learning import synthetic
from lowcap_learning.db import canonical_sql, database_url

START = np.array([0.15, 0.50, 0.35])
TIMEFRAMES = ("15m", "1h", "4h")

TARGETS = {
    "null_final_mean": ("<=", 0.05),
    "null_final_p90": ("<=", 0.15),
    "edge_gain_mean": (">=", 0.15),
    "edge_below_share": ("<=", 2 / 30),
    "shift_above_share": (">=", 24 / 30),
}

INSERT = """
INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)
SELECT t.trade_id, t.timeframe, t.rpnl_pct, t.closed_at
FROM unnest(%(ids)s::text[], %(tfs)s::text[], %(pcts)s::float8[], %(ats)s::timestamptz[])
    AS t (trade_id, timeframe, rpnl_pct, closed_at)
ORDER BY t.closed_at
"""
PATH = "SELECT allocation_after FROM learning.allocation_history ORDER BY seq"


def _server(url: str, dbname: str) -> str:
    return conninfo.make_conninfo(database_url(url), dbname=dbname)


def _create(url: str, name: str, rule: str) -> str:
    with psycopg.connect(_server(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = _server(url, name)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(canonical_sql().encode())
        conn.execute("SELECT learning.set_tunable('allocation_rule', to_jsonb(%s::text))", (rule,))
    return target


def _drop(url: str, name: str) -> None:
    with psycopg.connect(_server(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _path(conn: psycopg.Connection, rows: list[dict]) -> np.ndarray:
    """The allocation after every trade, in a transaction that is rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute(
            INSERT,
            {
                "ids": [r["trade_id"] for r in rows],
                "tfs": [r["timeframe"] for r in rows],
                "pcts": [r["rpnl_pct"] for r in rows],
                "ats": [r["closed_at"] for r in rows],
            },
        )
        return np.array([r[0] for r in conn.execute(PATH).fetchall()], dtype=float)


def _simulate_rule(url: str, rule: str, seeds: list[int], sizes: dict[str, int], out: dict) -> None:
    name = f"ll_eval_{rule}_{uuid.uuid4().hex[:8]}"
    target = _create(url, name, rule)
    try:
        paths: dict[str, list[np.ndarray]] = {kind: [] for kind in sizes}
        started = time.perf_counter()
        trades = 0
        with psycopg.connect(target, autocommit=True) as conn:
            for seed in seeds:
                for kind, n in sizes.items():
                    rows = synthetic.allocation_scenario(kind, seed, n_trades=n)
                    paths[kind].append(_path(conn, rows))
                    trades += len(rows)
        out[rule] = {"paths": paths, "seconds": time.perf_counter() - started, "trades": trades}
    finally:
        _drop(url, name)


def _figures(paths: dict[str, list[np.ndarray]], shift_at: int) -> dict:
    null = np.stack(paths["null"])  # seeds x trades x 3
    edge = np.stack(paths["edge"])
    shift = np.stack(paths["shift"])
    final = np.abs(null[:, -1, :] - START).max(axis=1)
    along = np.abs(null - START).max(axis=(1, 2))
    gain = edge[:, -1, 2] - START[2]
    above = shift[:, -1, 0] > START[0]
    seeds = len(final)
    figures = {
        "seeds": seeds,
        "null_final_mean": float(final.mean()),
        "null_final_p90": float(np.quantile(final, 0.9)),
        "null_path_mean": float(along.mean()),
        "null_path_p90": float(np.quantile(along, 0.9)),
        "edge_gain_mean": float(gain.mean()),
        "edge_below": int((gain < 0).sum()),
        "edge_below_share": float((gain < 0).mean()),
        "shift_above": int(above.sum()),
        "shift_above_share": float(above.mean()),
        "shift_15m_at_switch_median": float(np.median(shift[:, min(shift_at, shift.shape[1]) - 1, 0])),
        "null_final_15m_range": [float(null[:, -1, 0].min()), float(null[:, -1, 0].max())],
    }
    figures["meets"] = {
        key: bool(value <= bound if op == "<=" else value >= bound)
        for key, (op, bound) in TARGETS.items()
        for value in [figures[key]]
    }
    figures["meets_all"] = all(figures["meets"].values())
    return figures


def run(
    url: str | None = None,
    seeds: int = 30,
    rules: tuple[str, ...] = ("evidence", "plan"),
    first_seed: int = 0,
    sizes: dict[str, int] | None = None,
) -> dict:
    """Run the scenarios for each rule (in parallel, one database each) and return their figures.

    sizes overrides the trades per scenario (null 3,000, edge 1,000, shift 3,000; the shift at
    trade 1,500 whatever the size). The result: {"rules": {rule: figures}, "paths": {rule: {kind:
    seeds x trades x 3}}, "seconds", "trades_per_second"}.
    """
    sizes = dict({kind: spec[0] for kind, spec in synthetic.ALLOCATION_SCENARIOS.items()}, **(sizes or {}))
    seed_list = list(range(first_seed, first_seed + seeds))
    out: dict = {}
    errors: list[BaseException] = []

    def work(rule: str) -> None:
        try:
            _simulate_rule(url, rule, seed_list, sizes, out)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(rule,)) for rule in rules]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    shift_at = synthetic.ALLOCATION_SCENARIOS["shift"][3]
    return {
        "seeds": seed_list,
        "sizes": sizes,
        "rules": {rule: _figures(out[rule]["paths"], shift_at) for rule in rules},
        "paths": {rule: {kind: np.stack(p) for kind, p in out[rule]["paths"].items()} for rule in rules},
        "seconds": time.perf_counter() - started,
        "trades_per_second": {rule: out[rule]["trades"] / out[rule]["seconds"] for rule in rules},
    }


def table(result: dict) -> str:
    """The figures against the targets, as a Markdown table."""
    rules = list(result["rules"])
    rows = [
        ("null: largest drift after 3,000 trades, mean", "null_final_mean", "≤ 0.05", "{:.3f}"),
        ("null: largest drift after 3,000 trades, p90", "null_final_p90", "≤ 0.15", "{:.3f}"),
        ("null: largest drift anywhere on the path, mean", "null_path_mean", "(stricter)", "{:.3f}"),
        ("null: largest drift anywhere on the path, p90", "null_path_p90", "(stricter)", "{:.3f}"),
        ("edge: 4h gain after 1,000 trades, mean", "edge_gain_mean", "≥ +0.15", "{:+.3f}"),
        ("edge: seeds with 4h below its start", "edge_below", "≤ 2 of 30", "{}"),
        ("shift: seeds with 15m above its start at 3,000", "shift_above", "≥ 24 of 30", "{}"),
    ]
    seeds = result["rules"][rules[0]]["seeds"]
    lines = [
        f"| scenario ({seeds} seeds) | target | " + " | ".join(rules) + " |",
        "|---|---|" + "---|" * len(rules),
    ]
    for label, key, target, fmt in rows:
        cells = []
        for rule in rules:
            fig = result["rules"][rule]
            cell = fmt.format(fig[key])
            if key in fig["meets"]:
                cell += " ✓" if fig["meets"][key] else " ✗"
            cells.append(cell)
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(figures: dict, outdir: str | Path) -> list[Path]:
    """Fan charts (median and 10-90 % band across seeds) of each timeframe's allocation under null
    data and under the planted edge (and the moving edge), one panel per rule. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    colours = {"15m": "tab:blue", "1h": "tab:orange", "4h": "tab:green"}
    titles = {
        "null": "null: every timeframe draws from one distribution",
        "edge": "edge: 4h earns +5 points per trade",
        "shift": "shift: the edge moves from 4h to 15m at trade 1,500",
    }
    written = []
    rules = list(figures["paths"])
    for kind in ("null", "edge", "shift"):
        fig, axes = plt.subplots(1, len(rules), figsize=(6 * len(rules), 4), sharey=True, squeeze=False)
        for ax, rule in zip(axes[0], rules, strict=True):
            paths = figures["paths"][rule][kind]  # seeds x trades x 3
            x = np.arange(1, paths.shape[1] + 1)
            for j, tf in enumerate(TIMEFRAMES):
                lo, mid, hi = np.quantile(paths[:, :, j], [0.1, 0.5, 0.9], axis=0)
                ax.fill_between(x, lo, hi, color=colours[tf], alpha=0.2, linewidth=0)
                ax.plot(x, mid, color=colours[tf], label=f"{tf} (median, 10-90 %)")
                ax.axhline(START[j], color=colours[tf], linestyle=":", linewidth=0.8)
            ax.set_title(f"{rule}", fontsize=10)
            ax.set_xlabel("trade")
            ax.set_ylim(0, 1)
        axes[0][0].set_ylabel("allocation")
        axes[0][0].legend(fontsize=8, loc="upper left")
        fig.suptitle(f"{titles[kind]} ({paths.shape[0]} seeds)", fontsize=11)
        fig.tight_layout()
        path = outdir / f"allocation_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - `python -m lowcap_learning.evaluate_allocation [seeds] [outdir]`
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    result = run(seeds=n)
    print(table(result))
    print(f"{result['seconds']:.0f} s; trades/s: {result['trades_per_second']}")
    if len(sys.argv) > 2:
        for p in plots(result, sys.argv[2]):
            print(p)
