"""tickets.sla_next_check: the SLA sweep reads only the tickets whose check time has come

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("sla_next_check", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_tickets_sla_next_check", "tickets", ["sla_next_check"])
    # open tickets under a policy are looked at by the first sweep, which sets the exact time
    op.execute(
        "UPDATE tickets SET sla_next_check = created_at WHERE sla_policy IS NOT NULL "
        "AND status IN ('new', 'open', 'pending')"
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_sla_next_check", table_name="tickets")
    op.drop_column("tickets", "sla_next_check")
