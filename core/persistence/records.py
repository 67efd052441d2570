"""Small write helpers shared by the use cases; each runs inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.persistence.models import (
    Counter,
    InboundReceipt,
    OutboxRow,
    Ticket,
    TicketEvent,
)
from core.persistence.models import (
    ThreadRef as ThreadRefRow,
)

tickets = Ticket.__table__
history = TicketEvent.__table__
outbox = OutboxRow.__table__
receipts = InboundReceipt.__table__
thread_refs = ThreadRefRow.__table__
counters = Counter.__table__


def insert_ignoring_duplicates(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
    """INSERT that does nothing on a unique conflict; True when a row was written."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing()
    return conn.execute(stmt).rowcount == 1


def next_number(conn: Connection, name: str = "ticket") -> int:
    """The next value of a named counter (row-locked, so unique across processes)."""
    value = conn.execute(
        update(counters)
        .where(counters.c.name == name)
        .values(value=counters.c.value + 1)
        .returning(counters.c.value)
    ).scalar()
    if value is None:
        insert_ignoring_duplicates(conn, counters, {"name": name, "value": 0})
        return next_number(conn, name)
    return int(value)


def record(
    conn: Connection,
    ticket_id: int,
    *,
    at: datetime,
    actor: str,
    kind: str,
    reason: str = "",
    **data: Any,
) -> None:
    """Append one entry to the ticket's history."""
    conn.execute(
        insert(history).values(
            ticket_id=ticket_id, at=at, actor=actor, kind=kind, data=data, reason=reason[:500]
        )
    )


def add_thread_ref(conn: Connection, channel: str, ref: str, ticket_id: int) -> None:
    insert_ignoring_duplicates(
        conn, thread_refs, {"channel": channel, "ref": ref[:500], "ticket_id": ticket_id}
    )


def find_thread(conn: Connection, channel: str, refs: tuple[str, ...]) -> int | None:
    """The ticket one of these thread refs belongs to (the most recent ref wins)."""
    if not refs:
        return None
    rows = conn.execute(
        select(thread_refs.c.ref, thread_refs.c.ticket_id).where(
            thread_refs.c.channel == channel, thread_refs.c.ref.in_([r[:500] for r in refs])
        )
    ).all()
    by_ref = {row.ref: row.ticket_id for row in rows}
    for ref in reversed(refs):
        if ref[:500] in by_ref:
            return int(by_ref[ref[:500]])
    return None


def touch(conn: Connection, ticket_id: int, now: datetime, **values: Any) -> None:
    conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(updated_at=now, **values))
