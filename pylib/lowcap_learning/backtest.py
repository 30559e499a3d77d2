"""`backtest FILE`: replay a trade file through the real trigger in a scratch database.

The replay runs the very SQL the live trigger runs — the EWMA fold, the allocation step, the rule the
tunables select — not a Python copy, so a backtest equals inserting the same trades (every allocation
bit for bit). It does so in a scratch database made for the run on the same server (or on
`scratch_url`) and dropped after it, so no live table is written or locked and live trades insert
while it runs. The scratch starts from the live tunables (or the defaults) with `overrides` applied,
and from the starting split with no history: a backtest answers "what would these trades have
taught a fresh engine".

Capital-weighted ROI: every tracked trade earns its ROI on the share of capital its timeframe held when
it closed (`allocation_before` of its step); the static figure holds the starting split throughout.
lift = learned − static.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from lowcap_learning import db
from lowcap_learning.ingest import IngestError, _insert, _locate_failure, read_rows

BATCH = 2000
LIVE_TUNABLES = "SELECT learning.tunables()"
SET_TUNABLE = "SELECT learning.set_tunable(%(key)s::text, %(value)s::jsonb)"
STORED_KEYS = "SELECT key FROM learning.tunable_specs"
HISTORY = """
SELECT h.seq, h.trade_id, h.timeframe, h.closed_at, h.allocation_before, h.allocation_after, t.rpnl_pct / 100.0
FROM learning.allocation_history AS h
INNER JOIN public.closed_trades AS t ON t.trade_id = h.trade_id
ORDER BY h.seq
"""
TRACKED = "SELECT learning.tracked_timeframes(), learning.starting_allocation()"


@dataclass
class BacktestResult:
    rule: str
    tunables: dict
    timeframes: list[str]
    start: list[float]
    steps: list[dict] = field(default_factory=list)  # one per trade (step or skip), in step order
    learned: float = 0.0
    static: float = 0.0

    @property
    def final_allocation(self) -> dict[str, float]:
        last = self.steps[-1]["allocation"] if self.steps else self.start
        return dict(zip(self.timeframes, last, strict=True))

    def path(self, every: int) -> list[dict]:
        """The start, every `every`-th step, and the end."""
        points = [{"trade": 0, "trade_id": None, "closed_at": None, "allocation": self._named(self.start)}]
        for k, step in enumerate(self.steps, start=1):
            if k % every == 0 or k == len(self.steps):
                points.append(
                    {
                        "trade": k,
                        "trade_id": step["trade_id"],
                        "closed_at": step["closed_at"],
                        "allocation": self._named(step["allocation"]),
                    }
                )
        return points

    def _named(self, values: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.timeframes, values, strict=True))

    def as_dict(self, every: int) -> dict:
        return {
            "rule": self.rule,
            "tunables": self.tunables,
            "trades": len(self.steps),
            "final_allocation": self.final_allocation,
            "path": self.path(every),
            "capital_weighted_roi": {
                "learned": self.learned,
                "static": self.static,
                "lift": self.learned - self.static,
            },
        }


def parse_overrides(pairs: Sequence[str]) -> dict:
    """`key=value` strings (value JSON, or a bare word as a string) -> {key: value}."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out[key.strip()] = value
    return out


def _with_dbname(url: str | None, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(db.database_url(url))
    return psycopg.conninfo.make_conninfo(**dict(info, dbname=dbname))


@contextmanager
def scratch_database(server_url: str | None):
    """A database of our own for one replay, built from the canonical SQL, closed to other roles, and
    dropped afterwards (ending any session still connected to it)."""
    url = _with_dbname(server_url, f"lowcap_backtest_{uuid.uuid4().hex[:12]}")
    db.ensure_database(url)
    try:
        # No other role may connect: a writer holding a trade open there would stall the replay.
        db.keep_private(url)
        with db.connect(url, autocommit=True) as conn:
            conn.execute(db.canonical_sql().encode())
        yield url
    finally:
        db.drop_database(url)


def live_tunables(url: str | None) -> dict:
    """The live database's tunables, or {} (the defaults) when it has no learning schema."""
    try:
        with db.connect(url, autocommit=True) as conn:
            return conn.execute(LIVE_TUNABLES).fetchone()[0] or {}
    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
        return {}


def _sorted_rows(rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Rows in the trigger's own order, (closed_at, trade_id), so batches step as one statement would;
    left as they are when a closed_at does not parse (the database then names the bad line)."""

    def key(item):
        when = datetime.fromisoformat(str(item[1]["closed_at"]).replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        return (when, str(item[1]["trade_id"]))

    try:
        return sorted(rows, key=key)
    except (KeyError, TypeError, ValueError):
        return rows


def replay(
    path: Path,
    url: str | None = None,
    overrides: dict | None = None,
    scratch_url: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Replay the file's trades under the live tunables with `overrides`; nothing live is written."""
    rows = _sorted_rows(list(read_rows(path)))
    base = live_tunables(url)
    with scratch_database(scratch_url or url) as scratch, db.connect(scratch, autocommit=True) as conn:
        known = {r[0] for r in conn.execute(STORED_KEYS)}
        wanted = {k: v for k, v in base.items() if k in known} | (overrides or {})
        for key, value in sorted(wanted.items()):
            try:
                conn.execute(SET_TUNABLE, {"key": key, "value": json.dumps(value)})
            except psycopg.errors.InvalidParameterValue as err:
                raise ValueError(f"--set {key}: {err.diag.message_primary}") from None
        tunables = conn.execute(LIVE_TUNABLES).fetchone()[0]
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            with conn.transaction():
                conn.execute("SET LOCAL TIME ZONE 'UTC'")
                try:
                    with conn.transaction():
                        _insert(conn, [row for _, row in batch])
                except psycopg.Error:
                    raise _locate_failure(conn, batch) from None
            if progress:
                progress(len(batch))
        timeframes, start_split = conn.execute(TRACKED).fetchone()
        result = BacktestResult(
            rule=str(tunables.get("allocation_rule", "plan")),
            tunables=tunables,
            timeframes=list(timeframes),
            start=list(start_split),
        )
        index = {tf: i for i, tf in enumerate(result.timeframes)}
        for _seq, trade_id, tf, closed_at, before, after, roi in conn.execute(HISTORY):
            result.steps.append({"trade_id": trade_id, "closed_at": closed_at, "allocation": list(after)})
            if tf in index:  # an untracked timeframe (1m, 1d) holds no share of the split
                i = index[tf]
                result.learned += before[i] * roi
                result.static += result.start[i] * roi
    return result


def plot(results: Sequence[BacktestResult], out: Path) -> None:
    """Allocation per timeframe against trade number; a second result is drawn dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"15m": "tab:blue", "1h": "tab:orange", "4h": "tab:green"}
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    for style, result in zip(("-", "--"), results, strict=False):
        for i, tf in enumerate(result.timeframes):
            values = [result.start[i]] + [s["allocation"][i] for s in result.steps]
            ax.plot(range(len(values)), values, style, color=colors.get(tf), label=f"{tf} ({result.rule})")
    ax.set_xlabel("trade")
    ax.set_ylabel("allocation (fraction)")
    ax.set_title("Backtest: timeframe allocation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.savefig(out, format="png")
    plt.close(fig)


__all__ = ["BacktestResult", "IngestError", "parse_overrides", "plot", "replay"]
