"""The shapes core expects from the outside world."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from core.messages import (
    DeliveryReceipt,
    InboundMessage,
    Interaction,
    InteractionReply,
    OutboundMessage,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Intake(Protocol):
    """What an adapter hands its inbound traffic to (the Helpdesk implements it).

    Both calls return once the data is committed, so the adapter may then acknowledge the
    channel (SMTP 250, HTTP 200, flag the IMAP message).
    """

    async def ingest(self, msg: InboundMessage) -> Any: ...

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int: ...

    async def cursor(self, name: str) -> str | None:
        """The adapter's saved position in its channel (see ``save_cursor``)."""
        ...

    async def save_cursor(self, name: str, value: str) -> None: ...

    async def interact(self, interaction: Interaction) -> InteractionReply:
        """A click, a slash command or an agent's card-thread reply; the reply is shown to the
        person who acted (Slack ephemeral, Telegram callback answer)."""
        ...


class ChannelAdapter(Protocol):
    channel: str

    async def start(self, intake: Intake) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        """Deliver one message. Raise ChannelUnavailable to retry, ChannelRejected to give up."""
        ...


@runtime_checkable
class FindsDelivered(Protocol):
    """A channel that can tell whether a message already arrived (Slack: the outbox key rides
    in the message's metadata). The dispatcher asks before sending again a row whose sender
    died mid-delivery, so a crash does not post it twice."""

    async def find_delivered(
        self, message: OutboundMessage, idempotency_key: str, since: datetime
    ) -> DeliveryReceipt | None:
        """The receipt of the message sent with this key since ``since``, or None."""
        ...
