"""Ticket states and priorities; every allowed transition lives in one table."""

from __future__ import annotations

from enum import StrEnum

from core.errors import InvalidInput, InvalidTransition


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class MessageKind(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NOTE = "note"


S = TicketStatus
TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    S.NEW: frozenset({S.OPEN, S.PENDING, S.RESOLVED}),
    S.OPEN: frozenset({S.PENDING, S.RESOLVED}),
    S.PENDING: frozenset({S.OPEN, S.RESOLVED}),
    # reopening happens when the customer writes again (or an agent reopens)
    S.RESOLVED: frozenset({S.OPEN, S.CLOSED}),
    S.CLOSED: frozenset(),
}

# States in which the ticket still needs work from us
ACTIVE = frozenset({S.NEW, S.OPEN, S.PENDING})


def parse_status(value: str) -> TicketStatus:
    try:
        return TicketStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in TicketStatus)
        raise InvalidInput(f"unknown status {value!r} (one of: {allowed})", "status") from None


def parse_priority(value: str) -> Priority:
    try:
        return Priority(value)
    except ValueError:
        allowed = ", ".join(p.value for p in Priority)
        raise InvalidInput(f"unknown priority {value!r} (one of: {allowed})", "priority") from None


def check_transition(current: TicketStatus, target: TicketStatus) -> None:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current.value, target.value)


def status_after_customer_message(current: TicketStatus) -> TicketStatus | None:
    """The status a customer's new message moves the ticket to; None means no change.

    A closed ticket is never reopened: the caller opens a new one linked to it.
    """
    if current in (S.PENDING, S.RESOLVED):
        return S.OPEN
    return None


def status_after_agent_reply(current: TicketStatus) -> TicketStatus | None:
    return S.OPEN if current is S.NEW else None
