"""SQLAlchemy 2 models: the schema. Alembic migrations are written against these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite needs INTEGER PRIMARY KEY for rowid aliasing; PostgreSQL gets BIGINT identity.
Id = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would otherwise drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar = {datetime: UtcDateTime(), dict[str, Any]: JSON}


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class Identity(Base):
    """A customer's address on one channel; (channel, address) is unique."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("channel", "address"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    bouncing: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # round-robin assignment: the team's previous pick
    last_assigned_id: Mapped[int | None] = mapped_column(Integer)


class Agent(Base):
    __tablename__ = "agents"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_open_tickets: Mapped[int] = mapped_column(Integer, default=25)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Who the agent is in the team chat, so a click or a thread reply is theirs
    slack_user_id: Mapped[str | None] = mapped_column(String(50), unique=True)
    telegram_user_id: Mapped[str | None] = mapped_column(String(50), unique=True)
    # Assignment: region code ("eu", "us"...), away (holiday, sick), working hours in their time
    # zone ("mon,tue,wed,thu,fri" and "09:00-17:00"; empty = any day, all day)
    region: Mapped[str] = mapped_column(String(50), default="", server_default="")
    away: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    working_days: Mapped[str] = mapped_column(String(50), default="", server_default="")
    working_hours: Mapped[str] = mapped_column(String(20), default="", server_default="")
    # Dashboard sign-in (scrypt, "scrypt$n$r$p$salt$hash"); None = no password set
    password_hash: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class ApiToken(Base):
    """Bearer tokens are stored as SHA-256 hashes; the token itself is shown once."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Counter(Base):
    """Named sequences that work the same on SQLite and PostgreSQL (ticket numbers)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


