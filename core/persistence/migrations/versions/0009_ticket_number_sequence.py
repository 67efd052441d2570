"""PostgreSQL: ticket numbers from a sequence, so concurrent intakes do not queue on a counter row

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one writer at a time: its counter row costs nothing extra
    op.execute("CREATE SEQUENCE ticket_numbers")
    op.execute(
        "SELECT setval('ticket_numbers', GREATEST("
        "(SELECT COALESCE(MAX(number), 0) FROM tickets), "
        "(SELECT COALESCE(MAX(value), 0) FROM counters WHERE name = 'ticket')) + 1, false)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "INSERT INTO counters (name, value) SELECT 'ticket', COALESCE(MAX(number), 0) "
        "FROM tickets ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
    )
    op.execute("DROP SEQUENCE ticket_numbers")
