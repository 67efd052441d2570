"""Email channel: an aiosmtpd server for inbound mail and an SMTP relay client for outbound.

Inbound mail is answered 250 only after it is committed; a database failure answers 451 so
the sending server retries; mail we cannot parse is kept in quarantine (and answered 250: it
is stored, nothing is lost). Outbound mail carries our Message-ID (chosen by the outbox, so a
resend is the same mail), In-Reply-To/References, the ``[#number]`` subject tag, X-Loop, and
Auto-Submitted on automatic mail.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate
from typing import Any

import nh3
from aiosmtpd.smtp import SMTP, Envelope, Session

from adapters.email_parse import UnparseableEmail, parse_email
from core.config import EmailSettings, InboxSettings
from core.errors import ChannelRejected, ChannelUnavailable, InvalidInput, TooLarge
from core.messages import Channel, DeliveryReceipt, OutboundMessage
from core.ports import Clock, Intake, utc_now

log = logging.getLogger(__name__)


def mail_domain(settings: EmailSettings) -> str:
    return settings.from_address.rsplit("@", 1)[-1].lower()


def loop_marker(settings: EmailSettings) -> str:
    """The X-Loop value on all our mail: seeing it come back in means a loop."""
    return f"helpline@{mail_domain(settings)}"


# Any line starting like an X-Loop field (a superset of what the header parser reads as one).
_X_LOOP_LINE = re.compile(rb"(?:\A|[\r\n])x-loop[ \t]*:", re.IGNORECASE)


def is_our_own(raw: bytes, marker: str) -> bool:
    # the usual case: no X-Loop at all. The substring test is ~20x cheaper than the regex
    # (which tries a match at every byte) and finds a superset of it (both ASCII-only folding)
    if b"x-loop" not in raw.lower() or not _X_LOOP_LINE.search(raw):
        return False
    headers = BytesHeaderParser().parsebytes(raw)
    loops = [str(v).strip().lower() for v in headers.get_all("X-Loop", [])]
    return marker.lower() in loops


def accepted_addresses(
    settings: EmailSettings, inboxes: Iterable[InboxSettings]
) -> dict[str, str | None]:
    """Recipient address -> the inbox it belongs to (None: the general queue)."""
    accepted: dict[str, str | None] = {a.lower(): None for a in settings.addresses}
    for inbox in inboxes:
        if inbox.address:
            accepted[inbox.address.lower()] = inbox.name
    return accepted


# An SMTP path the stdlib header parser would return unchanged: <dot-atom@dot-atom>, then
# nothing or SP and parameters without comments (a comment there is parsed, hence left to it).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*)>(?:[ \t]+([^ \t(][^(]*))?\Z"
)


class _Smtp(SMTP):
    """aiosmtpd's protocol, with the MAIL/RCPT address of the usual form read by one regex:
    aiosmtpd parses it with the stdlib's header parser (~90 µs, twice per mail); anything else
    still goes that way. tests/adapters/test_email.py checks both agree."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _SIMPLE_PATH.match(arg)
        if match is None:
            return super()._getaddr(arg)
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, match.group(2) or ""


class SmtpHandler:
    """aiosmtpd handler: RCPT checks the address, DATA commits before answering."""

    def __init__(
        self,
        intake: Intake,
        accepted: Mapping[str, str | None],
        marker: str,
        clock: Clock = utc_now,
    ) -> None:
        self.intake = intake
        self.accepted = accepted
        self.marker = marker
        self.clock = clock

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() not in self.accepted:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        rcpt = envelope.rcpt_tos[0].lower() if envelope.rcpt_tos else ""
        inbox = self.accepted.get(rcpt) or rcpt or None
        return await deliver(self.intake, raw, inbox=inbox, marker=self.marker, now=self.clock())


async def deliver(intake: Intake, raw: bytes, *, inbox: str | None, marker: str, now: Any) -> str:
    """Hand one raw mail to intake; returns the SMTP reply (shared by SMTP and IMAP)."""
    try:
        if is_our_own(raw, marker):
            await intake.quarantine("email", "our own mail came back (X-Loop)", raw)
            return "250 2.0.0 OK: loop detected, kept for review"
        try:
            msg = parse_email(raw, received_at=now, inbox=inbox)
        except UnparseableEmail as err:
            await intake.quarantine("email", f"unparseable: {err}", raw)
            return "250 2.0.0 OK: kept for review"
        try:
            result = await intake.ingest(msg)
        except TooLarge as err:
            return f"552 5.3.4 {err}"
        except InvalidInput as err:
            await intake.quarantine("email", f"rejected by intake: {err}", raw)
            return "250 2.0.0 OK: kept for review"
    except Exception:
        log.exception("inbound mail could not be stored; the sender will retry")
        return "451 4.3.0 temporary failure, please try again later"
    number = getattr(result, "ticket_number", None)
    return f"250 2.0.0 OK: ticket #{number}" if number else "250 2.0.0 OK"


