"""A new ticket is routed, assigned, put under its SLA policy and searched in the KB, in the
intake's transaction, with the reasons in its history (real database, both backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select, update

from bots.customer import CustomerBot
from bots.pings import PingBot
from core import accounts, kb
from core.helpdesk import Helpdesk
from core.kb_search import KbIndex
from core.messages import Channel, InboundMessage, Sender
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.models import Agent, Customer, OutboxRow, Ticket, TicketEvent, table_of
from tests.conftest import make_settings
from tests.core.conftest import StepClock

tickets, agents, history = table_of(Ticket), table_of(Agent), table_of(TicketEvent)
outbox, customers = table_of(OutboxRow), table_of(Customer)

RULES = [
    {
        "name": "vip",
        "stop": False,
        "when": {"customer": {"tier": "vip"}},
        "then": {"priority": "high", "add_tags": ["vip"], "notify": ["email:csm@example.com"]},
    },
    {
        "name": "refunds",
        "when": {"keywords": ["refund"]},
        "then": {
            "team": "billing",
            "add_tags": ["refund"],
            "assign": "least_loaded",
            "auto_reply": "Hi $name, send us the order number for #$number.",
        },
    },
    {
        "name": "german",
        "when": {"language": "de"},
        "then": {"team": "dach", "assign": "round_robin"},
    },
]
SLA = {
    "calendars": [
        {
            "name": "office",
            "timezone": "Europe/Berlin",
            "hours": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        }
    ],
    "policies": [
        {"name": "vip", "tiers": ["vip"], "first_response_minutes": 30, "resolution_minutes": 240},
        {
            "name": "standard",
            "calendar": "office",
            "first_response_minutes": 120,
            "resolution_minutes": 960,
        },
    ],
}


def message(external_id: str, text: str, *, address: str = "ann@example.org", **extra: Any):
    return InboundMessage(
        channel=Channel.EMAIL,
        external_id=external_id,
        sender=Sender(address=address, name="Ann Lee", email=address),
        subject=extra.pop("subject", "A question"),
        text=text,
        received_at=datetime(2026, 3, 2, tzinfo=UTC),
        **extra,
    )


@pytest.fixture
async def desk(db_url: str, tmp_path: Path, clock: StepClock) -> AsyncIterator[Helpdesk]:
    db = open_database(db_url, durable=False)
    upgrade(db)
    settings = make_settings(db_url, tmp_path, rules=RULES, sla=SLA)  # type: ignore[arg-type]
    helpdesk = Helpdesk(
        db,
        settings,
        b"k" * 32,
        clock=clock,
        reactions=[CustomerBot("Acme"), PingBot((), None)],
    )
    yield helpdesk
    await db.close()


async def _agents(desk: Helpdesk, team: str, *names: str, **columns: Any) -> list[int]:
    def unit(conn: Connection) -> list[int]:
        ids = []
        for name in names:
            agent_id = accounts.add_agent(
                conn,
                name=name,
                email=f"{name.lower()}@acme.test",
                role=accounts.Role.AGENT,
                now=datetime(2026, 1, 1, tzinfo=UTC),
                team=team,
            )
            ids.append(agent_id)
        if columns:
            conn.execute(update(agents).where(agents.c.id.in_(ids)).values(**columns))
        return ids

    return await desk.db.write(unit)


async def _ticket(desk: Helpdesk, number: int) -> Any:
    return await desk.db.read(
        lambda c: c.execute(select(tickets).where(tickets.c.number == number)).one()
    )


async def _history(desk: Helpdesk, ticket_id: int, kind: str) -> list[Any]:
    return await desk.db.read(
        lambda c: c.execute(
            select(history).where(history.c.ticket_id == ticket_id, history.c.kind == kind)
        ).all()
    )


async def _set_tier(desk: Helpdesk, email: str, tier: str) -> None:
    await desk.db.write(
        lambda c: c.execute(
            update(customers).where(customers.c.email == email).values(attributes={"tier": tier})
        )
    )


async def test_rules_route_assign_and_reply_with_reasons_in_history(desk: Helpdesk) -> None:
    alice, bob = await _agents(desk, "billing", "Alice", "Bob")
    first = await desk.ingest(message("m1", "I want a refund please"))
    row = await _ticket(desk, first.ticket_number)
    assert row.priority == "normal" and sorted(row.tags) == ["refund"]
    assert row.assignee_id == alice  # both idle: the lowest id
    routed = await _history(desk, row.id, "routed")
    assert [r.data["rule"] for r in routed] == ["refunds"]
    assert "keyword 'refund'" in routed[0].reason or "refund" in routed[0].reason
    assigned = await _history(desk, row.id, "assigned")
    assert assigned[0].data["strategy"] == "least_loaded" and assigned[0].data["agent"] == "Alice"

    # Alice now holds one open ticket: least-loaded picks Bob
    second = await desk.ingest(message("m2", "refund for order 123", address="bo@example.org"))
    assert (await _ticket(desk, second.ticket_number)).assignee_id == bob

    # the rule's auto-reply replaced the standard greeting, placeholders filled
    acks = await desk.db.read(
        lambda c: c.execute(select(outbox.c.payload).where(outbox.c.ticket_id == row.id)).all()
    )
    texts = [p.payload["text"] for p in acks]
    assert any(
        t.startswith(f"Hi Ann Lee, send us the order number for #{row.number}.") for t in texts
    )
    assert not any("thank you for contacting" in t for t in texts)


async def test_nobody_available_leaves_the_ticket_in_the_queue_and_says_why(
    desk: Helpdesk,
) -> None:
    await _agents(desk, "billing", "Away", away=True)
    await _agents(desk, "billing", "Full", max_open_tickets=0)
    result = await desk.ingest(message("m1", "refund"))
    row = await _ticket(desk, result.ticket_number)
    assert row.assignee_id is None
    (entry,) = await _history(desk, row.id, "assignment")
    assert "nobody available in team 'billing'" in entry.reason
    assert "left in the team queue" in entry.reason


async def test_round_robin_rotates_through_the_team(desk: Helpdesk) -> None:
    ids = await _agents(desk, "dach", "Anna", "Berta", "Carl")
    picks = []
    for i in range(4):
        result = await desk.ingest(
            message(f"m{i}", "Hallo", address=f"k{i}@example.de", language="de")
        )
        picks.append((await _ticket(desk, result.ticket_number)).assignee_id)
    assert picks == [ids[0], ids[1], ids[2], ids[0]]


async def test_agent_off_shift_is_skipped(desk: Helpdesk, clock: StepClock) -> None:
    # 09:00 UTC Monday is 04:00 in New York: Nora is off shift, Tom (Tokyo 18:00) is not
    nora, tom = await _agents(desk, "dach", "Nora", "Tom")
    await desk.db.write(
        lambda c: c.execute(
            update(agents)
            .where(agents.c.id == nora)
            .values(
                timezone="America/New_York",
                working_days="mon,tue,wed,thu,fri",
                working_hours="08:00-17:00",
            )
        )
    )
    result = await desk.ingest(message("m1", "Hallo", language="de"))
    assert (await _ticket(desk, result.ticket_number)).assignee_id == tom


async def test_sla_policy_by_tier_and_business_hours_due_times(
    desk: Helpdesk, clock: StepClock
) -> None:
    # Monday 2026-03-02 09:00 UTC = 10:00 in Berlin: 2 business hours -> 12:00 Berlin
    standard = await desk.ingest(message("m1", "hello"))
    row = await _ticket(desk, standard.ticket_number)
    assert row.sla_policy == "standard"
    assert row.first_response_due == datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    # 16 business hours from Mon 10:00 Berlin: Mon 7 h, Tue 8 h, Wed 1 h -> Wed 10:00 Berlin
    assert row.resolution_due == datetime(2026, 3, 4, 9, 0, tzinfo=UTC)
    (entry,) = await _history(desk, row.id, "sla_policy")
    assert entry.data["policy"] == "standard"

    # a VIP: the vip routing rule raises the priority, the vip SLA policy (24x7) applies
    await desk.ingest(message("seed", "first contact", address="vip@example.org"))
    await _set_tier(desk, "vip@example.org", "VIP")
    clock.advance(minutes=5)
    vip = await desk.ingest(
        message("m2", "another thing", address="vip@example.org", subject="New")
    )
    row = await _ticket(desk, vip.ticket_number)
    assert row.priority == "high" and "vip" in row.tags and row.sla_policy == "vip"
    assert row.first_response_due == datetime(2026, 3, 2, 9, 35, tzinfo=UTC)
    pings = await desk.db.read(
        lambda c: (
            c.execute(
                select(outbox.c.address).where(
                    outbox.c.ticket_id == row.id, outbox.c.channel == "email"
                )
            )
            .scalars()
            .all()
        )
    )
    assert "csm@example.com" in pings  # the rule's notify


async def test_kb_suggestions_and_gaps(desk: Helpdesk, clock: StepClock) -> None:
    def articles(conn: Connection) -> list[kb.Article]:
        kb.save_article(
            conn,
            kb.Article(
                slug="reset-password",
                title="How to reset your password",
                body="Open settings, choose security, then reset password.",
            ),
            clock(),
        )
        return kb.load_articles(conn)

    index = KbIndex.build(await desk.db.write(articles))
    desk.kb = lambda: index
    hit = await desk.ingest(
        message("m1", "I forgot my password, how do I reset it?", subject="Password reset")
    )
    miss = await desk.ingest(
        message(
            "m2",
            "The invoice PDF shows the wrong VAT number",
            subject="  Wrong VAT on invoice!  ",
            address="x@example.org",
        )
    )
    hit_row, miss_row = (
        await _ticket(desk, hit.ticket_number),
        await _ticket(desk, miss.ticket_number),
    )
    assert await _history(desk, hit_row.id, "kb_gap") == []
    (gap,) = await _history(desk, miss_row.id, "kb_gap")
    assert gap.data["question"] == "wrong vat on invoice"
    ack = await desk.db.read(
        lambda c: (
            c.execute(select(outbox.c.payload).where(outbox.c.ticket_id == hit_row.id))
            .scalars()
            .first()
        )
    )
    assert "How to reset your password" in ack["text"]
