"""What agents do to tickets: claim, assign, reply, note, change status, priority and tags.

Each function is a unit of work: it runs in one transaction, records history, emits events, and
the bots' reactions (the reply relayed to the customer...) are queued in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from core.errors import AlreadyClaimed, Forbidden, InvalidInput, NotFound
from core.events import (
    MessageAppended,
    StatusChanged,
    TicketAssigned,
    TicketClaimed,
    TicketEscalated,
    TicketResolved,
    TicketUpdated,
)
from core.persistence.models import Agent, Message, table_of
from core.persistence.records import record, tickets, touch
from core.sla_clock import clock_values, reapplied
from core.tickets import (
    MessageKind,
    Priority,
    TicketStatus,
    check_transition,
    status_after_agent_reply,
)
from core.views import UnitContext

agents = table_of(Agent)
messages = table_of(Message)

MAX_TEXT = 100_000
MAX_TAGS = 50


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an agent (with role and team) or the system/a bot."""

    agent_id: int | None
    name: str
    role: str
    team_id: int | None = None

    @property
    def ref(self) -> str:
        return f"agent:{self.agent_id}" if self.agent_id is not None else self.name


CUSTOMER = Actor(None, "customer", "customer")


def _ticket(conn: Connection, number: int) -> Any:
    row = conn.execute(select(tickets).where(tickets.c.number == number)).first()
    if row is None:
        raise NotFound(f"ticket #{number} not found")
    return row


def _agent(conn: Connection, agent_id: int) -> Any:
    row = conn.execute(select(agents).where(agents.c.id == agent_id)).first()
    if row is None or not row.active:
        raise NotFound(f"agent {agent_id} not found")
    return row


def _text(value: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} must be a non-empty string", field)
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{field} is longer than {MAX_TEXT} characters", field)
    return value


def claim(conn: Connection, ctx: UnitContext, number: int, actor: Actor) -> int:
    """Compare-and-set: the ticket gets this owner only if it has none. Returns the agent id."""
    if actor.agent_id is None:
        raise Forbidden("only an agent can claim a ticket")
    ticket = _ticket(conn, number)
    won = conn.execute(
        update(tickets)
        .where(tickets.c.id == ticket.id, tickets.c.assignee_id.is_(None))
        .values(assignee_id=actor.agent_id, updated_at=ctx.now)
    ).rowcount
    if not won:
        holder = conn.execute(
            select(agents.c.id, agents.c.name)
            .join(tickets, tickets.c.assignee_id == agents.c.id)
            .where(tickets.c.id == ticket.id)
        ).one()
        if holder.id == actor.agent_id:
            return actor.agent_id  # a repeated click by the owner changes nothing
        raise AlreadyClaimed(number, holder.name)
    record(
        conn,
        ticket.id,
        at=ctx.now,
        actor=actor.ref,
        kind="claimed",
        agent_id=actor.agent_id,
        agent=actor.name,
    )
    if ticket.status == TicketStatus.NEW.value:
        _move(conn, ctx, ticket, TicketStatus.OPEN, actor, "claimed")
    ctx.emit(conn, TicketClaimed(ticket.id, number, ctx.now, actor.agent_id, actor.name))
    return actor.agent_id


def assign(
    conn: Connection,
    ctx: UnitContext,
    number: int,
    agent_id: int | None,
    actor: Actor,
    reason: str = "",
) -> None:
    ticket = _ticket(conn, number)
    name = _agent(conn, agent_id).name if agent_id is not None else None
    if ticket.assignee_id == agent_id:
        return
    touch(conn, ticket.id, ctx.now, assignee_id=agent_id)
    record(
        conn,
        ticket.id,
        at=ctx.now,
        actor=actor.ref,
        kind="assigned",
        reason=reason,
        agent_id=agent_id,
        agent=name,
        previous_agent_id=ticket.assignee_id,
    )
    ctx.emit(conn, TicketAssigned(ticket.id, number, ctx.now, agent_id, name, actor.ref))


def reply(
    conn: Connection,
    ctx: UnitContext,
    number: int,
    text: str,
    actor: Actor,
    html: str | None = None,
    status: TicketStatus | None = None,
) -> int:
    """An answer to the customer: stored, then relayed on their channel through the outbox."""
    text = _text(text, "text")
    ticket = _ticket(conn, number)
    if ticket.status == TicketStatus.CLOSED.value:
        raise InvalidInput(f"ticket #{number} is closed; open a new ticket instead", "ticket")
    if ticket.kind == "task":
        raise InvalidInput(f"#{number} is a task: add a note instead of a reply", "ticket")
    message_id = _add_message(conn, ctx, ticket.id, MessageKind.OUTBOUND, text, html, actor)
    # the reports' numbers: replies so far, seconds to the first one
    values: dict[str, Any] = {"agent_replies": tickets.c.agent_replies + 1}
    if ticket.first_response_at is None:
        values["first_response_at"] = ctx.now
        values["first_response_seconds"] = (ctx.now - ticket.created_at).total_seconds()
    touch(conn, ticket.id, ctx.now, **values)
    record(conn, ticket.id, at=ctx.now, actor=actor.ref, kind="replied", message_id=message_id)
    ctx.emit(
        conn,
        MessageAppended(
            ticket.id,
            number,
            ctx.now,
            message_id,
            MessageKind.OUTBOUND.value,
            actor.name,
            text,
            html,
        ),
    )
    target = status or status_after_agent_reply(TicketStatus(ticket.status))
    if target is not None and target.value != ticket.status:
        _move(conn, ctx, _ticket(conn, number), target, actor, "agent replied")
    return message_id


