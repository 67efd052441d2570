"""Small write helpers shared by the use cases; each runs inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, select, text, update
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ClauseElement

from core.persistence.models import (
    Counter,
    InboundReceipt,
    OutboxRow,
    Ticket,
    TicketEvent,
    table_of,
)
from core.persistence.models import (
    ThreadRef as ThreadRefRow,
)
from core.persistence.prepared import Prepared

tickets = table_of(Ticket)
history = table_of(TicketEvent)
outbox = table_of(OutboxRow)
receipts = table_of(InboundReceipt)
thread_refs = table_of(ThreadRefRow)
counters = table_of(Counter)


class InsertIgnoring(Insert):
    """``INSERT ... ON CONFLICT DO NOTHING``: the same SQL on SQLite and PostgreSQL.

    The dialects' own ``insert().on_conflict_do_nothing()`` opts out of SQLAlchemy's statement
    cache, so it was compiled on every execution (the costliest step of an intake). This one only
    fixes the clause after VALUES, which is part of the cache key, so it is cached like any
    plain INSERT (RETURNING still goes after the clause).
    """

    inherit_cache = True
    _post_values_clause = text("ON CONFLICT DO NOTHING")


_insert_ignoring: dict[Table, Prepared] = {}


def insert_ignoring_duplicates(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT that does nothing on a unique conflict; True when a row was written."""
    stmt = _insert_ignoring.get(table)
    if stmt is None:  # one statement per table, compiled once
        stmt = _insert_ignoring[table] = Prepared(InsertIgnoring(table))
    return stmt.run(conn, values).rowcount == 1


# Hot statements are built once and run through Prepared (see core/persistence/prepared.py).
_NEXT_NUMBER = Prepared(
    update(counters)
    .where(counters.c.name == bindparam("counter"))
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)
_INSERT_HISTORY = Prepared(insert(history))
_DEFLECTED = Prepared(
    update(tickets).where(tickets.c.id == bindparam("ticket_id")).values(deflected=True)
)
_THREAD_REF_COLUMNS = (thread_refs.c.ref, thread_refs.c.ticket_id, thread_refs.c.purpose)
# Not Prepared: its expanding IN (...) parameter is rendered per call by SQLAlchemy.
_THREAD_REFS = select(*_THREAD_REF_COLUMNS).where(
    thread_refs.c.channel == bindparam("channel"),
    thread_refs.c.ref.in_(bindparam("refs", expanding=True)),
)
# The usual reply names a few refs: one Prepared statement per count, with a fixed IN list.
_PREPARED_REFS_MAX = 12
_thread_refs_by_count: dict[int, Prepared] = {}


def _thread_refs_query(count: int) -> Prepared:
    stmt = _thread_refs_by_count.get(count)
    if stmt is None:
        stmt = _thread_refs_by_count[count] = Prepared(
            select(*_THREAD_REF_COLUMNS).where(
                thread_refs.c.channel == bindparam("channel"),
                thread_refs.c.ref.in_([bindparam(f"ref{i}") for i in range(count)]),
            )
        )
    return stmt


# The next ticket number, as an SQL expression an INSERT can take in place (one statement
# fewer): ``insert(tickets).values(number=TICKET_NUMBER[dialect])``. See next_number.
TICKET_NUMBER = {
    "postgresql": func.nextval("ticket_numbers"),
    "sqlite": select(func.coalesce(func.max(tickets.c.number), 0) + 1).scalar_subquery(),
}


_NEXT_TICKET_NUMBER = {dialect: select(number) for dialect, number in TICKET_NUMBER.items()}


def next_number(conn: Connection, name: str = "ticket") -> int:
    """The next value of a named counter, unique across processes. Ticket numbers on PostgreSQL
    come from a sequence (migration 0009): a counter row would stay locked until each intake
    commits, so the intakes of every process would queue on it (measured: 12-16 tickets/s with
    3 processes); a rolled-back intake leaves a gap there. On SQLite, with one writer at a time
    and tickets never deleted, the next number is the highest one plus one, read from the
    unique index in the same transaction (the "ticket" counter row of migration 0001 is no
    longer kept up to date): no gap."""
    if name == "ticket":
        return int(conn.execute(_NEXT_TICKET_NUMBER[conn.dialect.name]).scalar_one())
    value = _NEXT_NUMBER.run(conn, {"counter": name}).scalar()
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
    """Append one entry to the ticket's history.

    What the reports count is written alongside (see core/reports.py): a status change's
    previous and current status as columns (an opening enters "new"), and a "deflected" entry
    marks the ticket."""
    previous = current = None
    if kind == "status":
        previous, current = data.get("previous"), data.get("current")
    elif kind == "opened":
        current = "new"
    _INSERT_HISTORY.run(
        conn,
        {
            "ticket_id": ticket_id,
            "at": at,
            "actor": actor,
            "kind": kind,
            "data": data,
            "reason": reason[:500],
            "previous_status": previous,
            "current_status": current,
        },
    )
    if kind == "deflected":
        _DEFLECTED.run(conn, {"ticket_id": ticket_id})


def add_thread_ref(
    conn: Connection, channel: str, ref: str, ticket_id: int, purpose: str = "thread"
) -> None:
    insert_ignoring_duplicates(
        conn,
        thread_refs,
        {"channel": channel, "ref": ref[:500], "ticket_id": ticket_id, "purpose": purpose},
    )


def find_thread_ref(
    conn: Connection, channel: str, refs: tuple[str, ...]
) -> tuple[int, str] | None:
    """The ticket one of these thread refs leads to, and why the ref was recorded ("thread",
    "survey"); the most recent ref wins."""
    if not refs:
        return None
    wanted = [r[:500] for r in refs]
    if len(wanted) <= _PREPARED_REFS_MAX:
        params = {"channel": channel, **{f"ref{i}": ref for i, ref in enumerate(wanted)}}
        rows = _thread_refs_query(len(wanted)).run(conn, params).all()
    else:
        rows = conn.execute(_THREAD_REFS, {"channel": channel, "refs": wanted}).all()
    by_ref = {row.ref: (int(row.ticket_id), row.purpose) for row in rows}
    for ref in reversed(refs):
        if ref[:500] in by_ref:
            return by_ref[ref[:500]]
    return None


# the columns to set are the parameters' names (one plan per set of names, see Prepared)
_TOUCH = Prepared(update(tickets).where(tickets.c.id == bindparam("touched_ticket")))


def touch(conn: Connection, ticket_id: int, now: datetime, **values: Any) -> None:
    """Set ``values`` and ``updated_at`` on the ticket; a value may be a SQL expression."""
    if any(isinstance(v, ClauseElement) for v in values.values()):
        stmt = update(tickets).where(tickets.c.id == ticket_id)
        conn.execute(stmt.values(updated_at=now, **values))
        return
    _TOUCH.run(conn, {"touched_ticket": ticket_id, "updated_at": now, **values})
