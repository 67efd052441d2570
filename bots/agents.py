"""The agent bot: every new ticket becomes a card in the team channel (Slack channel or
Telegram group) with Claim / Resolve / Escalate; the card is edited in place as the ticket
changes, and the customer's follow-ups appear in the card's thread."""

from __future__ import annotations

from collections.abc import Sequence

from core.config import Settings
from core.events import (
    Event,
    MessageAppended,
    StatusChanged,
    TicketAssigned,
    TicketClaimed,
    TicketOpened,
    TicketUpdated,
)
from core.messages import Action, Channel, OutboundMessage, ThreadRef
from core.tickets import MessageKind
from core.views import Outgoing, TicketView

CLAIM, RESOLVE, ESCALATE = "claim", "resolve", "escalate"
CARD_CHANGES = (TicketClaimed, TicketAssigned, StatusChanged, TicketUpdated)


def team_channel(settings: Settings) -> ThreadRef | None:
    """Where agents get ticket cards: the Slack team channel, else the Telegram group."""
    if settings.slack.enabled and settings.slack.team_channel:
        return ThreadRef(Channel.SLACK, settings.slack.team_channel)
    if settings.telegram.enabled and settings.telegram.team_chat:
        return ThreadRef(Channel.TELEGRAM, settings.telegram.team_chat)
    return None


def card_key(ticket_id: int) -> str:
    return f"card:{ticket_id}"


def card_text(ticket: TicketView) -> str:
    owner = ticket.assignee_name or "unassigned"
    due = (
        ticket.first_response_due.strftime("%Y-%m-%d %H:%M UTC")
        if (ticket.first_response_due)
        else "none"
    )
    customer = ticket.customer_name or ticket.customer_email or ticket.reply_to.address
    return (
        f"#{ticket.number} {ticket.subject}\n"
        f"Customer: {customer} via {ticket.channel}\n"
        f"Priority: {ticket.priority} · SLA due: {due}\n"
        f"Status: {ticket.status} · Owner: {owner}"
    )


def card_actions(ticket: TicketView) -> tuple[Action, ...]:
    value = str(ticket.number)
    actions = []
    if ticket.assignee_id is None and ticket.status not in ("resolved", "closed"):
        actions.append(Action(CLAIM, "Claim", value, "primary"))
    if ticket.status not in ("resolved", "closed"):
        actions.append(Action(RESOLVE, "Resolve", value))
        actions.append(Action(ESCALATE, "Escalate", value, "danger"))
    return tuple(actions)


class AgentBot:
    def __init__(self, team: ThreadRef | None) -> None:
        self.team = team

    def __call__(self, event: Event, ticket: TicketView) -> Sequence[Outgoing]:
        if self.team is None:
            return ()
        if isinstance(event, TicketOpened):
            card = OutboundMessage(
                to=self.team,
                text=card_text(ticket),
                actions=card_actions(ticket),
                thread_purpose="thread",
            )
            return [Outgoing(card_key(ticket.id), card)]
        if isinstance(event, CARD_CHANGES):
            update = OutboundMessage(
                to=self.team,
                text=card_text(ticket),
                actions=card_actions(ticket),
                replaces=card_key(ticket.id),
            )
            stamp = event.at.isoformat()
            return [Outgoing(f"card:{ticket.id}:{type(event).__name__}:{stamp}", update)]
        if isinstance(event, MessageAppended) and event.kind == MessageKind.INBOUND.value:
            follow_up = OutboundMessage(
                to=self.team, text=f"Customer wrote:\n{event.text}", thread_of=card_key(ticket.id)
            )
            return [Outgoing(f"card-msg:{event.message_id}", follow_up)]
        return ()
