"""An SMTP relay on loopback (aiosmtpd) that records every mail and fails on demand: the next
mails (``fail_next``), or every mail for a stretch of time (``outage``: the port refuses
connections, or every mail is answered 421/451, then the relay recovers by itself)."""

from __future__ import annotations

import asyncio
import email
import email.parser
import email.policy
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SmtpSink:
    """``async with SmtpSink() as sink``: ``sink.port``, ``sink.received``, ``sink.fail_next``."""

    received: list[Received] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # queued DATA replies, e.g. "451 ..."
    deferred: list[float] = field(default_factory=list)  # when a mail was turned away (outage)
    _server: asyncio.AbstractServer | None = None
    _port: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _down_until: float = 0.0
    _down_reply: str = ""
    _reopen: asyncio.Task[None] | None = None
    _hangs: list[float] = field(default_factory=list)

    def fail_next(self, reply: str, times: int = 1) -> None:
        self.replies.extend([reply] * times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Store the next mails, then answer only after ``seconds`` (past the client's timeout:
        the mail was accepted, the client never hears so)."""
        self._hangs.extend([seconds] * times)

    async def outage(self, seconds: float, reply: str | None = None) -> None:
        """The relay is down for ``seconds`` from now, then recovers by itself (returns at once).
        With ``reply`` (e.g. "451 4.3.0 try later") it answers every mail so; without, the port
        refuses connections (the listener is closed and opened again on the same port)."""
        self._down_until = time.monotonic() + seconds
        if reply is not None:
            self._down_reply = reply
            return
        self._down_reply = ""
        if self._server is not None:  # not wait_closed: it would wait for open conversations
            self._server.close()
            self._server = None

        async def reopen() -> None:
            await asyncio.sleep(seconds)
            await self._listen(self._port)

        self._reopen = asyncio.create_task(reopen())

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        if self._down_reply and self.down:
            self.deferred.append(time.monotonic())
            return self._down_reply
        raw = envelope.original_content or b""
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), raw))
        async with self._arrived:
            self._arrived.notify_all()
        if self._hangs:
            await asyncio.sleep(self._hangs.pop(0))
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async with self._arrived, asyncio.timeout(timeout):
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    def counts(self, header: str = "Message-ID") -> Counter[str]:
        """How many mails arrived per value of ``header`` (our Message-IDs are derived from the
        outbox's idempotency keys, so a count above 1 is a duplicate delivery)."""
        parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        return Counter(str(parser.parsebytes(r.raw).get(header, "")).strip() for r in self.received)

    @property
    def port(self) -> int:
        return self._port  # kept while an outage has the listener closed

    async def _listen(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="relay.test", enable_SMTPUTF8=True), "127.0.0.1", port
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SmtpSink:
        await self._listen(0)
        return self

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            await asyncio.gather(self._reopen, return_exceptions=True)
            self._reopen = None
        await self._close()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
