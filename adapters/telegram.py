"""Telegram channel: a python-telegram-bot ``Application`` fed by our webhook or by long polling.

Customers write to the bot (a private chat, or any group but the team chat); each message is
committed through intake before Telegram is answered: the webhook answers 200 after commit,
500 when the database failed (Telegram delivers again; intake dedupes by update id), and keeps
an update it cannot parse in quarantine (answered 200: it is stored, and Telegram would
otherwise retry it for hours). In ``settings.team_chat`` agents reply to our ticket cards and
type ``/helpline <args>``; those, and every button click, go to ``intake.interact``.

Outbound messages are plain text (no parse mode: customer text never breaks an entity parser),
cut at Telegram's 4096 characters with "…" (one message per outbox row keeps a retry
idempotent: a split message half sent and retried would repeat its first part). Actions become
an inline keyboard. Every API send is paced by a ``RateGate``: 30/s for the bot, 1/s per chat,
20/min per group, and a chat is held for Telegram's ``retry_after`` after a 429.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import mimetypes
import re
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from telegram import (
    CallbackQuery,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ContextTypes, TypeHandler

from core.config import TelegramSettings
from core.errors import (
    ChannelRejected,
    ChannelUnavailable,
    ConfigError,
    HelplineError,
    InvalidInput,
    TooLarge,
)
from core.messages import (
    Action,
    Attachment,
    Channel,
    DeliveryReceipt,
    InboundMessage,
    Interaction,
    OutboundMessage,
    Sender,
    ThreadHints,
)
from core.ports import Intake
from core.ratelimit import Pace, RateGate

log = logging.getLogger(__name__)

T = TypeVar("T")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# edited_message too: without it Telegram never sends us edits
ALLOWED_UPDATES = (Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY)
TEXT_LIMIT = 4096  # characters of a message, counted in UTF-16 code units
CALLBACK_DATA_LIMIT = 64  # bytes
ANSWER_LIMIT = 200  # characters of a callback query answer
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API's getFile refuses bigger files
BUTTONS_PER_ROW = 8
# Telegram's secret_token alphabet and length
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MEDIA_KINDS = ("document", "audio", "video", "animation", "voice", "video_note")
# Polling mode: how often a failed commit is retried before the update is given up (PTB's
# updater has already confirmed it to Telegram, so this is the only retry it gets).
POLL_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


# -- pure helpers -----------------------------------------------------------------------------


def chat_key(address: str) -> int | str:
    """A chat id as the Bot API takes it: an integer, or an ``@username`` string."""
    text = address.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def paces(chat_id: int | str) -> list[Pace]:
    """Telegram's limits: 30 messages/s overall, 1/s per chat, 20/min per group or channel."""
    keys = [Pace("tg", 30, 1.0), Pace(f"tg:{chat_id}", 1, 1.0)]
    if not isinstance(chat_id, int) or chat_id < 0:
        keys.append(Pace(f"tg-group:{chat_id}", 20, 60.0))
    return keys


def callback_data(action: Action) -> str:
    """``"<id>|<value>"``, which ``parse_callback_data`` reads back; at most 64 bytes."""
    if "|" in action.id:
        raise ValueError(f"action id {action.id!r} contains '|'")
    data = f"{action.id}|{action.value}"
    if len(data.encode("utf-8")) > CALLBACK_DATA_LIMIT:
        raise ValueError(
            f"callback data for action {action.id!r} is longer than {CALLBACK_DATA_LIMIT} bytes"
        )
    return data


def parse_callback_data(data: str) -> tuple[str, str]:
    action, _, value = data.partition("|")
    return action, value


