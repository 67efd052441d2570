"""The Telegram channel with the real python-telegram-bot against a fake Bot API on loopback.

Inbound traffic goes to a real Helpdesk on a migrated SQLite database; ``interact`` (the bots'
job, not written yet) is recorded and answered with a fixed reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from adapters.telegram import (
    TelegramAdapter,
    command_args,
    fit_text,
    parse_callback_data,
    render_keyboard,
)
from core.config import TelegramSettings
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
from core.persistence.models import (
    AttachmentRow,
    Identity,
    Message,
    Quarantine,
    Ticket,
    table_of,
)
from core.persistence.records import add_thread_ref
from core.ratelimit import RateGate
from tests.conftest import make_settings
from tests.fakes.telegram_api import FakeTelegram

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "chat"
SECRET = "webhook-Secret_123"
TEAM = -1009876
CUSTOMER = 4242
AGENT = 501
TEST_SECONDS = 30


@pytest.fixture(autouse=True)
def _timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22.2+ warns on every RetryAfter unless retry_after is opted in to timedelta
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


# -- a real intake: the Helpdesk, with interactions recorded --------------------------------


@dataclass
class DeskIntake:
    """Implements core.ports.Intake: a real Helpdesk, and a stand-in for the bots' interact."""

    desk: Helpdesk
    reply: str = "noted"
    interactions: list[Interaction] = field(default_factory=list)

    async def ingest(self, msg: InboundMessage) -> Any:
        return await self.desk.ingest(msg)

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int:
        return await self.desk.quarantine(channel, reason, raw)

    async def cursor(self, name: str) -> str | None:
        return await self.desk.cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        await self.desk.save_cursor(name, value)

    async def interact(self, interaction: Interaction) -> InteractionReply:
        self.interactions.append(interaction)
        return InteractionReply(self.reply)

    async def count(self, model: Any) -> int:
        table = table_of(model)
        return await self.desk.db.read(
            lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()
        )

    async def rows(self, model: Any) -> list[Any]:
        table = table_of(model)
        return await self.desk.db.read(
            lambda c: c.execute(select(table).order_by(table.c.id)).all()
        )


@pytest.fixture
async def intake(backend_url: str, tmp_path: Path) -> AsyncIterator[DeskIntake]:
    db = open_database(backend_url, durable=False)
    upgrade(db)
    desk = Helpdesk(db, make_settings(backend_url, tmp_path), b"test-secret" * 4)
    yield DeskIntake(desk)
    await db.close()


class FakeTime:
    """A RateGate clock that only moves when the gate sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def gate(self) -> RateGate:
        return RateGate(clock=self.clock, sleep=self.sleep)


# -- harness ----------------------------------------------------------------------------------


def env(tg: FakeTelegram) -> dict[str, str]:
    return {"HELPLINE_TELEGRAM_TOKEN": tg.token, "HELPLINE_TELEGRAM_WEBHOOK_SECRET": SECRET}


def tg_settings(tg: FakeTelegram, mode: str = "webhook") -> TelegramSettings:
    return TelegramSettings(enabled=True, mode=mode, api_url=tg.origin, team_chat=str(TEAM))


@dataclass
class Hook:
    adapter: TelegramAdapter
    url: str

    async def post(self, body: bytes, secret: str | None = SECRET) -> int:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.url, data=body, headers=headers) as resp,
        ):
            return resp.status


@asynccontextmanager
async def webhook_adapter(
    tg: FakeTelegram, intake: DeskIntake, gate: RateGate | None = None
) -> AsyncIterator[Hook]:
    """The adapter started in webhook mode behind a real aiohttp route, like the gateway's."""
    holder: list[TelegramAdapter] = []

    async def route(request: web.Request) -> web.Response:
        return await holder[0].handle_webhook(request)

    app = web.Application()
    app.router.add_post("/telegram/webhook", route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    public_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    adapter = TelegramAdapter.from_settings(
        tg_settings(tg), env(tg), public_url=public_url, gate=gate
    )
    holder.append(adapter)
    try:
        async with asyncio.timeout(TEST_SECONDS):
            await adapter.start(intake)
            try:
                yield Hook(adapter, adapter.webhook_url)
            finally:
                await adapter.stop()
    finally:
        await runner.cleanup()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def message_update(
    tg: FakeTelegram,
    text: str | None = "My printer is on fire",
    *,
    chat_id: int = CUSTOMER,
    user_id: int | None = None,
    first_name: str = "Ann",
    last_name: str = "Lee",
    **extra: Any,
) -> dict[str, Any]:
    """A ``message`` update as Telegram would send it (not queued for getUpdates)."""
    message_id = next(tg._message_ids)
    user = tg.user(user_id or chat_id, first_name, last_name=last_name, language_code="de")
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": user,
        "chat": tg._chat(chat_id),
        "date": 1_767_225_600,
        **({"text": text} if text is not None else {}),
        **extra,
    }
    tg.messages[(chat_id, message_id)] = message
    return {"update_id": next(tg._update_ids), "message": message}


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


