"""Each rule reads as one short function (design §1): no SQL function of sql/ over 120 lines and no
Python function of pylib/ or scripts/ over 80; a longer one is split into named steps."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQL_LIMIT, PYTHON_LIMIT = 120, 80
SQL_START = re.compile(r"\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\s+([\w.]+)", re.I)
SQL_END = re.compile(r".*\$\w*\$\s*;\s*$")


def sql_functions(path: Path):
    """(name, lines) of each dollar-quoted function of an SQL file, from its CREATE line to its closing quote
    (SQL-standard bodies are a few lines each)."""
    start = None
    for i, line in enumerate(path.read_text().splitlines()):
        if m := SQL_START.match(line):
            start = (i, m.group(1))
        elif start and SQL_END.match(line):
            yield start[1], i - start[0] + 1
            start = None


def python_functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_sql_functions_are_short():
    files = sorted((ROOT / "sql").glob("*.sql"))
    found = [(f.name, name, n) for f in files for name, n in sql_functions(f)]
    assert len(found) > 50, "the parser found the dollar-quoted functions"
    assert not [x for x in found if x[2] > SQL_LIMIT]


def test_python_functions_are_short():
    files = sorted([*(ROOT / "pylib").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])
    found = [(str(f.relative_to(ROOT)), name, n) for f in files for name, n in python_functions(f)]
    assert len(found) > 300, "the parser found the functions"
    assert not [x for x in found if x[2] > PYTHON_LIMIT]