class SmtpServer:
    """The inbound SMTP listener on the gateway's own event loop."""

    def __init__(
        self,
        settings: EmailSettings,
        inboxes: Iterable[InboxSettings],
        clock: Clock = utc_now,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        self.inboxes = tuple(inboxes)
        self.clock = clock
        self.reuse_port = reuse_port  # several serving processes share the SMTP port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def _tls(self) -> ssl.SSLContext | None:
        conf = self.settings.smtp_server
        if not (conf.tls_cert and conf.tls_key):
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(conf.tls_cert, conf.tls_key)
        return context

    async def start(self, intake: Intake) -> None:
        conf = self.settings.smtp_server
        handler = SmtpHandler(
            intake,
            accepted_addresses(self.settings, self.inboxes),
            loop_marker(self.settings),
            self.clock,
        )
        tls = self._tls()

        def protocol() -> SMTP:
            return _Smtp(
                handler,
                data_size_limit=conf.max_message_bytes,
                enable_SMTPUTF8=True,
                decode_data=False,
                tls_context=tls,
                require_starttls=False,
                hostname=mail_domain(self.settings),
                ident="helpline ESMTP",
            )

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, conf.host, conf.port, reuse_port=self.reuse_port or None
        )
        log.info("SMTP intake listening on %s:%s", conf.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def compose(message: OutboundMessage, settings: EmailSettings) -> EmailMessage:
    """An outbound mail: text with an HTML alternative and the threading headers."""
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = formataddr((settings.from_name, settings.from_address))
    mail["To"] = message.to.address
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(usegmt=True)
    if message.message_id:
        mail["Message-ID"] = f"<{message.message_id}>"
    if message.in_reply_to:
        mail["In-Reply-To"] = f"<{message.in_reply_to[-1]}>"
        mail["References"] = " ".join(f"<{ref}>" for ref in message.in_reply_to)
    mail["X-Loop"] = loop_marker(settings)
    if message.automatic:
        # RFC 3834: robots must not answer this; Exchange's own suppression header as well
        mail["Auto-Submitted"] = "auto-replied"
        mail["X-Auto-Response-Suppress"] = "All"
    mail.set_content(_text_with_links(message))
    mail.add_alternative(_html(message), subtype="html")
    return mail


def _text_with_links(message: OutboundMessage) -> str:
    links = [f"{a.label}: {a.value}" for a in message.actions if a.value.startswith("http")]
    return message.text + ("\n\n" + "\n".join(links) if links else "")


def _html(message: OutboundMessage) -> str:
    if message.html:
        body = nh3.clean(message.html)
    else:
        paragraphs = html.escape(message.text).split("\n\n")
        body = "".join(f"<p>{p.replace(chr(10), '<br>')}</p>" for p in paragraphs)
    links = "".join(
        f'<a href="{html.escape(a.value)}" style="margin-right:12px">{html.escape(a.label)}</a>'
        for a in message.actions
        if a.value.startswith("http")
    )
    if links:
        body += f"<p>{links}</p>"
    return f"<!doctype html><html><body>{body}</body></html>"


class EmailSender:
    """Delivers outbox rows through the configured SMTP relay (blocking smtplib in a thread)."""

    channel = Channel.EMAIL.value

    def __init__(self, settings: EmailSettings, password: str | None = None) -> None:
        self.settings = settings
        self.password = password

    async def start(self, intake: Intake) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        mail = compose(message, self.settings)
        await asyncio.to_thread(self._send, mail, message.to.address)
        return DeliveryReceipt(message.message_id or idempotency_key)

    def _send(self, mail: EmailMessage, to: str) -> None:
        relay = self.settings.relay
        try:
            Address(addr_spec=to)
        except (ValueError, IndexError) as err:
            raise ChannelRejected(f"invalid recipient address {to!r}") from err
        try:
            with smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout_seconds) as smtp:
                if relay.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if relay.username:
                    smtp.login(relay.username, self.password or "")
                smtp.send_message(mail, from_addr=self.settings.from_address, to_addrs=[to])
        except smtplib.SMTPRecipientsRefused as err:
            code, reply = next(iter(err.recipients.values()))
            raise _classify(code, reply) from err
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as err:
            raise _classify(err.smtp_code, err.smtp_error) from err
        except (smtplib.SMTPException, OSError) as err:
            raise ChannelUnavailable(f"SMTP relay {relay.host}:{relay.port}: {err}") from err


def _classify(code: int, reply: bytes | str) -> Exception:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    if 500 <= code < 600:
        return ChannelRejected(f"relay refused the mail: {code} {text}")
    return ChannelUnavailable(f"relay deferred the mail: {code} {text}")
