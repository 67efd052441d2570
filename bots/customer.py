"""The customer-facing bot: acknowledges new tickets with knowledge-base suggestions, relays
agents' replies, tells the customer when an agent takes the ticket, and asks for a rating.

Reactions run inside the transaction of the change that caused them and return outbound
messages; they never send anything themselves. Buttons are channel-neutral actions: chat
adapters render them as buttons, email as signed one-click links.
"""

from __future__ import annotations

from collections.abc import Sequence

from bots.templates import render
from core.config import BotSettings
from core.events import (
    Event,
    MessageAppended,
    SurveyAnswered,
    TicketClaimed,
    TicketOpened,
    TicketResolved,
)
from core.links import ActionLinks
from core.messages import Action, Channel, OutboundMessage
from core.tickets import MessageKind
from core.views import Outgoing, TicketView

# Action ids the interaction handlers understand (bots/interactions.py)
KB_SOLVED, KB_MORE, CSAT, NPS = "kb_solved", "kb_more", "csat", "nps"


class CustomerBot:
    def __init__(
        self,
        service_name: str,
        language: str = "en",
        *,
        settings: BotSettings | None = None,
        links: ActionLinks | None = None,
    ) -> None:
        self.service_name = service_name
        self.language = language
        self.settings = settings or BotSettings()
        self.links = links

    def __call__(self, event: Event, ticket: TicketView) -> Sequence[Outgoing]:
        if ticket.bouncing:
            return ()  # the address bounces: writing to it again only makes more bounces
        if ticket.kind == "task":
            return ()  # a task is work for an agent: the customer never hears of it
        if isinstance(event, TicketOpened):
            return [self._acknowledge(event, ticket)]
        if isinstance(event, MessageAppended) and event.kind == MessageKind.OUTBOUND.value:
            return [self._relay(event, ticket)]
        if isinstance(event, TicketClaimed):
            return [
                self._notice(
                    f"claimed:{ticket.id}:{event.agent_id}",
                    ticket,
                    render(
                        "claimed", self._lang(ticket), agent=event.agent_name, number=ticket.number
                    ),
                )
            ]
        if isinstance(event, TicketResolved) and self.settings.csat and event.by != "customer":
            return [self._survey(ticket, CSAT, range(1, 6), "survey")]
        if isinstance(event, SurveyAnswered):
            thanks = self._notice(
                f"rated:{ticket.id}:{event.kind}",
                ticket,
                render("rated", self._lang(ticket)),
                purpose="survey",
            )
            if event.kind == CSAT and self.settings.nps:
                return [thanks, self._survey(ticket, NPS, range(0, 11), "nps")]
            return [thanks]
        return ()

    def _lang(self, ticket: TicketView) -> str:
        return ticket.language or self.language

    def _button(self, ticket: TicketView, action: str, label: str, value: str) -> Action:
        """A chat button carries its value; in email it becomes a signed one-click link."""
        if ticket.reply_to.channel is Channel.EMAIL and self.links is not None:
            return Action(action, label, self.links.url(ticket.number, action, value))
        return Action(action, label, f"{ticket.number}:{value}")

    def _acknowledge(self, event: TicketOpened, ticket: TicketView) -> Outgoing:
        lang = self._lang(ticket)
        if event.auto_reply is not None:  # a routing rule's reply stands in for the greeting
            text = event.auto_reply + render("ack_link", lang, status_url=ticket.status_url)
        else:
            text = render(
                "ack",
                lang,
                name=ticket.customer_name or ticket.customer_email or "",
                service=self.service_name,
                number=ticket.number,
                status_url=ticket.status_url,
            )
        actions: list[Action] = []
        suggestions = event.suggestions  # searched once, by the intake
        if suggestions:
            urls = [self._article_url(slug) for slug, _ in suggestions]
            text += render(
                "ack_kb",
                lang,
                articles="\n".join(
                    f"- {title}: {url}" for (_, title), url in zip(suggestions, urls, strict=True)
                ),
            )
            actions = [
                Action("kb_article", title[:70], url)
                for (_, title), url in zip(suggestions, urls, strict=True)
            ]
            actions += [
                self._button(ticket, KB_SOLVED, render("kb_solved", lang), "yes"),
                self._button(ticket, KB_MORE, render("kb_more", lang), "yes"),
            ]
        subject = render("ack_subject", lang, number=ticket.number, subject=ticket.subject)
        message = OutboundMessage(
            to=ticket.reply_to,
            text=text,
            subject=subject,
            automatic=True,
            in_reply_to=_thread(ticket),
            actions=tuple(actions),
            thread_purpose="thread",
        )
        return Outgoing(f"ack:{ticket.id}", message)

    def _article_url(self, slug: str) -> str:
        base = self.links.public_url if self.links else ""
        return f"{base}/kb/{slug}"

    def _relay(self, event: MessageAppended, ticket: TicketView) -> Outgoing:
        lang = self._lang(ticket)
        footer = render("reply_footer", lang, number=ticket.number, status_url=ticket.status_url)
        subject = render("reply_subject", lang, number=ticket.number, subject=ticket.subject)
        text = event.text + footer if ticket.reply_to.channel is Channel.EMAIL else event.text
        message = OutboundMessage(
            to=ticket.reply_to,
            text=text,
            subject=subject,
            html=event.html,
            in_reply_to=_thread(ticket),
            thread_purpose="thread",
        )
        return Outgoing(f"reply:{event.message_id}", message)

    def _notice(self, key: str, ticket: TicketView, text: str, purpose: str = "thread") -> Outgoing:
        subject = render(
            "reply_subject", self._lang(ticket), number=ticket.number, subject=ticket.subject
        )
        message = OutboundMessage(
            to=ticket.reply_to,
            text=text,
            subject=subject,
            automatic=True,
            in_reply_to=_thread(ticket),
            thread_purpose=purpose,
        )
        return Outgoing(key, message)

    def _survey(self, ticket: TicketView, kind: str, scale: range, template: str) -> Outgoing:
        lang = self._lang(ticket)
        actions = tuple(self._button(ticket, kind, str(score), str(score)) for score in scale)
        text = render(template, lang, number=ticket.number, service=self.service_name)
        message = OutboundMessage(
            to=ticket.reply_to,
            text=text,
            automatic=True,
            subject=render("survey_subject", lang, number=ticket.number),
            in_reply_to=_thread(ticket),
            actions=actions,
            thread_purpose="survey",
        )
        # one survey of a kind per resolution: a reopened and re-resolved ticket asks again
        return Outgoing(f"{kind}:{ticket.id}:{ticket.reopen_count}", message)


def _thread(ticket: TicketView) -> tuple[str, ...]:
    return (ticket.reply_to.thread,) if ticket.reply_to.thread else ()
