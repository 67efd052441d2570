"""The core's one entry point for the edges: runs use cases as units of work, publishes their
events after commit and wakes the outbox dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection

from core import cursors, desk, intake, proactive, quarantine, sla_clock
from core.attachments import AttachmentStore
from core.config import Settings
from core.events import EventBus
from core.kb_search import KbIndex
from core.messages import InboundMessage
from core.persistence.database import Database
from core.ports import Clock, utc_now
from core.tickets import Priority, TicketStatus
from core.views import Reaction, UnitContext

T = TypeVar("T")


class Helpdesk:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        secret: bytes,
        *,
        clock: Clock = utc_now,
        bus: EventBus | None = None,
        reactions: Sequence[Reaction] = (),
        attachments: AttachmentStore | None = None,
        kb: Callable[[], KbIndex | None] = lambda: None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.secret = secret
        self.clock = clock
        self.bus = bus or EventBus()
        self.reactions = list(reactions)
        self.attachments = attachments or AttachmentStore(settings.data_path / "attachments")
        self.on_outbox: Callable[[], None] = lambda: None
        self.kb = kb

    def context(self, now: datetime | None = None) -> UnitContext:
        return UnitContext(
            self.settings, self.secret, now or self.clock(), self.reactions, self.kb()
        )

    async def run(
        self, unit: Callable[[Connection, UnitContext], T], *, now: datetime | None = None
    ) -> T:
        """Run a unit of work in one transaction, then publish its events. ``now``: the unit's
        time when not the clock's (scheduled jobs called with a chosen time)."""

        def in_transaction(conn: Connection) -> tuple[T, UnitContext]:
            ctx = self.context(now)  # fresh per attempt: a retried transaction starts clean
            return unit(conn, ctx), ctx

        result, ctx = await self.db.write(in_transaction)
        if ctx.events:
            self.on_outbox()
            await self.bus.publish(ctx.events)
        return result

    async def read(self, query: Callable[[Connection, UnitContext], T]) -> T:
        ctx = self.context()
        return await self.db.read(lambda conn: query(conn, ctx))

    # -- use cases -------------------------------------------------------------------------

    async def ingest(self, msg: InboundMessage) -> intake.IntakeResult:
        """Store a customer's message; returns once it is committed (then ack the channel)."""
        limits = self.settings.intake
        intake.check_limits(msg, limits.max_attachment_bytes, limits.max_attachments)
        # content first, so the rows then point at durable files; in a thread, because each
        # file is fsynced and the event loop must keep serving other requests meanwhile
        for attachment in msg.attachments:
            await asyncio.to_thread(self.attachments.put, attachment.content)
        try:
            return await self.run(lambda conn, ctx: intake.ingest_unit(conn, ctx, msg))
        except intake.AlreadyReceived:  # a retried delivery: what the first one gave
            return await self.read(lambda conn, ctx: intake.previous_result(conn, ctx, msg))

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int:
        """Keep inbound data we could not turn into a message, with the reason."""
        return await self.db.write(
            lambda conn: quarantine.keep(
                conn, channel=channel, reason=reason, raw=raw, now=self.clock()
            )
        )

    async def cursor(self, name: str) -> str | None:
        return await self.db.read(lambda conn: cursors.load(conn, name))

    async def save_cursor(self, name: str, value: str) -> None:
        await self.db.write(lambda conn: cursors.save(conn, name, value, self.clock()))

    async def claim(self, number: int, actor: desk.Actor) -> int:
        return await self.run(lambda conn, ctx: desk.claim(conn, ctx, number, actor))

    async def assign(
        self, number: int, agent_id: int | None, actor: desk.Actor, reason: str = ""
    ) -> None:
        await self.run(lambda conn, ctx: desk.assign(conn, ctx, number, agent_id, actor, reason))

    async def reply(
        self,
        number: int,
        text: str,
        actor: desk.Actor,
        *,
        html: str | None = None,
        status: TicketStatus | None = None,
    ) -> int:
        return await self.run(
            lambda conn, ctx: desk.reply(conn, ctx, number, text, actor, html, status)
        )

    async def note(self, number: int, text: str, actor: desk.Actor) -> int:
        return await self.run(lambda conn, ctx: desk.note(conn, ctx, number, text, actor))

    async def set_status(
        self, number: int, status: TicketStatus, actor: desk.Actor, reason: str = ""
    ) -> None:
        await self.run(lambda conn, ctx: desk.set_status(conn, ctx, number, status, actor, reason))

    async def escalate(self, number: int, actor: desk.Actor, reason: str = "") -> None:
        await self.run(lambda conn, ctx: desk.escalate(conn, ctx, number, actor, reason))

    async def update_fields(
        self,
        number: int,
        actor: desk.Actor,
        *,
        priority: Priority | None = None,
        add_tags: list[str] | None = None,
        remove_tags: list[str] | None = None,
    ) -> None:
        await self.run(
            lambda conn, ctx: desk.update_fields(
                conn,
                ctx,
                number,
                actor,
                priority=priority,
                add_tags=add_tags,
                remove_tags=remove_tags,
            )
        )

    # -- scheduled jobs ----------------------------------------------------------------------

    async def sweep_sla(self, now: datetime | None = None, batch: int = 200) -> int:
        """Fire the SLA warnings and breaches crossed by ``now``; returns how many fired."""
        now = now or self.clock()
        sla = self.settings.sla
        signals, examined = await self.db.read(lambda conn: sla_clock.find_signals(conn, now, sla))
        fired = 0
        for start in range(0, len(signals), batch):
            chunk = signals[start : start + batch]

            def unit(conn: Connection, ctx: UnitContext, chunk: Sequence[Any] = chunk) -> int:
                return sla_clock.fire_all(conn, ctx, chunk)

            fired += await self.run(unit, now=now)
        for start in range(0, len(examined), batch):
            ids = examined[start : start + batch]

            def later(conn: Connection, ctx: UnitContext, ids: Sequence[int] = ids) -> None:
                sla_clock.reschedule(conn, ctx, ids)

            await self.run(later, now=now)
        return fired

    async def run_proactive(
        self, now: datetime | None, rules: Sequence[proactive.ProactiveRule]
    ) -> proactive.ProactiveReport:
        """Apply the proactive rules as of ``now`` (None: the clock); each action fires once."""
        at = now or self.clock()
        return await self.run(
            lambda conn, ctx: proactive.run_proactive(conn, ctx, at, rules), now=at
        )
