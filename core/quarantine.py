"""Inbound data we could not turn into a message is kept raw with the reason, never dropped.

Admins list it, read the raw bytes, and re-process an entry once the cause is fixed (a newer
parser, a repaired setting); the entry then records when and into which ticket it went.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from core.errors import Conflict, NotFound
from core.persistence.models import Quarantine, table_of

quarantine = table_of(Quarantine)


def keep(conn: Connection, *, channel: str, reason: str, raw: bytes, now: datetime) -> int:
    return int(
        conn.execute(
            insert(quarantine)
            .values(channel=channel, reason=reason[:5000], raw=raw, created_at=now)
            .returning(quarantine.c.id)
        ).scalar_one()
    )


def entries(conn: Connection, *, pending_only: bool, limit: int) -> list[Any]:
    query = select(
        quarantine.c.id,
        quarantine.c.channel,
        quarantine.c.reason,
        quarantine.c.created_at,
        quarantine.c.processed_at,
    )
    if pending_only:
        query = query.where(quarantine.c.processed_at.is_(None))
    return list(conn.execute(query.order_by(quarantine.c.id.desc()).limit(limit)).all())


def entry(conn: Connection, entry_id: int) -> Any:
    row = conn.execute(select(quarantine).where(quarantine.c.id == entry_id)).first()
    if row is None:
        raise NotFound(f"quarantine entry {entry_id} not found")
    return row


def mark_processed(conn: Connection, entry_id: int, now: datetime, outcome: str) -> None:
    done = conn.execute(
        update(quarantine)
        .where(quarantine.c.id == entry_id, quarantine.c.processed_at.is_(None))
        .values(processed_at=now, reason=quarantine.c.reason + f" | re-processed: {outcome}")
    ).rowcount
    if not done:
        raise Conflict(f"quarantine entry {entry_id} was already re-processed")
