"""The Telegram-only setup: customers write to the bot, agents work in a Telegram group."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from core import accounts
from core.persistence.models import Ticket, table_of
from core.ports import utc_now
from tests.conftest import Server, ServerFactory
from tests.fakes.telegram_api import FakeTelegram

CUSTOMER_CHAT = 880011
GROUP = -1009990001
AGENT_USER = 424242


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
    return value


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def service(server_factory: ServerFactory, telegram: FakeTelegram) -> Server:
    server = await server_factory(
        env={
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
            "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "s3cret",
        },
        telegram={"enabled": True, "api_url": telegram.origin, "team_chat": str(GROUP)},
    )
    await server.helpdesk.db.write(
        lambda c: accounts.add_agent(
            c,
            name="Dana",
            email="dana@support.test",
            role=accounts.Role.AGENT,
            now=utc_now(),
            telegram_user_id=str(AGENT_USER),
        )
    )
    return server


async def test_cards_claims_and_replies_in_a_telegram_group(
    service: Server, telegram: FakeTelegram
) -> None:
    update = telegram.push_message("My card was charged twice", chat_id=CUSTOMER_CHAT)
    assert await telegram.deliver_webhook(update) == 200
    [card] = await until(lambda: telegram.sent_to(GROUP))
    assert "#1" in card["text"]
    claim = next(
        b for row in card["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "Claim"
    )

    tap = telegram.push_callback_query(
        claim["callback_data"], chat_id=GROUP, message_id=card["message_id"], user_id=AGENT_USER
    )
    assert await telegram.deliver_webhook(tap) == 200
    answers = await until(lambda: telegram.callback_answers)
    assert "You claimed ticket #1" in answers[0]["text"]
    ticket = await service.helpdesk.db.read(lambda c: c.execute(select(table_of(Ticket))).one())
    assert ticket.assignee_id is not None
    await until(
        lambda: any(
            c.params.get("message_id") in (card["message_id"], str(card["message_id"]))
            for c in telegram.calls_to("editMessageText")
        )
    )

    # the agent answers by replying to the card in the group
    answer = telegram.push_message(
        "We refunded the second charge.", chat_id=GROUP, user_id=AGENT_USER, reply_to_message=card
    )
    assert await telegram.deliver_webhook(answer) == 200
    await until(
        lambda: any(m["text"].startswith("We refunded") for m in telegram.sent_to(CUSTOMER_CHAT))
    )

    # a stranger in the group cannot claim or answer
    stranger = telegram.push_callback_query(
        claim["callback_data"], chat_id=GROUP, message_id=card["message_id"], user_id=7
    )
    assert await telegram.deliver_webhook(stranger) == 200
    answers = await until(lambda: len(telegram.callback_answers) >= 2 and telegram.callback_answers)
    assert "not registered as an agent" in answers[1]["text"]
