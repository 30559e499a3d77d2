"""Command line of the figures: `scripts/bench.py [--quick] [--only a,b] [--output F] [--json F] [--sql-from D]`.

One fresh database (created on the DATABASE_URL server, dropped at the end) holds every section.
Each measured job runs in a child process of its own, so its peak RSS (resource.getrusage) is the
job's alone; data is loaded by a separate child first. Data comes from lowcap_learning.synthetic
(the demo's seeded generator). A section whose function the package lacks prints "not available yet".

    scripts/bench.py                 # every figure, writes BENCHMARKS.md
    scripts/bench.py --quick         # small sizes (smoke run), prints only
    scripts/bench.py --only trigger,live
    git worktree add /tmp/rel 9ed58f9    # a same-run A/B against that commit's SQL:
    scripts/bench.py --only bulk --sql-from /tmp/rel/sql; scripts/bench.py --only bulk; ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import report
from bench.harness import (
    ROOT,
    SQL_FROM_ENV,
    Runner,
    child_main,
    create_database,
    drop_database,
    machine,
    oldest_other_transaction,
)


def measure(section: str, runner, quick: bool) -> dict:
    """The section's results, by its own measure() or, for a one-job section, that job."""
    m = report.module(section)
    run = runner.section(section)
    if hasattr(m, "measure"):
        return m.measure(run, m.SIZES[quick])
    (job,) = m.JOBS
    return {section: run(job)}


def run_all(sections: list[str], quick: bool) -> dict:
    name, url = create_database()
    results: dict = {"machine": machine(url), "quick": quick}
    results["machine"]["load_start"] = f"{os.getloadavg()[0]:.1f}"
    runner = Runner(url, quick)
    try:
        for section in sections:
            t0 = time.perf_counter()
            print(f"[bench] {section} ...", file=sys.stderr, flush=True)
            results.update(measure(section, runner, quick))
            results.setdefault("other_xact_age", {})[section] = oldest_other_transaction(name)
            print(f"[bench] {section} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        drop_database(name)
    results["machine"]["load_end"] = f"{os.getloadavg()[0]:.1f}"
    return results


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--only", help="comma-separated sections: " + ", ".join(report.SECTIONS))
    ap.add_argument("--output", help="write the report here (default BENCHMARKS.md for a full run)")
    ap.add_argument("--json", help="also write the raw results as JSON here")
    ap.add_argument(
        "--sql-from",
        metavar="DIR",
        help="build the database from another version's sql/ (e.g. a `git worktree` of the commit to compare):"
        " a same-run A/B alternates runs with and without it; nothing else changes between the arms",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--db-url", help=argparse.SUPPRESS)
    ap.add_argument("--extra", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = parser()
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child, args.db_url, args.quick, json.loads(args.extra or "{}"))
        return 0
    sections = [s.strip() for s in args.only.split(",")] if args.only else list(report.SECTIONS)
    unknown = set(sections) - set(report.SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if args.sql_from:
        if not (Path(args.sql_from) / "MANIFEST").is_file():
            ap.error(f"--sql-from {args.sql_from}: no MANIFEST there (give a checkout's sql/ directory)")
        os.environ[SQL_FROM_ENV] = str(Path(args.sql_from).resolve())
    full = not (args.quick or args.only or args.sql_from)
    results = run_all(sections, args.quick)
    text = report.render(results, "make bench" if full else "scripts/bench.py " + " ".join(argv), notes=full)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    output = args.output or (str(ROOT / "BENCHMARKS.md") if full else None)
    if output:
        Path(output).write_text(text)
    failed = [k for k, v in results.items() if isinstance(v, dict) and str(v.get("status", "")).startswith("failed")]
    return 1 if failed else 0
