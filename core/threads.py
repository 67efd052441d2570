"""Pure: does a message continue one of the customer's tickets, reopen it, or start anew?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.tickets import TicketStatus


@dataclass(frozen=True, slots=True)
class KnownTicket:
    id: int
    customer_id: int
    status: TicketStatus
    resolved_at: datetime | None


class Verdict(StrEnum):
    CONTINUE = "continue"
    REOPEN = "reopen"
    NEW = "new"


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    verdict: Verdict
    ticket_id: int | None = None
    related_ticket_id: int | None = None
    reason: str = ""


def decide_thread(
    *,
    customer_id: int,
    by_reference: KnownTicket | None,
    by_number: KnownTicket | None,
    now: datetime,
    reopen_window: timedelta,
    automatic: bool = False,
) -> ThreadDecision:
    """Choose the ticket a message belongs to.

    A thread reference (a reply to one of our messages) is trusted whoever sends it: a colleague
    in copy joins the conversation. A bare ticket number is trusted only from the ticket's own
    customer, so nobody can write into a stranger's ticket by guessing ``[#123]``.
    """
    ticket, how = by_reference, "thread reference"
    if ticket is None and by_number is not None and by_number.customer_id == customer_id:
        ticket, how = by_number, "ticket number"
    if ticket is None:
        return ThreadDecision(Verdict.NEW, reason="no matching ticket")
    if ticket.status is TicketStatus.CLOSED or (
        ticket.status is TicketStatus.RESOLVED
        and ticket.resolved_at is not None
        and now - ticket.resolved_at > reopen_window
    ):
        return ThreadDecision(
            Verdict.NEW, related_ticket_id=ticket.id, reason=f"{how} names a finished ticket"
        )
    if ticket.status is TicketStatus.RESOLVED and not automatic:
        return ThreadDecision(Verdict.REOPEN, ticket.id, reason=f"customer wrote again ({how})")
    return ThreadDecision(Verdict.CONTINUE, ticket.id, reason=how)
