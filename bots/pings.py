"""Pings to the team: the people a routing rule names hear of a new ticket; an SLA warning goes
to the ticket's assignee (or, unassigned, to the card's thread in the team channel); a breach
goes to every supervisor and to the assignee."""

from __future__ import annotations

from collections.abc import Sequence

from bots.agents import card_key
from bots.supervisors import parse_supervisor
from core.events import Event, SlaBreached, SlaWarning, TicketOpened
from core.messages import OutboundMessage, ThreadRef
from core.views import Outgoing, TicketView


def _when(event: SlaWarning | SlaBreached) -> str:
    return event.due.strftime("%Y-%m-%d %H:%M UTC")


def _target(name: str) -> str:
    return name.replace("_", " ")


class PingBot:
    def __init__(self, supervisors: Sequence[str], team: ThreadRef | None) -> None:
        self.supervisors = [parse_supervisor(s) for s in supervisors]
        self.team = team

    def __call__(self, event: Event, ticket: TicketView) -> Sequence[Outgoing]:
        if isinstance(event, TicketOpened) and event.notify:
            text = (
                f"New ticket #{ticket.number}: {ticket.subject}\n"
                f"Team: {ticket.team or 'none'} · priority {ticket.priority} · "
                f"owner: {ticket.assignee_name or 'nobody'}\n{ticket.status_url}"
            )
            return [
                self._ping(f"notify:{ticket.id}:{entry}", parse_supervisor(entry), ticket, text)
                for entry in event.notify
            ]
        if isinstance(event, SlaWarning):
            text = (
                f"SLA warning on ticket #{ticket.number}: {ticket.subject}\n"
                f"{_target(event.target).capitalize()} is due {_when(event)} "
                f"(policy {event.policy}) · priority {ticket.priority}"
            )
            key = f"sla:{ticket.id}:warning:{event.target}"
            if ticket.assignee_contact is not None:
                return [self._ping(key, ticket.assignee_contact, ticket, text)]
            if self.team is not None:
                message = OutboundMessage(to=self.team, text=text, thread_of=card_key(ticket.id))
                return [Outgoing(key, message)]
            return ()
        if isinstance(event, SlaBreached):
            done = "; ".join(event.actions) or "no automatic action"
            text = (
                f"SLA breach on ticket #{ticket.number}: {ticket.subject}\n"
                f"{_target(event.target).capitalize()} was due {_when(event)} "
                f"(policy {event.policy}) · owner: {ticket.assignee_name or 'nobody'} · "
                f"priority {ticket.priority} · {done}"
            )
            recipients = list(self.supervisors)
            if ticket.assignee_contact is not None and ticket.assignee_contact not in recipients:
                recipients.append(ticket.assignee_contact)
            return [
                self._ping(
                    f"sla:{ticket.id}:breach:{event.target}:{to.channel}:{to.address}",
                    to,
                    ticket,
                    text,
                )
                for to in recipients
            ]
        return ()

    @staticmethod
    def _ping(key: str, to: ThreadRef, ticket: TicketView, text: str) -> Outgoing:
        subject = f"[#{ticket.number}] {text.splitlines()[0]}"
        return Outgoing(key, OutboundMessage(to=to, text=text, subject=subject[:200]))
