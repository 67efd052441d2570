"""The fakes, exercised through the real client libraries they stand in for."""

from __future__ import annotations

import asyncio
import datetime as dtm
import json
import time
import warnings
from typing import Any

import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from tests.fakes.signing import signed_form, signed_interaction, signed_json, slack_headers
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

# -- Slack ------------------------------------------------------------------------------------


def slack_client(slack: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=slack.token, base_url=slack.base_url, **kwargs)


async def test_slack_binds_loopback_random_port() -> None:
    async with FakeSlack() as a, FakeSlack() as b:
        assert a.base_url.startswith("http://127.0.0.1:") and a.base_url.endswith("/api/")
        assert a.port != b.port and a.port > 0


async def test_slack_auth_test_and_post_message() -> None:
    async with FakeSlack() as slack:
        client = slack_client(slack)
        auth = await client.auth_test()
        assert auth["user_id"] == slack.bot_user_id and auth["team_id"] == slack.team_id

        first = await client.chat_postMessage(channel="C0SUPPORT", text="ticket #1 opened")
        second = await client.chat_postMessage(channel="C0SUPPORT", text="ticket #2 opened")
        assert first["ok"] and first["channel"] == "C0SUPPORT"
        assert abs(float(first["ts"]) - time.time()) < 60  # a wall-clock time, as Slack's
        assert float(second["ts"]) > float(first["ts"])
        assert first["message"]["text"] == "ticket #1 opened"

        [call, _] = slack.calls_to("chat.postMessage")
        assert call.params == {"channel": "C0SUPPORT", "text": "ticket #1 opened"}
        assert call.headers["authorization"] == f"Bearer {slack.token}"
        assert call.status == 200 and not call.faulted


async def test_slack_form_encoded_body_is_parsed() -> None:
    # api_call(data=...) form-encodes, and structured args arrive as JSON strings.
    async with FakeSlack() as slack:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
        resp = await slack_client(slack).api_call(
            "chat.postMessage", data={"channel": "C1", "text": "hi", "blocks": json.dumps(blocks)}
        )
        assert resp["message"]["blocks"] == blocks
        call = slack.calls_to("chat.postMessage")[0]
        assert call.headers["content-type"].startswith("application/x-www-form-urlencoded")


async def test_slack_update_ephemeral_dm_users_reactions() -> None:
    async with FakeSlack() as slack:
        client = slack_client(slack)
        posted = await client.chat_postMessage(channel="C1", text="draft")
        updated = await client.chat_update(channel="C1", ts=posted["ts"], text="final")
        assert updated["ts"] == posted["ts"] and slack.messages[("C1", posted["ts"])]["text"] == (
            "final"
        )
        with pytest.raises(SlackApiError) as exc:
            await client.chat_update(channel="C1", ts="1.000000", text="x")
        assert exc.value.response["error"] == "message_not_found"

        eph = await client.chat_postEphemeral(channel="C1", user="U0CUSTOMER", text="only you")
        assert eph["message_ts"] and slack.ephemerals[0]["text"] == "only you"

        dm1 = await client.conversations_open(users="U0CUSTOMER")
        dm2 = await client.conversations_open(users=["U0CUSTOMER"])
        assert dm1["channel"]["id"] == dm2["channel"]["id"] == "D0CUSTOMER"
        assert dm2["already_open"] is True

        info = await client.users_info(user="U0CUSTOMER")
        assert info["user"]["profile"]["email"] == "alice@example.com"
        assert info["user"]["real_name"] == "Alice Example"
        with pytest.raises(SlackApiError, match="user_not_found"):
            await client.users_info(user="U0NOBODY")

        await client.reactions_add(channel="C1", timestamp=posted["ts"], name="eyes")
        with pytest.raises(SlackApiError, match="already_reacted"):
            await client.reactions_add(channel="C1", timestamp=posted["ts"], name="eyes")


