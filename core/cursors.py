"""Adapters' positions in their channels, kept in the database so a restart resumes exactly."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from core.persistence.models import ChannelCursor, table_of
from core.persistence.records import insert_ignoring_duplicates

cursors = table_of(ChannelCursor)


def load(conn: Connection, name: str) -> str | None:
    return conn.execute(select(cursors.c.value).where(cursors.c.name == name)).scalar()


def save(conn: Connection, name: str, value: str, now: datetime) -> None:
    if not insert_ignoring_duplicates(
        conn, cursors, {"name": name, "value": value, "updated_at": now}
    ):
        conn.execute(
            update(cursors).where(cursors.c.name == name).values(value=value, updated_at=now)
        )
