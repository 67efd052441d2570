"""Typed keys for what the application holds."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from jinja2 import Environment

from core.config import Settings
from core.helpdesk import Helpdesk
from core.messages import DeliveryReceipt, OutboundMessage
from core.outbox import Dispatcher
from core.ports import Intake
from gateway.http import RateLimiter
from gateway.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
HELPDESK = web.AppKey("helpdesk", Helpdesk)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
TEMPLATES = web.AppKey("templates", Environment)
METRICS = web.AppKey("metrics", Metrics)
INTAKE_LIMITER = web.AppKey("intake_limiter", RateLimiter)
SENDER_LIMITER = web.AppKey("sender_limiter", RateLimiter)  # per sender email


class InboundSource(Protocol):
    """A listener or poller that feeds intake (the SMTP server, IMAP pollers, chat adapters)."""

    async def start(self, intake: Intake) -> None: ...

    async def stop(self) -> None: ...


INBOUND = web.AppKey("inbound", list[InboundSource])


class ChatAdapter(InboundSource, Protocol):
    """Slack or Telegram: an inbound source with a webhook, and an outbound channel."""

    channel: str

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt: ...


HUB = web.AppKey("hub", Intake)
KB = web.AppKey("kb", object)  # gateway.hub.KbCache (kept loose: hub imports this module)