# -- configuration ----------------------------------------------------------------------------


def test_from_settings_names_the_missing_variables() -> None:
    settings = TelegramSettings(enabled=True)
    with pytest.raises(ConfigError, match="HELPLINE_TELEGRAM_TOKEN"):
        TelegramAdapter.from_settings(settings, {}, public_url="https://x")
    with pytest.raises(ConfigError, match="HELPLINE_TELEGRAM_WEBHOOK_SECRET"):
        TelegramAdapter.from_settings(
            settings, {"HELPLINE_TELEGRAM_TOKEN": "1:a"}, public_url="https://x"
        )
    with pytest.raises(ConfigError, match="A-Z"):
        TelegramAdapter.from_settings(
            settings,
            {"HELPLINE_TELEGRAM_TOKEN": "1:a", "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "no spaces"},
            public_url="https://x",
        )
    polling = TelegramSettings(enabled=True, mode="polling")
    adapter = TelegramAdapter.from_settings(
        polling, {"HELPLINE_TELEGRAM_TOKEN": "1:a"}, public_url="https://x/"
    )
    assert adapter.webhook_secret is None and adapter.webhook_url == "https://x/telegram/webhook"


async def test_a_rejected_token_is_a_config_error(tg: FakeTelegram, intake: DeskIntake) -> None:
    settings = tg_settings(tg, mode="polling")
    adapter = TelegramAdapter.from_settings(
        settings, {"HELPLINE_TELEGRAM_TOKEN": "999:wrong"}, public_url="http://x"
    )
    async with asyncio.timeout(TEST_SECONDS):
        with pytest.raises(ConfigError, match="HELPLINE_TELEGRAM_TOKEN"):
            await adapter.start(intake)
        await adapter.stop()  # harmless after a failed start


def test_pure_rendering_helpers() -> None:
    assert parse_callback_data("claim|T-1|x") == ("claim", "T-1|x")
    assert parse_callback_data("csat:T-42:5") == ("csat:T-42:5", "")
    with pytest.raises(ValueError, match="64 bytes"):
        render_keyboard([Action("claim", "Claim", "x" * 60)])
    assert render_keyboard([]) is None
    assert command_args("/helpline stats  today", "helpline", "bot") == "stats  today"
    assert command_args("/HELPLINE@Bot\nfind printer", "helpline", "bot") == "find printer"
    assert command_args("/helpline@other_bot x", "helpline", "bot") is None
    assert command_args("/helplines x", "helpline", "bot") is None
    assert command_args("", "helpline", "bot") is None
    assert fit_text("short") == "short"
    cut = fit_text("😀" * 3000)  # 6000 UTF-16 units
    assert cut.endswith("…") and len(cut.encode("utf-16-le")) // 2 <= 4096


# -- webhook inbound --------------------------------------------------------------------------


async def test_webhook_opens_a_ticket_after_commit(tg: FakeTelegram, intake: DeskIntake) -> None:
    async with webhook_adapter(tg, intake) as hook:
        [call] = tg.calls_to("setWebhook")
        assert call.params["url"] == hook.url and call.params["secret_token"] == SECRET
        assert set(call.params["allowed_updates"]) == {
            "message",
            "edited_message",
            "callback_query",
        }
        assert await tg.deliver_webhook(message_update(tg)) == 200
        assert await intake.count(Ticket) == 1
        [identity] = await intake.rows(Identity)
        assert (identity.channel, identity.address) == ("telegram", str(CUSTOMER))
        assert identity.display_name == "Ann Lee"
        [message] = await intake.rows(Message)
        assert message.text == "My printer is on fire"
        assert message.external_id.startswith("update:")
        [ticket] = await intake.rows(Ticket)
        assert ticket.channel == "telegram" and ticket.language == "de"


async def test_webhook_refuses_a_wrong_or_missing_secret(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    async with webhook_adapter(tg, intake) as hook:
        body = json.dumps(message_update(tg)).encode()
        assert await hook.post(body, secret=None) == 401
        assert await hook.post(body, secret="guess") == 401
        assert await hook.post(body, secret=SECRET + "x") == 401
        assert await intake.count(Ticket) == 0
        assert await hook.post(b"[1, 2]") == 400
        assert await hook.post(b"not json") == 400
        assert await intake.count(Ticket) == 0 and await intake.count(Quarantine) == 0


async def test_a_redelivered_update_is_one_message(tg: FakeTelegram, intake: DeskIntake) -> None:
    async with webhook_adapter(tg, intake):
        update = message_update(tg)
        assert await tg.deliver_webhook(update) == 200
        assert await tg.deliver_webhook(update) == 200  # Telegram retried: our 200 got lost
        assert await intake.count(Message) == 1 and await intake.count(Ticket) == 1


async def test_bots_and_empty_service_messages_are_ignored(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    async with webhook_adapter(tg, intake):
        ours = message_update(tg, "ticket #1 opened")
        ours["message"]["from"] = tg.bot_user
        assert await tg.deliver_webhook(ours) == 200
        other_bot = message_update(tg, "spam")
        other_bot["message"]["from"]["is_bot"] = True
        assert await tg.deliver_webhook(other_bot) == 200
        pinned = message_update(tg, None, pinned_message={"message_id": 1, "date": 0})
        pinned["message"]["pinned_message"]["chat"] = pinned["message"]["chat"]
        assert await tg.deliver_webhook(pinned) == 200
        assert await intake.count(Ticket) == 0


async def test_database_failure_answers_500_and_the_retry_is_stored(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    async with webhook_adapter(tg, intake):
        db = intake.desk.db
        await db.write(lambda c: c.exec_driver_sql("ALTER TABLE inbound_receipts RENAME TO gone"))
        update = message_update(tg)
        assert await tg.deliver_webhook(update) == 500
        await db.write(lambda c: c.exec_driver_sql("ALTER TABLE gone RENAME TO inbound_receipts"))
        assert await tg.deliver_webhook(update) == 200
        assert await intake.count(Message) == 1


async def test_photo_and_document_are_downloaded_and_stored(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    small = tg.add_file(b"tiny-jpeg", "small.jpg")
    large = tg.add_file(b"LARGE-JPEG" * 100, "large.jpg")
    pdf = tg.add_file(b"%PDF-1.4 invoice", "invoice.pdf", "application/pdf")
    photo = [
        {"file_id": small.file_id, "file_unique_id": small.file_unique_id, "width": 90,
         "height": 90, "file_size": 9},
        {"file_id": large.file_id, "file_unique_id": large.file_unique_id, "width": 800,
         "height": 600, "file_size": 1000},
    ]  # fmt: skip
    document = {
        "file_id": pdf.file_id,
        "file_unique_id": pdf.file_unique_id,
        "file_name": "invoice.pdf",
        "mime_type": "application/pdf",
        "file_size": 16,
    }
    huge = {"file_id": "NOT-STORED", "file_unique_id": "H1", "file_name": "dump.zip",
            "file_size": 25 * 1024 * 1024}  # fmt: skip
    async with webhook_adapter(tg, intake):
        assert await tg.deliver_webhook(message_update(tg, None, photo=photo, caption="jam")) == 200
        assert await tg.deliver_webhook(message_update(tg, None, document=document)) == 200
        assert await tg.deliver_webhook(message_update(tg, "see", document=huge)) == 200
    rows = await intake.rows(AttachmentRow)
    assert [(r.filename, r.content_type, r.size) for r in rows] == [
        (f"photo_{large.file_unique_id}.jpg", "image/jpeg", 1000),
        ("invoice.pdf", "application/pdf", 16),
    ]
    assert intake.desk.attachments.get(rows[0].sha256) == large.content
    assert intake.desk.attachments.get(rows[1].sha256) == pdf.content
    texts = [m.text for m in await intake.rows(Message)]
    assert texts[0] == "jam"
    assert texts[2] == "see\n\n[dump.zip (25.0 MB) is too large to download from Telegram]"
    assert [c.params["file_id"] for c in tg.calls_to("getFile")] == [large.file_id, pdf.file_id]


async def test_attachments_over_our_limit_are_dropped_with_a_note(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    settings = intake.desk.settings
    intake.desk.settings = replace(
        settings, intake=replace(settings.intake, max_attachment_bytes=8)
    )
    log = tg.add_file(b"0123456789", "app.log", "text/plain")
    document = {
        "file_id": log.file_id,
        "file_unique_id": log.file_unique_id,
        "file_name": "app.log",
        "file_size": 10,
    }
    async with webhook_adapter(tg, intake):
        assert await tg.deliver_webhook(message_update(tg, "logs", document=document)) == 200
    assert await intake.count(AttachmentRow) == 0
    [message] = await intake.rows(Message)
    assert message.text.startswith("logs\n\n[attachments not kept: attachment 'app.log' is 10")


async def test_a_reply_continues_the_ticket_it_refers_to(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    async with webhook_adapter(tg, intake) as hook:
        first = message_update(tg, "first problem")
        assert await tg.deliver_webhook(first) == 200
        [ticket] = await intake.rows(Ticket)
        # our answer to it, recorded as the outbox records a sent message's thread ref
        receipt = await hook.adapter.send(
            OutboundMessage(ThreadRef(Channel.TELEGRAM, str(CUSTOMER)), "We're on it"), "k1"
        )
        ref = f"{CUSTOMER}:{receipt.external_id}"
        await intake.desk.db.write(lambda c: add_thread_ref(c, "telegram", ref, ticket.id))

        ours = tg.messages[(CUSTOMER, int(receipt.external_id))]
        assert await tg.deliver_webhook(message_update(tg, "thanks", reply_to_message=ours)) == 200
        # a reply quoting the customer's own first message leads there too
        own = first["message"]
        assert await tg.deliver_webhook(message_update(tg, "also", reply_to_message=own)) == 200
        assert await intake.count(Ticket) == 1
        assert [m.ticket_id for m in await intake.rows(Message)] == [ticket.id] * 3


async def test_an_edit_is_a_new_message_marked_edited(tg: FakeTelegram, intake: DeskIntake) -> None:
    async with webhook_adapter(tg, intake):
        update = message_update(tg, "helo")
        assert await tg.deliver_webhook(update) == 200
        edited = {**update["message"], "text": "hello", "edit_date": 1_767_225_700}
        assert await tg.deliver_webhook({"edited_message": edited}) == 200
        texts = [m.text for m in await intake.rows(Message)]
        assert texts == ["helo", "(edited) hello"]


async def test_a_button_click_is_an_interaction_answered_in_a_toast(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    async with webhook_adapter(tg, intake) as hook:
        question = OutboundMessage(
            ThreadRef(Channel.TELEGRAM, str(CUSTOMER)),
            "How did we do?",
            actions=tuple(Action("csat", str(n), f"T-7:{n}") for n in range(1, 6)),
        )
        receipt = await hook.adapter.send(question, "k1")
        message_id = int(receipt.external_id)
        update = tg.push_callback_query("csat|T-7:5", chat_id=CUSTOMER, message_id=message_id)
        assert await tg.deliver_webhook(update) == 200
        [interaction] = intake.interactions
        assert interaction == Interaction(
            channel=Channel.TELEGRAM,
            external_id=f"callback:{update['callback_query']['id']}",
            user=str(CUSTOMER),
            user_name="Alice",
            action="csat",
            value="T-7:5",
            refs=(f"{CUSTOMER}:{message_id}",),
        )
        [answer] = tg.callback_answers
        assert answer["callback_query_id"] == update["callback_query"]["id"]
        assert answer["text"] == "noted"
        assert await intake.count(Ticket) == 0


async def test_team_chat_thread_replies_and_commands(tg: FakeTelegram, intake: DeskIntake) -> None:
    tg.add_chat({"id": TEAM, "type": "supergroup", "title": "Support agents"})
    time = FakeTime()  # a group takes one message per 3 s: don't wait for it on the real clock
    async with webhook_adapter(tg, intake, gate=time.gate()) as hook:
        card = await hook.adapter.send(
            OutboundMessage(ThreadRef(Channel.TELEGRAM, str(TEAM)), "Ticket #1: printer"), "c1"
        )
        card_message = tg.messages[(TEAM, int(card.external_id))]
        reply = message_update(
            tg, "Try turning it off", chat_id=TEAM, user_id=AGENT, first_name="Bob",
            last_name="Agent", reply_to_message=card_message,
        )  # fmt: skip
        assert await tg.deliver_webhook(reply) == 200
        command = message_update(
            tg, "/helpline@helpline_test_bot stats today", chat_id=TEAM, user_id=AGENT
        )
        assert await tg.deliver_webhook(command) == 200
        other_bot = message_update(tg, "/helpline@other_bot x", chat_id=TEAM, user_id=AGENT)
        assert await tg.deliver_webhook(other_bot) == 200
        chatter = message_update(tg, "lunch?", chat_id=TEAM, user_id=AGENT)
        assert await tg.deliver_webhook(chatter) == 200
        to_someone = message_update(
            tg, "ok", chat_id=TEAM, user_id=AGENT, reply_to_message=chatter["message"]
        )
        assert await tg.deliver_webhook(to_someone) == 200

        thread_reply, cmd = intake.interactions
        assert thread_reply == Interaction(
            channel=Channel.TELEGRAM,
            external_id=f"update:{reply['update_id']}",
            user=str(AGENT),
            user_name="Bob Agent",
            action="thread_reply",
            text="Try turning it off",
            refs=(f"{TEAM}:{card.external_id}",),
        )
        assert (cmd.action, cmd.text, cmd.user) == ("command", "stats today", str(AGENT))
        assert cmd.external_id == f"update:{command['update_id']}"
        # both answered in the group, each as a reply to the agent's message
        calls = await tg.wait_for_calls("sendMessage", 3)
        answers = [c.params for c in calls[1:]]
        assert [(a["chat_id"], a["text"]) for a in answers] == [(str(TEAM), "noted")] * 2
        assert {a["reply_parameters"]["message_id"] for a in answers} == {
            reply["message"]["message_id"],
            command["message"]["message_id"],
        }
        assert time.sleeps == [pytest.approx(3.06)] * 2
        assert await intake.count(Ticket) == 0


# -- outbound ---------------------------------------------------------------------------------


async def test_send_renders_actions_as_an_inline_keyboard_and_edits_in_place(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    time = FakeTime()
    actions = (
        Action("claim", "Claim", "T-1"),
        Action("status", "Status page", "https://help.example.com/t/1"),
        *(Action("csat", str(n), f"T-1:{n}") for n in range(1, 6)),
        Action("comment", "Add a comment"),
    )
    async with webhook_adapter(tg, intake, gate=time.gate()) as hook:
        to = ThreadRef(Channel.TELEGRAM, str(CUSTOMER))
        receipt = await hook.adapter.send(OutboundMessage(to, "Ticket #1", actions=actions), "k")
        [call] = tg.calls_to("sendMessage")
        assert call.params["chat_id"] == str(CUSTOMER) and call.params["text"] == "Ticket #1"
        keyboard = call.params["reply_markup"]["inline_keyboard"]
        assert keyboard == [
            [{"text": "Claim", "callback_data": "claim|T-1"}],
            [{"text": "Status page", "url": "https://help.example.com/t/1"}],
            [{"text": str(n), "callback_data": f"csat|T-1:{n}"} for n in range(1, 6)],
            [{"text": "Add a comment", "callback_data": "comment|"}],
        ]
        assert receipt.external_id == str(tg.sent[-1]["message_id"])

        claimed = OutboundMessage(
            to, "Ticket #1 (claimed by Bob)", actions=actions[:1], replaces=receipt.external_id
        )
        again = await hook.adapter.send(claimed, "k2")
        [edit] = tg.calls_to("editMessageText")
        assert edit.params["message_id"] == receipt.external_id
        assert edit.params["text"] == "Ticket #1 (claimed by Bob)"
        assert edit.params["reply_markup"]["inline_keyboard"] == [keyboard[0]]
        assert again == receipt
        # the same edit once more: Telegram says "not modified", which is success
        assert await hook.adapter.send(claimed, "k2") == receipt
        assert tg.calls_to("editMessageText")[-1].status == 400
        assert len(tg.sent) == 1

        long = await hook.adapter.send(OutboundMessage(to, "x" * 5000), "k3")
        text = tg.messages[(CUSTOMER, int(long.external_id))]["text"]
        assert len(text) == 4096 and text.endswith("…")


async def test_send_errors_map_to_retry_or_give_up(tg: FakeTelegram, intake: DeskIntake) -> None:
    time = FakeTime()
    async with webhook_adapter(tg, intake, gate=time.gate()) as hook:
        message = OutboundMessage(ThreadRef(Channel.TELEGRAM, str(CUSTOMER)), "hello")
        tg.fail_next(1, status=429, retry_after=7, method="sendMessage")
        with pytest.raises(ChannelUnavailable) as unavailable:
            await hook.adapter.send(message, "k")
        assert unavailable.value.retry_after == 7
        # the chat is held: the next message waits out Telegram's retry_after
        await hook.adapter.send(message, "k")
        assert time.sleeps == [pytest.approx(7)]

        tg.fail_next(1, status=403, method="sendMessage")
        with pytest.raises(ChannelRejected, match=r"(?i)blocked by the user"):
            await hook.adapter.send(message, "k")
        tg.fail_next(1, status=400, error="Bad Request: chat not found", method="sendMessage")
        with pytest.raises(ChannelRejected, match=r"(?i)chat not found"):
            await hook.adapter.send(message, "k")
        tg.fail_next(1, status=502, method="sendMessage")
        with pytest.raises(ChannelUnavailable):
            await hook.adapter.send(message, "k")
        with pytest.raises(ChannelRejected, match=r"(?i)edit not found"):
            await hook.adapter.send(replace(message, replaces="999"), "k")
        too_long = replace(message, actions=(Action("x", "X", "v" * 80),))
        with pytest.raises(ChannelRejected, match="64 bytes"):
            await hook.adapter.send(too_long, "k")
        assert len(tg.sent) == 1


async def test_sends_are_paced_per_chat_per_group_and_overall(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    time = FakeTime()
    async with webhook_adapter(tg, intake, gate=time.gate()) as hook:
        customer = OutboundMessage(ThreadRef(Channel.TELEGRAM, str(CUSTOMER)), "hi")
        for _ in range(10):
            await hook.adapter.send(customer, "k")
        # 1/s per chat (with the gate's 2% margin): ten messages span at least nine seconds
        assert time.sleeps == [pytest.approx(1.02)] * 9
        assert time.now >= 9

        time.sleeps.clear()
        group = OutboundMessage(ThreadRef(Channel.TELEGRAM, str(TEAM)), "card")
        other = OutboundMessage(ThreadRef(Channel.TELEGRAM, "77"), "hi")
        await hook.adapter.send(group, "k")
        await hook.adapter.send(group, "k")
        await hook.adapter.send(other, "k")
        # the first group message keeps 1/30 s from the last one overall; the second waits
        # out the group's 20/min; a third chat only keeps the overall spacing
        assert time.sleeps == [
            pytest.approx(1.02 / 30),
            pytest.approx(3.06),
            pytest.approx(1.02 / 30),
        ]
        assert len(tg.sent) == 13


# -- polling ----------------------------------------------------------------------------------


async def test_polling_ingests_confirms_and_does_not_duplicate_on_restart(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    settings = tg_settings(tg, mode="polling")

    async def one_round(update: dict[str, Any] | None = None) -> dict[str, Any]:
        adapter = TelegramAdapter.from_settings(settings, env(tg), public_url="http://x")
        await adapter.start(intake)
        try:
            pushed = tg.push_update(update) if update else tg.push_message("help", chat_id=77)
            await tg.wait_for_calls("getUpdates", len(tg.calls_to("getUpdates")) + 2)

            async def stored() -> bool:
                return await intake.count(Message) >= 1

            await wait_until(stored)
        finally:
            await adapter.stop()
        return pushed

    async with asyncio.timeout(TEST_SECONDS):
        update = await one_round()
        assert tg.updates == []  # the offset confirmed it: Telegram forgets it
        [call, *_] = tg.calls_to("getUpdates")
        assert set(call.params["allowed_updates"]) == {
            "message",
            "edited_message",
            "callback_query",
        }
        # A crash before the offset was confirmed: Telegram delivers the same update again.
        await one_round(update)
    assert await intake.count(Message) == 1 and await intake.count(Ticket) == 1
    [message] = await intake.rows(Message)
    assert message.text == "help" and message.external_id == f"update:{update['update_id']}"


async def test_polling_retries_an_update_the_database_refused(
    tg: FakeTelegram, intake: DeskIntake, caplog: pytest.LogCaptureFixture
) -> None:
    db = intake.desk.db
    adapter = TelegramAdapter.from_settings(
        tg_settings(tg, mode="polling"), env(tg), public_url="http://x"
    )
    async with asyncio.timeout(TEST_SECONDS):
        await adapter.start(intake)
        try:
            await db.write(lambda c: c.exec_driver_sql("ALTER TABLE inbound_receipts RENAME TO x"))
            tg.push_message("are you there?", chat_id=77)

            async def refused() -> bool:
                return "failed; retrying" in caplog.text

            await wait_until(refused)
            await db.write(lambda c: c.exec_driver_sql("ALTER TABLE x RENAME TO inbound_receipts"))

            async def stored() -> bool:
                return await intake.count(Message) == 1

            await wait_until(stored)
        finally:
            await adapter.stop()


# -- recorded payloads ------------------------------------------------------------------------


async def test_corpus_updates_parse_through_the_webhook(
    tg: FakeTelegram, intake: DeskIntake
) -> None:
    current = sorted(CORPUS.glob("telegram_update_*.current-schema.json"))
    if not current:
        pytest.skip(f"no Telegram corpus at {CORPUS}")
    async with webhook_adapter(tg, intake) as hook:
        for path in current:
            assert await hook.post(path.read_bytes()) == 200, path.name
        assert await intake.count(Quarantine) == 0
        texts = sorted(m.text for m in await intake.rows(Message))
        assert texts == ["(edited) Edited text", "/start"]
        [click] = intake.interactions
        assert (click.action, click.value, click.refs) == ("csat:T-42:5", "", ("1111111:1366",))
        assert click.user_name == "Test Firstname Test Lastname"

        # the docs' own examples predate is_bot: PTB cannot parse them, so they are kept
        old = sorted(CORPUS.glob("telegram_update_*.docs.json"))
        for path in old:
            assert await hook.post(path.read_bytes()) == 200, path.name
        assert await intake.count(Quarantine) == len(old)
        [kept, *_] = await intake.rows(Quarantine)
        assert kept.channel == "telegram" and kept.reason.startswith("unparseable update")
