"""The package is whole: a wheel built from the checkout, installed into a fresh venv outside it, migrates
a new database, reports its status and runs the small demo from an unrelated working directory.

The fresh venv gets the wheel alone (`pip install --no-deps --no-index`); its dependencies come from the
dev venv through a .pth file added after the install. That keeps the test offline and fast (no download,
no resolver), while the package itself (code, sql/, migrations/) can only come from the wheel: the venv's
own site-packages precede the .pth directory on sys.path, a .pth line does not run the dev venv's own .pth
files (so its editable finder for the checkout is never installed), and the test asserts where
lowcap_learning was imported from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest

from conftest import RUN_ID, url_for
from lowcap_learning import db

CHECKOUT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "pylib", "sql", "migrations")


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv's bin directory, the built wheel)."""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Build from a copy, so concurrent runs never share the checkout's build/ and egg-info directories.
    source = base / "source"
    for name in SOURCES:
        src = CHECKOUT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(src, source / name)
    wheels = base / "wheels"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        cwd=base,
        env=env,
    )
    (wheel,) = wheels.glob("lowcap_learning-*.whl")

    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base, env=env)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=base,
        env=env,
    )
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base, env=env
    ).stdout.strip()
    dev_site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_dev_venv_dependencies.pth").write_text("\n".join(sorted(dev_site)) + "\n")
    return venv / "bin", wheel


def test_wheel_holds_every_module_and_the_sql(wheel_venv):
    _, wheel = wheel_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"lowcap_learning/{p.relative_to(CHECKOUT / 'pylib' / 'lowcap_learning').as_posix()}"
        for p in (CHECKOUT / "pylib" / "lowcap_learning").rglob("*.py")
    }
    expected |= {f"lowcap_learning/sql/{p.name}" for p in (CHECKOUT / "sql").glob("*.sql")}
    expected |= {
        "lowcap_learning/sql/MANIFEST",
        "lowcap_learning/migrations/env.py",
        "lowcap_learning/migrations/script.py.mako",
    }
    expected |= {
        f"lowcap_learning/migrations/versions/{p.relative_to(CHECKOUT / 'migrations' / 'versions')}"
        for p in (CHECKOUT / "migrations" / "versions").rglob("*")
        if p.suffix in (".py", ".sql")
    }
    assert expected - names == set(), "missing from the wheel (list new subpackages in pyproject.toml)"


def test_installed_wheel_migrates_reports_and_runs_the_demo_from_elsewhere(wheel_venv, tmp_path):
    bin_dir, _ = wheel_venv
    cli = str(bin_dir / "lowcap-learning")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = url_for(f"ll_wheel_{RUN_ID}_{uuid.uuid4().hex[:6]}")
    demo_url = url_for(f"ll_wheel_demo_{RUN_ID}_{uuid.uuid4().hex[:6]}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t0 = time.monotonic()
    try:
        where = run(
            [str(bin_dir / "python"), "-c", "import lowcap_learning.db as d; print(d.__file__, d.SQL_DIR)"],
            cwd=elsewhere,
            env=env,
        ).stdout
        assert str(bin_dir.parent) in where and str(CHECKOUT) not in where, where

        migrated = run([cli, "migrate"], cwd=elsewhere, env=dict(env, DATABASE_URL=url))
        assert "migrated to head" in migrated.stdout
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version_num FROM public.lowcap_learning_alembic_version").fetchone()
            conn.execute(
                "INSERT INTO public.closed_trades (trade_id, timeframe, rpnl_pct, closed_at)"
                " VALUES ('w1', '1h', 4.0, now())"
            )
        status = run([cli, "status", "--json"], cwd=elsewhere, env=dict(env, DATABASE_URL=url))
        assert '"timeframe": "1h"' in status.stdout and '"n": 1' in status.stdout

        trades = elsewhere / "trades.csv"
        trades.write_text(
            "trade_id,timeframe,rpnl_pct,closed_at\n"
            + "".join(f"b{i},{('15m', '1h', '4h')[i % 3]},{(i % 7) - 3},2026-01-01T{i:02d}:00:00Z\n" for i in range(20))
        )
        replayed = run([cli, "backtest", str(trades), "--json"], cwd=elsewhere, env=dict(env, DATABASE_URL=url))
        assert '"capital_weighted_roi"' in replayed.stdout
        trades.unlink()

        demo = run(
            [cli, "demo", "--small", "--out", str(elsewhere / "demo-output")],
            cwd=elsewhere,
            env=dict(env, DATABASE_URL=demo_url),
        )
        assert "per-token totals check" in demo.stdout
        assert (elsewhere / "demo-output" / "allocation.png").stat().st_size > 1000
        assert (elsewhere / "demo-output" / "report.md").read_text().startswith("#")
        assert sorted(p.name for p in elsewhere.iterdir()) == ["demo-output"]  # nothing else written here
    finally:
        db.drop_database(url)
        db.drop_database(demo_url)
    assert time.monotonic() - t0 < 60


def test_installed_migrate_with_a_bad_url_says_one_line(wheel_venv, tmp_path):
    bin_dir, _ = wheel_venv
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bad = dict(env, DATABASE_URL="postgresql://root@127.0.0.1:1/nowhere")
    result = subprocess.run(
        [str(bin_dir / "lowcap-learning"), "migrate"], cwd=tmp_path, env=bad, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
