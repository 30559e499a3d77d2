"""The report: every figure module's rows in one table, the memory row, then each module's
paragraphs and small tables, rendered through table.py (and, for a full run, notes.md)."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path

from bench.table import FIGURE_HEADERS, Row, Table, markdown, not_measured, status, verdict

SECTIONS = ("trigger", "live", "bulk", "growth", "miner", "strength", "simulation", "runtime")
PARAGRAPH_ORDER = ("growth", "bulk", "live")  # below the table: growth first, then the churn notes
TARGET_MEMORY = "≤ 1 GiB per job"
NOTES = Path(__file__).with_name("notes.md")


def module(section: str):
    return importlib.import_module(f"bench.{section}")


# What a figure module may leave out: a failed or unavailable job's row, its memory, its paragraphs.


def section_rows(section: str, result: dict) -> list[Row]:
    m = module(section)
    if status(result):
        return [not_measured(getattr(m, "FIGURE", section), status(result), getattr(m, "TARGET", ""))]
    return m.rows(result)


def section_memory(section: str, result: dict) -> list[tuple[str, float | None]]:
    m = module(section)
    return m.memory(result) if hasattr(m, "memory") else [(section, result.get("peak_rss_mib"))]


def section_paragraphs(section: str, result: dict) -> list:
    m = module(section)
    return m.paragraphs(result) if hasattr(m, "paragraphs") else []


def memory_row(results: dict, sections: list[str]) -> list[Row]:
    known = [(k, v) for s in sections for k, v in section_memory(s, results[s]) if v is not None]
    if not known:
        return []
    worst = max(v for _, v in known)
    return [
        Row(
            "memory (peak RSS per job)",
            ", ".join(f"{k} {v:.0f} MiB" for k, v in known),
            f"max {worst:.0f} MiB",
            TARGET_MEMORY,
            verdict(worst <= 1024),
        )
    ]


def header(results: dict, command: str) -> list[str]:
    m = results["machine"]
    settings = ", ".join(f"{k}={v}" for k, v in sorted(m["settings"].items()))
    return [
        "# Benchmarks",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` (one fresh database, dropped after).",
        f"Machine: {m['nproc']} cores, {m['memory']} memory, load average {m.get('load_start', '?')} at the"
        f" start and {m.get('load_end', '?')} at the end, PostgreSQL {m['postgresql']} ({settings}),"
        f" Python {m['python']}, {m['platform']}.",
        f"SQL: {m.get('sql', '?')}.",
    ]


def held_back(results: dict) -> list[str]:
    held = {k: v for k, v in (results.get("other_xact_age") or {}).items() if v > 1}
    if not held:
        return []
    ages = ", ".join(f"{k} {v:.0f}" for k, v in held.items())
    return [
        f"Another database's transaction was open (its age in s at the end of the section: {ages}); its"
        " snapshot holds back pruning in every database, so rewritten rows pile up."
    ]


def render(results: dict, command: str, notes: bool = False) -> str:
    sections = [s for s in SECTIONS if s in results]
    rows = [row for s in sections for row in section_rows(s, results[s])] + memory_row(results, sections)
    below = [p for s in PARAGRAPH_ORDER if s in results for p in section_paragraphs(s, results[s])]
    blocks = [*header(results, command), markdown(FIGURE_HEADERS, rows), *held_back(results)]
    blocks += [markdown(*p) if isinstance(p, Table) else p for p in below]
    text = "\n\n".join(blocks) + "\n"
    return text + "\n" + NOTES.read_text() if notes else text
