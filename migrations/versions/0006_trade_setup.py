"""A one-trade transaction sets up less: the fold's weights computed once, series read in place, the
tunables in effect kept in learning.effective_tunables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FROZEN = Path(__file__).resolve().parent / "sql"


def run_frozen(name: str) -> None:
    """Run a frozen SQL file on alembic's connection, in its transaction, without parameter parsing."""
    driver = op.get_bind().connection.driver_connection
    driver.execute((FROZEN / name).read_bytes())


def upgrade() -> None:
    run_frozen("0006_upgrade.sql")


def downgrade() -> None:
    run_frozen("0006_downgrade.sql")