async def test_slack_unknown_method_and_bad_tokens() -> None:
    async with FakeSlack() as slack:
        with pytest.raises(SlackApiError) as exc:
            await slack_client(slack).api_call("tickets.frobnicate")
        assert exc.value.response["error"] == "unknown_method"

        bad = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url)
        with pytest.raises(SlackApiError) as exc:
            await bad.chat_postMessage(channel="C1", text="x")
        assert exc.value.response["error"] == "invalid_auth"

        with pytest.raises(SlackApiError) as exc:
            await AsyncWebClient(base_url=slack.base_url).auth_test()
        assert exc.value.response["error"] == "not_authed"
        assert slack.posted == []


async def test_slack_rate_limit_is_visible_to_client() -> None:
    async with FakeSlack() as slack:
        slack.fail_next(1, status=429, retry_after=7)
        client = slack_client(slack)
        with pytest.raises(SlackApiError) as exc:
            await client.chat_postMessage(channel="C1", text="hi")
        resp = exc.value.response
        assert resp.status_code == 429 and resp["error"] == "ratelimited"
        assert resp.headers["Retry-After"] == "7"
        assert slack.posted == []  # a rejected call has no side effect
        assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"]
        assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 200]


async def test_slack_rate_limit_with_sdk_retry_handler() -> None:
    async with FakeSlack() as slack:
        slack.fail_next(2, status=429, retry_after=0, method="chat.postMessage")
        client = slack_client(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(2)])
        await client.auth_test()  # method filter: not consumed by other methods
        resp = await client.chat_postMessage(channel="C1", text="eventually")
        assert resp["ok"] and len(slack.calls_to("chat.postMessage")) == 3
        assert len(slack.posted) == 1


async def test_slack_server_error_and_seeded_fault_rate() -> None:
    async with FakeSlack() as slack:
        slack.fail_next(1, status=500)
        with pytest.raises(SlackApiError) as exc:
            await slack_client(slack).auth_test()
        assert exc.value.response.status_code == 500

    async def pattern(seed: int) -> list[bool]:
        async with FakeSlack(fault_rate=0.3, seed=seed) as slack:
            client = slack_client(slack)
            for _ in range(20):
                try:
                    await client.auth_test()
                except SlackApiError as err:
                    assert err.response.status_code == 500
            return [c.faulted for c in slack.calls]

    first = await pattern(1)
    assert first == await pattern(1)  # same seed, same failures
    assert 0 < sum(first) < 20


async def test_slack_delay_triggers_client_timeout() -> None:
    async with FakeSlack(delay=5.0) as slack:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await slack_client(slack, timeout=0.3).auth_test()
        assert time.monotonic() - started < 2
    assert time.monotonic() - started < 3  # shutdown does not wait out the delay


async def test_slack_idempotency_helpers_and_wait_for_calls() -> None:
    async with FakeSlack() as slack:
        client = slack_client(slack)

        async def later() -> None:
            await asyncio.sleep(0.05)
            for _ in range(2):
                metadata = {"event_type": "ack", "event_payload": {"client_msg_id": "m-1"}}
                await client.chat_postMessage(channel="C1", text="ack", metadata=metadata)
            await client.chat_postMessage(channel="U0CUSTOMER", text="dm", client_msg_id="m-2")

        task = asyncio.create_task(later())
        await slack.wait_for_calls("chat.postMessage", 3, timeout=5)
        await task
        assert slack.duplicate_posts() == {"m-1": 2}
        assert slack.post_counts("text") == {"ack": 2, "dm": 1}
        assert slack.posts(channel="D0CUSTOMER")[0]["client_msg_id"] == "m-2"


# -- Slack request signing --------------------------------------------------------------------


