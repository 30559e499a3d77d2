"""`make demo` / `lowcap-learning demo`: the whole system on a seeded synthetic history.

Recreates the demo database, migrates it with alembic, seeds positions, and replays day by day (simulated
time): that day's closed trades (one INSERT, through the allocation trigger), that day's episode windows
(through the capture trigger), the outcomes of the episodes that ended that day (set_episode_outcome),
then the hourly jobs with as_of = the simulated slot. It prints the allocation path and the per-token totals
check, and writes demo-output/report.md and demo-output/allocation.png. stdout carries only seeded figures
(the same on every run); progress and timings go to stderr: a line per phase and, while replaying, a bar
redrawn in place on a terminal or a line per job round elsewhere (pipes, CI logs). Parts whose provider
(another module) is missing are skipped with a note, so the demo always runs.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql

from lowcap_learning import jobs as jobs_module
from lowcap_learning import logs, migrate, synthetic
from lowcap_learning.db import database_url

START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Size:
    tokens: int
    trades: int
    events: int
    days: int
    job_every_days: int
    path_every: int


FULL = Size(tokens=40, trades=600, events=4000, days=60, job_every_days=7, path_every=50)
SMALL = Size(tokens=8, trades=120, events=600, days=20, job_every_days=5, path_every=40)

TOKEN_TOTALS = """
SELECT token_contract, token_chain, sum(total_allocation_pct)
FROM public.lowcap_positions
WHERE status IN ('watchlist', 'active', 'dormant') AND timeframe = ANY (learning.tracked_timeframes())
    AND total_allocation_pct IS NOT NULL
