"""The chat-ops loop end to end, through the real service, python-telegram-bot and slack-bolt
against local fake Telegram and Slack servers:

a Telegram customer writes -> ticket -> card in the Slack team channel -> Claim (two agents at
once: one wins) -> the agent answers in the card's thread -> the customer gets it in Telegram ->
Resolve -> CSAT buttons -> the rating is stored once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from core import accounts
from core.persistence.models import SurveyResponse, Ticket, TicketEvent, table_of
from core.ports import utc_now
from tests.conftest import Server, ServerFactory
from tests.fakes.signing import signed_interaction, signed_json
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

SECRET = "slack-signing-secret"
TEAM = "C0TEAM"
CHAT = 5550123
ALICE, BOB, BOSS = "U0ALICE", "U0BOB", "U0BOSS"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        for user, name in [(ALICE, "Alice"), (BOB, "Bob"), (BOSS, "Sam Boss")]:
            fake.add_user(user, name.lower(), name, f"{name.split()[0].lower()}@support.test")
        yield fake


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def service(
    server_factory: ServerFactory, slack: FakeSlack, telegram: FakeTelegram
) -> Server:
    env = {
        "HELPLINE_SLACK_BOT_TOKEN": slack.token,
        "HELPLINE_SLACK_SIGNING_SECRET": SECRET,
        "HELPLINE_TELEGRAM_TOKEN": telegram.token,
        "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "tg-secret-123",
    }
    server = await server_factory(
        env=env,
        slack={"enabled": True, "api_url": slack.base_url, "team_channel": TEAM},
        telegram={"enabled": True, "api_url": telegram.origin},
        bots={"supervisors": [f"slack:{BOSS}"]},
    )
    now = utc_now()
    for name, user in [("Alice", ALICE), ("Bob", BOB)]:
        await server.helpdesk.db.write(
            lambda c, n=name, u=user: accounts.add_agent(
                c,
                name=n,
                email=f"{n.lower()}@support.test",
                role=accounts.Role.AGENT,
                now=now,
                slack_user_id=u,
            )
        )
    return server


async def until(check: Any, timeout: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def post_slack(server: Server, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.base_url}/slack/events", data=body, headers=headers) as response,
    ):
        return response.status


def click(user: str, message_ts: str, action_id: str, value: str, n: int) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {
            "id": user,
            "username": user.lower(),
            "name": user.lower(),
            "team_id": "T0HELPLINE",
        },
        "api_app_id": "A0HELPLINE",
        "token": "legacy",
        "trigger_id": f"trigger-{n}",
        "team": {"id": "T0HELPLINE", "domain": "acme"},
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": TEAM,
            "is_ephemeral": False,
        },
        "channel": {"id": TEAM, "name": "support-team"},
        "message": {"type": "message", "ts": message_ts, "text": "card", "user": "U0HELPBOT"},
        "actions": [
            {
                "action_id": action_id,
                "block_id": "card",
                "value": value,
                "type": "button",
                "action_ts": f"1700000{n}.000100",
                "text": {"type": "plain_text", "text": action_id},
            }
        ],
    }


def thread_reply(user: str, card_ts: str, text: str, n: int) -> dict[str, Any]:
    ts = f"1700001{n:03d}.000200"
    return {
        "token": "legacy",
        "team_id": "T0HELPLINE",
        "api_app_id": "A0HELPLINE",
        "type": "event_callback",
        "event_id": f"EvReply{n}",
        "event_time": 1700001000,
        "authorizations": [{"team_id": "T0HELPLINE", "user_id": "U0HELPBOT", "is_bot": True}],
        "event": {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "thread_ts": card_ts,
            "channel": TEAM,
            "channel_type": "channel",
        },
    }


async def rows(server: Server, model: Any) -> list[Any]:
    t = table_of(model)
    return await server.helpdesk.db.read(lambda c: c.execute(select(t).order_by(t.c.id)).all())


async def test_telegram_customer_to_slack_team_and_back(
    service: Server, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    # 1. the customer writes to the bot in Telegram
    update = telegram.push_message("The app crashes when I open settings", chat_id=CHAT)
    telegram.updates.clear()
    assert await telegram.deliver_webhook(update) == 200
    [ticket] = await rows(service, Ticket)
    assert ticket.channel == "telegram" and ticket.number == 1

    # 2. the customer gets an acknowledgement, the team gets a card with Claim
    ack = await until(lambda: telegram.sent_to(CHAT))
    assert "#1" in ack[0]["text"]
    card_post = await until(lambda: slack.posts(channel=TEAM))
    card_ts = card_post[0]["ts"]
    assert "#1" in card_post[0]["text"]
    assert "claim" in str(card_post[0].get("blocks"))

    # 3. two agents click Claim at once: exactly one wins
    statuses = await asyncio.gather(
        *(
            post_slack(service, *signed_interaction(SECRET, click(user, card_ts, "claim", "1", n)))
            for n, user in enumerate([ALICE, BOB])
        )
    )
    assert statuses == [200, 200]
    ephemerals = await until(
        lambda: (
            len(slack.calls_to("chat.postEphemeral")) >= 2 and slack.calls_to("chat.postEphemeral")
        )
    )
    texts = sorted(call.params["text"] for call in ephemerals)
    assert any("already claimed by" in t for t in texts)
    assert any(t.startswith("You claimed") for t in texts)
    [ticket] = await rows(service, Ticket)
    assert ticket.assignee_id is not None and ticket.status == "open"

    # 4. the card is updated in place, never posted twice
    update_call = await until(lambda: slack.calls_to("chat.update"))
    assert update_call[0].params["ts"] == card_ts and "Owner: " in update_call[0].params["text"]
    assert len(slack.posts(channel=TEAM)) == 1
    # and the customer hears that an agent has the ticket
    await until(lambda: any("is now handling" in m["text"] for m in telegram.sent_to(CHAT)))

    # 5. the agent answers in the card's thread; the customer gets it in Telegram
    owner = (
        ALICE
        if any(
            t.startswith("You claimed") and c.params["user"] == ALICE
            for c in ephemerals
            for t in [c.params["text"]]
        )
        else BOB
    )
    body, headers = signed_json(SECRET, thread_reply(owner, card_ts, "Please update to 4.2", 1))
    assert await post_slack(service, body, headers) == 200
    await until(
        lambda: any(m["text"].startswith("Please update to 4.2") for m in telegram.sent_to(CHAT))
    )
    # a "note:" stays internal
    body, headers = signed_json(SECRET, thread_reply(owner, card_ts, "note: VIP customer", 2))
    assert await post_slack(service, body, headers) == 200
    await asyncio.sleep(0.3)
    assert not any("VIP" in m["text"] for m in telegram.sent_to(CHAT))

    # 6. resolve from the card: the customer gets the CSAT buttons
    resolve = click(owner, card_ts, "resolve", "1", 7)
    assert await post_slack(service, *signed_interaction(SECRET, resolve)) == 200
    survey = await until(
        lambda: [m for m in telegram.sent_to(CHAT) if "satisfied" in m.get("text", "")]
    )
    keyboard = survey[0]["reply_markup"]["inline_keyboard"]
    five = next(b for row in keyboard for b in row if b["text"] == "5")

    # 7. the customer taps 5 (twice): one rating stored, a polite answer the second time
    for _ in range(2):
        tap = telegram.push_callback_query(
            five["callback_data"], chat_id=CHAT, message_id=survey[0]["message_id"]
        )
        assert await telegram.deliver_webhook(tap) == 200
    answers = await until(lambda: len(telegram.callback_answers) >= 2 and telegram.callback_answers)
    assert "Thank you" in answers[0].get("text", "")
    assert "already rated" in answers[1].get("text", "")
    [rating] = await rows(service, SurveyResponse)
    assert (rating.kind, rating.score) == ("csat", 5)

    # nothing was ever posted twice
    assert slack.duplicate_posts() == {}
    assert telegram.duplicate_sends() == {}


async def test_escalate_pings_the_supervisors(
    service: Server, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    update = telegram.push_message("I want a refund now", chat_id=CHAT)
    assert await telegram.deliver_webhook(update) == 200
    card = await until(lambda: slack.posts(channel=TEAM))
    escalate = click(ALICE, card[0]["ts"], "escalate", "1", 3)
    assert await post_slack(service, *signed_interaction(SECRET, escalate)) == 200
    ping = await until(lambda: [p for p in slack.posted if "Escalation" in p.get("text", "")])
    assert "#1" in ping[0]["text"] and ping[0]["channel"] != TEAM
    events = [e.kind for e in await rows(service, TicketEvent)]
    assert "escalated" in events


async def test_slash_commands_list_the_queue_and_mine(
    service: Server, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    from tests.fakes.signing import signed_form

    for n in range(2):
        update = telegram.push_message(f"problem {n}", chat_id=CHAT + n)
        assert await telegram.deliver_webhook(update) == 200

    async def command(text: str, n: int) -> str:
        body, headers = signed_form(
            SECRET,
            {
                "command": "/helpline",
                "text": text,
                "user_id": ALICE,
                "user_name": "alice",
                "channel_id": TEAM,
                "team_id": "T0HELPLINE",
                "trigger_id": f"cmd-{n}",
                "token": "legacy",
                "response_url": "",
            },
        )
        assert await post_slack(service, body, headers) == 200
        calls = await until(
            lambda: (
                len(slack.calls_to("chat.postEphemeral")) > n
                and slack.calls_to("chat.postEphemeral")
            )
        )
        return str(calls[n].params["text"])

    assert "#1" in await command("queue", 0) and "#2" in (await command("queue", 1))
    assert "claimed" in await command("claim 2", 2)
    mine = await command("mine", 3)
    assert "#2" in mine and "#1" not in mine