# what the dashboard filters tickets by (core/reports.py), carried by the report indexes
REPORT_FILTER_COLUMNS = ("team_id", "assignee_id", "channel", "priority")


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # live queue; reports: the tickets changed since a time, with the report filters
        Index("ix_tickets_status_updated", "status", "updated_at", *REPORT_FILTER_COLUMNS),
        Index("ix_tickets_assignee_status", "assignee_id", "status"),
        Index("ix_tickets_status_priority", "status", "priority"),  # SLA sweep, live queue
        # reports, index-only: what the KPIs read of the tickets opened / resolved in a period
        Index(
            "ix_tickets_created_report",
            "created_at",
            *REPORT_FILTER_COLUMNS,
            "first_response_seconds",
            "resolved_at",
            "reopen_count",
            "deflected",
        ),
        Index(
            "ix_tickets_resolved_report",
            "resolved_at",
            *REPORT_FILTER_COLUMNS,
            "resolution_seconds",
            "agent_replies",
            "reopen_count",
            "deflected",
        ),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    inbox: Mapped[str | None] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    language: Mapped[str | None] = mapped_column(String(10))
    # Where replies to the customer go: the identity that opened the ticket.
    reply_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    reply_thread: Mapped[str | None] = mapped_column(String(500))
    related_ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    # Bumping the version revokes every status link handed out before.
    portal_version: Mapped[int] = mapped_column(Integer, default=1)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    first_response_due: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    # "ticket", or "task": raised by a proactive rule for an agent, never answered to anyone
    kind: Mapped[str] = mapped_column(String(10), default="ticket", server_default="ticket")
    # SLA: the policy the due times come from; the warnings and breaches already fired
    # ("breach:resolution"...); since when the clock is stopped (pending on the customer)
    sla_policy: Mapped[str | None] = mapped_column(String(100))
    sla_fired: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    paused_since: Mapped[datetime | None]
    # Written with the ticket for the reports (core/reports.py): agent replies so far, seconds
    # from opening to the first reply and to the (latest) resolution (None while unresolved),
    # resolved by the customer with a KB article.
    agent_replies: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_response_seconds: Mapped[float | None] = mapped_column(Float)
    resolution_seconds: Mapped[float | None] = mapped_column(Float)
    deflected: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # When the SLA sweep must look at the ticket next (a warning or breach may be due then);
    # None = nothing left to fire for now. Changes that may bring it earlier set it to now.
    sla_next_check: Mapped[datetime | None] = mapped_column(index=True)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(20))
    # "customer", "agent:<id>", "bot", "system"
    author: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str | None] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(300), default="")
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    full_text: Mapped[str | None] = mapped_column(Text)
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class AttachmentRow(Base):
    """Metadata; the content lives on disk under its SHA-256 (content-addressed)."""

    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class ThreadRef(Base):
    """Channel thread ids (email Message-IDs, chat thread ids) that lead to a ticket."""

    __tablename__ = "thread_refs"
    __table_args__ = (UniqueConstraint("channel", "ref"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    ref: Mapped[str] = mapped_column(String(500))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    # "thread": the conversation or a ticket card; "survey": a rating question (a reply to it
    # is the rating's comment, not a new message on the ticket)
    purpose: Mapped[str] = mapped_column(String(20), default="thread", server_default="thread")


class TicketEvent(Base):
    """Append-only history: every change, who or what made it, and why."""

    __tablename__ = "ticket_events"
    __table_args__ = (
        # reports, index-only: the period's events of one kind (by status change: time in
        # status)
        Index("ix_ticket_events_kind_status", "kind", "current_status", "previous_status", "at"),
        # a ticket's status changes (opening included) in time order, index-only: time in status
        # for filtered reports, the pending tickets' last change. Partial: 3 in 5 events are
        # status changes, and the rest never needed to be stepped over.
        Index(
            "ix_ticket_events_status_changes",
            "ticket_id",
            "at",
            "current_status",
            "previous_status",
            sqlite_where=text("current_status IS NOT NULL"),
            postgresql_where=text("current_status IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(String(500), default="")
    # kind "status": data's previous and current status; "opened": None and "new"
    previous_status: Mapped[str | None] = mapped_column(String(20))
    current_status: Mapped[str | None] = mapped_column(String(20))


class KbArticle(Base):
    __tablename__ = "kb_articles"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    keywords: Mapped[str] = mapped_column(String(1000), default="")
    language: Mapped[str] = mapped_column(String(10), default="en")
    updated_at: Mapped[datetime]


class SurveyResponse(Base):
    """One answer per (ticket, kind): a second click is refused by the unique constraint."""

    __tablename__ = "survey_responses"
    __table_args__ = (
        UniqueConstraint("ticket_id", "kind"),
        Index("ix_survey_responses_kind_created", "kind", "created_at"),  # reports
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    kind: Mapped[str] = mapped_column(String(10))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_address_created", "address", "created_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column()
    # queued -> sending -> sent; dead after max attempts or a permanent rejection
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")
    external_id: Mapped[str | None] = mapped_column(String(500))
    # Sent without a human (acknowledgements, surveys): rate-limited per address, never to
    # automatic senders
    automatic: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class ChannelCursor(Base):
    """Where an adapter is in its channel (IMAP UIDVALIDITY:UID, a long-polling offset)."""

    __tablename__ = "channel_cursors"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))
    updated_at: Mapped[datetime]


class InboundReceipt(Base):
    """(channel, external id) seen once: a retried delivery finds its receipt and stops."""

    __tablename__ = "inbound_receipts"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(500))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    created_at: Mapped[datetime]


class Quarantine(Base):
    """Inbound data we could not turn into a message: kept raw with the reason, never dropped."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]


class SchedulerJob(Base):
    """APScheduler's persistent job store (SQLAlchemyJobStore), declared here so migrations
    create it and the schema check knows it; the scheduler reads and writes it."""

    __tablename__ = "apscheduler_jobs"
    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEntry(Base):
    """One admin action (token, agent, quarantine...): who, what, on what, from where.
    Written in the action's own transaction, so an action and its record stand or fall together."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime]
    # "token:<name>" (API), "cli:<os user>" (command line), "system" (fixtures, seeding)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(500), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))


def table_of(model: type[Base]) -> Table:
    """The model's Core table, typed as a Table (the ORM types ``__table__`` as FromClause)."""
    return cast(Table, model.__table__)
