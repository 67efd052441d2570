"""KPIs over a small history built through the real use cases with a controlled clock.

The period is 2026-03-02 00:00 to 2026-03-04 00:00 (UTC). Tickets (all "normal" priority):

    T0  email/billing  opened 03-01 12:00 (before the period), never answered
    T1  email/billing  09:00 open; a1 claims 09:10, replies 09:30, resolves 11:00; CSAT 5, NPS 10
    T2  telegram/tech  09:00; a2 claims 09:20, replies 10:00 (-> pending), customer 12:00
                       (-> open), a2 replies 13:00, resolves 14:00; CSAT 3, NPS 9
    T3  web/billing    10:00; a1 claims 10:00, replies 14:00, resolves 15:00; customer writes
                       03-03 09:00 (reopened), a1 resolves 03-03 10:00; NPS 6
    T4  email/tech     11:00; never answered; KB gap "How do I export my data?"
    T5  email/tech     12:00; the customer resolves it with a KB article at 12:30 (deflected)
    T6  api/no team    03-03 08:00; KB gap "  how do I EXPORT my data  "
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from core import accounts, desk, reports, surveys
from core.desk import Actor
from core.errors import InvalidInput
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Sender, ThreadHints
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.records import record, tickets
from core.reports import (
    Attainment,
    Csat,
    DayFlow,
    Deflection,
    Durations,
    FirstContactResolution,
    Nps,
    Reopens,
    ReportFilter,
    StatusTime,
)
from core.tickets import TicketStatus
from tests.conftest import make_settings
from tests.core.conftest import StepClock

SINCE = datetime(2026, 3, 2, tzinfo=UTC)
UNTIL = datetime(2026, 3, 4, tzinfo=UTC)
PERIOD = ReportFilter(SINCE, UNTIL)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@dataclass
class History:
    helpdesk: Helpdesk
    numbers: dict[str, int]
    a1: Actor
    a2: Actor

    async def kpi(self, fn: object, f: ReportFilter = PERIOD) -> object:
        return await self.helpdesk.db.read(lambda conn: fn(conn, f))  # type: ignore[operator]


@pytest.fixture
async def history(db_url: str, tmp_path: Path, clock: StepClock) -> AsyncIterator[History]:
    db = open_database(db_url, durable=False)
    upgrade(db)
    inboxes = [{"name": "billing", "team": "billing"}, {"name": "tech", "team": "tech"}]
    settings = make_settings(db_url, tmp_path, inboxes=inboxes)  # type: ignore[arg-type]
    helpdesk = Helpdesk(db, settings, b"test-secret" * 4, clock=clock)
    try:
        yield await _build(helpdesk, clock)
    finally:
        await db.close()


async def _build(helpdesk: Helpdesk, clock: StepClock) -> History:
    async def agent(name: str) -> Actor:
        agent_id = await helpdesk.db.write(
            lambda c: accounts.add_agent(
                c, name=name, email=f"{name}@support.test", role=accounts.Role.AGENT, now=SINCE
            )
        )
        return Actor(agent_id, name, "agent")

    a1, a2 = await agent("a1"), await agent("a2")
    numbers: dict[str, int] = {}

    async def write(
        key: str, when: datetime, channel: Channel, inbox: str | None, to: str | None = None
    ) -> None:
        clock.now = when
        result = await helpdesk.ingest(
            InboundMessage(
                channel,
                f"{key}@{when.isoformat()}",
                Sender(f"{(to or key).lower()}-customer", "Customer"),
                "Please help",
                when,
                subject=f"Ticket {key}",
                inbox=inbox,
                thread_hints=ThreadHints(ticket_number=numbers[to]) if to else ThreadHints(),
            )
        )
        if to is None:
            assert result.ticket_number is not None and result.created
            numbers[key] = result.ticket_number

    async def act(when: datetime, step: object) -> None:
        clock.now = when
        await step  # type: ignore[misc]

    async def gap(key: str, when: datetime, question: str) -> None:
        clock.now = when
        ticket_id = await helpdesk.db.read(
            lambda c: c.execute(tickets.select().where(tickets.c.number == numbers[key])).one().id
        )
        await helpdesk.run(
            lambda c, ctx: record(
                c,
                ticket_id,
                at=ctx.now,
                actor="bot",
                kind="kb_gap",
                question=reports.normalize_question(question),
            )
        )

    async def answer(key: str, when: datetime, kind: str, score: int) -> None:
        clock.now = when
        outcome = await helpdesk.run(
            lambda c, ctx: surveys.answer(c, ctx, numbers[key], kind, score, 7)
        )
        assert outcome is surveys.SurveyOutcome.RECORDED

    def n(key: str) -> int:
        return numbers[key]

    resolved = TicketStatus.RESOLVED
    await write("T0", at(1, 12), Channel.EMAIL, "billing")
    await write("T1", at(2, 9), Channel.EMAIL, "billing")
    await write("T2", at(2, 9), Channel.TELEGRAM, "tech")
    await act(at(2, 9, 10), helpdesk.claim(n("T1"), a1))
    await act(at(2, 9, 20), helpdesk.claim(n("T2"), a2))
    await act(at(2, 9, 30), helpdesk.reply(n("T1"), "Fixed", a1))
    await write("T3", at(2, 10), Channel.WEB, "billing")
    await act(at(2, 10), helpdesk.claim(n("T3"), a1))
    await act(at(2, 10), helpdesk.reply(n("T2"), "Which version?", a2, status=TicketStatus.PENDING))
    await act(at(2, 11), helpdesk.set_status(n("T1"), resolved, a1))
    await write("T4", at(2, 11), Channel.EMAIL, "tech")
    await gap("T4", at(2, 11), "How do I export my data?")
    await write("T2+", at(2, 12), Channel.TELEGRAM, None, to="T2")
    await answer("T1", at(2, 12), "csat", 5)
    await answer("T1", at(2, 12), "nps", 10)
    await write("T5", at(2, 12), Channel.EMAIL, "tech")
    await act(
        at(2, 12, 30),
        helpdesk.run(lambda c, ctx: desk.resolve_self_service(c, ctx, n("T5"), "kb article")),
    )
    await act(at(2, 13), helpdesk.reply(n("T2"), "Try 4.2.1", a2))
    await act(at(2, 14), helpdesk.reply(n("T3"), "Done", a1))
    await act(at(2, 14), helpdesk.set_status(n("T2"), resolved, a2))
    await act(at(2, 15), helpdesk.set_status(n("T3"), resolved, a1))
    await answer("T2", at(2, 15), "csat", 3)
    await answer("T2", at(2, 15), "nps", 9)
    await write("T6", at(3, 8), Channel.API, None)
    await gap("T6", at(3, 8), "  how do I EXPORT my data  ")
    await write("T3+", at(3, 9), Channel.WEB, "billing", to="T3")
    await act(at(3, 10), helpdesk.set_status(n("T3"), resolved, a1))
    await answer("T3", at(3, 11), "nps", 6)
    # no SLA engine sets due times yet: they are written as it would
    dues = {
        "T1": (at(2, 9, 30), at(2, 10)),  # answered on time, resolved late
        "T2": (at(2, 9, 45), at(3, 9)),  # answered late, resolved on time
        "T4": (at(2, 12), at(5, 0)),  # unanswered past due; resolution not due yet at `until`
        "T6": (at(4, 8), None),  # first response not due yet at `until`
    }
    for key, (first, resolution) in dues.items():
        await helpdesk.db.write(
            lambda c, k=key, fr=first, rd=resolution: c.execute(
                update(tickets)
                .where(tickets.c.number == n(k))
                .values(first_response_due=fr, resolution_due=rd)
            )
        )
    return History(helpdesk, numbers, a1, a2)


async def test_first_response_time_of_the_tickets_opened_in_the_period(history: History) -> None:
    # T1 30 min, T2 60 min, T3 4 h (T0 opened before the period; T4-T6 unanswered)
    assert await history.kpi(reports.first_response) == Durations(3, 6600.0, 3600.0, 14400.0)
    mine = ReportFilter(SINCE, UNTIL, agent_id=history.a1.agent_id)
    assert await history.kpi(reports.first_response, mine) == Durations(2, 8100.0, 1800.0, 14400.0)


async def test_resolution_time_of_the_tickets_resolved_in_the_period(history: History) -> None:
    # T5 30 min, T1 2 h, T2 5 h, T3 24 h (its latest resolution)
    assert await history.kpi(reports.resolution) == Durations(4, 28350.0, 7200.0, 86400.0)
    telegram = ReportFilter(SINCE, UNTIL, channel="telegram")
    assert await history.kpi(reports.resolution, telegram) == Durations(
        1, 18000.0, 18000.0, 18000.0
    )
    high = ReportFilter(SINCE, UNTIL, priority="high")
    assert await history.kpi(reports.resolution, high) == Durations(0, None, None, None)


async def test_first_contact_resolution(history: History) -> None:
    # answered: T1 (one reply), T2 (two), T3 (one, but reopened); T5 had no agent reply
    assert await history.kpi(reports.first_contact_resolution) == FirstContactResolution(
        resolved=4, answered=3, first_contact=1, rate=1 / 3
    )


async def test_sla_attainment(history: History) -> None:
    sla = await history.kpi(reports.sla_attainment)
    assert sla == reports.SlaAttainment(
        first_response=Attainment(met=1, breached=2, pending=1, rate=1 / 3),
        resolution=Attainment(met=1, breached=1, pending=1, rate=1 / 2),
    )


async def test_created_resolved_and_backlog_per_day(history: History) -> None:
    flow = await history.kpi(reports.flow)
    # The backlog follows the tickets' latest resolution: T3, resolved on 03-02 and reopened
    # on 03-03, counts as unresolved until its resolution on 03-03.
    assert flow == reports.Flow(
        created=6,
        resolved=4,
        backlog_start=1,
        backlog_end=3,
        days=[DayFlow(date(2026, 3, 2), 5, 3, 3), DayFlow(date(2026, 3, 3), 1, 1, 3)],
    )
    # a period that ends mid-day leaves out what came later that day
    morning = ReportFilter(SINCE, at(2, 10, 30))
    assert (await history.kpi(reports.flow, morning)).days == [  # type: ignore[attr-defined]
        DayFlow(date(2026, 3, 2), 3, 0, 4)
    ]


async def test_reopen_rate(history: History) -> None:
    assert await history.kpi(reports.reopen_rate) == Reopens(resolved=4, reopened=1, rate=1 / 4)


async def test_time_in_each_status(history: History) -> None:
    # new: T0 all 48 h, T1 10 min, T2 20 min, T3 0, T4 37 h, T5 30 min, T6 16 h
    # open: T1 110 min, T2 40 min + 2 h, T3 5 h + 1 h; pending: T2 2 h
    assert await history.kpi(reports.time_in_status) == [
        StatusTime("new", 7, 367200.0, round(367200 / 7, 3)),
        StatusTime("open", 5, 37800.0, 7560.0),
        StatusTime("pending", 1, 7200.0, 7200.0),
    ]
    tech = ReportFilter(SINCE, UNTIL, team="tech")  # T2, T4, T5
    assert await history.kpi(reports.time_in_status, tech) == [
        StatusTime("new", 3, 1200.0 + 133200.0 + 1800.0, round(136200 / 3, 3)),
        StatusTime("open", 2, 9600.0, 4800.0),
        StatusTime("pending", 1, 7200.0, 7200.0),
    ]


async def test_csat_and_nps(history: History) -> None:
    # surveyed: T1, T2, T3 (T5 was resolved by the customer)
    assert await history.kpi(reports.csat) == Csat(
        responses=2, average=4.0, surveyed=3, answered=2, response_rate=2 / 3
    )
    assert await history.kpi(reports.nps) == Nps(
        responses=3, promoters=2, passives=0, detractors=1, score=33.3
    )
    billing = ReportFilter(SINCE, UNTIL, team="billing")  # T1, T3
    assert await history.kpi(reports.nps, billing) == Nps(2, 1, 0, 1, 0.0)


async def test_kb_deflection_and_gaps(history: History) -> None:
    assert await history.kpi(reports.deflection) == Deflection(opened=6, deflected=1, rate=1 / 6)
    gaps = await history.kpi(reports.kb_gaps)
    assert [(g.question, g.count, g.tickets, g.last_seen) for g in gaps] == [  # type: ignore[attr-defined]
        ("how do i export my data", 2, 2, at(3, 8))
    ]
    tech = ReportFilter(SINCE, UNTIL, team="tech")
    assert [g.count for g in await history.kpi(reports.kb_gaps, tech)] == [1]  # type: ignore[attr-defined]


async def test_the_dashboard_reads_every_kpi(history: History) -> None:
    board = await history.helpdesk.db.read(lambda c: reports.all_kpis(c, PERIOD))
    assert board.filter == PERIOD
    assert board.first_response.count == 3 and board.deflection.deflected == 1
    assert [s.status for s in board.time_in_status] == ["new", "open", "pending"]
    assert set(reports.KPIS) >= {"sla", "flow", "kb-gaps", "first-response", "csat", "nps"}


async def test_the_dashboards_concurrent_read_gives_the_same_numbers(history: History) -> None:
    """read_all_kpis reads the KPIs in groups at the same time: the same Dashboard as one
    snapshot's, filtered or not, and a bad filter is refused the same way."""
    db = history.helpdesk.db
    assert sorted(n for group in reports.KPI_GROUPS for n in group) == sorted(reports.KPIS)
    for f in (PERIOD, ReportFilter(SINCE, UNTIL, team="tech")):
        assert await reports.read_all_kpis(db, f) == await db.read(
            lambda c, f=f: reports.all_kpis(c, f)
        )
    with pytest.raises(InvalidInput) as err:
        await reports.read_all_kpis(db, ReportFilter(SINCE, UNTIL, team="nope"))
    assert err.value.field == "team"


async def test_unknown_team_or_agent_is_named(history: History) -> None:
    with pytest.raises(InvalidInput) as err:
        await history.kpi(reports.check_filter, ReportFilter(SINCE, UNTIL, team="nope"))
    assert err.value.field == "team"
    with pytest.raises(InvalidInput) as err:
        await history.kpi(reports.check_filter, ReportFilter(SINCE, UNTIL, agent_id=999))
    assert err.value.field == "agent"


def test_the_period_is_validated() -> None:
    with pytest.raises(InvalidInput, match="time zone"):
        ReportFilter(datetime(2026, 3, 1), UNTIL)
    with pytest.raises(InvalidInput, match="before"):
        ReportFilter(UNTIL, SINCE)
    with pytest.raises(InvalidInput, match="366 days"):
        ReportFilter(datetime(2024, 1, 1, tzinfo=UTC), UNTIL)


def test_questions_are_normalized_so_repeats_group_together() -> None:
    assert reports.normalize_question("  How do I\tEXPORT my data?? ") == "how do i export my data"
    assert len(reports.normalize_question("x" * 500)) == 200
