"""scripts/bench.py cannot rot: its quick trigger section runs end to end and reports a ratio."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_trigger_runs(tmp_path):
    out = tmp_path / "bench.md"
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--only", "trigger", "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert "| trigger overhead |" in text
    row = next(line for line in text.splitlines() if line.startswith("| trigger overhead |"))
    ratio = float(row.split("|")[3])
    assert 0 < ratio < 5
    assert "peak RSS" in text
    assert time.monotonic() - t0 < 20
