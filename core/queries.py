"""Read side: ticket lists with filters and search, one ticket with its messages and history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, cast, exists, func, or_, select

from core.errors import InvalidInput, NotFound
from core.links import check_portal_token
from core.persistence.models import AttachmentRow, Message, OutboxRow, TicketEvent, table_of
from core.persistence.records import thread_refs, tickets
from core.tickets import Priority, TicketStatus
from core.views import TICKET_VIEW, UnitContext, customers, teams, view_from_row

messages = table_of(Message)
attachments = table_of(AttachmentRow)
history = table_of(TicketEvent)
outbox = table_of(OutboxRow)

MAX_LIMIT = 200


@dataclass(frozen=True, slots=True)
class TicketFilter:
    status: tuple[TicketStatus, ...] = ()
    priority: tuple[Priority, ...] = ()
    channel: str | None = None
    team: str | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    tag: str | None = None
    customer_email: str | None = None
    q: str | None = None
    limit: int = 50
    offset: int = 0
    # An agent sees the tickets of their team, of no team, and their own.
    visible_to_team: int | None = None
    visible_to_agent: int | None = None


def _view_query() -> Any:
    return TICKET_VIEW


def _conditions(f: TicketFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if f.status:
        where.append(tickets.c.status.in_([s.value for s in f.status]))
    if f.priority:
        where.append(tickets.c.priority.in_([p.value for p in f.priority]))
    if f.channel:
        where.append(tickets.c.channel == f.channel)
    if f.team:
        where.append(teams.c.name == f.team)
    if f.assignee_id is not None:
        where.append(tickets.c.assignee_id == f.assignee_id)
    if f.unassigned:
        where.append(tickets.c.assignee_id.is_(None))
    if f.tag:
        # tags are validated (no spaces or quotes), so a match on the JSON text is exact
        where.append(cast(tickets.c.tags, String).like(f'%"{f.tag.lower()}"%'))
    if f.customer_email:
        where.append(customers.c.email == f.customer_email.lower())
    if f.q:
        pattern = "%" + f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        in_messages = exists().where(
            messages.c.ticket_id == tickets.c.id,
            messages.c.text.ilike(pattern, escape="\\"),
        )
        clauses = [tickets.c.subject.ilike(pattern, escape="\\"), in_messages]
        if f.q.lstrip("#").isdigit():
            clauses.append(tickets.c.number == int(f.q.lstrip("#")))
        where.append(or_(*clauses))
    if f.visible_to_team is not None or f.visible_to_agent is not None:
        where.append(
            or_(
                tickets.c.team_id.is_(None),
                tickets.c.team_id == f.visible_to_team,
                tickets.c.assignee_id == f.visible_to_agent,
            )
        )
    return where


def list_tickets(conn: Connection, ctx: UnitContext, f: TicketFilter) -> tuple[list[Any], int]:
    if not 1 <= f.limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", "limit")
    if f.offset < 0:
        raise InvalidInput("offset must not be negative", "offset")
    query = _view_query().where(*_conditions(f))
    rows = conn.execute(
        query.order_by(tickets.c.updated_at.desc(), tickets.c.id.desc())
        .limit(f.limit)
        .offset(f.offset)
    ).all()
    total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    return [(view_from_row(r, ctx), r) for r in rows], total


def ticket_row(conn: Connection, number: int) -> Any:
    row = conn.execute(_view_query().where(tickets.c.number == number)).first()
    if row is None:
        raise NotFound(f"ticket #{number} not found")
    return row


def ticket_messages(conn: Connection, ticket_id: int, *, public_only: bool = False) -> list[Any]:
    query = select(messages).where(messages.c.ticket_id == ticket_id)
    if public_only:
        query = query.where(messages.c.kind != "note")
    rows = conn.execute(query.order_by(messages.c.created_at, messages.c.id)).all()
    files: dict[int, list[Any]] = {}
    if rows:
        for a in conn.execute(
            select(attachments).where(attachments.c.message_id.in_([r.id for r in rows]))
        ):
            files.setdefault(a.message_id, []).append(a)
    return [(r, files.get(r.id, [])) for r in rows]


def ticket_history(conn: Connection, ticket_id: int) -> list[Any]:
    return list(
        conn.execute(
            select(history).where(history.c.ticket_id == ticket_id).order_by(history.c.id)
        ).all()
    )


def list_outbox(conn: Connection, status: str | None, limit: int = 100) -> list[Any]:
    query = select(outbox).order_by(outbox.c.id.desc()).limit(min(limit, MAX_LIMIT))
    if status:
        query = query.where(outbox.c.status == status)
    return list(conn.execute(query).all())


def is_visible(row: Any, team_id: int | None, agent_id: int | None) -> bool:
    return (
        row.team_id is None
        or row.team_id == team_id
        or (agent_id is not None and row.assignee_id == agent_id)
    )


def attachment(conn: Connection, number: int, attachment_id: int) -> Any:
    row = conn.execute(
        select(attachments)
        .join(messages, messages.c.id == attachments.c.message_id)
        .join(tickets, tickets.c.id == messages.c.ticket_id)
        .where(tickets.c.number == number, attachments.c.id == attachment_id)
    ).first()
    if row is None:
        raise NotFound("attachment not found")
    return row


def portal_ticket(conn: Connection, ctx: UnitContext, number: int, token: str) -> Any:
    """The ticket a status link shows; NotFound unless the token is current for it."""
    row = conn.execute(_view_query().where(tickets.c.number == number)).first()
    if row is None or not check_portal_token(ctx.secret, row.id, row.portal_version, token):
        raise NotFound("this status link is unknown or has been revoked")
    return row


def ticket_by_refs(conn: Connection, channel: str, refs: tuple[str, ...]) -> tuple[Any, str] | None:
    """The ticket (as a view row) a chat thread ref leads to, and the ref's purpose."""
    if not refs:
        return None
    row = conn.execute(
        select(thread_refs.c.ticket_id, thread_refs.c.purpose)
        .where(thread_refs.c.channel == channel, thread_refs.c.ref.in_([r[:500] for r in refs]))
        .order_by(thread_refs.c.id.desc())
    ).first()
    if row is None:
        return None
    ticket = conn.execute(_view_query().where(tickets.c.id == row.ticket_id)).one()
    return ticket, row.purpose
