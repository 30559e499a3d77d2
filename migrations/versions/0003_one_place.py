"""One place per rule: the allocation trigger, the miners and the runtime steering as named steps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FROZEN = Path(__file__).resolve().parent / "sql"


def run_frozen(name: str) -> None:
    """Run a frozen SQL file on alembic's connection, in its transaction, without parameter parsing."""
    driver = op.get_bind().connection.driver_connection
    driver.execute((FROZEN / name).read_bytes())


def upgrade() -> None:
    run_frozen("0003_upgrade.sql")


def downgrade() -> None:
    run_frozen("0003_downgrade.sql")
