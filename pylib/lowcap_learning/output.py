"""`--json` output: one shape for every command. Timestamps are ISO-8601 in UTC with a `Z`
(2025-03-02T00:09:00Z, fractions of a second when there are any), whether they come from Python
(datetime) or from the database inside JSON values (to_jsonb(timestamptz) follows the session TimeZone)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal

import click

# `--json` of every command that prints a table otherwise: one spelling, one help text.
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)$")


def iso(value: datetime) -> str:
    """A datetime as ISO-8601 UTC (a naive one is taken as UTC)."""
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _normalize(value):
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and _TIMESTAMP.match(value):
        try:
            return iso(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def dumps(data, **kwargs) -> str:
    """json.dumps with every timestamp in ISO-8601 UTC; other non-JSON values as text."""
    return json.dumps(_normalize(data), default=str, **kwargs)
