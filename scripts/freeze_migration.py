"""Freeze the canonical sql/ into the unreleased head revision (run: make freeze); check the rest.

Released revisions never change: their upgrade scripts are checked against the digests below. The
head revision is not released until it lands, so its upgrade script is regenerated from sql/: the
whole canonical schema, which is written to re-apply over the previous revision (CREATE OR REPLACE,
IF NOT EXISTS, grants re-derived). A revision that must move data or drop an object says so in its
own hand-written prologue, frozen ahead of the generated part. `make test` proves `upgrade head`
builds exactly what sql/ builds.
"""

import hashlib
import sys
from pathlib import Path

from lowcap_learning.db import MIGRATIONS_DIR, canonical_sql

CHECKOUT = Path(__file__).resolve().parents[1]
if Path(str(MIGRATIONS_DIR)).resolve() != CHECKOUT / "migrations":
    # sql/ and migrations/ are read through the installed package: it must be this checkout, editable.
    sys.exit(f"lowcap_learning is installed from {MIGRATIONS_DIR}, not from this checkout: run `make deps`")
FROZEN_DIR = CHECKOUT / "migrations" / "versions" / "sql"
HEADER = "-- FROZEN by scripts/freeze_migration.py from sql/MANIFEST: do not edit; edit sql/ and re-freeze.\n"

# Released upgrade scripts: name -> sha256 of the file as it shipped.
RELEASED = {
    "0001_upgrade.sql": "69c18538e9d1d556b584d5f9783e25340296861e6083f8f9e43ab0f07fd46092",
}
HEAD = "0002_upgrade.sql"
HEAD_PROLOGUE = FROZEN_DIR / "0002_prologue.sql"


def frozen_text() -> str:
    prologue = HEAD_PROLOGUE.read_text() if HEAD_PROLOGUE.exists() else ""
    return HEADER + prologue + canonical_sql()


def problems() -> list[str]:
    found = []
    for name, digest in RELEASED.items():
        path = FROZEN_DIR / name
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            found.append(f"migrations/versions/sql/{name} was released and must not change")
    head = FROZEN_DIR / HEAD
    if not head.exists() or head.read_text() != frozen_text():
        found.append(f"migrations/versions/sql/{HEAD} is stale: run `make freeze`")
    return found


if __name__ == "__main__":
    if "--check" in sys.argv:
        found = problems()
        if found:
            sys.exit("\n".join(found))
        print("released migrations unchanged; head migration matches sql/")
    else:
        (FROZEN_DIR / HEAD).write_text(frozen_text())
        print(f"wrote {(FROZEN_DIR / HEAD).relative_to(CHECKOUT)}")
