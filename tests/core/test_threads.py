"""Threading decisions, as a table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.threads import KnownTicket, Verdict, decide_thread
from core.tickets import TicketStatus

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
WINDOW = timedelta(days=14)


def known(
    status: TicketStatus, customer: int = 1, resolved_days_ago: int | None = None
) -> KnownTicket:
    resolved = NOW - timedelta(days=resolved_days_ago) if resolved_days_ago is not None else None
    return KnownTicket(id=7, customer_id=customer, status=status, resolved_at=resolved)


@pytest.mark.parametrize(
    ("by_reference", "by_number", "automatic", "verdict", "ticket", "related"),
    [
        (None, None, False, Verdict.NEW, None, None),
        (known(TicketStatus.OPEN), None, False, Verdict.CONTINUE, 7, None),
        (None, known(TicketStatus.PENDING), False, Verdict.CONTINUE, 7, None),
        # a stranger cannot write into someone's ticket by quoting its number
        (None, known(TicketStatus.OPEN, customer=2), False, Verdict.NEW, None, None),
        # but a reply to our own message joins whoever sends it (a colleague in copy)
        (known(TicketStatus.OPEN, customer=2), None, False, Verdict.CONTINUE, 7, None),
        (known(TicketStatus.RESOLVED, resolved_days_ago=3), None, False, Verdict.REOPEN, 7, None),
        (known(TicketStatus.RESOLVED, resolved_days_ago=30), None, False, Verdict.NEW, None, 7),
        (known(TicketStatus.CLOSED), None, False, Verdict.NEW, None, 7),
        # an auto-reply to a resolved ticket is filed, never reopens it
        (known(TicketStatus.RESOLVED, resolved_days_ago=1), None, True, Verdict.CONTINUE, 7, None),
    ],
)
def test_decide_thread(by_reference, by_number, automatic, verdict, ticket, related) -> None:
    decision = decide_thread(
        customer_id=1,
        by_reference=by_reference,
        by_number=by_number,
        now=NOW,
        reopen_window=WINDOW,
        automatic=automatic,
    )
    assert (decision.verdict, decision.ticket_id, decision.related_ticket_id) == (
        verdict,
        ticket,
        related,
    )
    assert decision.reason
