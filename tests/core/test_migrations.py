"""Alembic migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.models import Base


def test_migrations_match_the_models(db_url: str) -> None:
    db = open_database(db_url)
    upgrade(db)
    upgrade(db)  # applying twice is a no-op

    def diff(conn: Connection) -> list:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    assert db.run_sync(diff) == []
    tables = set(db.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"tickets", "messages", "outbox", "inbound_receipts", "ticket_events"} <= tables