def test_signing_accepted_by_slack_sdk_verifier() -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    verifier = SignatureVerifier(secret)
    body, headers = signed_json(secret, {"type": "event_callback", "event": {"type": "message"}})
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body.replace(b"message", b"massage"), headers)
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)

    form_body, form_headers = signed_form(secret, {"command": "/ticket", "text": "help"})
    assert verifier.is_valid_request(form_body, form_headers)
    ui_body, ui_headers = signed_interaction(secret, {"type": "block_actions"})
    assert verifier.is_valid_request(ui_body.decode(), ui_headers)

    stale = slack_headers(secret, body, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body, stale)  # replay window is 5 minutes


# -- Telegram ---------------------------------------------------------------------------------


def retry_seconds(exc: RetryAfter) -> float:
    # PTB 22.2+ deprecates int retry_after in favour of timedelta (opt-in via PTB_TIMEDELTA).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def test_telegram_get_me_and_send_message() -> None:
    async with FakeTelegram() as tg, Bot(tg.token, base_url=tg.base_url) as bot:
        assert bot.username == "helpline_test_bot"  # Bot.initialize() called getMe
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("Close", callback_data="close:1")]])
        first = await bot.send_message(chat_id=42, text="hello", reply_markup=markup)
        second = await bot.send_message(chat_id=-1001234, text="to group")
        assert isinstance(first, Message)
        assert (first.message_id, second.message_id) == (1, 2)
        assert first.chat.id == 42 and first.chat.type == "private" and first.text == "hello"
        assert first.reply_markup == markup
        assert second.chat.type == "supergroup"

        call = tg.calls_to("sendMessage")[0]
        assert call.params["chat_id"] == "42"  # PTB form-encodes scalars as strings
        assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "close:1"
        assert tg.duplicate_sends() == {}


async def test_telegram_get_updates_queue_offset_and_long_poll() -> None:
    async with FakeTelegram() as tg, Bot(tg.token, base_url=tg.base_url) as bot:
        tg.push_message("first", chat_id=7)
        chat = {"id": 7, "type": "private"}
        tg.push_update({"message": {"message_id": 99, "date": 0, "chat": chat, "text": "second"}})
        updates = await bot.get_updates(timeout=0)
        assert [u.message.text for u in updates] == ["first", "second"]
        assert all(isinstance(u, Update) for u in updates)

        # Offset confirms earlier updates; they are not served again.
        updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
        assert updates == () and tg.updates == []

        # Long poll: returns as soon as an update is pushed...
        async def push_soon() -> None:
            await asyncio.sleep(0.1)
            tg.push_message("late", chat_id=7)

        pusher = asyncio.create_task(push_soon())
        started = time.monotonic()
        updates = await bot.get_updates(timeout=10)
        await pusher
        assert [u.message.text for u in updates] == ["late"]
        assert time.monotonic() - started < 1

        # ...and never holds longer than max_poll_seconds.
        offset = updates[-1].update_id + 1
        started = time.monotonic()
        assert await bot.get_updates(offset=offset, timeout=30) == ()
        assert time.monotonic() - started < tg.max_poll_seconds + 0.5


async def test_telegram_rate_limit_and_server_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Opt in to timedelta retry_after; otherwise RetryAfter() itself warns (PTB 22.2+).
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    async with FakeTelegram() as tg, Bot(tg.token, base_url=tg.base_url) as bot:
        tg.fail_next(1, status=429, retry_after=5)
        with pytest.raises(RetryAfter) as exc:
            await bot.send_message(chat_id=1, text="x")
        assert retry_seconds(exc.value) == 5
        tg.fail_next(1, status=500)
        with pytest.raises(NetworkError):
            await bot.send_message(chat_id=1, text="x")
        tg.fail_next(1, status=403)
        with pytest.raises(Exception, match="blocked by the user"):
            await bot.send_message(chat_id=1, text="x")
        assert tg.sent == []
        assert (await bot.send_message(chat_id=1, text="x")).message_id == 1


async def test_telegram_wrong_token_is_rejected() -> None:
    async with FakeTelegram() as tg:
        with pytest.raises(InvalidToken):
            async with Bot("999:wrong", base_url=tg.base_url):
                pass
        assert tg.calls_to("getMe")[0].status == 401