def note(conn: Connection, ctx: UnitContext, number: int, text: str, actor: Actor) -> int:
    """An internal note: visible to agents only, never sent to the customer."""
    text = _text(text, "text")
    ticket = _ticket(conn, number)
    message_id = _add_message(conn, ctx, ticket.id, MessageKind.NOTE, text, None, actor)
    touch(conn, ticket.id, ctx.now)
    record(conn, ticket.id, at=ctx.now, actor=actor.ref, kind="noted", message_id=message_id)
    ctx.emit(
        conn,
        MessageAppended(
            ticket.id, number, ctx.now, message_id, MessageKind.NOTE.value, actor.name, text
        ),
    )
    return message_id


def set_status(
    conn: Connection,
    ctx: UnitContext,
    number: int,
    target: TicketStatus,
    actor: Actor,
    reason: str = "",
) -> None:
    ticket = _ticket(conn, number)
    if ticket.status == target.value:
        return
    _move(conn, ctx, ticket, target, actor, reason)


def update_fields(
    conn: Connection,
    ctx: UnitContext,
    number: int,
    actor: Actor,
    *,
    priority: Priority | None = None,
    add_tags: list[str] | None = None,
    remove_tags: list[str] | None = None,
) -> None:
    ticket = _ticket(conn, number)
    changes: dict[str, Any] = {}
    if priority is not None and priority.value != ticket.priority:
        changes["priority"] = priority.value
    if add_tags or remove_tags:
        tags = set(ticket.tags)
        tags |= {_tag(t) for t in add_tags or []}
        tags -= {_tag(t) for t in remove_tags or []}
        if len(tags) > MAX_TAGS:
            raise InvalidInput(f"a ticket has at most {MAX_TAGS} tags", "tags")
        if tags != set(ticket.tags):
            changes["tags"] = sorted(tags)
    if not changes:
        return
    sla: dict[str, Any] = {}
    if "priority" in changes:
        sla = reapplied(conn, ticket, changes["priority"], ctx.settings.sla, ctx.now)
    touch(conn, ticket.id, ctx.now, **changes, **sla)
    record(conn, ticket.id, at=ctx.now, actor=actor.ref, kind="updated", **changes)
    if sla:
        record(
            conn,
            ticket.id,
            at=ctx.now,
            actor="sla",
            kind="sla_policy",
            reason=f"priority {changes['priority']}: SLA policy {sla['sla_policy']!r} applies"
            if sla["sla_policy"]
            else f"priority {changes['priority']}: no SLA policy applies",
            policy=sla["sla_policy"],
        )
    ctx.emit(conn, TicketUpdated(ticket.id, number, ctx.now, changes, actor.ref))


def resolve_self_service(conn: Connection, ctx: UnitContext, number: int, how: str) -> None:
    """The customer says a knowledge-base article solved it: resolved without an agent."""
    ticket = _ticket(conn, number)
    if ticket.status in (TicketStatus.RESOLVED.value, TicketStatus.CLOSED.value):
        return
    record(conn, ticket.id, at=ctx.now, actor="customer", kind="deflected", reason=how)
    _move(conn, ctx, ticket, TicketStatus.RESOLVED, CUSTOMER, how)


def escalate(conn: Connection, ctx: UnitContext, number: int, actor: Actor, reason: str) -> None:
    """Ask the supervisors to step in; the supervisor bot pings them."""
    ticket = _ticket(conn, number)
    reason = reason.strip()[:500] or "no reason given"
    record(conn, ticket.id, at=ctx.now, actor=actor.ref, kind="escalated", reason=reason)
    ctx.emit(conn, TicketEscalated(ticket.id, number, ctx.now, actor.name, reason))


def _tag(value: str) -> str:
    tag = value.strip().lower() if isinstance(value, str) else ""
    if not tag or len(tag) > 50 or any(c.isspace() for c in tag):
        raise InvalidInput(f"invalid tag {value!r}: 1-50 characters, no spaces", "tags")
    return tag


def _move(
    conn: Connection, ctx: UnitContext, ticket: Any, target: TicketStatus, actor: Actor, reason: str
) -> None:
    current = TicketStatus(ticket.status)
    check_transition(current, target)
    values: dict[str, Any] = {"status": target.value}
    if target is TicketStatus.RESOLVED:
        values["resolved_at"] = ctx.now
        values["resolution_seconds"] = (ctx.now - ticket.created_at).total_seconds()
    elif target is TicketStatus.CLOSED:
        values["closed_at"] = ctx.now
    elif current is TicketStatus.RESOLVED:
        values["resolved_at"] = values["resolution_seconds"] = None
        values["reopen_count"] = ticket.reopen_count + 1
    values.update(clock_values(ticket, current, target, ctx.now, ctx.settings.sla))
    touch(conn, ticket.id, ctx.now, **values)
    record(
        conn,
        ticket.id,
        at=ctx.now,
        actor=actor.ref,
        kind="status",
        reason=reason,
        previous=current.value,
        current=target.value,
    )
    ctx.emit(
        conn,
        StatusChanged(ticket.id, ticket.number, ctx.now, current.value, target.value, actor.ref),
    )
    if target is TicketStatus.RESOLVED:
        ctx.emit(conn, TicketResolved(ticket.id, ticket.number, ctx.now, actor.ref))


def _add_message(
    conn: Connection,
    ctx: UnitContext,
    ticket_id: int,
    kind: MessageKind,
    text: str,
    html: str | None,
    actor: Actor,
) -> int:
    return conn.execute(
        insert(messages)
        .values(
            ticket_id=ticket_id,
            kind=kind.value,
            channel="agent",
            author=actor.ref,
            text=text,
            html=html,
            automatic=False,
            created_at=ctx.now,
        )
        .returning(messages.c.id)
    ).scalar_one()
