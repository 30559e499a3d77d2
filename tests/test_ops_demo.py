"""The demo: seeded, so two runs print the same figures; the plot is a valid PNG; the report is complete."""

from __future__ import annotations

import struct
import zlib

from conftest import RUN_ID, url_for
from lowcap_learning import demo


def png_ok(data: bytes) -> tuple[int, int]:
    """Check the PNG signature and every chunk's CRC up to IEND; return (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    return struct.unpack(">II", data[16:24])


def test_demo_twice_same_figures_and_a_valid_png(template_db, tmp_path, capsys):
    url = url_for(f"ll_ops_demo_{RUN_ID}")
    try:
        first = demo.main(url=url, small=True, out_dir=tmp_path / "one", seed=3, template=template_db)
        second = demo.main(url=url, small=True, out_dir=tmp_path / "two", seed=3, template=template_db)
    finally:
        demo.drop_database(url)
    assert first.stdout == second.stdout
    printed = capsys.readouterr().out
    assert printed == "\n".join(first.stdout + second.stdout) + "\n"
    lines = first.stdout
    path = [line for line in lines if line.startswith("  start") or line.startswith("  end (")]
    assert path[0].endswith("0.1500  0.5000  0.3500") and path[1].startswith("  end (120)")
    assert any(line.startswith("per-token totals check: 8 tokens") and line.endswith(": ok") for line in lines)
    width, height = png_ok((tmp_path / "one" / "allocation.png").read_bytes())
    assert (width, height) == (1000, 500)
    report = (tmp_path / "one" / "report.md").read_text()
    for heading in ("## Allocation path", "## What the allocation learned, and why", "## Tuning overrides chosen",
                    "## Strength overrides", "## Runtime application", "## Learning log"):
        assert heading in report
    assert "| timeframe | n | ROI (90 d) | effective n | std error | z | desired share |" in report
    assert report == (tmp_path / "two" / "report.md").read_text()


def test_demo_never_recreates_a_database_not_named_demo():
    assert demo.demo_database_url("postgresql://u@h:5432/production").endswith("/lowcap_learning_demo")
    assert demo.demo_database_url("postgresql://u@h:5432/my_demo") == "postgresql://u@h:5432/my_demo"
    assert "dbname=lowcap_learning_demo" in demo.demo_database_url("host=h dbname=prod")
