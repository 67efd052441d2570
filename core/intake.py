"""ingest(InboundMessage): dedupe -> identify the customer -> thread or open -> persist, in one
transaction, with the bots' outbound messages; events are published after the commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, literal, null, select, union_all, update

from core import surveys
from core.errors import InvalidInput, NotFound, TooLarge
from core.events import MessageAppended, TicketOpened, TicketReopened
from core.links import check_portal_token
from core.messages import Channel, InboundMessage, ThreadRef
from core.persistence.models import (
    AttachmentRow,
    Customer,
    Identity,
    Message,
    Team,
    table_of,
)
from core.persistence.prepared import Prepared
from core.persistence.records import (
    TICKET_NUMBER,
    InsertIgnoring,
    add_thread_ref,
    find_thread_ref,
    insert_ignoring_duplicates,
    receipts,
    record,
    tickets,
    touch,
)
from core.sla_clock import clock_values
from core.threads import KnownTicket, ThreadDecision, Verdict, decide_thread
from core.tickets import MessageKind, TicketStatus, status_after_customer_message
from core.triage import Triage, plan, settle
from core.views import TicketView, UnitContext, identity_channel, load_view

customers = table_of(Customer)
identities = table_of(Identity)
messages = table_of(Message)
attachments = table_of(AttachmentRow)
teams = table_of(Team)

# The statements of every intake are built once and compiled once (see core/persistence/
# prepared.py): on SQLite they then run on the DBAPI cursor without SQLAlchemy's per-execution
# overhead. (Bound parameter names must differ from column names in INSERT/UPDATE statements.)
_SET_RECEIPT = Prepared(
    update(receipts)
    .where(
        receipts.c.channel == bindparam("r_channel"),
        receipts.c.external_id == bindparam("r_external_id"),
    )
    .values(ticket_id=bindparam("r_ticket_id"), message_id=bindparam("r_message_id"))
)
_INSERT_ATTACHMENT = Prepared(insert(attachments))
_PREVIOUS = Prepared(
    select(receipts.c.ticket_id, receipts.c.message_id, tickets.c.number, tickets.c.portal_version)
    .outerjoin(tickets, tickets.c.id == receipts.c.ticket_id)
    .where(
        receipts.c.channel == bindparam("channel"),
        receipts.c.external_id == bindparam("external_id"),
    )
)
_IDENTITY_OF_SENDER = (
    select(
        identities.c.id,
        identities.c.customer_id,
        identities.c.channel,
        identities.c.address,
        identities.c.bouncing,
        customers.c.name.label("customer_name"),
        customers.c.email.label("customer_email"),
    )
    .join(customers, customers.c.id == identities.c.customer_id)
    .where(
        identities.c.channel == bindparam("channel"), identities.c.address == bindparam("address")
    )
)
_IDENTITY = Prepared(_IDENTITY_OF_SENDER)
# The sender's identity, and in the same round trip the customer who has the sender's email
# (the first one), for a sender seen before on another channel: ranked 0 and 1.
_SENDER = Prepared(
    union_all(
        _IDENTITY_OF_SENDER.add_columns(literal(0).label("rank")),
        select(
            null(),
            customers.c.id,
            null(),
            null(),
            null(),
            customers.c.name,
            customers.c.email,
            literal(1),
        ).where(
            customers.c.id
            == select(func.min(customers.c.id))
            .where(customers.c.email == bindparam("email"))
            .scalar_subquery()
        ),
    )
)
_INSERT_IDENTITY = Prepared(
    InsertIgnoring(identities).returning(identities.c.id, identities.c.customer_id)
)
_INSERT_CUSTOMER = Prepared(insert(customers).returning(customers.c.id))
_IDENTITY_COLUMNS = ("customer_id", "channel", "address", "display_name", "bouncing", "created_at")
# PostgreSQL: a new customer and their identity in one statement (one round trip fewer); the
# customer is written even when a concurrent intake took the identity, as with two statements
_new_customer = (
    insert(customers)
    .values(
        name=bindparam("c_name"),
        email=bindparam("c_email"),
        attributes=bindparam("c_attributes"),
        created_at=bindparam("created_at"),
    )
    .returning(customers.c.id)
    .cte("new_customer")
)
_INSERT_CUSTOMER_AND_IDENTITY = Prepared(
    InsertIgnoring(identities)
    .from_select(
        _IDENTITY_COLUMNS,
        select(
            _new_customer.c.id,
            *(bindparam(name, type_=identities.c[name].type) for name in _IDENTITY_COLUMNS[1:]),
        ),
    )
    .add_cte(_new_customer)
    .returning(identities.c.id, identities.c.customer_id)
)
_KNOWN_COLUMNS = (tickets.c.id, tickets.c.customer_id, tickets.c.status, tickets.c.resolved_at)
_KNOWN_BY_ID = Prepared(select(*_KNOWN_COLUMNS).where(tickets.c.id == bindparam("ticket_id")))
# a task is an agent's to-do: a customer's message never continues one
_KNOWN_BY_NUMBER = Prepared(
    select(*_KNOWN_COLUMNS).where(
        tickets.c.number == bindparam("number"), tickets.c.kind == "ticket"
    )
)
_TEAM_ID = Prepared(select(teams.c.id).where(teams.c.name == bindparam("name")))
# the number is taken by the INSERT itself (see records.next_number)
_INSERT_TICKET = {
    dialect: Prepared(
        insert(tickets).values(number=number).returning(tickets.c.id, tickets.c.number)
    )
    for dialect, number in TICKET_NUMBER.items()
}
_INSERT_MESSAGE = Prepared(insert(messages).returning(messages.c.id))
_LATEST_OF_IDENTITY = Prepared(
    select(tickets.c.id)
    .where(tickets.c.reply_identity_id == bindparam("identity_id"), tickets.c.kind == "ticket")
    .order_by(tickets.c.id.desc())
    .limit(1)
)
_CONTINUED = Prepared(
    select(
        tickets.c.number,
        tickets.c.status,
        tickets.c.portal_version,
        tickets.c.reopen_count,
        tickets.c.sla_policy,
        tickets.c.paused_since,
        tickets.c.resolution_due,
    ).where(tickets.c.id == bindparam("ticket_id"))
)


class AlreadyReceived(Exception):
    """Raised by ``ingest_unit`` on SQLite for a message received before: its transaction
    must roll back (the unit has written a ticket again by then); ``previous_result`` then
    answers."""

    def __init__(self, channel: str, external_id: str) -> None:
        super().__init__(f"{channel} message {external_id!r} was received before")


@dataclass(frozen=True, slots=True)
class IntakeResult:
    ticket_id: int | None
    ticket_number: int | None
    message_id: int | None
    status_url: str | None
    created: bool
    duplicate: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class _Sender:
    """The customer and identity a message comes from, as stored."""

    customer_id: int
    identity_id: int
    customer_name: str
    customer_email: str | None
    channel: str
    address: str
    bouncing: bool


def check_limits(msg: InboundMessage, max_attachment_bytes: int, max_attachments: int) -> None:
    if not msg.sender.address.strip():
        raise InvalidInput("the sender's address is empty", "sender")
    if len(msg.attachments) > max_attachments:
        raise TooLarge(
            f"too many attachments ({len(msg.attachments)} > {max_attachments})", "attachments"
        )
    for att in msg.attachments:
        if att.size > max_attachment_bytes:
            raise TooLarge(
                f"attachment {att.filename!r} is {att.size} bytes (limit {max_attachment_bytes})",
                "attachments",
            )


def ingest_unit(conn: Connection, ctx: UnitContext, msg: InboundMessage) -> IntakeResult:
    """The whole intake of one message; runs inside one transaction."""
    now = ctx.now
    receipt = {"channel": msg.channel.value, "external_id": msg.external_id[:500]}
    # PostgreSQL: the receipt is claimed first, so a retried delivery stops here (a concurrent
    # one waits on the unique key for this commit) before it takes a ticket number from the
    # sequence, which a rollback would not give back. SQLite has one writer at a time and takes
    # the highest number plus one, so a rollback leaves no gap: the receipt is written last,
    # complete, by the statement that dedupes, and a retried delivery, the exception, is rolled
    # back (``AlreadyReceived``).
    claim_first = conn.dialect.name == "postgresql"
    if claim_first and not insert_ignoring_duplicates(
        conn, receipts, {**receipt, "created_at": now}
    ):
        return previous_result(conn, ctx, msg)
    portal = _portal_ticket(conn, ctx, msg)
    sender = None
    if portal is not None:  # a reply on the status page: written by the ticket's customer
        customer_id, identity_id = portal.customer_id, portal.reply_identity_id
    else:
        sender = _identify(conn, ctx, msg)
        customer_id, identity_id = sender.customer_id, sender.identity_id
    if msg.bounce is not None:
        _mark_bouncing(conn, msg)
    decision, purpose = _thread(
        conn, ctx, msg, customer_id, identity_id, portal.id if portal is not None else None
    )
    # an answer to a rating question is the rating's comment: filed, the ticket stays resolved
    quiet = (
        purpose == "survey"
        and decision.ticket_id is not None
        and surveys.comment(conn, ctx, decision.ticket_id, msg.body)
    )
    if quiet:
        decision = ThreadDecision(Verdict.CONTINUE, decision.ticket_id, reason="rating comment")

    opened_view = triage = None
    if decision.verdict is Verdict.NEW:
        ticket_id, number, version, opened_view, triage = _open_ticket(
            conn, ctx, msg, customer_id, identity_id, decision, sender
        )
    else:
        assert decision.ticket_id is not None
        ticket_id, number, version = _continue_ticket(conn, ctx, msg, decision, quiet=quiet)

    message_id = _append_message(conn, ctx, msg, ticket_id)
    if claim_first:
        _SET_RECEIPT.run(
            conn,
            {
                "r_channel": receipt["channel"],
                "r_external_id": receipt["external_id"],
                "r_ticket_id": ticket_id,
                "r_message_id": message_id,
            },
        )
    else:
        complete = {**receipt, "ticket_id": ticket_id, "message_id": message_id, "created_at": now}
        if not insert_ignoring_duplicates(conn, receipts, complete):
            raise AlreadyReceived(msg.channel.value, msg.external_id)
    automatic = msg.auto_submitted or msg.bounce is not None or quiet
    if triage is not None:
        name = sender.customer_name if sender is not None else ""
        ctx.emit(
            conn,
            TicketOpened(
                ticket_id,
                number,
                now,
                customer_id,
                msg.channel.value,
                msg.subject,
                triage.priority,
                team=triage.team or None,
                text=msg.body,
                auto_reply=triage.auto_reply_text(number, name, msg.subject),
                notify=triage.notify,
                suggestions=triage.suggestions,
            ),
            automatic=automatic,
            view=opened_view,
        )
    elif decision.verdict is Verdict.REOPEN:
        ctx.emit(
            conn,
            TicketReopened(ticket_id, number, now, TicketStatus.RESOLVED.value),
            automatic=automatic,
        )
    # the first message of a ticket is answered by the TicketOpened reactions, not twice
    ctx.emit(
        conn,
        MessageAppended(
            ticket_id, number, now, message_id, MessageKind.INBOUND.value, "customer", msg.body
        ),
        automatic=automatic or decision.verdict is Verdict.NEW,
    )
    # the view of a new ticket already carries its link: one HMAC per intake, not two
    url = opened_view.status_url if opened_view else ctx.status_url(ticket_id, number, version)
    return IntakeResult(ticket_id, number, message_id, url, created=decision.verdict is Verdict.NEW)


def previous_result(conn: Connection, ctx: UnitContext, msg: InboundMessage) -> IntakeResult:
    """The result of the first delivery of a message that ``ingest_unit`` found received."""
    row = _PREVIOUS.run(
        conn, {"channel": msg.channel.value, "external_id": msg.external_id[:500]}
    ).one()
    url = None
    if row.ticket_id is not None:
        url = ctx.status_url(row.ticket_id, row.number, row.portal_version)
    return IntakeResult(
        row.ticket_id, row.number, row.message_id, url, created=False, duplicate=True
    )


def _identify(conn: Connection, ctx: UnitContext, msg: InboundMessage) -> _Sender:
    """Find the customer by channel identity, else by email, else create one."""
    channel = identity_channel(msg.channel).value
    address = msg.sender.address.strip()[:320]
    if channel == "email":
        address = address.lower()
    email = (msg.sender.email or (address if channel == "email" else "")).lower() or None
    params = {"channel": channel, "address": address, "email": email}
    found = {row.rank: row for row in _SENDER.run(conn, params).all()}
    if 0 in found:
        return _sender(found[0])
    name = msg.sender.name[:200]
    identity: dict[str, Any] = {
        "channel": channel,
        "address": address,
        "display_name": msg.sender.name[:200],
        "bouncing": False,
        "created_at": ctx.now,
    }
    insert_identity = _INSERT_IDENTITY
    customer = found.get(1)
    if customer is not None:
        name = customer.customer_name
        identity["customer_id"] = customer.customer_id
    elif conn.dialect.name == "postgresql":
        insert_identity = _INSERT_CUSTOMER_AND_IDENTITY
        identity.update(c_name=name, c_email=email, c_attributes={})
    else:
        new: dict[str, object] = {"name": name, "email": email, "attributes": {}}
        new["created_at"] = ctx.now
        identity["customer_id"] = _INSERT_CUSTOMER.run(conn, new).scalar_one()
    row = insert_identity.run(conn, identity).first()
    if row is None:
        # a concurrent intake created the identity first: use that row
        return _sender(_IDENTITY.run(conn, {"channel": channel, "address": address}).one())
    ctx.new_addresses[(channel, address)] = 0  # nothing automatic was sent to it yet
    return _Sender(row.customer_id, row.id, name, email, channel, address, False)


def _sender(row: Any) -> _Sender:
    return _Sender(
        row.customer_id,
        row.id,
        row.customer_name,
        row.customer_email,
        row.channel,
        row.address,
        row.bouncing,
    )


def _mark_bouncing(conn: Connection, msg: InboundMessage) -> None:
    assert msg.bounce is not None
    if not msg.bounce.permanent or not msg.bounce.recipients:
        return
    conn.execute(
        update(identities)
        .where(
            identities.c.channel == "email",
            identities.c.address.in_([r.lower() for r in msg.bounce.recipients]),
        )
        .values(bouncing=True)
    )


def _known(
    conn: Connection, ticket_id: int | None = None, number: int | None = None
) -> KnownTicket | None:
    if ticket_id is None and number is None:
        return None
    if ticket_id is not None:
        row = _KNOWN_BY_ID.run(conn, {"ticket_id": ticket_id}).first()
    else:
        row = _KNOWN_BY_NUMBER.run(conn, {"number": number}).first()
    if row is None:
        return None
    return KnownTicket(row.id, row.customer_id, TicketStatus(row.status), row.resolved_at)


def _portal_ticket(conn: Connection, ctx: UnitContext, msg: InboundMessage) -> Any:
    hints = msg.thread_hints
    if not hints.portal_token or hints.ticket_number is None:
        return None
    row = conn.execute(select(tickets).where(tickets.c.number == hints.ticket_number)).first()
    if row is None or not check_portal_token(
        ctx.secret, row.id, row.portal_version, hints.portal_token
    ):
        raise NotFound(f"ticket #{hints.ticket_number} not found")
    return row


def _thread(
    conn: Connection,
    ctx: UnitContext,
    msg: InboundMessage,
    customer_id: int,
    identity_id: int,
    trusted_ticket_id: int | None,
) -> tuple[ThreadDecision, str]:
    """The threading decision, and the purpose of the thread ref that matched ("" if none)."""
    hints = msg.thread_hints
    refs = hints.references
    if msg.bounce is not None and msg.bounce.original_message_id:
        refs = (*refs, msg.bounce.original_message_id)
    purpose = ""
    if trusted_ticket_id is None and (found := find_thread_ref(conn, msg.channel.value, refs)):
        trusted_ticket_id, purpose = found
    if (
        trusted_ticket_id is None
        and hints.ticket_number is None
        and msg.metadata.get("conversation")
    ):
        # a chat without threads (Telegram): the customer's latest ticket goes on
        trusted_ticket_id = _LATEST_OF_IDENTITY.run(conn, {"identity_id": identity_id}).scalar()
    by_reference = _known(conn, ticket_id=trusted_ticket_id)
    by_number = _known(conn, number=hints.ticket_number)
    return decide_thread(
        customer_id=customer_id,
        by_reference=by_reference,
        by_number=by_number,
        now=ctx.now,
        reopen_window=timedelta(days=ctx.settings.intake.reopen_window_days),
        automatic=msg.auto_submitted or msg.bounce is not None,
    ), purpose


def _team_id(conn: Connection, name: str) -> int | None:
    if not name:
        return None
    insert_ignoring_duplicates(conn, teams, {"name": name})
    return int(_TEAM_ID.run(conn, {"name": name}).scalar_one())


def _inbox_team(ctx: UnitContext, inbox: str | None) -> str:
    for configured in ctx.settings.inboxes:
        if inbox is not None and inbox in (configured.name, configured.address) and configured.team:
            return configured.team
    return ctx.settings.intake.default_team


def _open_ticket(
    conn: Connection,
    ctx: UnitContext,
    msg: InboundMessage,
    customer_id: int,
    identity_id: int,
    decision: ThreadDecision,
    sender: _Sender | None,
) -> tuple[int, int, int, TicketView | None, Triage]:
    """Returns the ticket's id, number, portal version, when the sender is at hand the
    ticket's view (what ``load_view`` would read back, without the query), and its triage."""
    subject = (msg.subject or msg.body.strip().split("\n", 1)[0])[:300]
    triage = plan(conn, ctx, msg, customer_id, _inbox_team(ctx, msg.inbox), subject)
    team_id = _team_id(conn, triage.team)
    reply_thread = _reply_thread(msg)
    values = {
        "customer_id": customer_id,
        "channel": msg.channel.value,
        "inbox": msg.inbox,
        "subject": subject,
        "status": TicketStatus.NEW.value,
        "priority": triage.priority,
        "team_id": team_id,
        "tags": list(triage.tags),
        "language": msg.language,
        "reply_identity_id": identity_id,
        "reply_thread": reply_thread,
        "related_ticket_id": decision.related_ticket_id,
        "portal_version": 1,
        "reopen_count": 0,
        "created_at": ctx.now,
        "updated_at": ctx.now,
        "kind": "ticket",
        "sla_policy": triage.sla_policy,
        "sla_fired": [],
        "first_response_due": triage.first_response_due,
        "resolution_due": triage.resolution_due,
        "sla_next_check": triage.sla_next_check,
    }
    row = _INSERT_TICKET[conn.dialect.name].run(conn, values).one()
    ticket_id, number = int(row.id), int(row.number)
    record(
        conn,
        ticket_id,
        at=ctx.now,
        actor="customer",
        kind="opened",
        reason=f"{msg.channel.value} message ({decision.reason})",
        channel=msg.channel.value,
        related_ticket_id=decision.related_ticket_id,
        team=triage.team or None,
    )
    assignee_id, _ = settle(conn, ctx, ticket_id, team_id, triage)
    if sender is None or msg.bounce is not None:  # a bounce may just have flagged the identity
        return ticket_id, number, 1, None, triage
    if assignee_id is not None:  # the assignee's contact is in the view: read it back
        return ticket_id, number, 1, load_view(conn, ctx, ticket_id), triage
    view = TicketView(
        id=ticket_id,
        number=number,
        subject=subject,
        status=TicketStatus.NEW.value,
        priority=triage.priority,
        channel=msg.channel.value,
        customer_id=customer_id,
        customer_name=sender.customer_name,
        customer_email=sender.customer_email,
        reply_to=ThreadRef(Channel(sender.channel), sender.address, reply_thread),
        status_url=ctx.status_url(ticket_id, number, 1),
        bouncing=sender.bouncing,
        team=triage.team or None,
        assignee_id=None,
        assignee_name=None,
        language=msg.language,
        created_at=ctx.now.astimezone(UTC),  # as the database hands it back
        first_response_due=_as_stored(triage.first_response_due),
    )
    return ticket_id, number, 1, view, triage


