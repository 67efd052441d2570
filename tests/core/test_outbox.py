"""The transactional outbox and its dispatcher, with a recording channel adapter."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from core.config import OutboxSettings
from core.errors import ChannelRejected, ChannelUnavailable
from core.helpdesk import Helpdesk
from core.messages import Channel, DeliveryReceipt, InboundMessage, OutboundMessage, Sender
from core.outbox import Dispatcher, backoff, claim_due, from_payload
from core.persistence.models import OutboxRow
from core.ports import Intake
from tests.core.conftest import StepClock

outbox = OutboxRow.__table__


class RecordingChannel:
    """Stands in for an external channel: records deliveries, fails on demand."""

    channel = "email"

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.failures = list(failures or [])
        self.sent: list[tuple[str, OutboundMessage]] = []

    async def start(self, intake: Intake) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((idempotency_key, message))
        return DeliveryReceipt(f"ext-{len(self.sent)}")


async def rows(helpdesk: Helpdesk) -> list[Any]:
    return await helpdesk.db.read(lambda c: c.execute(select(outbox).order_by(outbox.c.id)).all())


async def open_ticket(helpdesk: Helpdesk, external_id: str = "m1") -> None:
    await helpdesk.ingest(
        InboundMessage(
            Channel.EMAIL,
            external_id,
            Sender("ann@example.org", "Ann", "ann@example.org"),
            "Help",
            datetime(2026, 3, 2, tzinfo=UTC),
            subject="Login",
        )
    )


def dispatcher(
    helpdesk: Helpdesk, channel: RecordingChannel, clock: StepClock, **settings: Any
) -> Dispatcher:
    config = OutboxSettings(**{"backoff_base_seconds": 10.0, "max_attempts": 3, **settings})
    return Dispatcher(helpdesk.db, {"email": channel}, config, clock, random.Random(1))


async def test_row_is_sent_once_and_marked_with_the_channel_id(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await open_ticket(helpdesk)
    channel = RecordingChannel()
    d = dispatcher(helpdesk, channel, clock)
    assert await d.dispatch_once() == 1
    assert await d.dispatch_once() == 0  # nothing is due any more
    [row] = await rows(helpdesk)
    assert (row.status, row.external_id, row.attempts) == ("sent", "ext-1", 1)
    [(key, message)] = channel.sent
    assert key == row.idempotency_key and message.to.address == "ann@example.org"
    assert "#1" in message.subject and message.message_id  # threading id chosen up front


async def test_transient_failure_backs_off_then_delivers(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await open_ticket(helpdesk)
    channel = RecordingChannel([ChannelUnavailable("relay down", retry_after=120)])
    d = dispatcher(helpdesk, channel, clock)
    await d.dispatch_once()
    [row] = await rows(helpdesk)
    assert row.status == "queued" and row.attempts == 1 and "relay down" in row.last_error
    assert row.next_attempt_at >= clock() + timedelta(seconds=120)  # Retry-After honoured
    clock.advance(seconds=60)
    assert await d.dispatch_once() == 0  # not due yet
    clock.advance(seconds=61)
    assert await d.dispatch_once() == 1
    assert [r.status for r in await rows(helpdesk)] == ["sent"]
    assert len(channel.sent) == 1


async def test_permanent_rejection_and_exhausted_retries_are_dead(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await open_ticket(helpdesk, "a")
    await open_ticket(helpdesk, "b")
    failures: list[Exception] = [ChannelRejected("no such user")] + [
        ChannelUnavailable("timeout")
    ] * 3
    channel = RecordingChannel(failures)
    d = dispatcher(helpdesk, channel, clock)
    for _ in range(4):
        await d.dispatch_once()
        clock.advance(hours=1)
    statuses = [(r.status, r.attempts) for r in await rows(helpdesk)]
    assert statuses == [("dead", 1), ("dead", 3)]
    assert channel.sent == []


async def test_without_an_adapter_rows_stay_queued_and_visible(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await open_ticket(helpdesk)
    d = Dispatcher(helpdesk.db, {}, OutboxSettings(), clock)
    assert await d.dispatch_once() == 0
    assert [r.status for r in await rows(helpdesk)] == ["queued"]


async def test_an_expired_lease_is_taken_over(helpdesk: Helpdesk, clock: StepClock) -> None:
    """A sender that died mid-delivery leaves a 'sending' row; after its lease, it is retried."""
    await open_ticket(helpdesk)
    taken = await helpdesk.db.write(lambda c: claim_due(c, ["email"], clock(), 30, 10))
    assert len(taken) == 1
    channel = RecordingChannel()
    d = dispatcher(helpdesk, channel, clock)
    assert await d.dispatch_once() == 0  # still leased
    clock.advance(seconds=31)
    assert await d.dispatch_once() == 1
    assert len(channel.sent) == 1


class RememberingChannel(RecordingChannel):
    """A channel that can tell what arrived under which key, as Slack can (FindsDelivered)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, datetime]] = []

    async def find_delivered(
        self, message: OutboundMessage, idempotency_key: str, since: datetime
    ) -> DeliveryReceipt | None:
        self.asked.append((idempotency_key, since))
        for i, (key, _) in enumerate(self.sent, start=1):
            if key == idempotency_key:
                return DeliveryReceipt(f"ext-{i}")
        return None


