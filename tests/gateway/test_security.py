"""Security checks over the real service: the per-sender intake limit, tokens stored hashed,
customer HTML cleaned in the API, request size limits on every kind of route, /metrics without
personal data, and secrets that never reach the logs.

Covered elsewhere (not repeated here): portal tokens of >= 128 bits (tests/gateway/test_api.py)
and revoked by a portal_version bump (test_pages.py); CSRF on every form and who may call what
(test_rbac.py); Slack signatures forged, stale or tampered (tests/adapters/test_slack.py) and
replayed events stored once (same file); Telegram's secret token missing or wrong
(tests/adapters/test_telegram.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from core import accounts
from core.messages import Channel, InboundMessage, Sender
from core.persistence.models import Base, OutboxRow, Quarantine, Ticket, table_of
from tests.conftest import Server, ServerFactory
from tests.fakes.signing import signed_json
from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.telegram_api import FakeTelegram
from tests.gateway.test_pages import Browser, BrowserFactory, browsers  # noqa: F401 (fixture)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def rows(server: Server, model: type[Base]) -> list[Any]:
    table = table_of(model)
    return list(
        await server.helpdesk.db.read(
            lambda c: c.execute(select(table).order_by(*table.primary_key.columns)).all()
        )
    )


# -- per-sender rate limit on intake ---------------------------------------------------------


async def test_one_sender_over_the_limit_gets_429_and_the_submission_is_kept(
    server_factory: ServerFactory,
    http: aiohttp.ClientSession,
    browsers: BrowserFactory,  # noqa: F811
) -> None:
    server = await server_factory(intake={"rate_limit_per_identity_per_minute": 2})
    url = f"{server.base_url}/api/v1/messages"

    def message(email: str, n: int) -> dict[str, str]:
        return {"email": email, "subject": f"Parcel {n}", "body": f"Attempt {n}"}

    for n, email in enumerate(["ann@example.org", "Ann@Example.org"]):
        key = {"Idempotency-Key": f"parcel-{n}"}
        assert (await http.post(url, json=message(email, n), headers=key)).status == 201
    # the same sender however spelled: case and a +tag do not make a new identity
    over = await http.post(url, json=message("ann+again@example.ORG", 2))
    assert over.status == 429
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    problem = await over.json(content_type=None)
    assert problem["kept"] is True and "kept for review" in problem["detail"]
    # a retry of a submission already counted is the same submission: answered, not counted
    retry = await http.post(
        url, json=message("ann@example.org", 0), headers={"Idempotency-Key": "parcel-0"}
    )
    assert retry.status == 200 and (await retry.json())["duplicate"] is True
    # another sender is not held back by Ann
    assert (await http.post(url, json=message("bo@example.org", 3))).status == 201

    # the web form counts the same sender: Ann's third form is refused too, files and all
    browser: Browser = await browsers(server)
    refused = await browser.submit(
        email="ANN@example.org", message="From the form", files=[("photo.jpg", b"\xff\xd8jpeg")]
    )
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "This one is kept" in refused.page.html
    assert len(await rows(server, Ticket)) == 3

    kept = await rows(server, Quarantine)
    assert [(q.channel, q.reason) for q in kept] == [
        ("api", "rate limit per sender exceeded: ann+again@example.org"),
        ("web", "rate limit per sender exceeded: ann@example.org"),
    ]
    api_raw, web_raw = (json.loads(q.raw) for q in kept)
    assert api_raw["submission"] == message("ann+again@example.ORG", 2)
    assert web_raw["submission"]["message"] == "From the form"
    [photo] = web_raw["attachments"]
    assert (photo["filename"], base64.b64decode(photo["content"])) == ("photo.jpg", b"\xff\xd8jpeg")

    # an admin lets the kept submissions in: tickets as intake would have opened them
    admin, _ = await server.token("admin")
    for entry in kept:
        url = f"{server.base_url}/api/v1/quarantine/{entry.id}/reprocess"
        assert (await http.post(url, headers=auth(admin))).status == 200
    ticket = await (
        await http.get(f"{server.base_url}/api/v1/tickets/5", headers=auth(admin))
    ).json()
    assert (ticket["channel"], ticket["customer"]["email"]) == ("web", "ann@example.org")
    [first] = ticket["messages"]
    assert first["text"] == "From the form"
    assert [a["filename"] for a in first["attachments"]] == ["photo.jpg"]
    # what the honeypot caught is not a kept submission: it stays where it is
    await (await browsers(server)).submit(email="bot@spam.test", website="http://spam.test")
    caught = (await rows(server, Quarantine))[-1]
    url = f"{server.base_url}/api/v1/quarantine/{caught.id}/reprocess"
    assert (await http.post(url, headers=auth(admin))).status == 422


# -- tokens ----------------------------------------------------------------------------------


async def test_api_tokens_are_stored_only_as_hashes(server: Server, http) -> None:
    tokens = [await server.token(role) for role in ("agent", "supervisor", "admin")]
    for token, _ in tokens:
        assert (await http.get(f"{server.base_url}/api/v1/me", headers=auth(token))).status == 200

    def dump(conn: Any) -> str:
        return repr(
            [
                tuple(row)
                for table in Base.metadata.sorted_tables
                for row in conn.execute(select(table)).all()
            ]
        )

    everything = await server.helpdesk.db.read(dump)
    for token, _ in tokens:
        assert token not in everything
        assert token.removeprefix(accounts.TOKEN_PREFIX) not in everything
        assert accounts.hash_token(token) in everything  # the hash is what is kept


# -- customer HTML ---------------------------------------------------------------------------

HOSTILE = (
    '<p onclick="steal()">Hello <b>there</b></p><script>alert(1)</script>'
    '<img src="x" onerror="alert(2)"><a href="javascript:alert(3)">link</a>'
    "<style>body{display:none}</style>"
)


async def test_customer_html_is_cleaned_in_the_api_json(server: Server, http) -> None:
    result = await server.helpdesk.ingest(
        InboundMessage(
            channel=Channel.EMAIL,
            external_id="<html-1@example.org>",
            sender=Sender("ann@example.org", "Ann", "ann@example.org"),
            subject="<img src=x onerror=alert(4)>",
            text="Hello there",
            html=HOSTILE,
            received_at=server.helpdesk.clock(),
        )
    )
    supervisor, _ = await server.token("supervisor")
    url = f"{server.base_url}/api/v1/tickets/{result.ticket_number}"
    ticket = await (await http.get(url, headers=auth(supervisor))).json()
    [message] = ticket["messages"]
    html = message["html"]
    assert "<b>there</b>" in html  # formatting stays
    for bad in ("<script", "onclick", "onerror", "javascript:", "<style", "alert(1)"):
        assert bad not in html, bad
    # the subject is data, not markup: JSON carries it as typed (clients escape it as text)
    assert ticket["subject"] == "<img src=x onerror=alert(4)>"


# -- request size ----------------------------------------------------------------------------


async def test_every_kind_of_post_refuses_a_body_over_the_limit(
    server_factory: ServerFactory, http
) -> None:
    async with FakeSlack() as slack, FakeTelegram() as telegram:
        server = await server_factory(
            env={
                "HELPLINE_SLACK_BOT_TOKEN": slack.token,
                "HELPLINE_SLACK_SIGNING_SECRET": "slack-signing-secret",
                "HELPLINE_TELEGRAM_TOKEN": telegram.token,
                "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "tg-secret-123",
            },
            slack={"enabled": True, "api_url": slack.base_url, "team_channel": "C0TEAM"},
            telegram={"enabled": True, "api_url": telegram.origin},
            intake={"max_request_bytes": 4096},
        )
        agent, _ = await server.token("agent")
        await server.helpdesk.ingest(
            InboundMessage(
                channel=Channel.API,
                external_id="big-1",
                sender=Sender("ann@example.org", "Ann", "ann@example.org"),
                text="hi",
                received_at=server.helpdesk.clock(),
            )
        )
        big = "x" * 10_000
        signed_body, slack_signed = signed_json(
            "slack-signing-secret", {"type": "event_callback", "text": big}
        )
        cases: list[tuple[str, dict[str, Any]]] = [
            ("/api/v1/messages", {"json": {"email": "a@b.org", "body": big}}),
            ("/api/v1/tickets/1/replies", {"json": {"text": big}, "headers": auth(agent)}),
            ("/", {"data": {"message": big}}),
            ("/login", {"data": {"password": big}}),
            ("/slack/events", {"data": signed_body, "headers": slack_signed}),
            (
                "/telegram/webhook",
                {
                    "json": {"update_id": 1, "text": big},
                    "headers": {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-123"},
                },
            ),
        ]
        for path, kwargs in cases:
            async with http.post(f"{server.base_url}{path}", **kwargs) as response:
                assert response.status == 413, (path, response.status, await response.text())
        replies = [
            r for r in await rows(server, OutboxRow) if r.idempotency_key.startswith("reply")
        ]
        assert replies == []


# -- /metrics --------------------------------------------------------------------------------


async def test_metrics_show_route_patterns_and_counts_never_personal_data(
    server: Server, http
) -> None:
    answer = await http.post(
        f"{server.base_url}/api/v1/messages",
        json={"email": "cleo.private@example.org", "subject": "Divorce papers", "body": "Secret"},
    )
    status_url = (await answer.json())["ticket"]["status_url"]
    assert (await http.get(status_url)).status == 200
    token, _ = await server.token("admin")
    assert (await http.get(f"{server.base_url}/api/v1/audit", headers=auth(token))).status == 200
    assert (await http.get(f"{server.base_url}/kb/no-such-article")).status == 404
    text = await (await http.get(f"{server.base_url}/metrics")).text()
    assert 'route="/t/{number}/{token}"' in text  # the pattern, not the link
    portal_token = status_url.rsplit("/", 1)[1]
    for private in (portal_token, "cleo.private", "Divorce", "Secret", token, "no-such-article"):
        assert private not in text, private


# -- logs ------------------------------------------------------------------------------------


async def test_secrets_never_reach_the_logs(
    server_factory: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    http: aiohttp.ClientSession,
) -> None:
    secrets = {
        "HELPLINE_SECRET_KEY": "service-key-5f1b0c9e7d3a4e21",
        "HELPLINE_SLACK_SIGNING_SECRET": "slack-signing-3c8e21d0aa77",
        "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "tg-webhook-9b1f00c2e5d4",
        "HELPLINE_SMTP_PASSWORD": "smtp-password-71e6b2c4f0a9",
    }
    monkeypatch.setenv("HELPLINE_SECRET_KEY", secrets["HELPLINE_SECRET_KEY"])
    caplog.set_level(logging.DEBUG)
    async with (
        FakeSlack() as slack,
        FakeTelegram(token="987654321:AAH-telegram-bot-token-5e0c") as telegram,
        SmtpSink() as sink,
    ):
        env = {
            **secrets,
            "HELPLINE_SLACK_BOT_TOKEN": slack.token,
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
        }
        server = await server_factory(
            env=env,
            slack={"enabled": True, "api_url": slack.base_url, "team_channel": "C0TEAM"},
            telegram={"enabled": True, "api_url": telegram.origin},
            email={
                "relay": {
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "starttls": False,
                    "username": "helpline",  # the sink offers no AUTH: every delivery fails
                }
            },
            outbox={"max_attempts": 2},
        )
        secrets.update(slack_bot=slack.token, telegram_bot=telegram.token)
        token, _ = await server.token("admin")
        secrets["api_token"] = token
        # a web customer (mail acknowledgement: the relay refuses it), a Telegram customer whose
        # acknowledgement fails once, a Slack card that fails once, a wrong webhook secret
        answer = await http.post(
            f"{server.base_url}/api/v1/messages",
            json={"email": "ann@example.org", "body": "Where is my parcel?"},
        )
        assert answer.status == 201
        telegram.fail_next(1, status=500, method="sendMessage")
        slack.fail_next(1, status=500, method="chat.postMessage")
        update = telegram.push_message("My order is late", chat_id=5550123)
        assert await telegram.deliver_webhook(update) == 200
        async with http.post(
            f"{server.base_url}/telegram/webhook",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": "guess"},
        ) as wrong:
            assert wrong.status == 401
        assert (await http.get(f"{server.base_url}/api/v1/me", headers=auth(token))).status == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            outbox = await rows(server, OutboxRow)
            failed = [r for r in outbox if r.last_error]
            if len(failed) >= 3 and not [r for r in outbox if r.status == "sending"]:
                break
            await asyncio.sleep(0.1)
        channels = {r.channel for r in failed}
        assert {"email", "telegram", "slack"} <= channels, [(r.channel, r.status) for r in outbox]

    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # we did capture DEBUG
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    leaks = {name for name, value in secrets.items() if value in logged}
    assert leaks == set()
    stored = repr([tuple(r) for r in outbox])  # delivery errors are kept: without secrets too
    assert {name for name, value in secrets.items() if value in stored} == set()
