"""The SLA clock on stored tickets (both backends): due times at opening, the pause while
pending, warnings to the assignee, breaches to the supervisors with the policy's actions, and
every signal fired exactly once, also when sweeps overlap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bots.pings import PingBot
from core import accounts, sla_clock
from core.desk import Actor
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Sender, ThreadHints
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.models import Agent, OutboxRow, Ticket, TicketEvent, table_of
from core.sla import sweep
from core.tickets import Priority, TicketStatus
from tests.conftest import make_settings
from tests.core.conftest import StepClock

tickets, history, outbox, agents = (
    table_of(Ticket),
    table_of(TicketEvent),
    table_of(OutboxRow),
    table_of(Agent),
)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
SLA = {
    "policies": [
        {
            "name": "urgent",
            "priorities": ["urgent"],
            "first_response_minutes": 15,
            "resolution_minutes": 60,
        },
        {
            "name": "standard",
            "first_response_minutes": 60,
            "resolution_minutes": 600,
            "warn_at": 0.5,
            "raise_priority_to": "high",
            "reassign": "least_loaded",
        },
    ]
}


@pytest.fixture
async def desk(db_url: str, tmp_path: Path, clock: StepClock) -> AsyncIterator[Helpdesk]:
    db = open_database(db_url, durable=False)
    upgrade(db)
    settings = make_settings(
        db_url,
        tmp_path,
        sla=SLA,
        bots={"supervisors": ["email:lead@acme.test", "slack:UBOSS"]},
        rules=[{"name": "all", "then": {"team": "support"}}],  # type: ignore[dict-item]
    )
    helpdesk = Helpdesk(
        db, settings, b"k" * 32, clock=clock, reactions=[PingBot(settings.bots.supervisors, None)]
    )
    yield helpdesk
    await db.close()


async def _open(desk: Helpdesk, external_id: str = "m1") -> int:
    result = await desk.ingest(
        InboundMessage(
            channel=Channel.EMAIL,
            external_id=external_id,
            sender=Sender(address=f"{external_id}@example.org", name="Ann", email=None),
            subject="Printer on fire",
            text="Help",
            received_at=START,
        )
    )
    assert result.ticket_number is not None
    return result.ticket_number


async def _agent(desk: Helpdesk, name: str) -> Actor:
    agent_id = await desk.db.write(
        lambda c: accounts.add_agent(
            c,
            name=name,
            email=f"{name.lower()}@acme.test",
            role=accounts.Role.AGENT,
            now=START,
            team="support",
        )
    )
    return Actor(agent_id, name, "agent")


async def _row(desk: Helpdesk, number: int) -> Any:
    return await desk.db.read(
        lambda c: c.execute(select(tickets).where(tickets.c.number == number)).one()
    )


async def _events(desk: Helpdesk, number: int, *kinds: str) -> list[Any]:
    row = await _row(desk, number)
    return await desk.db.read(
        lambda c: c.execute(
            select(history)
            .where(history.c.ticket_id == row.id, history.c.kind.in_(kinds))
            .order_by(history.c.id)
        ).all()
    )


async def _pings(desk: Helpdesk, number: int) -> list[tuple[str, str, str]]:
    row = await _row(desk, number)
    rows = await desk.db.read(
        lambda c: c.execute(
            select(outbox.c.channel, outbox.c.address, outbox.c.payload)
            .where(outbox.c.ticket_id == row.id)
            .order_by(outbox.c.id)
        ).all()
    )
    return [(r.channel, r.address, r.payload["text"].split("\n")[0]) for r in rows]


async def test_warning_to_the_assignee_then_breach_to_supervisors_once(
    desk: Helpdesk, clock: StepClock
) -> None:
    alice = await _agent(desk, "Alice")
    bob = await _agent(desk, "Bob")
    number = await _open(desk)
    await desk.claim(number, alice)
    assert await desk.sweep_sla(START + timedelta(minutes=29)) == 0

    # half the first-response target used up: Alice is warned, once
    assert await desk.sweep_sla(START + timedelta(minutes=30)) == 1
    assert await desk.sweep_sla(START + timedelta(minutes=45)) == 0
    (warning,) = await _events(desk, number, "sla_warning")
    assert warning.data["target"] == "first_response"
    assert [p for p in await _pings(desk, number) if p[1] == "alice@acme.test"] == [
        ("email", "alice@acme.test", f"SLA warning on ticket #{number}: Printer on fire")
    ]

    # the target passes: breach, pings to both supervisors, priority raised, reassigned
    clock.now = START + timedelta(minutes=61)
    assert await desk.sweep_sla(clock.now) == 1
    assert await desk.sweep_sla(clock.now + timedelta(minutes=5)) == 0
    (breach,) = await _events(desk, number, "sla_breach")
    assert breach.data == {
        "target": "first_response",
        "due": (START + timedelta(hours=1)).isoformat(),
        "policy": "standard",
    }
    row = await _row(desk, number)
    assert row.priority == "high"
    assert row.assignee_id == bob.agent_id  # least loaded, Alice excluded
    assert row.sla_policy == "standard"  # a raised priority does not bring new targets
    assert sorted(row.sla_fired) == ["breach:first_response", "warning:first_response"]
    breach_pings = [p for p in await _pings(desk, number) if "breach" in p[2]]
    assert sorted((c, a) for c, a, _ in breach_pings) == [  # the new owner hears of it too
        ("email", "bob@acme.test"),
        ("email", "lead@acme.test"),
        ("slack", "UBOSS"),
    ]


async def test_an_answer_in_time_stops_the_first_response_clock(
    desk: Helpdesk, clock: StepClock
) -> None:
    alice = await _agent(desk, "Alice")
    number = await _open(desk)
    clock.now = START + timedelta(minutes=10)
    await desk.reply(number, "On it", alice)
    assert await desk.sweep_sla(START + timedelta(hours=2)) == 0
    assert await _events(desk, number, "sla_warning", "sla_breach") == []


async def test_pending_stops_the_resolution_clock_and_resume_pushes_the_due_time(
    desk: Helpdesk, clock: StepClock
) -> None:
    alice = await _agent(desk, "Alice")
    number = await _open(desk)
    clock.now = START + timedelta(minutes=5)
    await desk.reply(number, "Which printer?", alice, status=TicketStatus.PENDING)
    row = await _row(desk, number)
    assert row.paused_since == clock.now
    due = row.resolution_due
    assert due == START + timedelta(hours=10)

    # pending for a day: no warning, no breach, whatever the time
    assert await desk.sweep_sla(START + timedelta(days=1)) == 0

    # the customer answers after 3 hours: the due time moves 3 hours later
    clock.now = START + timedelta(hours=3, minutes=5)
    await desk.ingest(
        InboundMessage(
            channel=Channel.EMAIL,
            external_id="m2",
            sender=Sender(address="m1@example.org", name="Ann", email=None),
            subject=f"Re: [#{number}] Printer on fire",
            text="The red one",
            received_at=clock.now,
            thread_hints=ThreadHints(ticket_number=number),
        )
    )
    row = await _row(desk, number)
    assert row.status == "open" and row.paused_since is None
    assert row.resolution_due == due + timedelta(hours=3)
    # at the old due time: only the warning (half the target is used up), no breach
    assert await desk.sweep_sla(due + timedelta(minutes=1)) == 1
    assert [e.data["target"] for e in await _events(desk, number, "sla_warning")] == ["resolution"]
    assert await _events(desk, number, "sla_breach") == []
    assert await desk.sweep_sla(row.resolution_due + timedelta(seconds=1)) == 1
    (breach,) = await _events(desk, number, "sla_breach")
    assert breach.data["target"] == "resolution"


async def test_priority_change_applies_the_other_policy(desk: Helpdesk, clock: StepClock) -> None:
    alice = await _agent(desk, "Alice")
    number = await _open(desk)
    clock.now = START + timedelta(minutes=1)
    await desk.update_fields(number, alice, priority=Priority.URGENT)
    row = await _row(desk, number)
    assert row.sla_policy == "urgent"
    assert row.first_response_due == START + timedelta(minutes=15)
    assert row.resolution_due == START + timedelta(hours=1)
    opening, change = await _events(desk, number, "sla_policy")
    assert (opening.data["policy"], change.data["policy"]) == ("standard", "urgent")
    assert change.reason == "priority urgent: SLA policy 'urgent' applies"
    assert await desk.sweep_sla(START + timedelta(minutes=16)) == 1


async def test_overlapping_sweeps_fire_each_signal_once(desk: Helpdesk) -> None:
    numbers = [await _open(desk, f"m{i}") for i in range(20)]
    at = START + timedelta(hours=2)
    fired = await asyncio.gather(*(desk.sweep_sla(at) for _ in range(4)))
    assert sum(fired) == 20  # one first-response breach per ticket, whoever fired it
    for number in numbers[:3]:
        assert len(await _events(desk, number, "sla_breach")) == 1


async def test_resolved_and_closed_tickets_are_not_swept(desk: Helpdesk, clock: StepClock) -> None:
    alice = await _agent(desk, "Alice")
    number = await _open(desk)
    await desk.set_status(number, TicketStatus.RESOLVED, alice, "fixed")
    assert (await _row(desk, number)).sla_next_check is None  # out of the sweep's index range
    assert await desk.sweep_sla(START + timedelta(days=3)) == 0


async def test_tickets_opened_without_a_policy_have_no_sla(
    db_url: str, tmp_path: Path, clock: StepClock
) -> None:
    db = open_database(db_url, durable=False)
    upgrade(db)
    desk = Helpdesk(db, make_settings(db_url, tmp_path), b"k" * 32, clock=clock)
    try:
        number = await _open(desk)
        row = await _row(desk, number)
        assert row.sla_policy is None and row.first_response_due is None
        assert await desk.sweep_sla(START + timedelta(days=30)) == 0
    finally:
        await db.close()


async def test_breach_reassign_with_nobody_else_says_so(desk: Helpdesk, clock: StepClock) -> None:
    alice = await _agent(desk, "Alice")
    number = await _open(desk)
    await desk.claim(number, alice)
    await desk.db.write(
        lambda c: c.execute(update(agents).where(agents.c.id == alice.agent_id).values(away=True))
    )
    assert await desk.sweep_sla(START + timedelta(hours=1, minutes=1)) == 1
    row = await _row(desk, number)
    assert row.assignee_id == alice.agent_id  # nobody to hand it to: it stays
    (entry,) = await _events(desk, number, "assignment")
    assert entry.actor == "sla" and "nobody available" in entry.reason


async def test_find_signals_reads_the_rows_as_sqlalchemy_would(desk: Helpdesk) -> None:
    """SQLite's fast path (the sweep's SELECT on the DBAPI cursor, values converted by hand)
    gives the snapshots and signals of the plain SQLAlchemy query, whatever the stored state."""
    numbers = [await _open(desk, f"m{i}") for i in range(6)]
    fired = ["breach:first_response", "warning:resolution"]
    changes: list[dict[str, Any]] = [
        {
            "first_response_at": START + timedelta(minutes=5),
            "sla_fired": ["warning:first_response"],
        },
        {"status": "pending", "paused_since": START + timedelta(hours=1), "sla_fired": fired},
        {"first_response_due": None, "resolution_due": None},  # computed from the calendar
        {"resolved_at": START + timedelta(hours=2), "status": "open"},  # reopened
        {"status": "closed"},  # not swept
        {"sla_fired": []},  # as opened
    ]
    for number, values in zip(numbers, changes, strict=True):
        due = {"sla_next_check": START}  # every one is looked at
        await desk.db.write(
            lambda c, n=number, v={**values, **due}: c.execute(
                update(tickets).where(tickets.c.number == n).values(**v)
            )
        )
    sla = desk.settings.sla

    def both(conn: Any, now: datetime) -> tuple[Any, Any]:
        rows = conn.execute(sla_clock._DUE_FOR_CHECK, {"now": now}).all()
        reference = [sla_clock._snapshot(r) for r in rows]
        assert len(reference) == 5  # the closed one is not looked at
        expected = sweep(reference, now, sla.policies, sla.calendar_map)
        if conn.dialect.name == "sqlite":
            assert list(sla_clock._sqlite_snapshots(conn, now)) == reference
        return sla_clock.find_signals(conn, now, sla)[0], expected

    kinds = set()
    for minutes in (0, 20, 45, 90, 400, 700, 3000):
        now = START + timedelta(minutes=minutes)
        found, expected = await desk.db.read(lambda c, now=now: both(c, now))
        assert found == expected
        kinds |= {signal.kind for _, signal in found}
    assert kinds == {"warning", "breach"}

    # stored text not in SQLAlchemy's own form still reads as its result processing would
    for text in ("2026-03-02 09:00:00.000001", "2026-03-02 09:00:00", "2026-03-02 10:00:00+01:00"):
        parsed = datetime.fromisoformat(text)
        expected_utc = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
        assert sla_clock._utc_from_sqlite(text) == expected_utc
        assert sla_clock._utc_from_sqlite(text).utcoffset() == timedelta(0)
