"""The email channel end to end: real SMTP conversations in, a real SMTP relay (sink) out."""

from __future__ import annotations

import asyncio
import email.policy
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from sqlalchemy import func, select

from core.messages import Channel, InboundMessage, Sender
from core.persistence.models import Identity, OutboxRow, Quarantine, Ticket, table_of
from tests.conftest import Server, ServerFactory
from tests.fakes.smtp_sink import SmtpSink

SUPPORT = "support@example.com"


def mail(
    subject: str = "Printer jammed",
    body: str = "Paper stuck in tray 2.",
    *,
    sender: str = "Ann Lee <ann@example.org>",
    to: str = SUPPORT,
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = headers.pop("message_id", make_msgid(domain="example.org"))
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def send(
    port: int, raw: bytes | EmailMessage, *, to: str = SUPPORT, sender: str = "ann@example.org"
) -> tuple[int, bytes]:
    """One SMTP transaction; returns the server's reply to DATA (or the refusal)."""
    # SMTP lines end in CRLF (smtplib sends bytes as they are)
    data = raw.as_bytes(policy=email.policy.SMTP) if isinstance(raw, EmailMessage) else raw
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        code, reply = smtp.mail(sender)
        assert code == 250, reply
        code, reply = smtp.rcpt(to)
        if code != 250:
            return code, reply
        return smtp.data(data)


async def smtp_send(server: Server, raw: bytes | EmailMessage, **kw: Any) -> tuple[int, bytes]:
    return await asyncio.to_thread(send, server.smtp_port, raw, **kw)


async def rows(server: Server, model: Any, *where: Any) -> list[Any]:
    table = table_of(model)
    return await server.helpdesk.db.read(
        lambda c: c.execute(select(table).where(*where).order_by(table.c.id)).all()
    )


async def count(server: Server, model: Any) -> int:
    table = table_of(model)
    return await server.helpdesk.db.read(
        lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()
    )


@pytest.fixture
async def sink() -> Any:
    async with SmtpSink() as relay:
        yield relay


async def mail_server(
    server_factory: ServerFactory, sink: SmtpSink | None = None, **tables: Any
) -> Server:
    relay = {"host": "127.0.0.1", "port": sink.port, "starttls": False} if sink else {}
    return await server_factory(email={"relay": relay}, **tables)


async def test_mail_opens_a_ticket_and_smtp_answers_after_commit(server_factory, sink) -> None:
    server = await mail_server(server_factory, sink)
    code, reply = await smtp_send(server, mail())
    assert code == 250 and b"ticket #1" in reply
    [ticket] = await rows(server, Ticket)
    assert (ticket.channel, ticket.subject, ticket.status) == ("email", "Printer jammed", "new")
    [ack] = await sink.wait_for(1)
    message = ack.message
    assert message["To"] == "ann@example.org"
    assert message["Subject"].startswith("[#1] ")
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Loop"] == "helpline@example.com"
    assert message["In-Reply-To"]  # threads under the customer's mail
    assert message.get_content_type() == "multipart/alternative"
    assert ack.mail_from == SUPPORT


async def test_unknown_recipient_is_refused(server_factory) -> None:
    server = await mail_server(server_factory)
    code, reply = await smtp_send(server, mail(to="sales@example.com"), to="sales@example.com")
    assert code == 550 and b"no such mailbox" in reply
    assert await count(server, Ticket) == 0


async def test_oversized_mail_gets_552(server_factory) -> None:
    server = await server_factory(email={"smtp_server": {"max_message_bytes": 4000}})
    code, _ = await smtp_send(server, mail(body="many words in a line\n" * 500))
    assert code == 552
    assert await count(server, Ticket) == 0


async def test_inbox_address_routes_to_its_team(server_factory) -> None:
    server = await server_factory(
        inboxes=[{"name": "billing", "address": "billing@example.com", "team": "billing"}]
    )
    code, _ = await smtp_send(server, mail(to="billing@example.com"), to="billing@example.com")
    assert code == 250
    [ticket] = await rows(server, Ticket)
    assert ticket.inbox == "billing" and ticket.team_id is not None


async def test_reply_threads_and_agent_answer_carries_the_headers(server_factory, sink) -> None:
    server = await mail_server(server_factory, sink)
    first = mail(message_id="<q1@example.org>")
    await smtp_send(server, first)
    [ack] = await sink.wait_for(1)
    ack_id = ack.message["Message-ID"]
    # the customer answers our acknowledgement
    answer = mail(
        "Re: [#1] Printer jammed",
        "It also beeps.",
        message_id="<q2@example.org>",
        In_Reply_To=ack_id,
        References=f"<q1@example.org> {ack_id}",
    )
    code, _ = await smtp_send(server, answer)
    assert code == 250
    assert await count(server, Ticket) == 1

    token, _ = await server.token("agent", name="Alice")
    import aiohttp

    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{server.base_url}/api/v1/tickets/1/replies",
            json={"text": "Open tray 2 and pull gently."},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status == 201
    received = await sink.wait_for(2)
    reply = received[1].message
    assert reply["Subject"] == "[#1] Re: Printer jammed"
    assert reply["In-Reply-To"] == "<q2@example.org>"  # answers the customer's latest mail
    assert "Auto-Submitted" not in reply  # a human wrote it
    assert "Open tray 2" in reply.get_body(("plain",)).get_content()


async def test_subject_tag_threads_a_fresh_mail_from_the_same_customer(server_factory) -> None:
    server = await mail_server(server_factory)
    await smtp_send(server, mail())
    code, reply = await smtp_send(server, mail("[#1] one more thing", "And the toner."))
    assert code == 250 and b"ticket #1" in reply
    assert await count(server, Ticket) == 1


async def test_retried_delivery_is_stored_once(server_factory) -> None:
    server = await mail_server(server_factory)
    same = mail(message_id="<dup@example.org>")
    await smtp_send(server, same)
    code, _ = await smtp_send(server, same)
    assert code == 250
    assert await count(server, Ticket) == 1


async def test_out_of_office_is_filed_but_never_answered(server_factory, sink) -> None:
    server = await mail_server(server_factory, sink)
    await smtp_send(server, mail(message_id="<q1@example.org>"))
    [ack] = await sink.wait_for(1)
    ooo = mail(
        "Automatic reply: [#1] Printer jammed",
        "I am out of office until Monday.",
        Auto_Submitted="auto-replied",
        In_Reply_To=ack.message["Message-ID"],
    )
    code, _ = await smtp_send(server, ooo)
    assert code == 250
    assert await count(server, Ticket) == 1
    await server.deliver_outbox()
    assert len(sink.received) == 1  # no acknowledgement of the auto-reply


async def test_bounce_marks_the_customer_address(server_factory, sink) -> None:
    server = await mail_server(server_factory, sink)
    await smtp_send(server, mail(sender="Bob <bob@nowhere.example>"), sender="bob@nowhere.example")
    [ack] = await sink.wait_for(1)
    dsn = (
        "From: Mail Delivery System <MAILER-DAEMON@relay.test>\r\n"
        f"To: {SUPPORT}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn1@relay.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.test\r\n\r\n"
        "Final-Recipient: rfc822; bob@nowhere.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Message-ID: {ack.message['Message-ID']}\r\nFrom: {SUPPORT}\r\n"
        "To: bob@nowhere.example\r\nSubject: [#1] Printer jammed\r\n\r\nThanks!\r\n--B--\r\n"
    ).encode()
    code, _ = await smtp_send(server, dsn, sender="")
    assert code == 250
    assert await count(server, Ticket) == 1  # attached to the original ticket
    [identity] = await rows(server, Identity, table_of(Identity).c.address == "bob@nowhere.example")
    assert identity.bouncing
    await server.deliver_outbox()
    assert len(sink.received) == 1


async def test_our_own_mail_coming_back_is_kept_not_ticketed(server_factory) -> None:
    server = await mail_server(server_factory)
    looped = mail(sender=f"Helpline <{SUPPORT}>", X_Loop="helpline@example.com")
    code, _ = await smtp_send(server, looped)
    assert code == 250
    assert await count(server, Ticket) == 0
    [kept] = await rows(server, Quarantine)
    assert ("X-Loop" in kept.reason and kept.raw.startswith(b"From:")) or b"X-Loop" in kept.raw


async def test_mail_without_a_sender_is_quarantined_not_lost(server_factory) -> None:
    server = await mail_server(server_factory)
    raw = b"Subject: who am I\r\nTo: support@example.com\r\n\r\nno sender at all\r\n"
    code, _ = await smtp_send(server, raw, sender="")
    assert code == 250
    assert await count(server, Ticket) == 0
    [kept] = await rows(server, Quarantine)
    assert kept.raw == raw and "sender" in kept.reason


async def test_relay_down_then_back_delivers_exactly_once(server_factory) -> None:
    async with SmtpSink() as sink:
        port = sink.port
    server = await server_factory(
        email={"relay": {"host": "127.0.0.1", "port": port, "starttls": False}}
    )
    await server.helpdesk.ingest(
        InboundMessage(
            Channel.WEB,
            "f1",
            Sender("ann@example.org", "Ann", "ann@example.org"),
            "Help",
            server.helpdesk.clock(),
        )
    )
    await server.deliver_outbox()  # the relay is down
    [row] = await rows(server, OutboxRow)
    # kept for a retry ("sending": the background lane may be retrying it right now)
    assert row.status in ("queued", "sending")
    assert row.attempts >= 1 and "relay" in row.last_error
    revived = SmtpSink()
    loop = asyncio.get_running_loop()
    from aiosmtpd.smtp import SMTP

    revived._server = await loop.create_server(lambda: SMTP(revived), "127.0.0.1", port)
    try:
        await revived.wait_for(1, timeout=15)  # the dispatcher retries on its own
        await asyncio.sleep(0.3)
        assert len(revived.received) == 1
        [row] = await rows(server, OutboxRow)
        assert row.status == "sent" and row.external_id.startswith("helpline.")
    finally:
        await revived.stop()


async def test_relay_rejection_is_final(server_factory, sink) -> None:
    sink.fail_next("550 5.1.1 mailbox unknown")
    server = await mail_server(server_factory, sink)
    await smtp_send(server, mail())
    for _ in range(50):
        [row] = await rows(server, OutboxRow)
        if row.status not in ("queued", "sending"):
            break
        await asyncio.sleep(0.05)
    assert row.status == "dead" and "550" in row.last_error
    assert sink.received == []


async def test_database_outage_answers_451_and_the_retry_succeeds(
    server_factory, pg_url: str
) -> None:
    import asyncpg

    server = await server_factory(pg_url)
    name = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        code, _ = await smtp_send(server, mail(message_id="<outage@example.org>"))
        assert code == 451
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        code, _ = await smtp_send(server, mail(message_id="<outage@example.org>"))
        assert code == 250
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert await count(server, Ticket) == 1


async def test_starttls_is_offered_when_a_certificate_is_configured(
    server_factory, tmp_path
) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = await server_factory(
        email={"smtp_server": {"tls_cert": str(cert), "tls_key": str(key)}}
    )

    def send_over_tls() -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            smtp.starttls(context=context)
            smtp.ehlo()
            smtp.mail("ann@example.org")
            smtp.rcpt(SUPPORT)
            return smtp.data(mail().as_bytes(policy=email.policy.SMTP))

    code, _ = await asyncio.to_thread(send_over_tls)
    assert code == 250
    assert await count(server, Ticket) == 1


async def test_quarantine_is_listed_and_reprocessed_by_admins(server_factory) -> None:
    import aiohttp

    server = await mail_server(server_factory)
    raw = b"Subject: who am I\r\nTo: support@example.com\r\n\r\nno sender at all\r\n"
    await smtp_send(server, raw, sender="")
    admin, _ = await server.token("admin")
    agent, _ = await server.token("agent")
    base = f"{server.base_url}/api/v1/quarantine"
    async with aiohttp.ClientSession() as http:
        assert (await http.get(base, headers={"Authorization": f"Bearer {agent}"})).status == 403
        auth = {"Authorization": f"Bearer {admin}"}
        [entry] = (await (await http.get(base, headers=auth)).json())["entries"]
        assert entry["channel"] == "email" and "sender" in entry["reason"]
        raw_back = await http.get(f"{base}/{entry['id']}/raw", headers=auth)
        assert await raw_back.read() == raw
        still = await http.post(f"{base}/{entry['id']}/reprocess", headers=auth)
        assert still.status == 422  # nothing changed: still no sender

        # a mail that failed for a reason since fixed goes through on re-processing
        fixed_id = await server.helpdesk.quarantine(
            "email", "database was read-only", mail().as_bytes(policy=email.policy.SMTP)
        )
        done = await http.post(f"{base}/{fixed_id}/reprocess", headers=auth)
        assert done.status == 200 and (await done.json())["ticket"]["number"] == 1
        again = await http.post(f"{base}/{fixed_id}/reprocess", headers=auth)
        assert again.status == 409
        pending = (await (await http.get(base, headers=auth)).json())["entries"]
        assert [e["id"] for e in pending] == [entry["id"]]
        everything = (await (await http.get(f"{base}?all=1", headers=auth)).json())["entries"]
        assert len(everything) == 2


def test_parse_email_cli_prints_the_normalized_json(tmp_path) -> None:
    import json
    import subprocess
    import sys

    path = tmp_path / "m.eml"
    path.write_bytes(
        mail(
            "[#12] Re: Printer", "Fixed?\n\n> old text", message_id="<m@x>", In_Reply_To="<prev@x>"
        ).as_bytes()
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "parse-email", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["from_email"] == "ann@example.org" and result["from_name"] == "Ann Lee"
    assert result["reply_text"] == "Fixed?" and "old text" in result["text"]
    assert result["thread_hints"]["ticket_number"] == 12
    assert "prev@x" in result["thread_hints"]["references"]
    assert result["auto_submitted"] is False and result["bounce"] is None


async def test_automatic_replies_to_one_address_are_rate_limited(server_factory, sink) -> None:
    """Another robot writing new mails in a loop gets at most N acknowledgements an hour."""
    server = await mail_server(
        server_factory, sink, outbox={"max_automatic_per_address_per_hour": 3}
    )
    for i in range(6):
        code, _ = await smtp_send(
            server,
            mail(f"Ticket request {i}", sender="robot@example.net"),
            sender="robot@example.net",
        )
        assert code == 250
    assert await count(server, Ticket) == 6  # every mail is kept as a ticket
    await sink.wait_for(3)
    await asyncio.sleep(0.3)
    assert len(sink.received) == 3
    from core.persistence.models import TicketEvent

    suppressed = await rows(server, TicketEvent, table_of(TicketEvent).c.kind == "suppressed")
    assert len(suppressed) == 3 and "loop protection" in suppressed[0].reason


@pytest.mark.parametrize("limit", [0, 10])
def test_smtp_address_fast_path_agrees_with_aiosmtpd(limit: int) -> None:
    from aiosmtpd.smtp import SMTP

    from adapters.email import _Smtp

    class Handler:
        pass

    plain, fast = SMTP(Handler()), _Smtp(Handler())
    plain.local_part_limit = fast.local_part_limit = limit
    args = [
        "<ann@example.org>",
        "<Ann.Lee+tag@mail.example.org> SIZE=1200 BODY=8BITMIME",
        "<ann@example.org>  SIZE=1",
        "<ann@example.org>(comment) SIZE=1",
        "<ann@example.org> SIZE=1 (comment)",
        "<averyveryverylonglocalpart@example.org>",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<a@example.>",
        "<a@[192.0.2.1]>",
        '<"quoted local"@example.org>',
        "<jörg@example.org>",
        "<@relay.example:ann@example.org>",
        "<>",
        "ann@example.org",
        " <ann@example.org>",
    ]
    for arg in args:
        assert fast._getaddr(arg) == plain._getaddr(arg), arg


def test_is_our_own_finds_x_loop_in_any_case() -> None:
    from adapters.email import is_our_own

    marker = "helpline@example.com"
    assert is_our_own(b"X-LOOP: Helpline@Example.com\r\nSubject: x\r\n\r\nhi", marker)
    assert is_our_own(b"Subject: x\nx-Loop:helpline@example.com\n\nhi", marker)
    assert not is_our_own(b"Subject: x\r\n\r\nno loop header here", marker)
    assert not is_our_own(b"X-Loop: someone@else.example\r\n\r\nhi", marker)