def is_link(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def render_keyboard(actions: Sequence[Action]) -> InlineKeyboardMarkup | None:
    """One button per row; a run of all-digit labels (a 1..5 rating) shares one row.

    An action whose value is an http(s) link is a URL button, any other a callback button.
    Raises ValueError when an action cannot be rendered (callback data over 64 bytes).
    """
    rows: list[list[InlineKeyboardButton]] = []
    digits_row: list[InlineKeyboardButton] | None = None
    for action in actions:
        if is_link(action.value):
            button = InlineKeyboardButton(action.label, url=action.value)
        else:
            button = InlineKeyboardButton(action.label, callback_data=callback_data(action))
        if action.label.isdigit():
            if digits_row is None or len(digits_row) >= BUTTONS_PER_ROW:
                digits_row = []
                rows.append(digits_row)
            digits_row.append(button)
        else:
            digits_row = None
            rows.append([button])
    return InlineKeyboardMarkup(rows) if rows else None


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fit_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """Cut text to Telegram's limit, ending in "…" when something was cut."""
    if _utf16_len(text) <= limit:
        return text
    cut = text[: limit - 1]
    while _utf16_len(cut) > limit - 1:  # astral characters (emoji) count twice
        cut = cut[:-1]
    log.warning("telegram message cut from %d to %d characters", len(text), len(cut) + 1)
    return cut + "…"


def message_id_of(ref: str) -> int:
    """Our message id from a receipt (``"123"``) or a thread ref (``"<chat>:123"``)."""
    return int(ref.rsplit(":", 1)[-1])


def command_args(text: str, command: str, bot_username: str | None) -> str | None:
    """The arguments of ``/command`` or ``/command@<our bot>``; None for anything else."""
    parts = text.split(maxsplit=1)
    if not parts:
        return None
    head, args = parts[0], parts[1].strip() if len(parts) > 1 else ""
    name, _, target = head.partition("@")
    if name.lower() != f"/{command}":
        return None
    if target and (bot_username is None or target.lower() != bot_username.lower()):
        return None  # addressed to another bot in the group
    return args


def _retry_seconds(err: RetryAfter) -> float:
    # PTB 22.2+ warns when retry_after is read as int unless PTB_TIMEDELTA opts in to timedelta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = err.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def text_of(message: Message) -> str:
    """The text or caption. PTB does not check the JSON's types: a non-string is no text."""
    text = message.text or message.caption or ""
    return text if isinstance(text, str) else ""


def _with_notes(text: str, notes: Iterable[str]) -> str:
    return "\n\n".join([p for p in (text, *notes) if p])


# -- the adapter ------------------------------------------------------------------------------


class TelegramAdapter:
    channel = Channel.TELEGRAM.value

    def __init__(
        self,
        settings: TelegramSettings,
        token: str,
        *,
        webhook_secret: str | None = None,
        public_url: str = "",
        gate: RateGate | None = None,
    ) -> None:
        if settings.mode == "webhook" and not webhook_secret:
            raise ConfigError("telegram.webhook_secret_env: a webhook secret is required")
        self.settings = settings
        self.token = token
        self.webhook_secret = webhook_secret
        self.public_url = public_url.rstrip("/")
        self.gate = gate or RateGate()
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._intake: Intake | None = None

    @classmethod
    def from_settings(
        cls,
        settings: TelegramSettings,
        env: Mapping[str, str],
        *,
        public_url: str,
        gate: RateGate | None = None,
    ) -> TelegramAdapter:
        token = env.get(settings.token_env, "").strip()
        if not token:
            raise ConfigError(
                f"telegram.token_env: environment variable {settings.token_env} is not set"
            )
        secret: str | None = None
        if settings.mode == "webhook":
            name = settings.webhook_secret_env
            secret = env.get(name, "").strip()
            if not secret:
                raise ConfigError(
                    f"telegram.webhook_secret_env: environment variable {name} is not set"
                )
            if not _SECRET_RE.fullmatch(secret):
                raise ConfigError(
                    f"telegram.webhook_secret_env: {name} must be 1-256 characters of "
                    "A-Z, a-z, 0-9, _ and -"
                )
        return cls(settings, token, webhook_secret=secret, public_url=public_url, gate=gate)

    @property
    def webhook_url(self) -> str:
        return f"{self.public_url}/telegram/webhook"

    @property
    def application(self) -> Application[Any, Any, Any, Any, Any, Any]:
        if self._app is None:
            raise ChannelUnavailable("the Telegram adapter is not started")
        return self._app

    # -- lifecycle ----------------------------------------------------------------------------

    def _build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        builder = Application.builder().token(self.token).job_queue(None)
        if self.settings.api_url:
            # api_url is the server's root; PTB appends the token straight to these
            root = self.settings.api_url.rstrip("/").removesuffix("/bot")
            builder = builder.base_url(f"{root}/bot").base_file_url(f"{root}/file/bot")
        if self.settings.mode == "webhook":
            builder = builder.updater(None)  # our aiohttp route receives the updates
        return builder.build()

    async def start(self, intake: Intake) -> None:
        self._intake = intake
        app = self._build()
        app.add_handler(TypeHandler(Update, self._on_polled_update))
        self._app = app
        try:
            await app.initialize()  # getMe: fails fast on a wrong token
            await app.start()
            if app.updater is not None:
                await app.updater.start_polling(allowed_updates=list(ALLOWED_UPDATES))
                log.info("Telegram: polling as @%s", app.bot.username)
            else:
                await app.bot.set_webhook(
                    url=self.webhook_url,
                    secret_token=self.webhook_secret,
                    allowed_updates=list(ALLOWED_UPDATES),
                )
                log.info("Telegram: webhook %s for @%s", self.webhook_url, app.bot.username)
        except BaseException as err:
            await self.stop()
            if isinstance(err, InvalidToken):
                raise ConfigError(
                    f"telegram.token_env: Telegram rejected the token in {self.settings.token_env}"
                ) from err
            raise

    async def stop(self) -> None:
        # The webhook stays registered: another gateway process may still be serving it.
        app, self._app = self._app, None
        if app is None:
            return
        if app.updater is not None and app.updater.running:
            await app.updater.stop()  # confirms the offset of what was fetched
        if app.running:
            await app.stop()  # handles what is still queued, awaits our reply tasks
        await app.shutdown()
        # after a failed initialize() the app's shutdown is a no-op but the bot's HTTP pools
        # are open; Bot.shutdown closes them (and is a no-op when already closed)
        await app.bot.shutdown()

    # -- inbound ------------------------------------------------------------------------------

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """POST /telegram/webhook: verify the secret, commit the update, then answer."""
        if self._app is None or self._intake is None:
            return web.Response(status=503, text="not started")
        given = request.headers.get(SECRET_HEADER, "")
        expected = self.webhook_secret or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return web.Response(status=401, text="bad secret token")
        body = await request.read()
        try:
            data = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        if not isinstance(data, dict):
            return web.Response(status=400, text="body is not a JSON object")
        try:
            try:
                update = Update.de_json(data, self._app.bot)
            except Exception as err:  # PTB raises TypeError/KeyError/... on schema mismatches
                await self._intake.quarantine("telegram", f"unparseable update: {err!r}", body)
                return web.Response(text="kept for review")
            await self.process(update, body)
        except Exception:
            log.exception("Telegram update could not be stored; Telegram will deliver it again")
            return web.Response(status=500, text="temporary failure")
        return web.Response(text="ok")

    async def _on_polled_update(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            return
        raw = json.dumps(update.to_dict(), default=str).encode()
        for delay in (*POLL_RETRY_DELAYS, None):
            try:
                await self.process(update, raw)
                return
            except Exception:
                if delay is None:
                    log.exception("Telegram update %s lost after retries", update.update_id)
                    return
                log.warning("Telegram update %s failed; retrying", update.update_id, exc_info=True)
                await asyncio.sleep(delay)

    async def process(self, update: Update, raw: bytes) -> None:
        """Hand one update to intake; raises when it could not be committed (retry it)."""
        if update.callback_query is not None:
            await self._on_callback(update.callback_query)
            return
        edited = update.message is None and update.edited_message is not None
        message = update.message or update.edited_message
        user = message.from_user if message is not None else None
        if message is None or user is None or user.is_bot:
            return  # channel posts, service updates, bots (us included)
        if message.chat is None:  # PTB parses it, but it can be neither threaded nor answered
            await self._require_intake().quarantine("telegram", "a message without a chat", raw)
            return
        if self._is_team_chat(message.chat):
            if not edited:
                await self._on_team_message(update, message)
            return
        inbound = await self._inbound(update, message, edited=edited)
        if inbound is not None:
            await self._ingest(inbound, raw)

    def _is_team_chat(self, chat: Chat) -> bool:
        team = self.settings.team_chat.strip()
        if not team:
            return False
        if team.startswith("@"):
            return bool(chat.username) and team[1:].lower() == (chat.username or "").lower()
        return str(chat.id) == team

    async def _inbound(
        self, update: Update, message: Message, *, edited: bool
    ) -> InboundMessage | None:
        assert message.from_user is not None
        chat_id = message.chat.id
        text = text_of(message)
        if not text and message.sticker is not None:
            text = f"[sticker {message.sticker.emoji or ''}]".replace(" ]", "]")
        attachments: tuple[Attachment, ...] = ()
        notes: list[str] = []
        if not edited:  # an edit repeats the media we already have
            attachments, notes = await self._attachments(message)
        text = _with_notes(text, notes)
        if not text and not attachments:
            return None  # a service message (pin, member joined...), a location...
        if edited:
            text = f"(edited) {text}"
        reply_to = message.reply_to_message
        refs = (f"{chat_id}:{reply_to.message_id}",) if reply_to is not None else ()
        return InboundMessage(
            channel=Channel.TELEGRAM,
            external_id=f"update:{update.update_id}",
            sender=Sender(address=str(chat_id), name=message.from_user.full_name, email=None),
            text=text,
            attachments=attachments,
            received_at=(message.edit_date if edited else None) or message.date,
            thread_hints=ThreadHints(references=refs),
            language=message.from_user.language_code,
            metadata={
                "conversation": f"tg:{chat_id}",
                # this message's own ref: a later reply quoting it leads to the same ticket
                "thread_refs": (f"{chat_id}:{message.message_id}",),
            },
        )

    async def _attachments(self, message: Message) -> tuple[tuple[Attachment, ...], list[str]]:
        found: list[tuple[str, str, int | None, str, str]] = []  # id, unique id, size, name, type
        if message.photo:
            photo = max(message.photo, key=lambda p: (p.file_size or 0, p.width * p.height))
            name = f"photo_{photo.file_unique_id}.jpg"
            found.append((photo.file_id, photo.file_unique_id, photo.file_size, name, "image/jpeg"))
        for kind in _MEDIA_KINDS:
            media = getattr(message, kind, None)
            if media is None:
                continue
            mime = getattr(media, "mime_type", None) or (
                "audio/ogg" if kind == "voice" else "video/mp4" if kind == "video_note" else None
            )
            name = getattr(media, "file_name", None) or (
                f"{kind}_{media.file_unique_id}{mimetypes.guess_extension(mime or '') or ''}"
            )
            mime = mime or mimetypes.guess_type(name)[0] or "application/octet-stream"
            found.append((media.file_id, media.file_unique_id, media.file_size, name, mime))
        attachments: list[Attachment] = []
        notes: list[str] = []
        seen: set[str] = set()  # an animation also comes as a document: the same file
        for file_id, unique_id, size, name, mime in found:
            if unique_id in seen:
                continue
            seen.add(unique_id)
            if size is not None and size > DOWNLOAD_LIMIT:
                notes.append(_too_big(name, size))
                continue
            try:
                file = await message.get_bot().get_file(file_id)
            except BadRequest as err:
                if "too big" not in err.message.lower():
                    raise
                notes.append(_too_big(name, size))
                continue
            content = bytes(await file.download_as_bytearray())
            attachments.append(Attachment(filename=name, content_type=mime, content=content))
        return tuple(attachments), notes

    async def _ingest(self, msg: InboundMessage, raw: bytes) -> None:
        intake = self._require_intake()
        try:
            await intake.ingest(msg)
        except TooLarge as err:
            # Telegram lets customers send more than we keep: keep the words and say what's gone
            slim = dataclasses.replace(
                msg, attachments=(), text=_with_notes(msg.text, [f"[attachments not kept: {err}]"])
            )
            await intake.ingest(slim)
        except InvalidInput as err:
            await intake.quarantine("telegram", f"rejected by intake: {err}", raw)

    async def _on_callback(self, query: CallbackQuery) -> None:
        # no data: a game button; data that is not a string: not one of our buttons (PTB does
        # not check the JSON's types)
        if not isinstance(query.data, str) or query.from_user is None:
            await self._answer(query, "")
            return
        action, value = parse_callback_data(query.data)
        where = query.message
        refs: tuple[str, ...] = ()
        # PTB does not check the JSON: a message without its chat comes through as None
        if where is not None and where.chat is not None:
            refs = (f"{where.chat.id}:{where.message_id}",)
        interaction = Interaction(
            channel=Channel.TELEGRAM,
            external_id=f"callback:{query.id}",
            user=str(query.from_user.id),
            user_name=query.from_user.full_name,
            action=action,
            value=value,
            refs=refs,
        )
        await self._answer(query, await self._interact(interaction))

    async def _answer(self, query: CallbackQuery, text: str) -> None:
        try:
            await query.answer(text=text[:ANSWER_LIMIT] or None)
        except TelegramError as err:  # the click is committed; a stale query cannot be answered
            log.warning("could not answer Telegram callback query %s: %s", query.id, err)

    async def _on_team_message(self, update: Update, message: Message) -> None:
        assert message.from_user is not None
        bot = message.get_bot()
        text = text_of(message)
        reply_to = message.reply_to_message
        by_sender = functools.partial(
            Interaction,
            channel=Channel.TELEGRAM,
            external_id=f"update:{update.update_id}",
            user=str(message.from_user.id),
            user_name=message.from_user.full_name,
        )
        args = command_args(text, "helpline", bot.username)
        if args is not None:
            interaction = by_sender(action="command", text=args)
        elif (
            reply_to is not None
            and reply_to.from_user is not None
            and reply_to.from_user.id == bot.id
        ):
            ref = f"{message.chat.id}:{reply_to.message_id}"
            interaction = by_sender(action="thread_reply", text=text, refs=(ref,))
        else:
            return  # agents talking among themselves
        answer = await self._interact(interaction)
        if answer:
            # in the background: a group takes one message per 3 s, the webhook should not wait
            self.application.create_task(
                self._reply(message.chat.id, answer, message.message_id),
                name=f"telegram-reply-{update.update_id}",
            )

    async def _interact(self, interaction: Interaction) -> str:
        """The text to show the person who acted; a domain error is shown, not retried."""
        try:
            reply = await self._require_intake().interact(interaction)
        except HelplineError as err:
            return str(err)
        return reply.text

    async def _reply(self, chat_id: int, text: str, reply_to: int) -> None:
        bot = self.application.bot
        quote = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
        try:
            await self._call(
                chat_id, lambda: bot.send_message(chat_id, fit_text(text), reply_parameters=quote)
            )
        except HelplineError as err:
            log.warning("could not answer in Telegram chat %s: %s", chat_id, err)

    def _require_intake(self) -> Intake:
        if self._intake is None:
            raise ChannelUnavailable("the Telegram adapter is not started")
        return self._intake

    # -- outbound -----------------------------------------------------------------------------

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        # Telegram has no idempotency key: the outbox hands a row to one sender at a time and
        # we never retry here (a retry after a lost answer could post twice).
        bot = self.application.bot
        chat_id = chat_key(message.to.address)
        try:
            markup = render_keyboard(message.actions)
        except ValueError as err:
            raise ChannelRejected(f"cannot render the buttons: {err}") from err
        text = fit_text(message.text)
        if not text.strip():
            raise ChannelRejected("Telegram cannot send an empty message")
        if message.replaces:
            try:
                target = message_id_of(message.replaces)
            except ValueError:
                raise ChannelRejected(f"not a Telegram message id: {message.replaces!r}") from None
            await self._call(
                chat_id,
                lambda: bot.edit_message_text(
                    text, chat_id=chat_id, message_id=target, reply_markup=markup
                ),
                unmodified_ok=True,
            )
            return DeliveryReceipt(str(target))
        quote = None
        if message.to.thread and message.to.thread.rsplit(":", 1)[-1].isdigit():
            # a thread on Telegram is a message to reply to (a ticket card, a question)
            quote = ReplyParameters(
                message_id=message_id_of(message.to.thread), allow_sending_without_reply=True
            )
        sent = await self._call(
            chat_id,
            lambda: bot.send_message(chat_id, text, reply_markup=markup, reply_parameters=quote),
        )
        assert sent is not None
        return DeliveryReceipt(str(sent.message_id))

    async def _call(
        self,
        chat_id: int | str,
        request: Callable[[], Awaitable[T]],
        *,
        unmodified_ok: bool = False,
    ) -> T | None:
        """One paced API call, its errors mapped to retry (Unavailable) or give up (Rejected)."""
        await self.gate.wait(paces(chat_id))
        try:
            return await request()
        except RetryAfter as err:
            seconds = _retry_seconds(err)
            self.gate.hold(f"tg:{chat_id}", seconds)
            raise ChannelUnavailable(
                f"Telegram flood control: retry in {seconds:g}s", retry_after=seconds
            ) from err
        except BadRequest as err:  # before NetworkError: BadRequest is one
            if unmodified_ok and "message is not modified" in err.message.lower():
                return None
            raise ChannelRejected(f"Telegram refused: {err.message}") from err
        except ChatMigrated as err:
            raise ChannelRejected(
                f"Telegram: the group is now supergroup {err.new_chat_id}"
            ) from err
        except (Forbidden, InvalidToken) as err:
            raise ChannelRejected(f"Telegram refused: {err.message}") from err
        except NetworkError as err:  # TimedOut included; 5xx answers come as NetworkError
            raise ChannelUnavailable(f"Telegram unreachable: {err.message}") from err
        except TelegramError as err:
            raise ChannelUnavailable(f"Telegram error: {err.message}") from err


def _too_big(name: str, size: int | None) -> str:
    how_big = f" ({size / 1024 / 1024:.1f} MB)" if size else ""
    return f"[{name}{how_big} is too large to download from Telegram]"
