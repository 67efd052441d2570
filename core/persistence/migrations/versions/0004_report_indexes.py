"""indexes for the KPI reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, table, columns): each one serves a KPI query (see core/reports.py, bench/reports.py)
INDEXES = [
    # resolution time, first-contact resolution, CSAT response rate, daily flow: by resolved_at
    ("ix_tickets_resolved_at", "tickets", ["resolved_at"]),
    # KB gaps and time in status: the period's events of one kind
    ("ix_ticket_events_kind_at", "ticket_events", ["kind", "at"]),
    # replies per ticket (first-contact resolution), deflected/opened checks: index-only
    ("ix_ticket_events_ticket_kind", "ticket_events", ["ticket_id", "kind"]),
    # CSAT and NPS answers of the period
    ("ix_survey_responses_kind_created", "survey_responses", ["kind", "created_at"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
