"""Interactions are handled once, except when handling them failed on our side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from bots.interactions import Interactions
from core import accounts
from core.config import BotSettings
from core.helpdesk import Helpdesk
from core.messages import Channel, InboundMessage, Interaction, Sender
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from tests.conftest import make_settings

NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.fixture
async def helpdesk(tmp_path: Path) -> AsyncIterator[Helpdesk]:
    url = f"sqlite:///{tmp_path}/helpline.db"
    db = open_database(url, durable=False)
    upgrade(db)
    desk = Helpdesk(db, make_settings(url, tmp_path), b"k" * 32, clock=lambda: NOW)
    await desk.ingest(InboundMessage(Channel.TELEGRAM, "u1", Sender("42", "Tom"), "help", NOW))
    await db.write(
        lambda c: accounts.add_agent(
            c,
            name="Alice",
            email="alice@support.test",
            role=accounts.Role.AGENT,
            now=NOW,
            slack_user_id="U0ALICE",
        )
    )
    yield desk
    await db.close()


def claim_click(external_id: str = "action:1") -> Interaction:
    return Interaction(Channel.SLACK, external_id, "U0ALICE", "claim", "1")


async def test_a_repeated_delivery_is_answered_once(helpdesk: Helpdesk) -> None:
    interactions = Interactions(helpdesk, BotSettings())
    first = await interactions.handle(claim_click())
    again = await interactions.handle(claim_click())
    assert first.text == "You claimed ticket #1."
    assert again.text == ""  # Slack's retry of the same click changes nothing


async def test_a_click_that_failed_on_our_side_is_done_by_the_retry(helpdesk: Helpdesk) -> None:
    interactions = Interactions(helpdesk, BotSettings())
    await helpdesk.db.write(lambda c: c.execute(text("ALTER TABLE tickets RENAME TO t_away")))
    with pytest.raises(exc.OperationalError):
        await interactions.handle(claim_click())
    await helpdesk.db.write(lambda c: c.execute(text("ALTER TABLE t_away RENAME TO tickets")))
    retried = await interactions.handle(claim_click())
    assert retried.text == "You claimed ticket #1."


async def test_a_stranger_is_told_how_to_register(helpdesk: Helpdesk) -> None:
    interactions = Interactions(helpdesk, BotSettings())
    reply = await interactions.handle(
        Interaction(Channel.SLACK, "action:2", "U0NOBODY", "claim", "1")
    )
    assert "not registered as an agent" in reply.text and "--slack U0NOBODY" in reply.text
