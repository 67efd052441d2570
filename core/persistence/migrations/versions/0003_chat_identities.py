"""agents' chat identities; thread refs with a purpose

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slack_user_id", sa.String(length=50), nullable=True))
        batch_op.add_column(sa.Column("telegram_user_id", sa.String(length=50), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_agents_slack_user_id"), ["slack_user_id"])
        batch_op.create_unique_constraint(
            batch_op.f("uq_agents_telegram_user_id"), ["telegram_user_id"]
        )
    with op.batch_alter_table("thread_refs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("purpose", sa.String(length=20), server_default="thread", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("thread_refs", schema=None) as batch_op:
        batch_op.drop_column("purpose")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_agents_telegram_user_id"), type_="unique")
        batch_op.drop_constraint(batch_op.f("uq_agents_slack_user_id"), type_="unique")
        batch_op.drop_column("telegram_user_id")
        batch_op.drop_column("slack_user_id")
