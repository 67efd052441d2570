"""What channel adapters talk to: the Helpdesk for messages, the bots for interactions.

Also keeps the knowledge-base index fresh: articles are imported by another process
(`helpline kb import`), so the index is rebuilt when the stored articles change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import func, select

from bots.interactions import Interactions
from core import kb
from core.helpdesk import Helpdesk
from core.kb_search import KbIndex
from core.messages import InboundMessage, Interaction, InteractionReply

log = logging.getLogger(__name__)


class ChannelHub:
    """The ``Intake`` every adapter gets (see core.ports)."""

    def __init__(self, helpdesk: Helpdesk, interactions: Interactions) -> None:
        self.helpdesk = helpdesk
        self.interactions = interactions

    async def ingest(self, msg: InboundMessage) -> Any:
        return await self.helpdesk.ingest(msg)

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int:
        return await self.helpdesk.quarantine(channel, reason, raw)

    async def cursor(self, name: str) -> str | None:
        return await self.helpdesk.cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        await self.helpdesk.save_cursor(name, value)

    async def interact(self, interaction: Interaction) -> InteractionReply:
        return await self.interactions.handle(interaction)


class KbCache:
    """The current KB index; ``refresh`` rebuilds it when articles were added or changed."""

    def __init__(self) -> None:
        self.index: KbIndex | None = None
        self._version: tuple[Any, ...] | None = None
        self._task: asyncio.Task[None] | None = None

    def __call__(self) -> KbIndex | None:
        return self.index

    async def refresh(self, helpdesk: Helpdesk) -> None:
        table = kb.articles
        version = tuple(
            await helpdesk.db.read(
                lambda c: c.execute(select(func.count(), func.max(table.c.updated_at))).one()
            )
        )
        if version == self._version:
            return
        articles = await helpdesk.db.read(kb.load_articles)
        self.index = await asyncio.to_thread(KbIndex.build, articles) if articles else None
        self._version = version
        log.info("knowledge base index built: %d articles", len(articles))

    def start(self, helpdesk: Helpdesk, every: float = 30.0) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.refresh(helpdesk)
                except Exception:
                    log.exception("knowledge base refresh failed")
                await asyncio.sleep(every)

        self._task = asyncio.create_task(loop(), name="kb-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