def _as_stored(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _continue_ticket(
    conn: Connection,
    ctx: UnitContext,
    msg: InboundMessage,
    decision: ThreadDecision,
    *,
    quiet: bool = False,
) -> tuple[int, int, int]:
    """Add to an existing ticket; a customer's message reopens it unless it is automatic or
    ``quiet`` (a comment on a rating)."""
    assert decision.ticket_id is not None
    row = _CONTINUED.run(conn, {"ticket_id": decision.ticket_id}).one()
    current = TicketStatus(row.status)
    values: dict[str, Any] = {}
    if thread := _reply_thread(msg):
        values["reply_thread"] = thread
    automatic = msg.auto_submitted or msg.bounce is not None or quiet
    target = None if automatic else status_after_customer_message(current)
    if target is not None:
        values["status"] = target.value
        if current is TicketStatus.RESOLVED:
            values["reopen_count"] = row.reopen_count + 1
            values["resolved_at"] = values["resolution_seconds"] = None
        values.update(clock_values(row, current, target, ctx.now, ctx.settings.sla))
        record(
            conn,
            decision.ticket_id,
            at=ctx.now,
            actor="customer",
            kind="status",
            reason=decision.reason,
            previous=current.value,
            current=target.value,
        )
    touch(conn, decision.ticket_id, ctx.now, **values)
    return decision.ticket_id, row.number, row.portal_version


def _reply_thread(msg: InboundMessage) -> str | None:
    """Where our next answer should thread: the channel's id of this message, if it has one."""
    return msg.metadata.get("reply_thread") or (
        msg.external_id if msg.channel.value == "email" else None
    )


def _append_message(conn: Connection, ctx: UnitContext, msg: InboundMessage, ticket_id: int) -> int:
    message_id = _INSERT_MESSAGE.run(
        conn,
        {
            "ticket_id": ticket_id,
            "kind": MessageKind.INBOUND.value,
            "channel": msg.channel.value,
            "author": "customer",
            "external_id": msg.external_id[:500],
            "subject": msg.subject[:300],
            "text": msg.body,
            "html": msg.html,
            "full_text": msg.text if msg.reply_text and msg.reply_text != msg.text else None,
            "automatic": msg.auto_submitted or msg.bounce is not None,
            "created_at": ctx.now,
        },
    ).scalar_one()
    if msg.attachments:
        rows = [
            {
                "message_id": message_id,
                "filename": a.filename[:300] or "attachment",
                "content_type": a.content_type[:200],
                "size": a.size,
                "sha256": a.sha256,
                "inline": a.inline,
            }
            for a in msg.attachments
        ]
        if conn.dialect.name == "sqlite":  # a few rows: cheaper one by one on the fast path
            for row in rows:
                _INSERT_ATTACHMENT.run(conn, row)
        else:  # one round trip for all of them
            conn.execute(insert(attachments), rows)
    if msg.channel.value == "email":
        add_thread_ref(conn, "email", msg.external_id, ticket_id)
    for ref in msg.metadata.get("thread_refs", ()):
        add_thread_ref(conn, msg.channel.value, ref, ticket_id)
    return message_id
