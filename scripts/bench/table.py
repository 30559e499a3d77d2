"""Markdown from data: the report's tables and the number formats of its cells."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple


class Row(NamedTuple):
    """One row of the figures table."""

    figure: str
    measured: str
    value: str = ""
    target: str = ""
    verdict: str = ""


class Table(NamedTuple):
    """A small table a figure adds below the figures table."""

    headers: Sequence[str]
    rows: Sequence[Sequence[object]]


FIGURE_HEADERS = ("figure", "measured", "ratio / value", "target", "verdict")


def markdown(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; each cell as str() of its value."""
    lines = [_line(headers), "|" + "---|" * len(headers)]
    lines += [_line(row) for row in rows]
    return "\n".join(lines)


def _line(cells: Iterable[object]) -> str:
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def filled(templates: Sequence[Row], values: dict) -> list[Row]:
    """The rows of str.format templates (each cell a template) filled from one figure's values."""
    return [Row(*(cell.format(**values) for cell in template)) for template in templates]


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def seconds_list(values: Iterable[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def not_measured(figure: str, status: str, target: str = "") -> Row:
    """The row of a figure whose job failed or whose function is not built."""
    return Row(figure, status, "", target, "n/a")


def status(result) -> str | None:
    """A job's status when it did not measure (failed, or not available yet), else None."""
    return result.get("status") if isinstance(result, dict) else None


def not_compared(figure: str, sql_result: dict, pandas_result: dict, target: str) -> Row | None:
    """The row of a SQL-vs-pandas figure when either side did not measure, else None."""
    if not (status(sql_result) or status(pandas_result)):
        return None
    sql_text = status(sql_result) or sql_result.get("seconds")
    pandas_text = status(pandas_result) or pandas_result.get("seconds")
    return not_measured(figure, f"{sql_text} (pandas {pandas_text})", target)
