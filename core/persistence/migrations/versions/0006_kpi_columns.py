"""numbers the KPI reports need, written with the ticket; covering indexes for the reports

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

History rows get their status change as columns (``previous_status``, ``current_status``),
tickets their agent replies, first-response and resolution seconds and the deflected flag, so
the dashboard reads narrow indexes instead of ticket rows, JSON and per-ticket counts (see
core/reports.py, bench/reports.py). Existing rows are backfilled with set-based UPDATEs, so an
old database reports the very same numbers.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILTERS = ["team_id", "assignee_id", "channel", "priority"]
FLAG = ["deflected"]
# (name, table, columns) created; (name, table, columns) they replace
INDEXES = [
    (
        "ix_tickets_created_report",
        "tickets",
        ["created_at", *FILTERS, "first_response_seconds", "resolved_at", "reopen_count", *FLAG],
    ),
    (
        "ix_tickets_resolved_report",
        "tickets",
        ["resolved_at", *FILTERS, "resolution_seconds", "agent_replies", "reopen_count", *FLAG],
    ),
    ("ix_tickets_status_updated", "tickets", ["status", "updated_at", *FILTERS]),
    (
        "ix_ticket_events_kind_status",
        "ticket_events",
        ["kind", "current_status", "previous_status", "at"],
    ),
    (
        "ix_ticket_events_ticket_kind",
        "ticket_events",
        ["ticket_id", "kind", "at", "current_status", "previous_status"],
    ),
]
REPLACED = [
    ("ix_tickets_created_at", "tickets", ["created_at"]),
    ("ix_tickets_resolved_at", "tickets", ["resolved_at"]),
    ("ix_tickets_status_updated", "tickets", ["status", "updated_at"]),
    ("ix_ticket_events_kind_at", "ticket_events", ["kind", "at"]),
    ("ix_ticket_events_ticket_kind", "ticket_events", ["ticket_id", "kind"]),
]

tickets = sa.table(
    "tickets",
    sa.column("id", sa.Integer),
    sa.column("created_at", sa.DateTime),
    sa.column("first_response_at", sa.DateTime),
    sa.column("resolved_at", sa.DateTime),
    sa.column("agent_replies", sa.Integer),
    sa.column("first_response_seconds", sa.Float),
    sa.column("resolution_seconds", sa.Float),
    sa.column("deflected", sa.Boolean),
)
events = sa.table(
    "ticket_events",
    sa.column("ticket_id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("data", sa.JSON),
    sa.column("previous_status", sa.String),
    sa.column("current_status", sa.String),
)


def _seconds(later: Any, earlier: Any) -> Any:
    """``later - earlier`` in seconds, exactly what Python's ``timedelta.total_seconds()`` gives
    (the value the writers store): whole microseconds, divided once."""
    if op.get_bind().dialect.name == "sqlite":
        # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC); julianday() is only ~50 us exact
        def micros(v: Any) -> Any:
            whole = sa.cast(sa.func.strftime("%s", v), sa.Integer) * 1_000_000
            return whole + sa.cast(sa.func.substr(v, 21, 6), sa.Integer)

        return (micros(later) - micros(earlier)) / sa.literal(1_000_000.0)
    return sa.cast(sa.extract("epoch", later - earlier), sa.Float)


def upgrade() -> None:
    op.add_column("ticket_events", sa.Column("previous_status", sa.String(20), nullable=True))
    op.add_column("ticket_events", sa.Column("current_status", sa.String(20), nullable=True))
    op.add_column(
        "tickets", sa.Column("agent_replies", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("tickets", sa.Column("first_response_seconds", sa.Float(), nullable=True))
    op.add_column("tickets", sa.Column("resolution_seconds", sa.Float(), nullable=True))
    op.add_column(
        "tickets", sa.Column("deflected", sa.Boolean(), nullable=False, server_default="0")
    )

    op.execute(events.update().where(events.c.kind == "opened").values(current_status="new"))
    op.execute(
        events.update()
        .where(events.c.kind == "status")
        .values(
            previous_status=events.c.data["previous"].as_string(),
            current_status=events.c.data["current"].as_string(),
        )
    )
    c = tickets.c
    op.execute(
        tickets.update()
        .where(c.first_response_at.is_not(None))
        .values(first_response_seconds=_seconds(c.first_response_at, c.created_at))
    )
    op.execute(
        tickets.update()
        .where(c.resolved_at.is_not(None))
        .values(resolution_seconds=_seconds(c.resolved_at, c.created_at))
    )
    replied = events.alias("replied")
    op.execute(
        tickets.update()
        .where(sa.exists().where(replied.c.ticket_id == c.id, replied.c.kind == "replied"))
        .values(
            agent_replies=sa.select(sa.func.count())
            .where(replied.c.ticket_id == c.id, replied.c.kind == "replied")
            .scalar_subquery()
        )
    )
    op.execute(
        tickets.update()
        .where(c.id.in_(sa.select(events.c.ticket_id).where(events.c.kind == "deflected")))
        .values(deflected=True)
    )

    for name, table, _ in REPLACED:
        op.drop_index(name, table_name=table)
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for name, table, columns in REPLACED:
        op.create_index(name, table, columns)
    with op.batch_alter_table("tickets") as batch:
        for name in ("deflected", "resolution_seconds", "first_response_seconds", "agent_replies"):
            batch.drop_column(name)
    with op.batch_alter_table("ticket_events") as batch:
        for name in ("current_status", "previous_status"):
            batch.drop_column(name)
