"""The learning engine: schema learning, shared tables adopted or created, triggers, functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from pathlib import Path

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FROZEN = Path(__file__).resolve().parent / "sql"


def run_frozen(name: str) -> None:
    """Run a frozen SQL file on alembic's connection, in its transaction, without parameter parsing."""
    driver = op.get_bind().connection.driver_connection
    driver.execute((FROZEN / name).read_bytes())


def upgrade() -> None:
    run_frozen("0001_upgrade.sql")


def downgrade() -> None:
    run_frozen("0001_downgrade.sql")
