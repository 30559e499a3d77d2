"""Strength facts: the unread (pattern_key, timestamp) index goes; facts written unsorted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FROZEN = Path(__file__).resolve().parent / "sql"


def run_frozen(name: str) -> None:
    """Run a frozen SQL file on alembic's connection, in its transaction, without parameter parsing."""
    driver = op.get_bind().connection.driver_connection
    driver.execute((FROZEN / name).read_bytes())


def upgrade() -> None:
    run_frozen("0005_upgrade.sql")


def downgrade() -> None:
    run_frozen("0005_downgrade.sql")
