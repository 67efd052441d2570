"""The Slack channel end to end: real slack-bolt and slack_sdk, inbound requests signed with the
v0 scheme to a real aiohttp server on loopback, outbound calls to the fake Slack Web API, and a
real Helpdesk on a migrated SQLite database behind the adapter."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from adapters import slack_blocks
from adapters.slack import SlackAdapter, destination, message_text, plain_text
from core.config import SlackSettings
from core.errors import ChannelRejected, ChannelUnavailable, ConfigError
from core.helpdesk import Helpdesk
from core.messages import (
    Action,
    Channel,
    InboundMessage,
    Interaction,
    InteractionReply,
    OutboundMessage,
    ThreadRef,
)
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.models import Customer, Message, Quarantine, Ticket, table_of
from core.persistence.models import ThreadRef as ThreadRefRow
from core.ratelimit import RateGate
from tests.conftest import make_settings
from tests.fakes.signing import signed_form, signed_interaction, signed_json, slack_headers
from tests.fakes.slack_api import FakeSlack

CORPUS = Path("/work/shared/corpus/chat")
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM, SUPPORT, DM = "C0TEAM", "C0SUPPORT", "D0CUSTOMER"
CUSTOMER, AGENT = "U0CUSTOMER", "U0AGENT"
TS = "1700000100.000100"


class RecordingIntake:
    """The Intake protocol: customers' messages go to a real Helpdesk; interactions (the bots'
    business, not written here) are recorded and answered "noted"."""

    def __init__(self, helpdesk: Helpdesk) -> None:
        self.helpdesk = helpdesk
        self.interactions: list[Interaction] = []
        self.reply = "noted"
        self.hold: asyncio.Event | None = None  # when set, interact waits for it

    async def ingest(self, msg: InboundMessage) -> Any:
        return await self.helpdesk.ingest(msg)

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int:
        return await self.helpdesk.quarantine(channel, reason, raw)

    async def cursor(self, name: str) -> str | None:
        return await self.helpdesk.cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        await self.helpdesk.save_cursor(name, value)

    async def interact(self, interaction: Interaction) -> InteractionReply:
        if self.hold is not None:
            await asyncio.wait_for(self.hold.wait(), 5)
        self.interactions.append(interaction)
        return InteractionReply(self.reply)

    async def wait_for_interactions(self, n: int = 1, timeout: float = 5.0) -> list[Interaction]:
        deadline = time.monotonic() + timeout
        while len(self.interactions) < n:
            assert time.monotonic() < deadline, f"expected {n} interaction(s)"
            await asyncio.sleep(0.01)
        return self.interactions


class Harness:
    def __init__(
        self, slack: FakeSlack, adapter: SlackAdapter, intake: RecordingIntake, url: str
    ) -> None:
        self.slack, self.adapter, self.intake, self.url = slack, adapter, intake, url
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.http.post(self.url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    async def event(self, event: dict[str, Any], **kw: Any) -> tuple[int, str]:
        body, headers = signed_json(SECRET, envelope(event, kw.pop("event_id", "Ev0001")))
        return await self.post(body, {**headers, **kw.pop("headers", {})})

    async def table(self, model: Any) -> list[Any]:
        table = table_of(model)
        return await self.intake.helpdesk.db.read(
            lambda c: c.execute(select(table).order_by(table.c.id)).all()
        )

    async def count(self, model: Any) -> int:
        table = table_of(model)
        return int(
            await self.intake.helpdesk.db.read(
                lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()
            )
        )


def settings(slack: FakeSlack, **overrides: Any) -> SlackSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "api_url": slack.base_url,
        "support_channels": (SUPPORT,),
        "team_channel": TEAM,
        **overrides,
    }
    return SlackSettings(**values)


ENV = {"HELPLINE_SLACK_BOT_TOKEN": "xoxb-test-token", "HELPLINE_SLACK_SIGNING_SECRET": SECRET}


def envelope(event: dict[str, Any], event_id: str = "Ev0001") -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": "T0HELPLINE",
        "api_app_id": "A0HELPLINE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(float(event.get("ts", TS))),
        "authorizations": [
            {"team_id": "T0HELPLINE", "user_id": "U0HELPBOT", "is_bot": True},
        ],
    }


def message(
    text: str = "My order #4411 has not arrived",
    *,
    user: str = CUSTOMER,
    channel: str = DM,
    ts: str = TS,
    channel_type: str = "im",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "client_msg_id": f"cm-{ts}",
        **extra,
    }


@pytest.fixture
async def helpdesk(tmp_path: Path) -> AsyncIterator[Helpdesk]:
    url = f"sqlite:///{tmp_path}/helpline.db"
    db = open_database(url, durable=False)
    upgrade(db)
    desk = Helpdesk(db, make_settings(url, tmp_path), b"test-secret" * 4)
    yield desk
    await db.close()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_user(AGENT, "bob", "Bob Agent", "bob@support.example")
        yield fake


@pytest.fixture
async def harness(slack: FakeSlack, helpdesk: Helpdesk) -> AsyncIterator[Harness]:
    adapter = SlackAdapter.from_settings(settings(slack), ENV)
    intake = RecordingIntake(helpdesk)
    await adapter.start(intake)
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_request)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    h = Harness(slack, adapter, intake, f"http://127.0.0.1:{port}/slack/events")
    yield h
    await h.http.close()
    await adapter.stop()
    await runner.cleanup()


# -- customers' messages ------------------------------------------------------------------------


async def test_dm_message_opens_a_ticket_with_the_users_profile(harness: Harness) -> None:
    status, _ = await harness.event(message())
    assert status == 200  # answered after the commit: the ticket exists now
    [ticket] = await harness.table(Ticket)
    assert ticket.channel == "slack" and ticket.reply_thread == TS
    [customer] = await harness.table(Customer)
    assert (customer.name, customer.email) == ("Alice Example", "alice@example.com")
    [msg] = await harness.table(Message)
    assert msg.text == "My order #4411 has not arrived" and msg.external_id == f"{DM}:{TS}"
    refs = {r.ref for r in await harness.table(ThreadRefRow)}
    assert f"{DM}:{TS}" in refs


async def test_retries_and_duplicate_events_store_one_message(harness: Harness) -> None:
    event = message()
    assert (await harness.event(event))[0] == 200
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await harness.event(event, headers=retry))[0] == 200
    assert (await harness.event(event, event_id="Ev0001"))[0] == 200  # same event id again
    assert await harness.count(Message) == 1 and await harness.count(Ticket) == 1
    assert len(harness.slack.calls_to("users.info")) == 1  # the profile is cached


async def test_bad_missing_and_stale_signatures_are_401(harness: Harness) -> None:
    body = json.dumps(envelope(message())).encode()
    json_type = {"Content-Type": "application/json"}
    forged = {**slack_headers("not-the-secret", body), **json_type}
    stale = {**slack_headers(SECRET, body, timestamp=int(time.time()) - 360), **json_type}
    tampered_body = body.replace(b"4411", b"4412")
    for payload, headers in [
        (body, forged),
        (body, json_type),
        (body, stale),
        (tampered_body, {**slack_headers(SECRET, body), **json_type}),
    ]:
        status, _ = await harness.post(payload, headers)
        assert status == 401
    assert await harness.count(Ticket) == 0
    assert harness.slack.calls_to("users.info") == []


@pytest.mark.parametrize(
    "event",
    [
        message(user="U0HELPBOT"),  # our bot user
        message(bot_id="B0HELPBOT"),
        message(user="U0OTHERBOT", bot_id="B0OTHER", subtype="bot_message"),
        message(subtype="message_changed"),
        message(subtype="channel_join"),
    ],
    ids=["own-user", "own-bot-id", "other-bot", "edit", "join"],
)
async def test_bots_and_non_messages_are_ignored(harness: Harness, event: dict[str, Any]) -> None:
    assert (await harness.event(event))[0] == 200
    assert await harness.count(Ticket) == 0


async def test_thread_reply_in_a_dm_continues_the_ticket(harness: Harness) -> None:
    await harness.event(message())
    later = "1700000200.000200"
    reply = message("Any news?", ts=later, thread_ts=TS)
    assert (await harness.event(reply, event_id="Ev0002"))[0] == 200
    assert await harness.count(Ticket) == 1
    messages = await harness.table(Message)
    assert [m.text for m in messages] == ["My order #4411 has not arrived", "Any news?"]
    assert {m.ticket_id for m in messages} == {(await harness.table(Ticket))[0].id}


async def test_support_channel_is_handled_other_channels_are_not(harness: Harness) -> None:
    in_support = message("Hello from Acme Corp", channel=SUPPORT, channel_type="channel")
    elsewhere = message("lunch?", channel="C0RANDOM", channel_type="channel", ts="1700000300.0")
    assert (await harness.event(in_support))[0] == 200
    assert (await harness.event(elsewhere, event_id="Ev0002"))[0] == 200
    [ticket] = await harness.table(Ticket)
    # answers go to the channel's thread, not to the customer's DM
    assert ticket.reply_thread == f"{SUPPORT}:{TS}"
    assert destination(ThreadRef(Channel.SLACK, CUSTOMER, ticket.reply_thread)) == (SUPPORT, TS)


async def test_files_are_listed_and_markup_is_plain_text(harness: Harness) -> None:
    shared = message(
        "see <https://acme.test/o/1|my order> &amp; <@U0OTHER>",
        subtype="file_share",
        files=[{"name": "receipt.pdf", "permalink": "https://acme.slack.com/files/F1"}],
    )
    assert (await harness.event(shared))[0] == 200
    [msg] = await harness.table(Message)
    assert msg.text == (
        "see my order (https://acme.test/o/1) & @U0OTHER\n\n"
        "Files:\nreceipt.pdf: https://acme.slack.com/files/F1"
    )


async def test_profile_lookup_failure_falls_back_to_the_user_id(harness: Harness) -> None:
    assert (await harness.event(message(user="U0STRANGER")))[0] == 200
    [customer] = await harness.table(Customer)
    assert (customer.name, customer.email) == ("U0STRANGER", None)


async def test_a_database_failure_answers_500_so_slack_retries(harness: Harness) -> None:
    async def broken(msg: InboundMessage) -> Any:
        raise RuntimeError("database is down")

    harness.intake.ingest = broken  # type: ignore[method-assign]
    status, _ = await harness.event(message())
    assert status == 500


async def test_a_failed_auth_test_answers_500_so_slack_retries(harness: Harness) -> None:
    harness.slack.fail_next(1, status=503, method="auth.test")
    assert (await harness.event(message()))[0] == 500
    assert await harness.count(Ticket) == 0
    assert (await harness.event(message(), headers={"X-Slack-Retry-Num": "1"}))[0] == 200
    assert await harness.count(Ticket) == 1


async def test_a_message_intake_refuses_is_quarantined(harness: Harness) -> None:
    # an empty sender address is InvalidInput: retrying would not help, so keep it and ack
    assert (await harness.event(message(user=" ")))[0] == 200
    [kept] = await harness.table(Quarantine)
    assert kept.channel == "slack" and "sender" in kept.reason


# -- agents, clicks, commands --------------------------------------------------------------------


async def test_team_channel_thread_reply_is_an_interaction(harness: Harness) -> None:
    card_ts = "1700000000.000100"
    reply = message(
        "We shipped it today.",
        user=AGENT,
        channel=TEAM,
        channel_type="channel",
        ts="1700000400.000400",
        thread_ts=card_ts,
    )
    assert (await harness.event(reply))[0] == 200
    [i] = harness.intake.interactions
    assert i == Interaction(
        channel=Channel.SLACK,
        external_id=f"{TEAM}:1700000400.000400",
        user=AGENT,
        action="thread_reply",
        text="We shipped it today.",
        user_name="Bob Agent",
        refs=(f"{TEAM}:{card_ts}",),
    )
    [ephemeral] = harness.slack.ephemerals
    assert (ephemeral["channel"], ephemeral["user"], ephemeral["text"]) == (TEAM, AGENT, "noted")
    assert ephemeral["thread_ts"] == card_ts

    top_level = message("coffee?", user=AGENT, channel=TEAM, channel_type="channel", ts="1.0")
    assert (await harness.event(top_level, event_id="Ev0002"))[0] == 200
    assert len(harness.intake.interactions) == 1 and await harness.count(Ticket) == 0


def corpus(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name).read_text())
    return data


async def test_block_actions_ack_at_once_then_interact_and_answer(harness: Harness) -> None:
    payload = corpus("slack_block_actions_button.bolt-fixture.json")
    # the corpus points at hooks.slack.com; answer through the fake instead
    payload["response_url"] = f"{harness.slack.base_url}response.T111"
    harness.intake.hold = asyncio.Event()
    status, body = await harness.post(*signed_interaction(SECRET, payload))
    assert (status, body) == (200, "")  # acknowledged while the bots are still busy
    assert harness.intake.interactions == []
    harness.intake.hold.set()
    [i] = await harness.intake.wait_for_interactions()
    assert i == Interaction(
        channel=Channel.SLACK,
        external_id="action:111.222:1596530385.194939:W111",
        user="W111",
        action="a",
        value="click_me_123",
        user_name="primary-owner",
        refs=("C111:111.222",),
    )
    [answer] = await harness.slack.wait_for_calls("response.T111")
    assert answer.params == {
        "text": "noted",
        "response_type": "ephemeral",
        "replace_original": False,
    }


async def test_block_actions_in_a_dm_without_response_url(harness: Harness) -> None:
    payload = corpus("slack_block_actions_button.bolt-fixture.json")
    payload.pop("response_url")
    payload["user"] = {"id": CUSTOMER, "username": "alice", "name": "alice", "team_id": "T1"}
    payload["channel"] = {"id": DM, "name": "directmessage"}
    payload["container"] = {"type": "message", "message_ts": "1700.5", "channel_id": DM}
    link = {"action_id": "kb_article", "url": "https://kb.test/1", "action_ts": "1700.7"}
    rating = {"action_id": "csat#3", "value": "12:4", "type": "button", "action_ts": "1700.6"}
    payload["actions"] = [link, rating]
    assert (await harness.post(*signed_interaction(SECRET, payload)))[0] == 200
    [i] = await harness.intake.wait_for_interactions()
    assert (i.action, i.value, i.user) == ("csat", "12:4", CUSTOMER)  # link clicks are no news
    assert i.refs == (f"{CUSTOMER}:1700.5", f"{DM}:1700.5")
    [call] = await harness.slack.wait_for_calls("chat.postEphemeral")
    assert (call.params["channel"], call.params["user"], call.params["text"]) == (
        DM,
        CUSTOMER,
        "noted",
    )


async def test_slash_command_is_an_interaction(harness: Harness) -> None:
    fields = {
        "command": "/helpline",
        "text": " claim 12 ",
        "user_id": AGENT,
        "user_name": "bob",
        "channel_id": TEAM,
        "team_id": "T0HELPLINE",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "response_url": f"{harness.slack.base_url}response.cmd",
    }
    status, body = await harness.post(*signed_form(SECRET, fields))
    assert (status, body) == (200, "")
    [i] = await harness.intake.wait_for_interactions()
    assert (i.action, i.text, i.refs) == ("command", "claim 12", ())
    assert (i.user, i.user_name) == (AGENT, "bob")
    assert i.external_id == "command:13345224609.738474920.8088930838d88f008e0"
    [answer] = await harness.slack.wait_for_calls("response.cmd")
    assert answer.params["text"] == "noted" and answer.params["response_type"] == "ephemeral"


async def test_url_verification_echoes_the_challenge(harness: Harness) -> None:
    payload = corpus("slack_url_verification.docs.json")
    status, body = await harness.post(*signed_json(SECRET, payload))
    assert status == 200 and json.loads(body) == {"challenge": payload["challenge"]}


@pytest.mark.parametrize("path", sorted(CORPUS.glob("slack_event_*.json")), ids=lambda p: p.stem)
async def test_corpus_events_are_accepted(slack: FakeSlack, helpdesk: Helpdesk, path: Path) -> None:
    adapter = SlackAdapter.from_settings(
        settings(slack, support_channels=("C111", "C123ABC456")), ENV
    )
    await adapter.start(RecordingIntake(helpdesk))
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_request)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        payload = json.loads(path.read_text())
        body, headers = signed_json(SECRET, payload)
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            assert r.status == 200
        tickets = await helpdesk.db.read(
            lambda c: c.execute(select(func.count()).select_from(table_of(Ticket))).scalar_one()
        )
        # message events in a support channel are customers'; app_mention repeats them
        assert tickets == (1 if payload["event"]["type"] == "message" else 0)
    finally:
        await adapter.stop()
        await runner.cleanup()


async def test_requests_before_start_are_503(slack: FakeSlack) -> None:
    adapter = SlackAdapter.from_settings(settings(slack), ENV)
    app = web.Application()
    app.router.add_post("/slack/events", adapter.handle_request)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        body, headers = signed_json(SECRET, envelope(message()))
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
            assert r.status == 503
    finally:
        await runner.cleanup()


async def test_socket_mode_receives_and_acknowledges_envelopes(
    slack: FakeSlack, helpdesk: Helpdesk
) -> None:
    """Socket Mode against a loopback websocket that speaks Slack's envelope protocol."""
    acks: list[dict[str, Any]] = []

    async def link(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1})
        await ws.send_json(
            {
                "envelope_id": "env-1",
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": 0,
                "retry_reason": "",
                "payload": envelope(message()),
            }
        )
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                acks.append(json.loads(frame.data))
        return ws

    app = web.Application()
    app.router.add_get("/link", link)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    wss = f"ws://127.0.0.1:{runner.addresses[0][1]}/link"
    slack.valid_tokens.add("xapp-1-test")
    slack.on("apps.connections.open", lambda call: {"url": wss})
    env = {"HELPLINE_SLACK_BOT_TOKEN": "xoxb-test-token", "HELPLINE_SLACK_APP_TOKEN": "xapp-1-test"}
    adapter = SlackAdapter.from_settings(settings(slack, mode="socket"), env)
    await adapter.start(RecordingIntake(helpdesk))
    try:
        deadline = time.monotonic() + 5
        while not acks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert acks == [{"envelope_id": "env-1"}]  # acknowledged after the commit
        [call] = slack.calls_to("apps.connections.open")
        assert call.authorization == "Bearer xapp-1-test"
        count = select(func.count()).select_from(table_of(Ticket))
        assert await helpdesk.db.read(lambda c: c.execute(count).scalar_one()) == 1
    finally:
        await adapter.stop()
        await runner.cleanup()


