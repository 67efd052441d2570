"""The daily digest: its text (en, zh) and its delivery, once per UTC day on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bots.digest import destinations, digest_text, send_daily_digest, yesterday
from core.dashboard_queries import FIRST_RESPONSE, RESOLUTION, QueueEntry
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Sender, ThreadRef
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.models import OutboxRow, Ticket, table_of
from core.reports import all_kpis
from tests.conftest import make_settings
from tests.core.conftest import StepClock

outbox = table_of(OutboxRow)
tickets = table_of(Ticket)
SUPERVISORS = ["email:boss@example.com", "slack:U0LEAD", "email:lead@example.com"]
TODAY = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture
async def helpdesk(db_url: str, tmp_path: Path) -> AsyncIterator[Helpdesk]:
    db = open_database(db_url, durable=False)
    upgrade(db)
    settings = make_settings(
        db_url,
        tmp_path,
        slack={"enabled": True, "team_channel": "C0TEAM"},
        bots={"supervisors": SUPERVISORS},
    )
    clock = StepClock()
    desk = Helpdesk(db, settings, b"test-secret" * 4, clock=clock)
    for n, hours_ago in enumerate((20, 10, 3)):  # two yesterday (1 March), one today
        clock.now = TODAY - timedelta(hours=hours_ago)
        await desk.ingest(
            InboundMessage(
                channel=Channel.EMAIL,
                external_id=f"<m{n}@example.org>",
                sender=Sender(f"c{n}@example.org", f"C{n}", email=f"c{n}@example.org"),
                subject=f"Order {n} missing",
                text="Where is it?",
                received_at=clock.now,
            )
        )
    # ticket 1's first answer is 30 min late; ticket 3's resolution is due in 45 min
    await db.write(
        lambda c: c.execute(update(tickets).values(first_response_due=None, resolution_due=None))
    )
    await db.write(
        lambda c: c.execute(
            update(tickets)
            .where(tickets.c.number == 1)
            .values(first_response_due=TODAY - timedelta(minutes=30))
        )
    )
    await db.write(
        lambda c: c.execute(
            update(tickets)
            .where(tickets.c.number == 3)
            .values(
                first_response_at=TODAY - timedelta(hours=1),
                resolution_due=TODAY + timedelta(minutes=45),
            )
        )
    )
    yield desk
    await db.close()


async def digest_rows(helpdesk: Helpdesk) -> list[tuple[str, str, str, dict[str, object]]]:
    rows = await helpdesk.db.read(
        lambda c: c.execute(
            select(outbox.c.idempotency_key, outbox.c.channel, outbox.c.address, outbox.c.payload)
            .where(outbox.c.idempotency_key.like("digest:%"))
            .order_by(outbox.c.id)
        ).all()
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def test_the_digest_goes_once_a_day_to_the_team_and_each_email_supervisor(
    helpdesk: Helpdesk,
) -> None:
    assert await send_daily_digest(helpdesk, TODAY) == 3
    assert await send_daily_digest(helpdesk, TODAY + timedelta(hours=17)) == 0  # same UTC day
    rows = await digest_rows(helpdesk)
    assert [(key, channel, address) for key, channel, address, _ in rows] == [
        ("digest:2026-03-02:slack:C0TEAM", "slack", "C0TEAM"),
        ("digest:2026-03-02:email:boss@example.com", "email", "boss@example.com"),
        ("digest:2026-03-02:email:lead@example.com", "email", "lead@example.com"),
    ]
    texts = {payload["text"] for *_, payload in rows}
    assert len(texts) == 1  # the same digest everywhere
    (text,) = texts
    assert text.startswith("Helpdesk digest for 2026-03-01 (UTC)\n")
    assert "Tickets: 2 created, 0 resolved" in text  # yesterday's two, not today's
    assert "SLA queue now: 1 breached, 1 due within 2 h" in text
    assert "  #1 Order 0 missing · first response breached 30 min ago · unassigned" in text
    assert "  #3 Order 2 missing · resolution due in 45 min · unassigned" in text
    email = rows[1][3]
    assert email["subject"] == "Helpdesk digest for 2026-03-01"
    assert str(email["message_id"]).endswith("@example.com")

    # the next day: a new digest, about that day's yesterday
    assert await send_daily_digest(helpdesk, TODAY + timedelta(days=1)) == 3
    rows = await digest_rows(helpdesk)
    assert len(rows) == 6 and rows[-1][0] == "digest:2026-03-03:email:lead@example.com"
    assert "Helpdesk digest for 2026-03-02 (UTC)" in str(rows[-1][3]["text"])


async def test_processes_racing_for_the_same_day_queue_it_once(helpdesk: Helpdesk) -> None:
    counts = await asyncio.gather(*(send_daily_digest(helpdesk, TODAY) for _ in range(4)))
    assert sorted(counts) == [0, 0, 0, 3]
    assert len(await digest_rows(helpdesk)) == 3


async def test_no_destination_queues_nothing(db_url: str, tmp_path: Path) -> None:
    db = open_database(db_url, durable=False)
    upgrade(db)
    try:
        desk = Helpdesk(db, make_settings(db_url, tmp_path), b"k" * 32, clock=StepClock())
        assert destinations(desk.settings) == []
        assert await send_daily_digest(desk, TODAY) == 0
        assert await digest_rows(desk) == []
    finally:
        await db.close()


def test_destinations_prefer_slack_then_telegram_and_skip_chat_supervisors(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    telegram = make_settings(
        url,
        tmp_path,
        telegram={"enabled": True, "team_chat": "-100"},
        bots={"supervisors": ["email:a@x.test", "email:a@x.test", "telegram:7"]},
    )
    assert destinations(telegram) == [
        ThreadRef(Channel.TELEGRAM, "-100"),
        ThreadRef(Channel.EMAIL, "a@x.test"),
    ]


def test_yesterday_is_the_previous_utc_day() -> None:
    f = yesterday(datetime(2026, 3, 1, 0, 30, tzinfo=UTC))
    assert (f.since, f.until) == (
        datetime(2026, 2, 28, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )


async def test_digest_text_in_english_and_chinese(helpdesk: Helpdesk) -> None:
    board = await helpdesk.db.read(lambda c: all_kpis(c, yesterday(TODAY)))
    queue = [
        QueueEntry(7, "Login broken", "high", "new", "tech", "Alice", FIRST_RESPONSE,
                   TODAY, -5, False),
        QueueEntry(8, "Refund", "normal", "open", None, None, RESOLUTION,
                   TODAY, 20, False),
    ] + [
        QueueEntry(100 + i, "More", "low", "open", None, None, RESOLUTION, TODAY, 60, False)
        for i in range(10)
    ]  # fmt: skip
    en = digest_text(board, queue, "en")
    assert "SLA queue now: 1 breached, 11 due within 2 h" in en
    assert "  #7 Login broken · first response breached 5 min ago · Alice" in en
    assert "  #8 Refund · resolution due in 20 min · unassigned" in en
    assert "#107 More" in en and "#108 More" not in en  # ten lines, then a count
    assert "… and 2 more on the dashboard" in en
    assert "First response: mean –, median – (0 answered)" in en

    zh = digest_text(board, queue[:2], "zh-CN")
    assert zh.startswith("客服日报 2026-03-01（UTC）\n")
    assert "工单：新建 2，已解决 0；积压 0 → 2" in zh
    assert "  #7 Login broken · 首次响应 已超时 5 分钟 · Alice" in zh
    assert "  #8 Refund · 解决 20 分钟后到期 · 未分配" in zh
    assert digest_text(board, [], "fr").endswith(
        "SLA queue now: nothing breached or due within 2 h\n"
    )
