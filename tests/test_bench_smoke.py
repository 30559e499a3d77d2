"""scripts/bench.py cannot rot: its quick sections run end to end and report their figures, and the
report renders every section, measured or not, from the results' data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import report  # noqa: E402
from lowcap_learning.db import canonical_sql  # noqa: E402


def run_bench(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def figure_row(text: str, figure: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {figure}"))
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_bench_quick_trigger_runs(tmp_path):
    out = tmp_path / "bench.md"
    t0 = time.monotonic()
    proc = run_bench("--quick", "--only", "trigger", "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    ratio = float(figure_row(text, "trigger overhead |")[2])
    assert 0 < ratio < 5
    assert "peak RSS" in text
    assert time.monotonic() - t0 < 20


def test_bench_quick_runtime_writes_json(tmp_path):
    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "runtime", "--output", str(out), "--json", str(raw))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(raw.read_text())
    assert set(results) >= {"machine", "runtime", "other_xact_age"}
    runtime = results["runtime"]
    assert 0 < runtime["p50_ms"] <= runtime["p99_ms"] <= runtime["max_ms"]
    assert runtime["cold_calls"] > 0 and runtime["batch_ms"] > 0 and runtime["peak_rss_mib"] > 0
    text = out.read_text()
    assert figure_row(text, "runtime steering, 300 single calls")[3] == "p99 ≤ 1 ms"
    assert figure_row(text, "runtime steering, one batch of 300 |")[3] == "batch of 10,000 ≤ 100 ms"


def test_bench_unknown_section_is_refused():
    proc = run_bench("--only", "trigger,nonsense")
    assert proc.returncode == 2
    assert "unknown section(s): nonsense" in proc.stderr


def test_report_renders_every_section_not_measured():
    failed = {"status": "failed (exit 1): boom"}
    results = {
        "machine": {"nproc": 2, "memory": "1 GiB", "postgresql": "15", "settings": {}, "python": "3", "platform": "x"},
        **{s: failed for s in ("trigger", "live", "bulk", "growth", "simulation", "runtime")},
        "miner": {"points": [{"events": 10, "load": {}, "sql": failed, "pandas": {"seconds": 1.0}}]},
        "strength": {"load": {}, "sql": {"seconds": 1.0}, "pandas": failed},
        "other_xact_age": {"trigger": 5.0},
    }
    text = report.render(results, "scripts/bench.py --quick")
    for figure in ("trigger overhead", "live trade", "bulk replay", "lever simulation", "runtime steering"):
        cells = figure_row(text, f"{figure} |")
        assert (cells[1], cells[2], cells[4]) == ("failed (exit 1): boom", "", "n/a")
    assert figure_row(text, "tuning miner, 10 events")[1] == "failed (exit 1): boom (pandas 1.0)"
    assert figure_row(text, "strength lesson builder, 0 rows")[1] == "1.0 (pandas failed (exit 1): boom)"
    assert "its age in s at the end of the section: trigger 5" in text
    assert "peak RSS" not in text and "Growth of the live trade" not in text


def test_bench_builds_from_another_versions_sql(tmp_path):
    """--sql-from builds the database from that directory's MANIFEST (a same-run A/B against another
    commit): the report names it and the sha256 of exactly that SQL; a directory without one is refused."""
    other = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", other)
    (other / "999_marker.sql").write_text("-- built from the other version\n")
    with (other / "MANIFEST").open("a") as manifest:
        manifest.write("999_marker.sql\n")
    digest = hashlib.sha256(canonical_sql(other).encode()).hexdigest()[:12]
    out = tmp_path / "bench.md"
    proc = run_bench("--quick", "--only", "bulk", "--sql-from", str(other), "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert f"SQL: {other.resolve()} (sha256 {digest})." in text
    assert float(figure_row(text, "bulk replay")[2].split()[0].replace(",", "")) > 0
    refused = run_bench("--quick", "--only", "bulk", "--sql-from", str(tmp_path))
    assert refused.returncode != 0 and "no MANIFEST" in refused.stderr


def test_callgrind_workloads_are_the_trigger_path(conn):
    """scripts/bench/callgrind.py's statements (it runs them in `postgres --single`, one per line) insert
    their trades through the trigger: the bulk one as one statement, the single ones one each."""
    from bench import callgrind
    from lowcap_learning import synthetic

    trades = synthetic.closed_trades(5, seed=21)
    bulk = callgrind._statements(trades, "bulk", 3)
    single = callgrind._statements(trades[3:], "single", 2)
    assert bulk.count("\n") == 1 and single.count("\n") == 2
    conn.execute(bulk)
    for line in single.splitlines():
        conn.execute(line)
    learned = conn.execute("SELECT count(*) FROM learning.allocation_history").fetchone()[0]
    assert learned == 5
