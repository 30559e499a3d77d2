"""Trust on a live database: functions pin search_path = pg_catalog, pg_temp; bounded input and
jobs; the bot's position writes always win; tunables that cannot stop trading.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from pathlib import Path

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FROZEN = Path(__file__).resolve().parent / "sql"


def run_frozen(name: str) -> None:
    """Run a frozen SQL file on alembic's connection, in its transaction, without parameter parsing."""
    driver = op.get_bind().connection.driver_connection
    driver.execute((FROZEN / name).read_bytes())


def upgrade() -> None:
    run_frozen("0002_upgrade.sql")


def downgrade() -> None:
    # Remove what 0002 added, then re-apply 0001's definitions over what is left.
    run_frozen("0002_downgrade.sql")
    run_frozen("0001_upgrade.sql")
