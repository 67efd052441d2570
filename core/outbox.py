"""Transactional outbox: rows written with the change that caused them, delivered later.

``enqueue`` runs inside a unit of work. The ``Dispatcher`` takes due rows with a lease (on
PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so several processes never take the same row),
hands each to its channel adapter with the row's idempotency key, and marks it sent with the
channel's message id. Failures back off exponentially (honouring the channel's retry-after);
a row whose channel has no adapter stays queued and visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from dataclasses import fields, is_dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from core.config import OutboxSettings
from core.errors import ChannelRejected, ChannelUnavailable
from core.messages import Action, Channel, DeliveryReceipt, OutboundMessage, ThreadRef
from core.persistence.database import Database
from core.persistence.prepared import Prepared
from core.persistence.records import add_thread_ref, insert_ignoring_duplicates, outbox
from core.ports import ChannelAdapter, Clock, FindsDelivered

log = logging.getLogger(__name__)

QUEUED, SENDING, SENT, DEAD = "queued", "sending", "sent", "dead"
PER_DESTINATION = 5
# A row whose referenced message (the card it edits, the thread it joins) is not out yet
WAIT_FOR_REFERENCE = timedelta(seconds=1)


def email_message_id(idempotency_key: str, domain: str) -> str:
    """A stable Message-ID for an outbound mail, so a resend is recognisably the same mail."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return f"helpline.{digest}@{domain}"


def enqueue(
    conn: Connection,
    key: str,
    message: OutboundMessage,
    *,
    now: datetime,
    ticket_id: int | None = None,
    mail_domain: str = "helpline.invalid",
) -> bool:
    """Queue a message in the current transaction; a key seen before is a no-op (False)."""
    payload = to_payload(message)
    if message.to.channel is Channel.EMAIL:
        payload["message_id"] = email_message_id(key, mail_domain)
    written = insert_ignoring_duplicates(
        conn,
        outbox,
        {
            "idempotency_key": key,
            "ticket_id": ticket_id,
            "channel": message.to.channel.value,
            "address": message.to.address,
            "payload": payload,
            "status": QUEUED,
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": "",
            "automatic": message.automatic,
            "created_at": now,
        },
    )
    if written and ticket_id is not None and payload.get("message_id"):
        # a customer's reply to this mail threads back to the ticket
        add_thread_ref(conn, Channel.EMAIL.value, payload["message_id"], ticket_id)
    return written


# Built and compiled once (core/persistence/prepared.py): it runs before every automatic message.
RECENT_AUTOMATIC = Prepared(
    select(func.count()).where(
        outbox.c.address == bindparam("address"),
        outbox.c.channel == bindparam("channel"),
        outbox.c.automatic.is_(True),
        outbox.c.created_at > bindparam("since"),
    )
)


def automatic_allowed(conn: Connection, to: ThreadRef, now: datetime, per_hour: int) -> bool:
    """Whether one more automatic message may go to this address within the hourly limit."""
    sent = RECENT_AUTOMATIC.run(
        conn,
        {"address": to.address, "channel": to.channel.value, "since": now - timedelta(hours=1)},
    ).scalar_one()
    return int(sent) < per_hour


