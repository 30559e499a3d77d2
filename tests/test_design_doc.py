"""docs/design.md stays true to the code (design §1-§18), and code cites the design, not history.

Every `Lives in:` line of docs/design.md names a file and, optionally after an em dash, the functions
or classes it holds:

    Lives in: sql/020_allocation.sql — learning.allocation_step, learning.evidence_split
    Lives in: pylib/lowcap_learning/runtime.py — apply_strength_overrides, StrengthResult
    Lives in: sql/090_roles.sql

An SQL name must be created in that file (`CREATE [OR REPLACE] FUNCTION learning.NAME`); a Python
name must be a `def` or `class` there (module level or a method). Comments and docstrings under
sql/, pylib/, scripts/ and tests/ cite `design §N`; they never cite sessions, review rounds or the
retired decision log.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
SECTIONS = range(1, 19)

LIVES_IN = re.compile(r"^Lives in:\s*(?P<path>\S+)(?:\s*[—-]+\s*(?P<names>.+))?\s*$")


def lives_in_lines() -> list[tuple[int, str, list[str]]]:
    """(line number, path, names) of every `Lives in:` line of docs/design.md."""
    out = []
    for number, line in enumerate(DESIGN.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith("Lives in:"):
            continue
        match = LIVES_IN.match(line)
        assert match, f"docs/design.md:{number}: unreadable Lives in line: {line!r}"
        names = [n.strip().strip("`") for n in (match["names"] or "").split(",") if n.strip()]
        out.append((number, match["path"].strip("`"), names))
    return out


def defines(path: Path, name: str) -> bool:
    """Whether the file creates the SQL function or defines the Python def/class `name`."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".sql":
        bare = name.removeprefix("learning.")
        pattern = rf"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+learning\.{re.escape(bare)}\s*\("
        return re.search(pattern, text, re.IGNORECASE) is not None
    pattern = rf"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+{re.escape(name)}\b"
    return re.search(pattern, text, re.MULTILINE) is not None


def test_every_section_exists_in_order():
    headings = re.findall(r"^## §(\d+) ", DESIGN.read_text(encoding="utf-8"), re.MULTILINE)
    assert [int(n) for n in headings] == list(SECTIONS), f"design.md sections: {headings}"


def test_every_lives_in_line_names_what_exists():
    lines = lives_in_lines()
    assert len(lines) >= len(SECTIONS), "every section says where its rule lives"
    problems = []
    for number, rel, names in lines:
        path = ROOT / rel
        if not path.is_file():
            problems.append(f"docs/design.md:{number}: {rel} does not exist")
            continue
        if path.suffix == ".sql":
            bad = [n for n in names if not n.startswith("learning.")]
            problems += [f"docs/design.md:{number}: {n} is not schema-qualified (learning.NAME)" for n in bad]
        problems += [f"docs/design.md:{number}: {rel} defines no {name}" for name in names if not defines(path, name)]
    assert not problems, "\n".join(problems)


def test_each_section_says_where_it_lives():
    text = DESIGN.read_text(encoding="utf-8")
    parts = re.split(r"^## §\d+ ", text, flags=re.MULTILINE)[1:]
    missing = [i for i, part in enumerate(parts, start=1) if not re.search(r"^Lives in:", part, re.MULTILINE)]
    assert not missing, f"sections without a Lives in line: {missing}"


# -------------------------------------------------------------------------------------------------
# Citations: comments and docstrings cite design sections, not the history that produced them.

HISTORY = re.compile(
    r"\b(?:stop|issue|contract)s?\s+#?\d+\b|docs/decisions\.md|\bdecisions\.md\b",
    re.IGNORECASE,
)
SPEC_CITATION = re.compile(r"\bSPEC\s*(?:§\s*)?\d+|\bSPEC\s+section\s+\d+|\bSPEC\.md\b")
SCANNED = ("sql", "pylib", "scripts", "tests")
SELF = Path(__file__).resolve()


_STATEMENT_START = (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING)


def _python_comments(text: str):
    """(line, text) of every comment and docstring of a Python source."""
    previous = tokenize.NEWLINE
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            docstring = tok.type == tokenize.STRING and previous in _STATEMENT_START
            if tok.type == tokenize.COMMENT or docstring:
                yield tok.start[0], tok.string
            if tok.type not in (tokenize.COMMENT, tokenize.NL):
                previous = tok.type
    except (tokenize.TokenError, SyntaxError):
        yield from enumerate(text.splitlines(), start=1)


def _sql_comments(text: str):
    """(line, text) of every `--` comment and COMMENT ON string of an SQL file."""
    in_comment_on = False
    for number, line in enumerate(text.splitlines(), start=1):
        if "--" in line:
            yield number, line[line.index("--") :]
        in_comment_on = in_comment_on or re.match(r"\s*COMMENT ON\b", line, re.IGNORECASE) is not None
        if in_comment_on:
            yield number, line
            in_comment_on = not line.rstrip().endswith(";")


def _comments():
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.resolve() == SELF or path.suffix not in (".py", ".sql"):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            source = _sql_comments(text) if path.suffix == ".sql" else _python_comments(text)
            for number, comment in source:
                yield path.relative_to(ROOT), number, comment


def _citations(pattern: re.Pattern) -> list[str]:
    found = []
    for rel, number, comment in _comments():
        for match in pattern.finditer(comment):
            line = number + comment.count("\n", 0, match.start())
            found.append(f"{rel}:{line}: {match.group(0)!r}")
    return found


def test_no_comment_cites_stops_issues_contracts_or_the_decision_log():
    found = _citations(HISTORY)
    assert not found, "cite `design §N` instead:\n" + "\n".join(found[:200])


@pytest.mark.parametrize("pattern", [SPEC_CITATION], ids=["spec-sections"])
def test_no_comment_cites_the_spec_by_section(pattern):
    found = _citations(pattern)
    assert not found, "state the rule or cite `design §N` instead:\n" + "\n".join(found[:200])
