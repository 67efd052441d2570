"""The one normalized inbound type every channel produces, and the channel-neutral outbound type."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    EMAIL = "email"
    WEB = "web"
    API = "api"
    SLACK = "slack"
    TELEGRAM = "telegram"


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes
    inline: bool = False
    content_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def md5(self) -> str:
        return hashlib.md5(self.content, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Sender:
    """Who wrote: identity is (channel, address); name and email are what the channel told us."""

    address: str
    name: str = ""
    email: str | None = None


@dataclass(frozen=True, slots=True)
class ThreadHints:
    """What the message says about the conversation it continues.

    ``ticket_number`` comes from an explicit reference (a ``[#123]`` subject tag, a portal reply);
    ``references`` are channel thread ids (email Message-IDs, a Slack thread ts, a Telegram
    reply-to message id) matched against ids we recorded for earlier messages.
    """

    ticket_number: int | None = None
    references: tuple[str, ...] = ()
    portal_token: str | None = None


@dataclass(frozen=True, slots=True)
class Bounce:
    recipients: tuple[str, ...]
    permanent: bool
    original_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A customer's message as any channel delivers it.

    ``external_id`` is the channel's own id of this message (email Message-ID, Slack event id,
    Telegram update id, an Idempotency-Key); ``(channel, external_id)`` makes intake idempotent.
    """

    channel: Channel
    external_id: str
    sender: Sender
    text: str
    received_at: datetime
    subject: str = ""
    html: str | None = None
    reply_text: str | None = None
    attachments: tuple[Attachment, ...] = ()
    thread_hints: ThreadHints = field(default_factory=ThreadHints)
    inbox: str | None = None
    auto_submitted: bool = False
    bounce: Bounce | None = None
    language: str | None = None
    raw: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> str:
        """The text a human wrote in this message: the reply part when we could separate it."""
        return self.reply_text if self.reply_text else self.text


@dataclass(frozen=True, slots=True)
class Action:
    """A channel-neutral button; adapters render it (Slack button, Telegram key, email link)."""

    id: str
    label: str
    value: str = ""
    style: str | None = None


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """Where an outbound message goes: a channel, an address on it, and an optional thread."""

    channel: Channel
    address: str
    thread: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    to: ThreadRef
    text: str
    subject: str = ""
    html: str | None = None
    actions: tuple[Action, ...] = ()
    # Inside core: the idempotency key of an earlier outbound message this one edits in place
    # (a card update); the dispatcher hands the adapter that message's channel id instead.
    replaces: str | None = None
    in_reply_to: tuple[str, ...] = ()
    automatic: bool = False
    # Set by the outbox for channels whose message id we choose (email Message-ID)
    message_id: str | None = None
    # Inside core: the idempotency key of an earlier outbound message whose thread this one
    # goes into (a customer's follow-up under its ticket card); resolved like ``replaces``
    thread_of: str | None = None
    # When set, replies to this message (in its thread, or quoting it) lead back to the ticket:
    # "thread" for conversation and cards, "survey" for a rating question awaiting a comment
    thread_purpose: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """The channel's id for what it delivered (email Message-ID, Slack ts, Telegram message id)."""

    external_id: str


@dataclass(frozen=True, slots=True)
class Interaction:
    """Something a person did in a chat other than writing to support as a customer: a button
    click, a slash command, an agent's reply in a ticket card's thread.

    ``action`` is the clicked Action's id ("claim", "csat"...), "command" for a slash command or
    "thread_reply" for an agent's message in a card thread; ``refs`` are thread refs
    ("<address>:<message id>") of where it happened, which lead to the ticket.
    """

    channel: Channel
    external_id: str
    user: str
    action: str
    value: str = ""
    text: str = ""
    user_name: str = ""
    refs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InteractionReply:
    """The answer shown to the person who acted (Slack ephemeral, Telegram callback toast)."""

    text: str
