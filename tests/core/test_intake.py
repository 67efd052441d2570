"""ingest() on SQLite and PostgreSQL: dedupe, identities, threading, attachments, atomicity."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from core.desk import Actor
from core.errors import NotFound, TooLarge
from core.helpdesk import Helpdesk
from core.messages import Attachment, Bounce, Channel, InboundMessage, Sender, ThreadHints
from core.persistence.models import (
    AttachmentRow,
    Customer,
    Identity,
    InboundReceipt,
    Message,
    OutboxRow,
    Ticket,
    TicketEvent,
)
from core.tickets import TicketStatus
from tests.core.conftest import StepClock

SYSTEM = Actor(None, "system", "admin")


def inbound(
    external_id: str,
    text: str = "My order never arrived.",
    *,
    channel: Channel = Channel.EMAIL,
    address: str = "ann@example.org",
    email: str | None = "ann@example.org",
    **extra: Any,
) -> InboundMessage:
    return InboundMessage(
        channel=channel,
        external_id=external_id,
        sender=Sender(address=address, name="Ann Lee", email=email),
        subject=extra.pop("subject", "Where is my order?"),
        text=text,
        received_at=datetime(2026, 3, 2, tzinfo=UTC),
        **extra,
    )


async def count(helpdesk: Helpdesk, model: Any, *where: Any) -> int:
    table = model.__table__
    return await helpdesk.db.read(
        lambda c: c.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
    )


async def ticket(helpdesk: Helpdesk, number: int) -> Any:
    table = Ticket.__table__
    return await helpdesk.db.read(
        lambda c: c.execute(select(table).where(table.c.number == number)).one()
    )


async def test_a_retried_delivery_creates_nothing_twice(helpdesk: Helpdesk) -> None:
    first = await helpdesk.ingest(inbound("<m1@mail>"))
    again = await helpdesk.ingest(inbound("<m1@mail>"))
    assert first.created and not first.duplicate
    assert again.duplicate and again.ticket_number == first.ticket_number
    assert again.status_url == first.status_url
    assert await count(helpdesk, Ticket) == 1
    assert await count(helpdesk, Message) == 1
    assert await count(helpdesk, OutboxRow) == 1  # one acknowledgement


async def test_retried_deliveries_take_no_ticket_number(helpdesk: Helpdesk) -> None:
    await helpdesk.ingest(inbound("<n1@mail>"))
    await asyncio.gather(*(helpdesk.ingest(inbound("<n1@mail>")) for _ in range(3)))
    await helpdesk.ingest(inbound("<n1@mail>"))
    second = await helpdesk.ingest(inbound("<n2@mail>", address="bo@example.org", email=None))
    assert second.ticket_number == 2  # no number was spent on the retries


async def test_concurrent_duplicates_are_stored_once(helpdesk: Helpdesk) -> None:
    results = await asyncio.gather(*(helpdesk.ingest(inbound("same-id")) for _ in range(10)))
    assert {r.ticket_number for r in results} == {1}
    assert sum(not r.duplicate for r in results) == 1
    assert await count(helpdesk, Message) == 1


async def test_a_new_sender_writing_twice_at_once_gets_one_identity(helpdesk: Helpdesk) -> None:
    """Both intakes find no identity; the second to insert it waits for the first's commit and
    then uses the identity that one wrote (on PostgreSQL: with the customer in the same
    statement, which leaves that second customer row without an identity)."""
    results = await asyncio.gather(
        *(
            helpdesk.ingest(inbound(f"twice-{i}", address="n@example.org", email=None))
            for i in range(6)
        )
    )
    assert len({r.ticket_number for r in results}) == 6 and not any(r.duplicate for r in results)
    assert await count(helpdesk, Identity) == 1
    identity = Identity.__table__
    owners = await helpdesk.db.read(
        lambda c: c.execute(select(identity.c.customer_id)).scalars().all()
    )
    tickets = Ticket.__table__
    assert await helpdesk.db.read(
        lambda c: set(c.execute(select(tickets.c.customer_id)).scalars().all())
    ) == set(owners)


async def test_ticket_numbers_are_sequential_and_unique(helpdesk: Helpdesk) -> None:
    results = await asyncio.gather(
        *(
            helpdesk.ingest(
                inbound(f"m{i}", address=f"c{i}@example.org", email=f"c{i}@example.org")
            )
            for i in range(25)
        )
    )
    assert sorted(r.ticket_number for r in results) == list(range(1, 26))


async def test_one_customer_across_channels_by_email(helpdesk: Helpdesk) -> None:
    await helpdesk.ingest(inbound("e1"))
    await helpdesk.ingest(inbound("w1", channel=Channel.WEB))
    await helpdesk.ingest(
        inbound("t1", channel=Channel.TELEGRAM, address="5550001", email="ANN@example.org")
    )
    assert await count(helpdesk, Customer) == 1
    # web and email share the email identity; Telegram adds its own
    assert await count(helpdesk, Identity) == 2


async def test_thread_reference_continues_and_reopens(helpdesk: Helpdesk, clock: StepClock) -> None:
    opened = await helpdesk.ingest(inbound("<first@mail>"))
    await helpdesk.set_status(opened.ticket_number, TicketStatus.RESOLVED, SYSTEM)
    clock.advance(days=2)
    reply = await helpdesk.ingest(
        inbound(
            "<second@mail>",
            "It still has not arrived.",
            thread_hints=ThreadHints(references=("first@mail", "<first@mail>")),
        )
    )
    assert reply.ticket_number == opened.ticket_number and not reply.created
    row = await ticket(helpdesk, opened.ticket_number)
    assert row.status == "open" and row.reopen_count == 1 and row.resolved_at is None
    assert await count(helpdesk, Message, Message.__table__.c.ticket_id == row.id) == 2


async def test_reply_to_our_acknowledgement_threads_by_its_message_id(helpdesk: Helpdesk) -> None:
    opened = await helpdesk.ingest(inbound("<q@mail>"))
    ack = await helpdesk.db.read(lambda c: c.execute(select(OutboxRow.__table__)).one())
    message_id = ack.payload["message_id"]
    reply = await helpdesk.ingest(
        inbound("<r@mail>", thread_hints=ThreadHints(references=(message_id,)))
    )
    assert reply.ticket_number == opened.ticket_number


async def test_ticket_number_only_from_its_own_customer(helpdesk: Helpdesk) -> None:
    opened = await helpdesk.ingest(inbound("a1", subject="[#1] help"))
    mine = await helpdesk.ingest(inbound("a2", thread_hints=ThreadHints(ticket_number=1)))
    stranger = await helpdesk.ingest(
        inbound(
            "b1",
            address="eve@example.org",
            email="eve@example.org",
            thread_hints=ThreadHints(ticket_number=opened.ticket_number),
        )
    )
    assert mine.ticket_number == opened.ticket_number
    assert stranger.created and stranger.ticket_number != opened.ticket_number


async def test_writing_to_a_closed_ticket_opens_a_linked_one(helpdesk: Helpdesk) -> None:
    opened = await helpdesk.ingest(inbound("c1"))
    await helpdesk.set_status(opened.ticket_number, TicketStatus.RESOLVED, SYSTEM)
    await helpdesk.set_status(opened.ticket_number, TicketStatus.CLOSED, SYSTEM)
    later = await helpdesk.ingest(inbound("c2", thread_hints=ThreadHints(ticket_number=1)))
    assert later.created
    row = await ticket(helpdesk, later.ticket_number)
    assert row.related_ticket_id == (await ticket(helpdesk, opened.ticket_number)).id


async def test_resolved_long_ago_opens_a_linked_ticket(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    opened = await helpdesk.ingest(inbound("d1"))
    await helpdesk.set_status(opened.ticket_number, TicketStatus.RESOLVED, SYSTEM)
    clock.advance(days=15)  # the example config's window is 14 days
    later = await helpdesk.ingest(inbound("d2", thread_hints=ThreadHints(ticket_number=1)))
    assert later.created
    assert (await ticket(helpdesk, opened.ticket_number)).status == "resolved"


async def test_attachments_are_stored_by_content(helpdesk: Helpdesk) -> None:
    photo = Attachment("photo.jpg", "image/jpeg", b"\xff\xd8 jpeg bytes")
    result = await helpdesk.ingest(inbound("f1", attachments=(photo, photo)))
    rows = await helpdesk.db.read(lambda c: c.execute(select(AttachmentRow.__table__)).all())
    assert [(r.filename, r.size, r.sha256) for r in rows] == [
        ("photo.jpg", photo.size, photo.sha256)
    ] * 2
    assert helpdesk.attachments.get(photo.sha256) == photo.content
    assert result.message_id == rows[0].message_id


async def test_oversized_attachment_is_refused_and_nothing_written(helpdesk: Helpdesk) -> None:
    big = Attachment(
        "big.bin",
        "application/octet-stream",
        b"x" * (helpdesk.settings.intake.max_attachment_bytes + 1),
    )
    with pytest.raises(TooLarge, match=r"big\.bin"):
        await helpdesk.ingest(inbound("g1", attachments=(big,)))
    assert await count(helpdesk, InboundReceipt) == 0


async def test_a_failing_unit_rolls_back_everything(helpdesk: Helpdesk) -> None:
    """A failure after the first writes (here: a bad portal token) leaves no trace."""
    with pytest.raises(NotFound):
        await helpdesk.ingest(
            inbound("h1", thread_hints=ThreadHints(ticket_number=1, portal_token="forged"))
        )
    assert await count(helpdesk, InboundReceipt) == 0
    assert await count(helpdesk, Customer) == 0
    # and the failed unit did not disturb a healthy one committed next to it
    ok = await helpdesk.ingest(inbound("h2"))
    assert ok.ticket_number == 1


async def test_history_records_who_and_why(helpdesk: Helpdesk) -> None:
    await helpdesk.ingest(inbound("i1"))
    events = await helpdesk.db.read(
        lambda c: c.execute(
            select(TicketEvent.__table__).order_by(TicketEvent.__table__.c.id)
        ).all()
    )
    assert [(e.kind, e.actor) for e in events] == [("opened", "customer")]
    assert "no matching ticket" in events[0].reason


async def test_bounce_marks_the_address_and_sends_nothing(helpdesk: Helpdesk) -> None:
    opened = await helpdesk.ingest(inbound("<orig@mail>"))
    ack_id = (
        await helpdesk.db.read(lambda c: c.execute(select(OutboxRow.__table__)).one())
    ).payload["message_id"]
    bounce = inbound(
        "<bounce@mta>",
        "Delivery failed",
        address="mailer-daemon@mta.example",
        email=None,
        auto_submitted=True,
        bounce=Bounce(("ann@example.org",), permanent=True, original_message_id=ack_id),
    )
    result = await helpdesk.ingest(bounce)
    assert result.ticket_number == opened.ticket_number
    identity = await helpdesk.db.read(
        lambda c: c.execute(
            select(Identity.__table__).where(Identity.__table__.c.address == "ann@example.org")
        ).one()
    )
    assert identity.bouncing
    assert await count(helpdesk, OutboxRow) == 1  # still only the first acknowledgement


async def test_receipt_points_at_the_ticket_and_message(helpdesk: Helpdesk) -> None:
    result = await helpdesk.ingest(inbound("<r1@mail>"))
    table = InboundReceipt.__table__
    row = await helpdesk.db.read(
        lambda c: c.execute(select(table).where(table.c.external_id == "<r1@mail>")).one()
    )
    assert (row.ticket_id, row.message_id) == (result.ticket_id, result.message_id)


async def test_loop_protection_counts_a_new_address_within_the_unit(helpdesk: Helpdesk) -> None:
    """A new customer's address has no earlier automatic mail, so the hourly limit is counted in
    memory: the messages queued in the same unit still count."""
    from dataclasses import replace

    from core.events import TicketOpened
    from core.messages import OutboundMessage
    from core.views import Outgoing

    def chatty(event: Any, view: Any) -> list[Outgoing]:
        if not isinstance(event, TicketOpened):
            return []
        return [
            Outgoing(f"auto:{view.id}:{i}", OutboundMessage(view.reply_to, f"#{i}", automatic=True))
            for i in range(3)
        ]

    helpdesk.settings = replace(
        helpdesk.settings,
        outbox=replace(helpdesk.settings.outbox, max_automatic_per_address_per_hour=2),
    )
    helpdesk.reactions = [chatty]
    await helpdesk.ingest(inbound("<c1@mail>", address="new@example.org", email=None))
    assert await count(helpdesk, OutboxRow) == 2
    assert await count(helpdesk, TicketEvent, TicketEvent.__table__.c.kind == "suppressed") == 1
