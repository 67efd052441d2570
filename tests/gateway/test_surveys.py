"""Self-service and ratings: KB suggestions with "This solved it" (chat), CSAT by signed
one-click links (email), the optional comment, and "recorded once"."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from core import kb
from core.messages import Channel, InboundMessage, Sender
from core.persistence.models import SurveyResponse, Ticket, TicketEvent, table_of
from gateway.state import KB
from tests.conftest import Server, ServerFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.telegram_api import FakeTelegram

CHAT = 777001


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
    return value


async def rows(server: Server, model: Any) -> list[Any]:
    t = table_of(model)
    return await server.helpdesk.db.read(lambda c: c.execute(select(t).order_by(t.c.id)).all())


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


async def test_kb_suggestion_solves_it_in_chat(
    server_factory: ServerFactory, telegram: FakeTelegram
) -> None:
    server = await server_factory(
        env={
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
            "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "s3cret",
        },
        telegram={"enabled": True, "api_url": telegram.origin},
    )
    now = server.helpdesk.clock()
    for article in [
        kb.Article(
            "reset-password",
            "Resetting your password",
            "Choose 'Forgot password' on the login page.",
            "password, login, reset",
        ),
        kb.Article("export-data", "Exporting your data", "Settings > Export.", "export, csv"),
    ]:
        await server.helpdesk.db.write(lambda c, a=article: kb.save_article(c, a, now))
    await server.app[KB].refresh(server.helpdesk)  # type: ignore[attr-defined]

    update = telegram.push_message("I forgot my password and cannot log in", chat_id=CHAT)
    assert await telegram.deliver_webhook(update) == 200
    [ack] = await until(lambda: telegram.sent_to(CHAT))
    assert "Resetting your password" in ack["text"]
    buttons = [b for row in ack["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons[0]["url"].endswith("/kb/reset-password")
    solved = next(b for b in buttons if b["text"] == "This solved it")

    # the article page is served
    async with aiohttp.ClientSession() as http:
        page = await (await http.get(buttons[0]["url"])).text()
    assert "Forgot password" in page

    tap = telegram.push_callback_query(
        solved["callback_data"], chat_id=CHAT, message_id=ack["message_id"]
    )
    assert await telegram.deliver_webhook(tap) == 200
    [ticket] = await rows(server, Ticket)
    assert ticket.status == "resolved"
    kinds = [e.kind for e in await rows(server, TicketEvent)]
    assert "deflected" in kinds  # counted as self-service
    answers = await until(lambda: telegram.callback_answers)
    assert "glad it helped" in answers[0]["text"]
    await asyncio.sleep(0.3)
    assert not any("satisfied" in m.get("text", "") for m in telegram.sent_to(CHAT))

    # somebody else pressing the customer's button changes nothing
    intruder = telegram.push_callback_query(
        solved["callback_data"], chat_id=CHAT, message_id=ack["message_id"], user_id=4242
    )
    assert await telegram.deliver_webhook(intruder) == 200
    answers = await until(lambda: len(telegram.callback_answers) >= 2 and telegram.callback_answers)
    assert "not for you" in answers[1]["text"]


async def test_email_rating_by_one_click_link(server_factory: ServerFactory) -> None:
    clock = Clock()
    async with SmtpSink() as sink:
        server = await server_factory(
            clock=clock,
            email={"relay": {"host": "127.0.0.1", "port": sink.port, "starttls": False}},
        )
        await server.helpdesk.ingest(
            InboundMessage(
                Channel.EMAIL,
                "<q@example.org>",
                Sender("ann@example.org", "Ann", "ann@example.org"),
                "The invoice is wrong",
                clock(),
                subject="Invoice",
            )
        )
        token, _ = await server.token("agent")
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            resolved = await http.patch(
                f"{server.base_url}/api/v1/tickets/1", json={"status": "resolved"}, headers=auth
            )
            assert resolved.status == 200
            mails = await sink.wait_for(2)
            survey = mails[1].message
            assert "How did we do" in survey["Subject"]
            text = survey.get_body(("plain",)).get_content()
            links = dict(re.findall(r"^(\d): (http\S+)", text, re.M))
            assert sorted(links) == ["1", "2", "3", "4", "5"]
            assert "/a/1/csat/4/" in links["4"]

            tampered = links["4"][:-3] + "xyz"
            assert (await http.get(tampered)).status == 404
            forged = links["4"].replace("/csat/4/", "/csat/5/")
            assert (await http.get(forged)).status == 404
            superscript = links["4"].replace("/a/1/", "/a/%C2%B2/")  # "²" passes str.isdigit
            assert (await http.get(superscript)).status == 404
            assert (await http.post(superscript, data={})).status in (403, 404)

            page = await (await http.get(links["4"])).text()
            assert "Thank you for your rating" in page and 'name="comment"' in page
            form_id = re.search(r'name="form_id" value="([^"]+)"', page).group(1)
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            done = await http.post(
                links["4"],
                data={"form_id": form_id, "csrf": csrf, "comment": "Quick and friendly."},
            )
            assert done.status == 200
            again = await (await http.get(links["5"])).text()
            assert "already rated" in again
        [rating] = await rows(server, SurveyResponse)
        assert (rating.kind, rating.score, rating.comment) == ("csat", 4, "Quick and friendly.")


async def test_a_late_click_gets_a_polite_answer(
    server_factory: ServerFactory, telegram: FakeTelegram
) -> None:
    clock = Clock()
    server = await server_factory(
        clock=clock,
        env={
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
            "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "s3cret",
        },
        telegram={"enabled": True, "api_url": telegram.origin},
    )
    update = telegram.push_message("My parcel is late", chat_id=CHAT)
    assert await telegram.deliver_webhook(update) == 200
    token, _ = await server.token("agent")
    async with aiohttp.ClientSession() as http:
        await http.patch(
            f"{server.base_url}/api/v1/tickets/1",
            json={"status": "resolved"},
            headers={"Authorization": f"Bearer {token}"},
        )
    survey = await until(
        lambda: [m for m in telegram.sent_to(CHAT) if "satisfied" in m.get("text", "")]
    )
    three = next(
        b for row in survey[0]["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "3"
    )
    clock.now += timedelta(days=8)  # past bots.survey_valid_days
    tap = telegram.push_callback_query(
        three["callback_data"], chat_id=CHAT, message_id=survey[0]["message_id"]
    )
    assert await telegram.deliver_webhook(tap) == 200
    answers = await until(lambda: telegram.callback_answers)
    assert "closed" in answers[0]["text"]
    assert await rows(server, SurveyResponse) == []


async def test_a_reply_to_the_thank_you_is_the_rating_comment(
    server_factory: ServerFactory, telegram: FakeTelegram
) -> None:
    server = await server_factory(
        env={
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
            "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "s3cret",
        },
        telegram={"enabled": True, "api_url": telegram.origin},
    )
    assert await telegram.deliver_webhook(telegram.push_message("Help!", chat_id=CHAT)) == 200
    token, _ = await server.token("agent")
    async with aiohttp.ClientSession() as http:
        await http.patch(
            f"{server.base_url}/api/v1/tickets/1",
            json={"status": "resolved"},
            headers={"Authorization": f"Bearer {token}"},
        )
    survey = await until(
        lambda: [m for m in telegram.sent_to(CHAT) if "satisfied" in m.get("text", "")]
    )
    five = next(
        b for row in survey[0]["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "5"
    )
    tap = telegram.push_callback_query(
        five["callback_data"], chat_id=CHAT, message_id=survey[0]["message_id"]
    )
    assert await telegram.deliver_webhook(tap) == 200
    thanks = await until(
        lambda: [m for m in telegram.sent_to(CHAT) if "reply to this message" in m.get("text", "")]
    )
    await asyncio.sleep(0.2)  # the thank-you's reference is recorded once it is sent
    comment = telegram.push_message(
        "Great service, thanks!", chat_id=CHAT, reply_to_message=thanks[0]
    )
    assert await telegram.deliver_webhook(comment) == 200
    [rating] = await rows(server, SurveyResponse)
    assert rating.comment == "Great service, thanks!"
    [ticket] = await rows(server, Ticket)
    assert ticket.status == "resolved"  # a comment does not reopen the ticket


async def test_nps_follows_the_rating_when_enabled(
    server_factory: ServerFactory, telegram: FakeTelegram
) -> None:
    server = await server_factory(
        env={
            "HELPLINE_TELEGRAM_TOKEN": telegram.token,
            "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "s3cret",
        },
        telegram={"enabled": True, "api_url": telegram.origin},
        bots={"nps": True},
    )
    assert await telegram.deliver_webhook(telegram.push_message("Hi", chat_id=CHAT)) == 200
    token, _ = await server.token("agent")
    async with aiohttp.ClientSession() as http:
        await http.patch(
            f"{server.base_url}/api/v1/tickets/1",
            json={"status": "resolved"},
            headers={"Authorization": f"Bearer {token}"},
        )

    def keyboard_with(text: str) -> list[dict[str, Any]]:
        return [m for m in telegram.sent_to(CHAT) if text in m.get("text", "")]

    csat = await until(lambda: keyboard_with("satisfied"))
    four = next(
        b for row in csat[0]["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "4"
    )
    await telegram.deliver_webhook(
        telegram.push_callback_query(
            four["callback_data"], chat_id=CHAT, message_id=csat[0]["message_id"]
        )
    )
    nps = await until(lambda: keyboard_with("recommend"))
    labels = [b["text"] for row in nps[0]["reply_markup"]["inline_keyboard"] for b in row]
    assert labels == [str(n) for n in range(11)]
    nine = next(
        b for row in nps[0]["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "9"
    )
    await telegram.deliver_webhook(
        telegram.push_callback_query(
            nine["callback_data"], chat_id=CHAT, message_id=nps[0]["message_id"]
        )
    )
    await until(lambda: len(telegram.callback_answers) >= 2)
    ratings = {(r.kind, r.score) for r in await rows(server, SurveyResponse)}
    assert ratings == {("csat", 4), ("nps", 9)}
