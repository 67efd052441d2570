"""The customer-facing bot: acknowledges new tickets and relays agents' replies.

Reactions run inside the transaction of the change that caused them and return outbound
messages; they never send anything themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from bots.templates import render
from core.events import Event, MessageAppended, TicketOpened
from core.messages import OutboundMessage
from core.tickets import MessageKind
from core.views import Outgoing, TicketView


class CustomerBot:
    def __init__(self, service_name: str, language: str = "en") -> None:
        self.service_name = service_name
        self.language = language

    def __call__(self, event: Event, ticket: TicketView) -> Sequence[Outgoing]:
        if ticket.bouncing:
            return ()  # the address bounces: writing to it again only makes more bounces
        if isinstance(event, TicketOpened):
            return [self._acknowledge(ticket)]
        if isinstance(event, MessageAppended) and event.kind == MessageKind.OUTBOUND.value:
            return [self._relay(event, ticket)]
        return ()

    def _lang(self, ticket: TicketView) -> str:
        return ticket.language or self.language

    def _acknowledge(self, ticket: TicketView) -> Outgoing:
        lang = self._lang(ticket)
        text = render(
            "ack",
            lang,
            name=ticket.customer_name or ticket.customer_email or "",
            service=self.service_name,
            number=ticket.number,
            status_url=ticket.status_url,
        )
        subject = render("ack_subject", lang, number=ticket.number, subject=ticket.subject)
        message = OutboundMessage(
            to=ticket.reply_to,
            text=text,
            subject=subject,
            automatic=True,
            in_reply_to=_thread(ticket),
        )
        return Outgoing(f"ack:{ticket.id}", message)

    def _relay(self, event: MessageAppended, ticket: TicketView) -> Outgoing:
        lang = self._lang(ticket)
        footer = render("reply_footer", lang, number=ticket.number, status_url=ticket.status_url)
        subject = render("reply_subject", lang, number=ticket.number, subject=ticket.subject)
        message = OutboundMessage(
            to=ticket.reply_to,
            text=event.text + footer,
            subject=subject,
            html=event.html,
            in_reply_to=_thread(ticket),
        )
        return Outgoing(f"reply:{event.message_id}", message)


def _thread(ticket: TicketView) -> tuple[str, ...]:
    return (ticket.reply_to.thread,) if ticket.reply_to.thread else ()
