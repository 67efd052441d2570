"""Inbound data we could not turn into a message is kept raw with the reason, never dropped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert

from core.persistence.models import Quarantine, table_of

quarantine = table_of(Quarantine)


def keep(conn: Connection, *, channel: str, reason: str, raw: bytes, now: datetime) -> int:
    return int(
        conn.execute(
            insert(quarantine)
            .values(channel=channel, reason=reason, raw=raw, created_at=now)
            .returning(quarantine.c.id)
        ).scalar_one()
    )
