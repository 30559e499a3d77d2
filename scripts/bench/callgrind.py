"""Instructions a trade, counted by callgrind: deterministic where `make bench`'s timings are noisy.

    .venv/bin/python scripts/bench/callgrind.py                    # this checkout's sql/
    .venv/bin/python scripts/bench/callgrind.py --sql-from /tmp/rel/sql

Builds a private cluster (initdb in a temporary directory, a Unix socket, no TCP), loads the SQL and
runs `postgres --single` under `valgrind --tool=callgrind` on two workloads of the demo's synthetic
trades (seed 21; no positions):
- one trade a statement: 50 and 250 single-row INSERTs, each its own transaction;
- bulk: one INSERT of 500 trades and one of 2,500.
The figure is the difference of the two runs over the difference of their trades, so start-up and
the first statement's catalog loading cancel out. Needs valgrind (Debian package) and, run as root,
the postgres system user to own the cluster. Never part of `make test` or `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pylib"))

from lowcap_learning import synthetic  # noqa: E402
from lowcap_learning.db import canonical_sql  # noqa: E402

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DB = "callgrind"
COLUMNS = ("trade_id", "position_id", "token_contract", "token_chain", "timeframe", "rpnl_pct", "closed_at", "actions")
RUNS = {"single": (50, 250), "bulk": (500, 2500)}


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _literal(value) -> str:
    text = json.dumps(value) if isinstance(value, list) else str(value)
    return "'" + text.replace("'", "''") + "'"


def _values(trade: dict) -> str:
    return "(" + ", ".join(_literal(trade[c]) if trade[c] is not None else "NULL" for c in COLUMNS) + ")"


def _statements(trades: list[dict], mode: str, n: int) -> str:
    head = f"INSERT INTO public.closed_trades ({', '.join(COLUMNS)}) VALUES "
    if mode == "single":
        return "".join(head + _values(t) + ";\n" for t in trades[:n])
    return head + ", ".join(_values(t) for t in trades[:n]) + ";\n"  # --single ends a statement at a newline


def _build(root: Path, sql_dir: Path | None) -> Path:
    data = root / "data"
    subprocess.run(
        _as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "root"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w"]
    options = f"-p 5499 -k {root} -c listen_addresses=''"
    subprocess.run(_as_owner([*ctl, "-o", options, "start"]), check=True, stdout=subprocess.DEVNULL)
    try:
        with psycopg.connect(host=str(root), port=5499, user="root", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with psycopg.connect(host=str(root), port=5499, user="root", dbname=DB, autocommit=True) as conn:
            conn.execute((canonical_sql(sql_dir) if sql_dir else canonical_sql()).encode())
    finally:
        subprocess.run(_as_owner([*ctl, "stop"]), check=True, stdout=subprocess.DEVNULL)
    return data


def _instructions(root: Path, data: Path, script: Path, tag: str) -> int:
    """Instructions of one `postgres --single` run of script, on a copy of the built cluster."""
    copy = root / f"data_{tag}"
    subprocess.run(["cp", "-a", str(data), str(copy)], check=True)  # keeps the owner, unlike copytree as root
    out = root / f"callgrind_{tag}.out"
    with script.open("rb") as stdin:
        subprocess.run(
            _as_owner(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    str(PG_BIN / "postgres"),
                    "--single",
                    "-D",
                    str(copy),
                    "-c",
                    "jit=off",
                    DB,
                ]
            ),
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    return int(re.search(r"^summary: (\d+)", out.read_text(), re.M).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sql-from", type=Path, help="build from another version's sql/ (its MANIFEST)")
    args = parser.parse_args()
    trades = synthetic.closed_trades(max(max(n) for n in RUNS.values()), seed=21)
    with tempfile.TemporaryDirectory(prefix="ll_callgrind_") as tmp:
        root = Path(tmp)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        data = _build(root, args.sql_from)
        jobs = {}
        for mode, sizes in RUNS.items():
            for n in sizes:
                script = root / f"{mode}_{n}.sql"
                script.write_text(_statements(trades, mode, n))
                os.chmod(script, 0o644)
                jobs[mode, n] = script
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = {
                key: pool.submit(_instructions, root, data, script, f"{key[0]}_{key[1]}")
                for key, script in jobs.items()
            }
            counts = {key: run.result() for key, run in runs.items()}
    print(f"SQL: {args.sql_from or 'this checkout'}")
    for mode, (small, large) in RUNS.items():
        per_trade = (counts[mode, large] - counts[mode, small]) / (large - small)
        print(f"{mode}: {per_trade:,.0f} instructions a trade")


if __name__ == "__main__":
    main()
