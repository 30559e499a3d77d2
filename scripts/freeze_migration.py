"""Freeze the canonical sql/ into the migration that applies it (run: make freeze).

Nothing has shipped before revision 0001, so it is regenerated in place; once a release ships, a new
revision freezes only what changed and 0001 stays as it is.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))

from lowcap_learning.db import MIGRATIONS_DIR, canonical_sql  # noqa: E402

HEADER = "-- FROZEN by scripts/freeze_migration.py from sql/MANIFEST: do not edit; edit sql/ and re-freeze.\n"
TARGET = MIGRATIONS_DIR / "versions" / "sql" / "0001_upgrade.sql"


def frozen_text() -> str:
    return HEADER + canonical_sql()


if __name__ == "__main__":
    check = "--check" in sys.argv
    if check:
        if not TARGET.exists() or TARGET.read_text() != frozen_text():
            sys.exit("migrations/versions/sql/0001_upgrade.sql is stale: run `make freeze`")
        print("frozen migration matches sql/")
    else:
        TARGET.write_text(frozen_text())
        print(f"wrote {TARGET.relative_to(MIGRATIONS_DIR.parent)}")