GROUP BY token_contract, token_chain
ORDER BY token_contract, token_chain
"""
HISTORY = """
SELECT seq, trade_id, timeframe, closed_at, allocation_before, allocation_after
FROM learning.allocation_history ORDER BY seq
"""
EVIDENCE = """
SELECT timeframe, n, roi_long, n_eff, std_error, evidence, desired_share FROM learning.allocation_evidence()
"""
SET_OUTCOMES = """
SELECT coalesce(sum(learning.set_episode_outcome(r.episode_id, r.outcome)), 0)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r (episode_id text, outcome text)
"""
HAS_FUNCTION = "SELECT pg_catalog.to_regprocedure(%(sig)s::text) IS NOT NULL"
TUNING_OVERRIDES = """
SELECT pattern_key, scope_subset, action_category, multiplier, tuning_params, n
FROM public.pm_overrides
WHERE action_category LIKE 'tuning\\_%%' AND status = 'active'
ORDER BY pattern_key, scope_subset::text, action_category
"""
STRENGTH_OVERRIDES = """
SELECT pattern_key, scope_subset, dira, dire, confidence_score, edge_raw_roi, n
FROM public.pm_overrides
WHERE action_category = 'pm_strength' AND status = 'active'
ORDER BY confidence_score DESC NULLS LAST, pattern_key, scope_subset::text
"""
LOG_PREFIXES = """
SELECT pg_catalog.rtrim(substring(message FROM '^[^:|]*')) AS prefix, level, count(*)
FROM learning.learning_log GROUP BY 1, 2 ORDER BY 1, 2
"""


def demo_database_url(url: str | None) -> str:
    """The URL's server with a database whose name says demo (never recreate someone's real database)."""
    url = database_url(url)
    name = conninfo.conninfo_to_dict(url).get("dbname") or ""
    if "demo" in name:
        return url
    if "://" in url:  # keep the URL form (alembic needs it): replace the path
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/lowcap_learning_demo"))
    return conninfo.make_conninfo(url, dbname="lowcap_learning_demo")


def recreate_database(url: str, template: str | None = None) -> None:
    """Drop and create the demo database (as a copy of template when given: tests skip the migration)."""
    info = conninfo.conninfo_to_dict(url)
    name = info["dbname"]
    admin = conninfo.make_conninfo(**dict(info, dbname="postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
        conn.execute(create)


def drop_database(url: str) -> None:
    info = conninfo.conninfo_to_dict(url)
    admin = conninfo.make_conninfo(**dict(info, dbname="postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(info["dbname"])))


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fmt_alloc(values) -> str:
    return "  ".join(f"{v:.4f}" for v in values)


def _available(spec: str) -> str | None:
    try:
        jobs_module.provider(spec)
    except jobs_module.JobUnavailable as err:
        return str(err)
    return None


class Progress:
    """Progress on stderr, so stdout keeps only the seeded figures. A line per phase; the replay shows a
    bar redrawn in place when stderr is a terminal, else one line per job round (and the last day)."""

    BAR = 20

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self._bar_open = False

    @staticmethod
    def _stream():
        return sys.stderr  # looked up at each write, so a redirected or captured stderr sees it

    def _tty(self) -> bool:
        isatty = getattr(self._stream(), "isatty", None)
        return bool(isatty and isatty())

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:5.1f}s]"

    def end_bar(self) -> None:
        if self._bar_open:
            print(file=self._stream(), flush=True)
            self._bar_open = False

    def phase(self, text: str) -> None:
        self.end_bar()
        print(f"{self._stamp()} {text}", file=self._stream(), flush=True)

    def replay(
        self, *, day: int, days: int, trades: tuple[int, int], windows: tuple[int, int], job_runs: int,
        line: bool, doing: str = "",
    ) -> None:
        """Where the replay is; line: also write it as a line when stderr is not a terminal."""
        if self._tty():  # one short line, clipped to the terminal: a wrapped line could not be redrawn
            filled = round(self.BAR * trades[0] / trades[1]) if trades[1] else self.BAR
            bar = "#" * filled + "." * (self.BAR - filled)
            text = f"{self._stamp()} [{bar}] {trades[0]:,}/{trades[1]:,} trades, day {day}/{days}"
            text += f", {doing}" if doing else ""
            width = shutil.get_terminal_size((80, 24)).columns - 1
            self._stream().write(f"\r\x1b[K{text[:width]}")
            self._stream().flush()
            self._bar_open = True
        elif line:
            print(f"{self._stamp()} replayed {trades[0]:,} / {trades[1]:,} trades, {windows[0]:,} / {windows[1]:,} "
                  f"episode windows (day {day}/{days}, {job_runs} job runs)", file=self._stream(), flush=True)


class Report:
    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.md: list[str] = []

    def both(self, line: str = "") -> None:
        self.stdout.append(line)
        print(line, flush=True)

    def section(self, title: str) -> None:
        self.md += ["", f"## {title}", ""]


@dataclass(frozen=True)
class History:
    """The seeded synthetic history the demo replays."""

    positions: list[dict]
    trades: list[dict]
    events: list[dict]
    outcome_of: dict[str, str]  # episode_id -> its outcome, set when its last window has passed
    last_window: dict[str, datetime]  # episode_id -> the timestamp of its last window


@dataclass(frozen=True)
class Learned:
    """What the replay left in the database, read back for stdout and the report."""

    totals_before: dict
    totals_after: dict
    history: list
    evidence: list
    rule: str
    tuning: list
    strength: list
    timeframes: list[str]
    runtime_lines: list[str]
    log_counts: list
    exported: int


def main(
    url: str | None = None,
    small: bool = False,
    out_dir: str | Path = "demo-output",
    seed: int = 7,
    template: str | None = None,
) -> Report:
    t0 = time.monotonic()
    progress = Progress(t0)
    size = SMALL if small else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo_url = demo_database_url(url)
    dbname = conninfo.conninfo_to_dict(demo_url)["dbname"]
    rep = Report()
    rep.both(f"lowcap-learning demo ({'small' if small else 'full'}, seed {seed}): database {dbname}")
    progress.phase(f"recreating database {dbname}")
    recreate_database(demo_url, template)
    if template is None:
        progress.phase("migrating (alembic upgrade head)")
        migrate.upgrade(demo_url)
    progress.phase("migrated; generating the synthetic history")
    data = _history(size, seed)
    notes: list[str] = []
    registry = _job_registry(notes)
    with psycopg.connect(demo_url, autocommit=True) as conn:
        learned = _run(conn, size, data, registry, out, seed, progress, notes)
    path_rows = _path_rows(learned.history, size.path_every)
    tf_line = _timeframe_line(data.trades, learned.timeframes)
    ok = _print_summary(rep, size, data, learned, path_rows, tf_line, notes)
    _write_report(rep, out, seed, small, size, data, learned, path_rows, tf_line, ok, notes)
    progress.phase(f"wrote {out / 'report.md'} and {out / 'allocation.png'}")
    return rep


def _history(size: Size, seed: int) -> History:
    positions = synthetic.positions(size.tokens, seed=seed)
    trades = synthetic.closed_trades(size.trades, seed=seed, start=START, span_days=size.days, tokens=positions)
    events = synthetic.episode_events(size.events, seed=seed, start=START, span_days=size.days)
    last_window: dict[str, datetime] = {}
    for e in events:
        last_window[e["episode_id"]] = max(last_window.get(e["episode_id"], START), _ts(e["timestamp"]))
    return History(positions, trades, events, {e["episode_id"]: e["outcome"] for e in events}, last_window)


def _job_registry(notes: list[str]) -> dict[str, jobs_module.Job]:
    """Jobs with the providers that exist; a missing one is noted and the rest of its job still runs."""
    registry: dict[str, jobs_module.Job] = {}
    for name in jobs_module.job_names("all"):
        job = jobs_module.JOBS[name]
        present = []
        for spec in job.providers:
            missing = _available(spec)
            if missing:
                notes.append(f"job {name}: {spec} skipped ({missing.split(': ', 1)[1]})")
            else:
                present.append(spec)
        if present:
            registry[name] = jobs_module.Job(name, job.minute, tuple(present), job.description)
    return registry


def _token_totals(conn) -> dict:
    return {(r[0], r[1]): r[2] for r in conn.execute(TOKEN_TOTALS).fetchall()}


def _run(conn, size: Size, data: History, registry, out: Path, seed: int, progress: Progress, notes) -> Learned:
    """Seed the positions, replay the history day by day, then read back what was learned."""
    progress.phase(f"seeding {len(data.positions)} positions")
    synthetic.insert_positions(conn, data.positions)
    totals_before = _token_totals(conn)
    job_runs = _replay(conn, size, data, registry, progress, notes)
    progress.phase(f"replayed {size.days} days, {job_runs} job runs")
    progress.phase("reading overrides, runtime examples and the learning log")
    history = conn.execute(HISTORY).fetchall()
    evidence = conn.execute(EVIDENCE).fetchall()
    rule = conn.execute("SELECT learning.tunables() ->> 'allocation_rule'").fetchone()[0]
    totals_after = _token_totals(conn)
    tuning = conn.execute(TUNING_OVERRIDES).fetchall()
    strength = conn.execute(STRENGTH_OVERRIDES).fetchall()
    timeframes = list(conn.execute("SELECT learning.tracked_timeframes()").fetchone()[0])
    runtime_lines = _runtime_examples(conn, strength, tuning, notes)
    log_counts = conn.execute(LOG_PREFIXES).fetchall()
    exported = logs.export(conn, out / "learning_system.log")
    from lowcap_learning.plot import plot_allocation

    progress.phase(f"plotting {out / 'allocation.png'}")
    plot_allocation(conn, out / "allocation.png", title=f"Demo allocation ({len(history)} trades, seed {seed})")
    return Learned(totals_before, totals_after, history, evidence, rule, tuning, strength, timeframes,
                   runtime_lines, log_counts, exported)


def _replay(conn, size: Size, data: History, registry, progress: Progress, notes: list[str]) -> int:
    """Each simulated day: its trades, its episode windows and the outcomes of the episodes that ended
    (one transaction), then the jobs every job_every_days days. Returns the number of job runs."""
    has_outcome = conn.execute(HAS_FUNCTION, {"sig": "learning.set_episode_outcome(text, text)"}).fetchone()[0]
    pending = [dict(e, outcome=None) for e in data.events]
    if not has_outcome:
        notes.append("episode outcomes inserted with the windows: learning.set_episode_outcome is missing")
        pending = data.events
    trades, events = data.trades, data.events
    job_runs = trades_done = windows_done = 0
    progress.phase(f"replaying {size.days} simulated days: {len(trades):,} trades, {len(events):,} episode "
                   f"windows, jobs every {size.job_every_days} day(s)")
    for day in range(size.days):
        lo, hi = START + timedelta(days=day), START + timedelta(days=day + 1)
        day_trades = [t for t in trades if lo <= _ts(t["closed_at"]) < hi]
        day_windows = [e for e in pending if lo <= _ts(e["timestamp"]) < hi]
        with conn.transaction():
            synthetic.insert_closed_trades(conn, day_trades)
            synthetic.insert_episode_events(conn, day_windows)
            if has_outcome:
                ended = [
                    {"episode_id": ep, "outcome": data.outcome_of[ep]}
                    for ep, at in data.last_window.items()
                    if lo <= at < hi
                ]
                conn.execute(SET_OUTCOMES, {"rows": json.dumps(ended)})
        trades_done += len(day_trades)
        windows_done += len(day_windows)
        jobs_due = (day + 1) % size.job_every_days == 0 or day + 1 == size.days
        where = {"day": day + 1, "days": size.days, "trades": (trades_done, len(trades)),
                 "windows": (windows_done, len(events))}
        progress.replay(**where, job_runs=job_runs, line=False, doing="running jobs" if jobs_due else "")
        if jobs_due:
            for name in registry:
                as_of = hi + timedelta(minutes=jobs_module.JOBS[name].minute)
                run = jobs_module.run_job(conn, name, as_of=as_of, slot_start=hi, registry=registry)
                job_runs += 1
                if run.status == "failed":
                    notes.append(f"job {name} at {as_of:%Y-%m-%d %H:%M} failed: {run.error}")
            progress.replay(**where, job_runs=job_runs, line=True)
    return job_runs


def _path_rows(history: list, every: int) -> list[tuple]:
    """(label, closed_at, allocation): the start, every `every`-th step and the end."""
    rows = []
    if history:
        rows.append(("start", history[0][3], history[0][4]))
        for i, row in enumerate(history, start=1):
            if i % every == 0 and i != len(history):
                rows.append((str(i), row[3], row[5]))
        rows.append((f"end ({len(history)})", history[-1][3], history[-1][5]))
    return rows


def _timeframe_line(trades: list[dict], timeframes: list[str]) -> str:
    per_tf = {tf: sum(1 for t in trades if t["timeframe"] == tf) for tf in timeframes}
    mean_tf = {
        tf: sum(t["rpnl_pct"] for t in trades if t["timeframe"] == tf) / max(per_tf[tf], 1) for tf in timeframes
    }
    return ", ".join(f"{tf} {per_tf[tf]} (mean {mean_tf[tf]:+.2f}%)" for tf in timeframes)


def _print_summary(rep: Report, size: Size, data: History, learned: Learned, path_rows, tf_line, notes) -> bool:
    """The seeded figures on stdout; returns whether every per-token total was kept."""
    rep.both(f"{len(data.positions)} positions ({size.tokens} tokens x 3 timeframes), {len(data.trades)} trades, "
             f"{len(data.events)} episode windows over {size.days} days; jobs every {size.job_every_days} "
             "simulated day(s)")
    rep.both("")
    rep.both("allocation path (trade #, closed_at, " + ", ".join(learned.timeframes) + "):")
    for label, at, alloc in path_rows:
        rep.both(f"  {label:<10} {at:%Y-%m-%d %H:%M}  {_fmt_alloc(alloc)}")
    rep.both("  trades per timeframe: " + tf_line)
    before, after = learned.totals_before, learned.totals_after
    worst = max((abs(after[k] - v) for k, v in before.items()), default=0.0)
    ok = set(before) == set(after) and worst < 1e-9
    rep.both(f"per-token totals check: {len(before)} tokens, max |after - before| < 1e-9 %: "
             f"{'ok' if ok else f'FAILED ({worst:.3g})'}")
    rep.both(f"tuning overrides: {len({(r[0], json.dumps(r[1], sort_keys=True)) for r in learned.tuning})} slices; "
             f"strength overrides: {len(learned.strength)}")
    for note in notes:
        rep.both(f"note: {note}")
    return ok


def _write_report(rep: Report, out: Path, seed: int, small: bool, size: Size, data: History, learned: Learned,
                  path_rows, tf_line: str, ok: bool, notes: list[str]) -> None:
    """demo-output/report.md."""
    md, timeframes = rep.md, learned.timeframes
    md += [f"# lowcap-learning demo report (seed {seed}, {'small' if small else 'full'})", "",
           f"{len(data.positions)} positions ({size.tokens} tokens x 3 timeframes), {len(data.trades)} closed "
           f"trades and {len(data.events)} episode windows over {size.days} simulated days, replayed day by day "
           f"through the triggers; jobs (lesson-builder, tuning-miner, materializer) run every "
           f"{size.job_every_days} simulated day(s) with as_of = the simulated slot. The 4h timeframe is the "
           "better one by construction.",
           "", "![allocation](allocation.png)"]
    rep.section("Allocation path")
    md += ["| trade # | closed_at | " + " | ".join(timeframes) + " |", "|---|---|" + "---|" * len(timeframes)]
    md += [f"| {label} | {at:%Y-%m-%d %H:%M} | " + " | ".join(f"{v:.4f}" for v in alloc) + " |"
           for label, at, alloc in path_rows]
    md += ["", "Trades per timeframe: " + tf_line, "",
           f"Per-token totals: {len(learned.totals_before)} tokens, every total kept within 1e-9 %: "
           f"{'yes' if ok else 'NO'}."]
    rep.section(f"What the allocation learned, and why (allocation_rule {learned.rule})")
    md += ["Each timeframe's 90-day ROI, its standard error (exact EWMA second moments, effective count),",
           "and z: its distance from the other timeframes in standard errors. The desired split leaves the",
           "starting split only by the part of |z| beyond the evidence threshold.", "",
           "| timeframe | n | ROI (90 d) | effective n | std error | z | desired share |",
           "|---|---|---|---|---|---|---|"]
    md += [f"| {tf} | {n} | {_num(roi, '+.4f')} | {_num(neff, '.1f')} | {_num(se, '.4f')} | {_num(z, '+.2f')} "
           f"| {_num(share, '.4f')} |" for tf, n, roi, neff, se, z, share in learned.evidence]
    rep.section("Tuning overrides chosen (one unit per slice: ts_min, halo_max, slope_min; 15 largest slices)")
    md += _tuning_table(learned.tuning)
    rep.section("Strength overrides (top 15 by confidence)")
    md += _strength_table(learned.strength)
    rep.section("Runtime application")
    md += learned.runtime_lines
    rep.section("Learning log")
    md += ["| line | level | rows |", "|---|---|---|"] + [f"| {p} | {lvl} | {n} |" for p, lvl, n in learned.log_counts]
    md += ["", f"{learned.exported} rows exported to `learning_system.log`."]
    if notes:
        rep.section("Notes")
        md += [f"- {n}" for n in notes]
    (out / "report.md").write_text("\n".join(md).lstrip() + "\n")


def _strength_table(strength) -> list[str]:
    if not strength:
        return ["none"]
    return [
        "| pattern | scope | dirA | dirE | confidence | edge_raw_roi | n |", "|---|---|---|---|---|---|---|",
        *(f"| {p} | `{json.dumps(s, sort_keys=True)}` | {a:+.3f} | {e:+.3f} | {c:.3f} | {edge:+.4f} | {n} |"
          for p, s, a, e, c, edge, n in strength[:15]),
        "", f"{len(strength)} active pm_strength overrides in all.",
    ]


def _tuning_table(rows) -> list[str]:
    if not rows:
        return ["none"]
    by_slice: dict[tuple[str, str], dict] = {}
    for pattern, scope, category, multiplier, params, n in rows:
        entry = by_slice.setdefault((pattern, json.dumps(scope, sort_keys=True)), {"n": n, "params": params})
        entry[category] = (multiplier, (params or {}).get("delta"))
    lines = ["| pattern | scope | ts_min x | halo_max x | slope_min + | ratio | gained / lost | evidence | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    largest = sorted(by_slice.items(), key=lambda kv: (-(kv[1]["n"] or 0), kv[0]))[:15]
    for (pattern, scope), e in largest:
        p = e["params"] or {}
        ratio = "inf" if p.get("ratio_infinite") else (f"{p['ratio']:.2f}x" if p.get("ratio") is not None else "-")

        def lever(cat, e=e):
            m, d = e.get(cat, (None, None))
            return "-" if m is None else f"{m:.3f} (d {d:+g})" if d is not None else f"{m:.3f}"

        slope = e.get("tuning_slope_min", (None, None))[1]
        lines.append(
            f"| {pattern} | `{scope}` | {lever('tuning_ts_min')} | {lever('tuning_halo')} | "
            f"{'-' if slope is None else f'{slope:+g}'} | {ratio} | {p.get('gained', '-')} / {p.get('lost', '-')} "
            f"| {_evidence_cell(p)} | {e['n']} |"
        )
    return [*lines, "", f"{len(by_slice)} slices with an active tuning override in all.", "",
            "Evidence (tuning_rule evidence): per changed lever, the events it alone admits (loosening) or removes "
            "(tightening), their success rate against the acted events at base (loosening) or the acted events "
            "kept (tightening), and the one-sided Fisher exact p; every lever must have p <= alpha = "
            "max_false_override / tested candidates. Under tuning_rule plan the sign test's p is shown."]


def _evidence_cell(p: dict) -> str:
    """Per lever: flips at rate vs reference rate, p; then the threshold (or the plan's sign test)."""
    ev = p.get("evidence")
    if not isinstance(ev, dict) or p.get("rule") != "evidence":
        pv = p.get("p_value")
        return "-" if pv is None else f"plan: sign test p={pv:.3g}"

    def rate(x):
        return "-" if x is None else f"{x:.2f}"

    parts = []
    for lever, e in ev.items():
        what, ref = ("admits", "acted") if e.get("direction") == "loosen" else ("removes", "kept")
        parts.append(f"{lever} {what} {e.get('flipped')} at {rate(e.get('rate'))} vs {ref} "
                     f"{rate(e.get('reference_rate'))}, p={e.get('p_value', 1.0):.2g}")
    threshold = p.get("threshold")
    tail = "" if threshold is None else f"; p <= alpha {threshold:.2g} ({p.get('alpha', 0):g}/{p.get('tested')})"
    return "; ".join(parts) + tail


def _runtime_examples(conn, strength, tuning, notes) -> list[str]:
    """One apply_strength_overrides and one apply_execution_overrides call, on a scope that matches."""
    try:
        runtime = importlib.import_module("lowcap_learning.runtime")
    except ModuleNotFoundError:
        notes.append("runtime application skipped: lowcap_learning.runtime is missing")
        return ["skipped: lowcap_learning.runtime is missing"]
    lines: list[str] = []
    for label, function, kind, rows, example in (
        ("strength", "apply_strength_overrides", "pm_strength", strength, _strength_example),
        ("execution", "apply_execution_overrides", "tuning", tuning, _execution_example),
    ):
        apply = getattr(runtime, function, None)
        if apply is None:
            notes.append(f"{label} runtime skipped: runtime.{function} is missing")
            lines.append(f"- {label}: skipped (runtime.{function} is missing)")
        elif not rows:
            lines.append(f"- {label}: no active {kind} override to apply")
        else:
            lines += example(conn, apply, rows)
    return lines


def _strength_example(conn, apply_strength, strength) -> list[str]:
    pattern, scope = strength[0][0], dict(strength[0][1])
    row = conn.execute(
        "SELECT scope FROM public.pattern_trade_events WHERE pattern_key = %(p)s::text"
        " AND scope @> %(s)s::jsonb ORDER BY id LIMIT 1",
        {"p": pattern, "s": json.dumps(scope)},
    ).fetchone()
    scope = dict(row[0]) if row else scope
    result = apply_strength(conn, pattern, scope, 0.5, 0.5)
    fields = {k: getattr(result, k) for k in ("a_final", "e_final", "position_size_frac", "delta_a", "delta_e",
                                              "dir_a", "dir_e", "confidence", "steer_max_eff")
              if hasattr(result, k)}
    lines = [f"- `apply_strength_overrides(conn, {pattern!r}, {json.dumps(scope, sort_keys=True)}, "
             "a_flags=0.5, e_flags=0.5)`:"]
    lines += [f"  - {k} = {v:.4f}" if isinstance(v, float) else f"  - {k} = {v}" for k, v in fields.items()]
    lines.append(f"  - matches = {len(getattr(result, 'matches', []) or [])}")
    return lines


def _execution_example(conn, apply_exec, tuning) -> list[str]:
    pattern, scope = _full_scope(conn, tuning[0][0], tuning[0][1])
    base = {"ts_min": synthetic.TS_MIN, "halo_max": synthetic.HALO_MAX, "slope_min": synthetic.SLOPE_MIN}
    result = apply_exec(conn, pattern, scope, base)
    lines = [f"- `apply_execution_overrides(conn, {pattern!r}, {json.dumps(scope, sort_keys=True)}, "
             f"{json.dumps(base)})`:",
             f"  - thresholds = `{_plain(getattr(result, 'thresholds', result))}`"]
    for o in getattr(result, "applied", []) or []:
        lines.append(f"  - applied {o.action_category}: multiplier {o.multiplier:g}, delta {o.delta}, "
                     f"slice `{json.dumps(o.scope_subset, sort_keys=True)}` (n {o.n})")
    return lines


FULL_SCOPE = """
SELECT scope FROM public.pattern_episode_events
WHERE pattern_key = %(pattern)s::text AND scope @> %(subset)s::jsonb
ORDER BY id LIMIT 1
"""


def _full_scope(conn, pattern: str, subset: dict) -> tuple[str, dict]:
    """A real scope (every dimension, as the PM passes it) containing the override's slice."""
    row = conn.execute(FULL_SCOPE, {"pattern": pattern, "subset": json.dumps(subset)}).fetchone()
    return pattern, dict(row[0]) if row else dict(subset)


def _plain(value):
    if isinstance(value, dict):
        return json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in value.items()}, default=str)
    return str(value)
