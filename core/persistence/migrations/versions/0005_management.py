"""routing, assignment, SLA clocks, tasks, dashboard sign-in and the scheduler's job store

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("teams", sa.Column("last_assigned_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("agents") as agents:
        agents.add_column(sa.Column("region", sa.String(50), nullable=False, server_default=""))
        agents.add_column(sa.Column("away", sa.Boolean(), nullable=False, server_default="0"))
        agents.add_column(
            sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC")
        )
        agents.add_column(
            sa.Column("working_days", sa.String(50), nullable=False, server_default="")
        )
        agents.add_column(
            sa.Column("working_hours", sa.String(20), nullable=False, server_default="")
        )
        agents.add_column(sa.Column("password_hash", sa.String(200), nullable=True))
    with op.batch_alter_table("tickets") as tickets:
        tickets.add_column(
            sa.Column("kind", sa.String(10), nullable=False, server_default="ticket")
        )
        tickets.add_column(sa.Column("sla_policy", sa.String(100), nullable=True))
        tickets.add_column(sa.Column("sla_fired", sa.JSON(), nullable=False, server_default="[]"))
        tickets.add_column(sa.Column("paused_since", UtcDateTime, nullable=True))
    op.create_index("ix_tickets_status_priority", "tickets", ["status", "priority"])
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_index("ix_apscheduler_jobs_next_run_time", table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")
    op.drop_index("ix_tickets_status_priority", table_name="tickets")
    with op.batch_alter_table("tickets") as tickets:
        for name in ("paused_since", "sla_fired", "sla_policy", "kind"):
            tickets.drop_column(name)
    with op.batch_alter_table("agents") as agents:
        for name in (
            "password_hash",
            "working_hours",
            "working_days",
            "timezone",
            "away",
            "region",
        ):
            agents.drop_column(name)
    op.drop_column("teams", "last_assigned_id")