def to_payload(message: OutboundMessage) -> dict[str, Any]:
    payload: dict[str, Any] = _plain(message)
    payload["to"]["channel"] = message.to.channel.value
    return payload


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` for our message values, at a fraction of its cost per enqueue.

    Like asdict it recurses into dataclasses, tuples, lists and dicts; unlike it, it does not
    deep-copy the leaves, which here are immutable (str, int, bool, enums, None).
    """
    cls = type(value)
    if cls in _LEAVES:
        return value
    names = _dataclass_fields(cls)
    if names is not None:
        return {
            name: v if type(v := getattr(value, name)) in _LEAVES else _plain(v) for name in names
        }
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple, as asdict does
        return cls(*[_plain(v) for v in value])
    if isinstance(value, tuple | list):
        return cls(_plain(v) for v in value) if value else cls()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_LEAVES = frozenset({str, int, float, bool, type(None)})
_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _dataclass_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass, None for any other type (looked up once per type)."""
    try:
        return _FIELDS[cls]
    except KeyError:
        names = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
        _FIELDS[cls] = names
        return names


def from_payload(payload: dict[str, Any]) -> OutboundMessage:
    to = payload["to"]
    return OutboundMessage(
        to=ThreadRef(Channel(to["channel"]), to["address"], to.get("thread")),
        text=payload["text"],
        subject=payload.get("subject", ""),
        html=payload.get("html"),
        actions=tuple(Action(**a) for a in payload.get("actions", ())),
        replaces=payload.get("replaces"),
        in_reply_to=tuple(payload.get("in_reply_to", ())),
        automatic=payload.get("automatic", False),
        message_id=payload.get("message_id"),
        thread_of=payload.get("thread_of"),
        thread_purpose=payload.get("thread_purpose"),
    )


def backoff(
    attempts: int, settings: OutboxSettings, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before the next attempt: what the channel asked for (its retry-after),
    else exponential with jitter."""
    if retry_after is not None:
        return retry_after  # waiting longer than the platform asks only delays the message
    base = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (attempts - 1))
    return base * (0.5 + rng.random() / 2)


def claim_due(
    conn: Connection, channels: list[str], now: datetime, lease: float, limit: int
) -> list[Any]:
    """Take up to ``limit`` due rows for these channels and lease them to the caller.

    At most PER_DESTINATION rows per address in flight, counting the ones already being sent:
    deliveries to one chat are paced (a Telegram group takes one message per 3 s), and a lease
    must not run out while a row waits its turn.
    """
    due = or_(
        and_(outbox.c.status == QUEUED, outbox.c.next_attempt_at <= now),
        and_(outbox.c.status == SENDING, outbox.c.lease_until <= now),  # a sender died
    )
    place = (
        func.row_number()
        .over(
            partition_by=(outbox.c.channel, outbox.c.address),
            order_by=(outbox.c.next_attempt_at, outbox.c.id),
        )
        .label("place")
    )
    candidates = (
        select(outbox.c.id, outbox.c.channel, outbox.c.address, place)
        .where(due, outbox.c.channel.in_(channels))
        .subquery()
    )
    in_flight = (
        select(outbox.c.channel, outbox.c.address, func.count().label("n"))
        .where(
            outbox.c.status == SENDING,
            outbox.c.lease_until > now,
            outbox.c.channel.in_(channels),
        )
        .group_by(outbox.c.channel, outbox.c.address)
        .subquery()
    )
    room = (
        select(candidates.c.id)
        .select_from(
            candidates.outerjoin(
                in_flight,
                and_(
                    in_flight.c.channel == candidates.c.channel,
                    in_flight.c.address == candidates.c.address,
                ),
            )
        )
        .where(candidates.c.place + func.coalesce(in_flight.c.n, 0) <= PER_DESTINATION)
    )
    query = (
        select(outbox)
        .where(
            # ``due`` again on the locked row itself: PostgreSQL re-checks only the outer
            # conditions on a row another process leased and committed meanwhile (the IN list
            # keeps this statement's older snapshot), so without it both would send that row
            due,
            outbox.c.id.in_(room),
        )
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = conn.execute(query).all()
    if rows:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_([r.id for r in rows]))
            .values(status=SENDING, lease_until=now + timedelta(seconds=lease))
        )
    return list(rows)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        adapters: dict[str, ChannelAdapter],
        settings: OutboxSettings,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.adapters = adapters
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self._wakes: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        for event in self._wakes.values():
            event.set()

    def start(self) -> None:
        # One lane per channel. A batch ends with its slowest row, and a paced destination is
        # slow (a Slack channel takes 1 message/s, so its PER_DESTINATION rows take 4 s): in
        # one shared batch it held every other channel's deliveries up for that long.
        for channel in sorted(self.adapters):
            self._wakes[channel] = asyncio.Event()
            task = asyncio.create_task(self._run(channel), name=f"outbox-dispatcher-{channel}")
            self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, channel: str) -> None:
        """Keep up to ``batch_size`` deliveries of the channel going: a finished one makes room
        for the next at once, so one slow call (a hang until the client's timeout) holds up
        only its own destination, not the rest of the channel."""
        wake = self._wakes[channel]
        in_flight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            wake.set()
            if not task.cancelled() and (err := task.exception()) is not None:
                # the row keeps its lease and is retried when it runs out
                log.error("outbox delivery failed", exc_info=err)

        try:
            while True:
                wake.clear()  # before the claim: a wake-up during it is not lost
                room = self.settings.batch_size - len(in_flight)
                rows: list[Any] = []
                if room > 0:
                    try:
                        rows = await self._claim([channel], self.clock(), room)
                    except Exception:
                        log.exception("outbox dispatch failed")
                for row in rows:
                    task = asyncio.create_task(self._deliver(row))
                    in_flight.add(task)
                    task.add_done_callback(done)
                if rows and len(rows) == room:
                    continue  # more may be due
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for returns normally when
                # the wake-up and a stop() arrive in the same turn, and the stop is lost
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_seconds):
                        await wake.wait()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _claim(self, channels: list[str], now: datetime, limit: int) -> list[Any]:
        return await self.db.write(
            lambda c: claim_due(c, channels, now, self.settings.lease_seconds, limit)
        )

    async def dispatch_once(
        self, now: datetime | None = None, channels: list[str] | None = None
    ) -> int:
        """Deliver the rows due now (of these channels; default all); returns how many were
        attempted."""
        channels = sorted(self.adapters if channels is None else set(channels) & set(self.adapters))
        if not channels:
            return 0
        rows = await self._claim(channels, now or self.clock(), self.settings.batch_size)
        await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _resolve(self, message: OutboundMessage) -> OutboundMessage | None:
        """Swap the outbox keys in ``replaces``/``thread_of`` for the channel's ids of those
        messages. None: one is not delivered yet. One that was never delivered (dead) is left
        out: the update is posted as a new message, the follow-up outside the thread."""
        keys = [k for k in (message.replaces, message.thread_of) if k]
        if not keys:
            return message
        rows = await self.db.read(
            lambda c: c.execute(
                select(outbox.c.idempotency_key, outbox.c.status, outbox.c.external_id).where(
                    outbox.c.idempotency_key.in_(keys)
                )
            ).all()
        )
        found = {r.idempotency_key: r for r in rows}
        ids: dict[str, str] = {}
        for key in keys:
            row = found.get(key)
            if row is not None and row.status in (QUEUED, SENDING):
                return None
            ids[key] = row.external_id if row is not None and row.status == SENT else ""
        thread = ids.get(message.thread_of or "", "") or message.to.thread
        return replace(
            message,
            replaces=ids.get(message.replaces or "") or None,
            thread_of=None,
            to=replace(message.to, thread=thread),
        )

    async def _deliver(self, row: Any) -> None:
        adapter = self.adapters[row.channel]
        attempts = row.attempts + 1
        message = await self._resolve(from_payload(row.payload))
        if message is None:
            await self._finish(
                row.id,
                row.attempts,
                status=QUEUED,
                next_attempt_at=self.clock() + WAIT_FOR_REFERENCE,
            )
            return
        try:
            receipt = await self._already_delivered(adapter, message, row)
            if receipt is None:
                receipt = await adapter.send(message, row.idempotency_key)
        except ChannelRejected as err:
            await self._finish(row.id, attempts, status=DEAD, error=str(err))
        except Exception as err:  # transient: ChannelUnavailable or an unexpected failure
            retry_after = err.retry_after if isinstance(err, ChannelUnavailable) else None
            if not isinstance(err, ChannelUnavailable):
                log.exception("adapter %s failed on outbox row %s", row.channel, row.id)
            if attempts >= self.settings.max_attempts:
                await self._finish(row.id, attempts, status=DEAD, error=str(err))
            else:
                delay = backoff(attempts, self.settings, retry_after, self.rng)
                await self._finish(
                    row.id,
                    attempts,
                    status=QUEUED,
                    error=str(err),
                    next_attempt_at=self.clock() + timedelta(seconds=delay),
                )
        else:
            # replies to what we sent lead back to the ticket ("<address>:<channel's id>")
            ref = None
            if message.thread_purpose and row.ticket_id and not message.replaces:
                ref = (row.channel, f"{row.address}:{receipt.external_id}", message.thread_purpose)
            await self._finish(
                row.id,
                attempts,
                status=SENT,
                external_id=receipt.external_id,
                sent_at=self.clock(),
                thread_ref=ref,
                ticket_id=row.ticket_id,
            )

    async def _already_delivered(
        self, adapter: ChannelAdapter, message: OutboundMessage, row: Any
    ) -> DeliveryReceipt | None:
        """For a row taken over from a sender that died mid-delivery (still "sending", its lease
        run out), the receipt of the copy that arrived, when the channel can tell; else None.
        A failed look-up sends again: at least once, as without it."""
        if row.status != SENDING or not isinstance(adapter, FindsDelivered):
            return None
        try:
            found = await adapter.find_delivered(message, row.idempotency_key, row.created_at)
        except Exception as err:
            log.warning("outbox row %s: could not look for an earlier delivery: %s", row.id, err)
            return None
        if found is not None:
            log.info("outbox row %s had arrived before its sender died: not sent again", row.id)
        return found

    async def _finish(
        self,
        row_id: int,
        attempts: int,
        *,
        thread_ref: tuple[str, str, str] | None = None,
        ticket_id: int | None = None,
        **values: Any,
    ) -> None:
        error = values.pop("error", None)
        if error is not None:
            values["last_error"] = error[:2000]

        def write(conn: Connection) -> None:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == row_id)
                .values(attempts=attempts, lease_until=None, **values)
            )
            if thread_ref is not None and ticket_id is not None:
                channel, ref, purpose = thread_ref
                add_thread_ref(conn, channel, ref, ticket_id, purpose=purpose)

        await self.db.write(write)
