"""What a use case knows while it runs, and the ticket snapshot handed to bots.

Bots react to events *inside* the transaction that caused them: a reaction returns outbound
messages and the use case writes them to the outbox before it commits. So an acknowledgement can
never be lost between the commit and a bot, and a retried transaction never sends twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from core.config import Settings
from core.events import Event
from core.kb_search import KbIndex
from core.links import portal_token, status_url
from core.messages import Channel, OutboundMessage, ThreadRef
from core.outbox import automatic_allowed, enqueue
from core.persistence.models import Agent, Customer, Identity, Team, Ticket, table_of
from core.persistence.prepared import Prepared
from core.persistence.records import record

tickets = table_of(Ticket)
identities = table_of(Identity)
customers = table_of(Customer)
agents = table_of(Agent)
teams = table_of(Team)

# Channels whose customers we answer by email (the web form and the JSON API ask for an address)
EMAIL_IDENTITY = {Channel.EMAIL, Channel.WEB, Channel.API}


def identity_channel(channel: Channel) -> Channel:
    return Channel.EMAIL if channel in EMAIL_IDENTITY else channel


@dataclass(frozen=True, slots=True)
class TicketView:
    id: int
    number: int
    subject: str
    status: str
    priority: str
    channel: str
    customer_id: int
    customer_name: str
    customer_email: str | None
    reply_to: ThreadRef
    status_url: str
    bouncing: bool
    team: str | None
    assignee_id: int | None
    assignee_name: str | None
    language: str | None
    created_at: datetime
    first_response_due: datetime | None
    reopen_count: int = 0
    kind: str = "ticket"  # "task": an agent's to-do from a proactive rule, never sent out
    assignee_contact: ThreadRef | None = None  # where the assignee gets direct messages


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One outbound message a reaction wants sent; ``key`` makes it idempotent."""

    key: str
    message: OutboundMessage


Reaction = Callable[[Event, TicketView], Sequence[Outgoing]]


@dataclass
class UnitContext:
    """Everything a unit of work needs besides the connection; ``now`` is fixed per unit."""

    settings: Settings
    secret: bytes
    now: datetime
    reactions: Sequence[Reaction] = ()
    # the knowledge base as the unit found it (new tickets are searched in it); None = none
    kb: KbIndex | None = None
    events: list[Event] = field(default_factory=list)
    # (channel, address) of each identity this unit created -> automatic messages queued to it
    # so far. Automatic messages only go to an identity's address, so a new one has no earlier
    # ones: the loop-protection count needs no query (see ``_automatic_allowed``).
    new_addresses: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def mail_domain(self) -> str:
        """The right-hand side of our Message-IDs: the domain we send mail from."""
        return self.settings.email.from_address.rsplit("@", 1)[-1].lower()

    def status_url(self, ticket_id: int, number: int, version: int) -> str:
        token = portal_token(self.secret, ticket_id, version)
        return status_url(self.settings.service.public_url, number, token)

    def emit(
        self,
        conn: Connection,
        event: Event,
        *,
        automatic: bool = False,
        view: TicketView | None = None,
    ) -> None:
        """Record an event for after-commit listeners and let the bots react now.

        Automatic traffic (auto-replies, bounces) never triggers an automatic answer. ``view``
        is the ticket as stored now, when the caller already has it (saves reading it back).
        """
        self.events.append(event)
        if automatic or not self.reactions:
            return
        if view is None:
            view = load_view(conn, self, event.ticket_id)
        per_hour = self.settings.outbox.max_automatic_per_address_per_hour
        for reaction in self.reactions:
            for out in reaction(event, view):
                if out.message.automatic and not self._automatic_allowed(
                    conn, out.message.to, per_hour
                ):
                    record(
                        conn,
                        event.ticket_id,
                        at=self.now,
                        actor="bot",
                        kind="suppressed",
                        reason=f"more than {per_hour} automatic messages to this address "
                        "in an hour (loop protection)",
                        key=out.key,
                    )
                    continue
                written = enqueue(
                    conn,
                    out.key,
                    out.message,
                    now=self.now,
                    ticket_id=event.ticket_id,
                    mail_domain=self.mail_domain,
                )
                if written and out.message.automatic:
                    address = (out.message.to.channel.value, out.message.to.address)
                    if address in self.new_addresses:
                        self.new_addresses[address] += 1

    def _automatic_allowed(self, conn: Connection, to: ThreadRef, per_hour: int) -> bool:
        """``automatic_allowed``, counted in memory for an address created by this unit."""
        queued = self.new_addresses.get((to.channel.value, to.address))
        if queued is None:
            return automatic_allowed(conn, to, self.now, per_hour)
        return queued < per_hour


# A ticket with what its view shows (customer, reply identity, team, owner). Built once, so
# SQLAlchemy reuses its cache key and compiled form (every event loads a view).
TICKET_VIEW = (
    select(
        tickets,
        customers.c.name.label("customer_name"),
        customers.c.email.label("customer_email"),
        identities.c.channel.label("identity_channel"),
        identities.c.address.label("identity_address"),
        identities.c.bouncing,
        teams.c.name.label("team_name"),
        agents.c.name.label("assignee_name"),
        agents.c.email.label("assignee_email"),
        agents.c.slack_user_id.label("assignee_slack"),
        agents.c.telegram_user_id.label("assignee_telegram"),
    )
    .join(customers, customers.c.id == tickets.c.customer_id)
    .join(identities, identities.c.id == tickets.c.reply_identity_id)
    .outerjoin(teams, teams.c.id == tickets.c.team_id)
    .outerjoin(agents, agents.c.id == tickets.c.assignee_id)
)
_VIEW = Prepared(TICKET_VIEW.where(tickets.c.id == bindparam("ticket_id")))


def load_view(conn: Connection, ctx: UnitContext, ticket_id: int) -> TicketView:
    row = _VIEW.run(conn, {"ticket_id": ticket_id}).one()
    return view_from_row(row, ctx)


def view_from_row(row: Any, ctx: UnitContext) -> TicketView:
    return TicketView(
        id=row.id,
        number=row.number,
        subject=row.subject,
        status=row.status,
        priority=row.priority,
        channel=row.channel,
        customer_id=row.customer_id,
        customer_name=row.customer_name,
        customer_email=row.customer_email,
        reply_to=ThreadRef(Channel(row.identity_channel), row.identity_address, row.reply_thread),
        status_url=ctx.status_url(row.id, row.number, row.portal_version),
        bouncing=row.bouncing,
        team=row.team_name,
        assignee_id=row.assignee_id,
        assignee_name=row.assignee_name,
        language=row.language,
        created_at=row.created_at,
        first_response_due=row.first_response_due,
        reopen_count=row.reopen_count,
        kind=row.kind,
        assignee_contact=agent_contact(
            ctx.settings, row.assignee_email, row.assignee_slack, row.assignee_telegram
        ),
    )


def agent_contact(
    settings: Settings, email: str | None, slack: str | None, telegram: str | None
) -> ThreadRef | None:
    """Where an agent gets direct messages: their chat when that channel is on, else email."""
    if slack and settings.slack.enabled:
        return ThreadRef(Channel.SLACK, slack)
    if telegram and settings.telegram.enabled:
        return ThreadRef(Channel.TELEGRAM, telegram)
    return ThreadRef(Channel.EMAIL, email) if email else None