async def test_telegram_edits_and_callback_answers() -> None:
    async with FakeTelegram() as tg, Bot(tg.token, base_url=tg.base_url) as bot:
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("Claim", callback_data="claim")]])
        msg = await bot.send_message(chat_id=5, text="new ticket", reply_markup=markup)
        edited = await bot.edit_message_text("claimed", chat_id=5, message_id=msg.message_id)
        assert isinstance(edited, Message) and edited.text == "claimed" and edited.edit_date
        with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
            await bot.edit_message_text("claimed", chat_id=5, message_id=msg.message_id)
        with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
            await bot.edit_message_text("x", chat_id=5, message_id=12345)
        again = await bot.edit_message_reply_markup(5, msg.message_id, reply_markup=markup)
        assert again.reply_markup == markup

        update = tg.push_callback_query("claim", chat_id=5, message_id=msg.message_id)
        [got] = await bot.get_updates()
        assert got.callback_query.data == "claim" and got.update_id == update["update_id"]
        assert await bot.answer_callback_query(got.callback_query.id, text="Claimed!")
        assert tg.callback_answers[0]["text"] == "Claimed!"


async def test_telegram_files_multipart_roundtrip() -> None:
    # Bot(base_url=...) alone would still download from api.telegram.org: base_file_url is
    # independent, hence bot_kwargs.
    async with FakeTelegram() as tg, Bot(**tg.bot_kwargs) as bot:
        doc = await bot.send_document(6, document=b"%PDF-1.4 fake", filename="invoice.pdf")
        assert doc.document.file_name == "invoice.pdf" and doc.document.file_size == 13
        assert tg.calls_to("sendDocument")[0].files["document"].content == b"%PDF-1.4 fake"
        photo = await bot.send_photo(6, photo=b"\x89PNG fake", caption="screenshot")
        assert photo.caption == "screenshot" and photo.photo[-1].width == 800

        # A file "sent by a customer": getFile then download through base_file_url.
        stored = tg.add_file(b"log line\n", "app.log", "text/plain")
        file = await bot.get_file(stored.file_id)
        assert file.file_path.startswith(tg.base_file_url)
        assert bytes(await file.download_as_bytearray()) == b"log line\n"
        with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
            await bot.get_file("nope")


async def test_telegram_webhook_lifecycle_and_delivery() -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response()

    app = web.Application()
    app.router.add_post("/tg", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with FakeTelegram() as tg, Bot(tg.token, base_url=tg.base_url) as bot:
            url = f"http://127.0.0.1:{port}/tg"
            assert await bot.set_webhook(url, secret_token="s3cret")
            assert (await bot.get_webhook_info()).url == url
            with pytest.raises(Conflict):
                await bot.get_updates()
            assert await tg.deliver_webhook({"message": {"text": "hi"}}) == 200
            assert received == [("s3cret", {"update_id": 1, "message": {"text": "hi"}})]
            assert await bot.delete_webhook()
            assert tg.webhook is None and await bot.get_updates() == ()
    finally:
        await runner.cleanup()


async def test_telegram_application_polling_end_to_end() -> None:
    async with FakeTelegram() as tg:
        replied = asyncio.Event()

        async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            assert update.message is not None
            await update.message.reply_text(f"got: {update.message.text}")
            replied.set()

        app = (
            Application.builder()
            .token(tg.token)
            .base_url(tg.base_url)
            .base_file_url(tg.base_file_url)
            .build()
        )
        app.add_handler(MessageHandler(filters.TEXT, echo))
        tg.push_message("my printer is on fire", chat_id=77)
        async with app:
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0, timeout=1)
            await app.start()
            await asyncio.wait_for(replied.wait(), 5)
            await app.updater.stop()
            await app.stop()
        assert [m["text"] for m in tg.sent_to(77)] == ["got: my printer is on fire"]
        assert tg.calls_to("deleteWebhook")  # start_polling clears any webhook first
