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
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, update

from core.config import OutboxSettings
from core.errors import ChannelRejected, ChannelUnavailable
from core.messages import Action, Channel, OutboundMessage, ThreadRef
from core.persistence.database import Database
from core.persistence.records import add_thread_ref, insert_ignoring_duplicates, outbox
from core.ports import ChannelAdapter, Clock

log = logging.getLogger(__name__)

QUEUED, SENDING, SENT, DEAD = "queued", "sending", "sent", "dead"


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


# Built once so SQLAlchemy caches it: it runs before every automatic message.
RECENT_AUTOMATIC = select(func.count()).where(
    outbox.c.address == bindparam("address"),
    outbox.c.channel == bindparam("channel"),
    outbox.c.automatic.is_(True),
    outbox.c.created_at > bindparam("since"),
)


def automatic_allowed(conn: Connection, to: ThreadRef, now: datetime, per_hour: int) -> bool:
    """Whether one more automatic message may go to this address within the hourly limit."""
    sent = conn.execute(
        RECENT_AUTOMATIC,
        {"address": to.address, "channel": to.channel.value, "since": now - timedelta(hours=1)},
    ).scalar_one()
    return int(sent) < per_hour


def to_payload(message: OutboundMessage) -> dict[str, Any]:
    payload = asdict(message)
    payload["to"]["channel"] = message.to.channel.value
    return payload


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
    )


def backoff(
    attempts: int, settings: OutboxSettings, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before the next attempt: exponential with jitter, never below retry-after."""
    base = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (attempts - 1))
    delay = base * (0.5 + rng.random() / 2)
    return max(delay, retry_after or 0.0)


def claim_due(
    conn: Connection, channels: list[str], now: datetime, lease: float, limit: int
) -> list[Any]:
    """Take up to ``limit`` due rows for these channels and lease them to the caller."""
    due = or_(
        and_(outbox.c.status == QUEUED, outbox.c.next_attempt_at <= now),
        and_(outbox.c.status == SENDING, outbox.c.lease_until <= now),  # a sender died
    )
    query = (
        select(outbox)
        .where(due, outbox.c.channel.in_(channels))
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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.dispatch_once()
            except Exception:
                log.exception("outbox dispatch failed")
                busy = 0
            if busy:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def dispatch_once(self, now: datetime | None = None) -> int:
        """Deliver the rows due now; returns how many were attempted."""
        if not self.adapters:
            return 0
        now = now or self.clock()
        channels = sorted(self.adapters)
        rows = await self.db.write(
            lambda c: claim_due(
                c, channels, now, self.settings.lease_seconds, self.settings.batch_size
            )
        )
        await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _deliver(self, row: Any) -> None:
        adapter = self.adapters[row.channel]
        message = from_payload(row.payload)
        attempts = row.attempts + 1
        try:
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
            await self._finish(
                row.id, attempts, status=SENT, external_id=receipt.external_id, sent_at=self.clock()
            )

    async def _finish(self, row_id: int, attempts: int, **values: Any) -> None:
        error = values.pop("error", None)
        if error is not None:
            values["last_error"] = error[:2000]
        await self.db.write(
            lambda c: c.execute(
                update(outbox)
                .where(outbox.c.id == row_id)
                .values(attempts=attempts, lease_until=None, **values)
            )
        )
