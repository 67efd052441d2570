"""The supervisor bot: an escalation sends every configured supervisor a direct message."""

from __future__ import annotations

from collections.abc import Sequence

from core.events import Event, TicketEscalated
from core.messages import Channel, OutboundMessage, ThreadRef
from core.views import Outgoing, TicketView


def parse_supervisor(entry: str) -> ThreadRef:
    """ "slack:U123" / "telegram:42" / "email:boss@example.com" -> where to ping."""
    kind, _, address = entry.partition(":")
    return ThreadRef(Channel(kind), address)


class SupervisorBot:
    def __init__(self, supervisors: Sequence[str]) -> None:
        self.supervisors = [parse_supervisor(s) for s in supervisors]

    def __call__(self, event: Event, ticket: TicketView) -> Sequence[Outgoing]:
        if not isinstance(event, TicketEscalated):
            return ()
        owner = ticket.assignee_name or "nobody"
        text = (
            f"Escalation on ticket #{ticket.number}: {ticket.subject}\n"
            f"Reason: {event.reason}\nEscalated by {event.by} · owner: {owner} · "
            f"priority {ticket.priority} · status {ticket.status}"
        )
        return [
            Outgoing(
                f"escalation:{ticket.id}:{event.at.isoformat()}:{to.channel}:{to.address}",
                OutboundMessage(
                    to=to, text=text, subject=f"[#{ticket.number}] Escalation: {ticket.subject}"
                ),
            )
            for to in self.supervisors
        ]
