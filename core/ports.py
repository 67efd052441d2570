"""The shapes core expects from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from core.messages import DeliveryReceipt, InboundMessage, OutboundMessage

Clock = Callable[[], datetime]

# An adapter hands every normalized inbound message to the sink; the sink returns once it is
# committed, so the adapter may then acknowledge the channel.
Sink = Callable[[InboundMessage], Awaitable[object]]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ChannelAdapter(Protocol):
    channel: str

    async def start(self, sink: Sink) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        """Deliver one message. Raise ChannelUnavailable to retry, ChannelRejected to give up."""
        ...