async def test_a_row_a_dead_sender_delivered_is_not_sent_again(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    """The sender delivered, then died before marking the row: the next one finds the copy
    that arrived and marks the row with it instead of sending it twice."""
    await open_ticket(helpdesk, "a")
    await open_ticket(helpdesk, "b")
    channel = RememberingChannel()
    taken = await helpdesk.db.write(lambda c: claim_due(c, ["email"], clock(), 30, 10))
    delivered, lost = sorted(taken, key=lambda r: r.id)
    await channel.send(from_payload(delivered.payload), delivered.idempotency_key)
    clock.advance(seconds=31)  # the lease runs out; ``lost`` never left
    d = dispatcher(helpdesk, channel, clock)
    assert await d.dispatch_once() == 2
    assert sorted(k for k, _ in channel.asked) == sorted(r.idempotency_key for r in taken)
    assert [k for k, _ in channel.sent] == [delivered.idempotency_key, lost.idempotency_key]
    by_id = {r.id: r for r in await rows(helpdesk)}
    assert (by_id[delivered.id].status, by_id[delivered.id].external_id) == ("sent", "ext-1")
    assert (by_id[lost.id].status, by_id[lost.id].external_id) == ("sent", "ext-2")


async def test_a_first_delivery_does_not_look_for_an_earlier_one(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await open_ticket(helpdesk)
    channel = RememberingChannel()
    assert await dispatcher(helpdesk, channel, clock).dispatch_once() == 1
    assert channel.asked == [] and len(channel.sent) == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    settings = OutboxSettings(backoff_base_seconds=2, backoff_max_seconds=60)
    rng = random.Random(3)
    delays = [backoff(n, settings, None, rng) for n in range(1, 9)]
    assert all(1 <= d <= 2 for d in delays[:1])
    assert all(d <= 60 for d in delays)
    assert delays[3] > delays[0]
    assert backoff(1, settings, 300, rng) == 300  # the platform's retry-after, exactly
    assert backoff(5, settings, 1, rng) == 1


class HangingFirst(RecordingChannel):
    """The first destination's send hangs until released; the others go through."""

    def __init__(self, stuck: str) -> None:
        super().__init__()
        self.stuck = stuck
        self.release = asyncio.Event()

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        if message.to.address == self.stuck:
            await self.release.wait()
        return await super().send(message, idempotency_key)


async def test_a_hanging_delivery_holds_up_only_its_own_destination(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    await open_ticket(helpdesk, "m0")  # ann@example.org: her acknowledgement will hang
    channel = HangingFirst("ann@example.org")
    lane = dispatcher(helpdesk, channel, clock, poll_seconds=0.05)
    lane.start()
    try:
        await asyncio.sleep(0.2)  # Ann's row is in flight and stuck
        for i in range(1, 4):  # later tickets of other customers
            await helpdesk.ingest(
                InboundMessage(
                    Channel.EMAIL,
                    f"m{i}",
                    Sender(f"c{i}@example.org", "C", f"c{i}@example.org"),
                    "Help",
                    datetime(2026, 3, 2, tzinfo=UTC),
                    subject="Other",
                )
            )
            lane.wake()
        for _ in range(100):
            if len(channel.sent) == 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(m.to.address for _, m in channel.sent) == [
            "c1@example.org",
            "c2@example.org",
            "c3@example.org",
        ]
        channel.release.set()
        for _ in range(100):
            if len(channel.sent) == 4:
                break
            await asyncio.sleep(0.05)
        assert len(channel.sent) == 4
    finally:
        await lane.stop()
    assert {r.status for r in await rows(helpdesk)} == {"sent"}


async def test_stop_is_not_lost_when_a_wake_up_arrives_with_it(
    helpdesk: Helpdesk, clock: StepClock
) -> None:
    """A wake-up and the stop in the same turn of the loop: the lane still stops (Python
    3.11's asyncio.wait_for returned normally here, dropping the cancellation, and the
    lane went on polling forever)."""
    lane = dispatcher(helpdesk, RecordingChannel(), clock, poll_seconds=30)
    lane.start()
    await asyncio.sleep(0.2)  # idle: nothing queued, waiting to be woken
    lane.wake()
    async with asyncio.timeout(5):
        await lane.stop()