# -- outbound ------------------------------------------------------------------------------------


class FakeTime:
    """A clock and a sleep for RateGate: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def sender(slack: FakeSlack) -> tuple[SlackAdapter, FakeTime]:
    fake = FakeTime()
    gate = RateGate(clock=fake.clock, sleep=fake.sleep)
    return SlackAdapter.from_settings(settings(slack), ENV, gate=gate), fake


CARD = OutboundMessage(
    to=ThreadRef(Channel.SLACK, TEAM),
    text="#12 Printer <jammed> & smoking",
    actions=(
        Action("claim", "Claim", "12", "primary"),
        Action("resolve", "Resolve", "12"),
        Action("escalate", "Escalate", "12", "danger"),
        Action("kb_article", "How to clear a jam", "https://kb.test/jam"),
    ),
)


async def test_send_posts_text_and_buttons(
    slack: FakeSlack, sender: tuple[SlackAdapter, FakeTime]
) -> None:
    adapter, _ = sender
    receipt = await adapter.send(CARD, "card:12")
    [call] = slack.calls_to("chat.postMessage")
    assert receipt.external_id == slack.posted[0]["ts"]
    p = call.params
    assert p["channel"] == TEAM and "thread_ts" not in p
    assert p["text"] == "#12 Printer &lt;jammed&gt; &amp; smoking"
    assert p["metadata"]["event_payload"] == {"client_msg_id": "card:12"}
    section, actions = p["blocks"]
    assert section["text"] == {"type": "mrkdwn", "text": "#12 Printer &lt;jammed&gt; &amp; smoking"}
    claim, resolve, escalate, link = actions["elements"]
    assert (claim["action_id"], claim["value"], claim["style"]) == ("claim", "12", "primary")
    assert "style" not in resolve and escalate["style"] == "danger"
    assert link["url"] == "https://kb.test/jam" and "value" not in link
    assert slack.duplicate_posts() == {}


async def test_send_threads_and_opens_dms(
    slack: FakeSlack, sender: tuple[SlackAdapter, FakeTime]
) -> None:
    adapter, _ = sender
    dm = OutboundMessage(to=ThreadRef(Channel.SLACK, CUSTOMER, TS), text="We are on it.")
    await adapter.send(dm, "ack:1")
    in_channel = OutboundMessage(
        to=ThreadRef(Channel.SLACK, CUSTOMER, f"{SUPPORT}:{TS}"), text="Answer in the channel"
    )
    await adapter.send(in_channel, "reply:1")
    first, second = slack.calls_to("chat.postMessage")
    assert (first.params["channel"], first.params["thread_ts"]) == (CUSTOMER, TS)
    assert slack.posted[0]["channel"] == DM  # posting to a user id lands in the DM
    assert (second.params["channel"], second.params["thread_ts"]) == (SUPPORT, TS)


async def test_a_posted_message_is_found_by_its_outbox_key(
    slack: FakeSlack, sender: tuple[SlackAdapter, FakeTime]
) -> None:
    """What the dispatcher asks before sending again a row whose sender died mid-delivery."""
    adapter, _ = sender
    since = datetime.now(UTC)
    card = await adapter.send(CARD, "card:12")
    assert await adapter.find_delivered(CARD, "card:12", since) == card
    assert await adapter.find_delivered(CARD, "card:13", since) is None
    # a reply is only in its thread; a DM is read through the conversation opened for it
    reply = OutboundMessage(to=ThreadRef(Channel.SLACK, TEAM, card.external_id), text="On it")
    replied = await adapter.send(reply, "reply:12")
    assert await adapter.find_delivered(reply, "reply:12", since) == replied
    assert slack.calls_to("conversations.replies")[-1].params["ts"] == card.external_id
    dm = OutboundMessage(to=ThreadRef(Channel.SLACK, CUSTOMER), text="We are on it.")
    acked = await adapter.send(dm, "ack:12")
    assert await adapter.find_delivered(dm, "ack:12", since) == acked
    assert slack.calls_to("conversations.history")[-1].params["channel"] == DM
    # only messages since the row was written (a minute of clock skew allowed) are read
    assert await adapter.find_delivered(CARD, "card:12", since + timedelta(minutes=2)) is None
    # a busy channel is read page by page (200 a page, newest first)
    for i in range(450):
        await adapter.send(OutboundMessage(to=CARD.to, text=f"#{i}"), f"other:{i}")
    pages = len(slack.calls_to("conversations.history"))
    assert await adapter.find_delivered(CARD, "card:12", since) == card
    assert len(slack.calls_to("conversations.history")) - pages == 3
    # an update is made again rather than looked for
    update = OutboundMessage(to=CARD.to, text="claimed", replaces=card.external_id)
    assert await adapter.find_delivered(update, "card:12:claimed", since) is None


async def test_replaces_updates_the_earlier_message(
    slack: FakeSlack, sender: tuple[SlackAdapter, FakeTime]
) -> None:
    adapter, _ = sender
    ts = (await adapter.send(CARD, "card:12")).external_id
    claimed = OutboundMessage(
        to=CARD.to, text="#12 Printer jammed - claimed by Bob", actions=(), replaces=ts
    )
    assert (await adapter.send(claimed, "card:12:claimed")).external_id == ts
    [update] = slack.calls_to("chat.update")
    assert (update.params["channel"], update.params["ts"]) == (TEAM, ts)
    assert slack.messages[(TEAM, ts)]["text"] == "#12 Printer jammed - claimed by Bob"
    assert len(slack.messages[(TEAM, ts)]["blocks"]) == 1  # the buttons are gone

    # a DM was addressed by user id; chat.update needs the conversation's id
    survey = OutboundMessage(to=ThreadRef(Channel.SLACK, CUSTOMER), text="Rate us")
    survey_ts = (await adapter.send(survey, "survey:12")).external_id
    thanks = OutboundMessage(to=survey.to, text="Thanks!", replaces=survey_ts)
    await adapter.send(thanks, "survey:12:thanks")
    assert slack.calls_to("chat.update")[-1].params["channel"] == DM
    assert slack.messages[(DM, survey_ts)]["text"] == "Thanks!"


async def test_sends_are_paced_per_channel(
    slack: FakeSlack, sender: tuple[SlackAdapter, FakeTime]
) -> None:
    adapter, fake = sender
    await adapter.send(CARD, "a")
    await adapter.send(CARD, "b")
    other = OutboundMessage(to=ThreadRef(Channel.SLACK, "C0OTHER"), text="hi")
    await adapter.send(other, "c")
    assert len(fake.slept) == 1 and 1.0 <= fake.slept[0] < 1.1  # only the same channel waits


async def test_rate_limit_is_unavailable_with_retry_after_and_holds_the_gate(
    slack: FakeSlack, sender: tuple[SlackAdapter, FakeTime]
) -> None:
    adapter, fake = sender
    slack.fail_next(1, status=429, retry_after=7, method="chat.postMessage")
    with pytest.raises(ChannelUnavailable) as exc:
        await adapter.send(CARD, "card:12")
    assert exc.value.retry_after == 7
    assert len(slack.calls_to("chat.postMessage")) == 1  # slack_sdk did not retry by itself
    await adapter.send(CARD, "card:12")
    assert fake.slept and fake.slept[-1] >= 7  # nothing went to that channel before then
    assert len(slack.posted) == 1


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, "channel_not_found", ChannelRejected),
        (200, "not_in_channel", ChannelRejected),
        (200, "invalid_blocks", ChannelRejected),
        (500, None, ChannelUnavailable),
        (503, "service_unavailable", ChannelUnavailable),
        (200, "invalid_auth", ChannelUnavailable),
    ],
)
async def test_api_errors_map_to_rejected_or_unavailable(
    slack: FakeSlack,
    sender: tuple[SlackAdapter, FakeTime],
    status: int,
    error: str | None,
    expected: type[Exception],
) -> None:
    adapter, _ = sender
    slack.fail_next(1, status=status, error=error, method="chat.postMessage")
    with pytest.raises(expected) as exc:
        await adapter.send(CARD, "card:12")
    if error:
        assert error in str(exc.value)


async def test_unreachable_slack_is_unavailable(sender: tuple[SlackAdapter, FakeTime]) -> None:
    adapter, _ = sender
    async with FakeSlack() as gone:
        dead_url = gone.base_url
    adapter.client.base_url = dead_url
    with pytest.raises(ChannelUnavailable):
        await adapter.send(CARD, "card:12")


# -- configuration -------------------------------------------------------------------------------


def test_from_settings_names_missing_secrets() -> None:
    conf = SlackSettings(enabled=True)
    with pytest.raises(ConfigError, match="HELPLINE_SLACK_BOT_TOKEN"):
        SlackAdapter.from_settings(conf, {"HELPLINE_SLACK_SIGNING_SECRET": SECRET})
    with pytest.raises(ConfigError, match="HELPLINE_SLACK_SIGNING_SECRET"):
        SlackAdapter.from_settings(conf, {"HELPLINE_SLACK_BOT_TOKEN": "xoxb-1"})
    socket = SlackSettings(enabled=True, mode="socket")
    with pytest.raises(ConfigError, match="HELPLINE_SLACK_APP_TOKEN"):
        SlackAdapter.from_settings(socket, {"HELPLINE_SLACK_BOT_TOKEN": "xoxb-1"})
    adapter = SlackAdapter.from_settings(
        socket, {"HELPLINE_SLACK_BOT_TOKEN": "xoxb-1", "HELPLINE_SLACK_APP_TOKEN": "xapp-1"}
    )
    assert adapter.signing_secret is None  # Socket Mode requests are not signed


def test_from_settings_client() -> None:
    conf = SlackSettings(enabled=True, api_url="http://127.0.0.1:9/api/")
    adapter = SlackAdapter.from_settings(conf, ENV)
    assert adapter.client.base_url == "http://127.0.0.1:9/api/"
    assert adapter.client.token == "xoxb-test-token"
    assert adapter.client.retry_handlers == []  # the outbox retries, honouring Retry-After
    default = SlackAdapter.from_settings(SlackSettings(enabled=True), ENV)
    assert default.client.base_url == "https://slack.com/api/"


# -- pure helpers --------------------------------------------------------------------------------


def test_blocks_escape_split_and_unique_action_ids() -> None:
    rating = OutboundMessage(
        to=ThreadRef(Channel.SLACK, CUSTOMER),
        text="How did we do? " + "x" * 3100,
        actions=tuple(Action("csat", str(n), f"12:{n}") for n in range(1, 6)),
    )
    first, second, actions = slack_blocks.render(rating)
    assert len(first["text"]["text"]) == 3000 and second["text"]["text"] == "x" * 115
    ids = [e["action_id"] for e in actions["elements"]]
    assert ids == ["csat", "csat#1", "csat#2", "csat#3", "csat#4"]
    assert {slack_blocks.action_id_of(i) for i in ids} == {"csat"}

    many = OutboundMessage(
        to=rating.to,
        text="",
        actions=tuple(Action(f"n{i}", "L" * 100, str(i)) for i in range(30)),
    )
    blocks = slack_blocks.render(many)
    assert [len(b["elements"]) for b in blocks] == [25, 5]  # no empty section either
    assert len(blocks[0]["elements"][0]["text"]["text"]) == 75
    assert slack_blocks.escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    # a cut never splits an escape sequence
    chunks = slack_blocks.sections("y" * 2998 + "&&")
    assert chunks[0]["text"]["text"] == "y" * 2998 and chunks[1]["text"]["text"] == "&amp;&amp;"


def test_plain_text_and_message_text() -> None:
    assert plain_text("<mailto:a@b.test|a@b.test> <!here> <#C1|general> 1 &lt; 2") == (
        "a@b.test @here #general 1 < 2"
    )
    assert plain_text("<https://x.test>") == "https://x.test"
    assert message_text({"files": [{"title": "pic", "permalink": "https://p"}]}) == (
        "Files:\npic: https://p"
    )


def test_app_manifest_grants_what_the_adapter_uses() -> None:
    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parents[2]
    manifest = yaml.safe_load((root / "docs" / "slack-app-manifest.yml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "im:history", "im:write", "users:read", "users:read.email"} <= scopes
    assert {"channels:history", "groups:history", "commands", "app_mentions:read"} <= scopes
    conf = manifest["settings"]
    events = set(conf["event_subscriptions"]["bot_events"])
    assert events == {"message.im", "message.channels", "message.groups"}
    url = "https://helpline.example.com/slack/events"
    assert conf["event_subscriptions"]["request_url"] == url
    assert conf["interactivity"] == {"is_enabled": True, "request_url": url}
    [command] = manifest["features"]["slash_commands"]
    assert (command["command"], command["url"]) == ("/helpline", url)
    assert conf["socket_mode_enabled"] is False
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
