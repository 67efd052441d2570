"""Fake Telegram Bot API for tests that drive the real python-telegram-bot against it.

Usage::

    async with FakeTelegram() as tg, Bot(tg.token, base_url=tg.base_url) as bot:
        msg = await bot.send_message(chat_id=42, text="hi")
        tg.push_message("hello bot", chat_id=42)
        [update] = await bot.get_updates(timeout=1)

python-telegram-bot builds URLs as ``base_url + token + "/" + method``, so ``base_url`` ends
in ``/bot`` (no trailing slash) and ``base_file_url`` in ``/file/bot``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.slack_api import JSON, Fault, FaultMix, LoopbackServer, RecordedCall

TelegramHandler = Callable[[RecordedCall], Any]

# PTB form-encodes requests and serialises these (objects/arrays) as JSON strings.
_JSON_FIELDS = {
    "reply_markup",
    "entities",
    "caption_entities",
    "allowed_updates",
    "reply_parameters",
    "link_preview_options",
    "media",
    "commands",
    "scope",
}

_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class BotApiError(Exception):
    """Raised by a handler to answer ``{"ok": false, "error_code": ..., "description": ...}``."""

    def __init__(self, error_code: int, description: str) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    file_name: str | None = None
    mime_type: str | None = None


def _error(code: int, description: str, **extra: Any) -> web.Response:
    body = {"ok": False, "error_code": code, "description": description, **extra}
    return web.json_response(body, status=code)


class FakeTelegram(LoopbackServer):
    """Fake Bot API at ``{base_url}<token>/<method>``.

    State worth asserting on: ``calls``, ``messages`` (chat_id, message_id) -> message,
    ``sent`` (every successfully sent message in order), ``callback_answers``, ``webhook``,
    ``updates`` (pushed and not yet confirmed by a getUpdates offset), ``files``.
    """

    def __init__(
        self,
        *,
        token: str = "123456789:TEST-helpline-token",
        username: str = "helpline_test_bot",
        first_name: str = "Helpline",
        max_poll_seconds: float = 1.0,
        fault_rate: float = 0.0,
        fault_status: int = 500,
        seed: int = 0,
        delay: float = 0.0,
        faults: FaultMix | None = None,
    ) -> None:
        super().__init__(
            fault_rate=fault_rate, fault_status=fault_status, seed=seed, delay=delay, faults=faults
        )
        self.token = token
        self.valid_tokens: set[str] = {token}
        self.bot_user: JSON = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": first_name,
            "username": username,
        }
        # Upper bound on getUpdates long-polling, whatever timeout the client asks for,
        # so a forgotten poller never stalls a test (or server shutdown) for long.
        self.max_poll_seconds = max_poll_seconds
        self.chats: dict[int | str, JSON] = {}
        self.messages: dict[tuple[int | str, int], JSON] = {}
        self.sent: list[JSON] = []
        self.callback_answers: list[JSON] = []
        self.files: dict[str, StoredFile] = {}
        self.webhook: JSON | None = None
        self.updates: list[JSON] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._updates_pushed = asyncio.Event()
        self.handlers: dict[str, TelegramHandler] = {}
        for name, handler in {
            "getMe": lambda call: self._bot_user_full(),
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "getFile": self._get_file,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "getUpdates": self._get_updates,
            # Commonly called at bot start-up; accepting them keeps Application happy.
            "setMyCommands": lambda call: True,
            "deleteMyCommands": lambda call: True,
            "sendChatAction": lambda call: True,
        }.items():
            self.on(name, handler)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.origin}/file/bot"

    @property
    def bot_kwargs(self) -> JSON:
        """``Bot(**tg.bot_kwargs)``: PTB does not derive base_file_url from base_url."""
        return {"token": self.token, "base_url": self.base_url, "base_file_url": self.base_file_url}

    def on(self, method: str, handler: TelegramHandler) -> None:
        """Add or replace a method; the handler returns the ``result`` (may be a coroutine)."""
        self.handlers[method.lower()] = handler  # Bot API method names are case-insensitive

    def add_chat(self, chat: JSON) -> JSON:
        """Register a chat so messages to ``chat["id"]`` carry this exact Chat object."""
        self.chats[chat["id"]] = chat
        return chat

    def add_file(
        self, content: bytes, file_name: str = "file.bin", mime_type: str | None = None
    ) -> StoredFile:
        """Store a file (e.g. one a customer "sent") so getFile and download work for it."""
        n = next(self._file_ids)
        stored = StoredFile(
            file_id=f"FILE{n:06d}",
            file_unique_id=f"U{n:06d}",
            file_path=f"documents/file_{n}_{file_name}",
            content=content,
            file_name=file_name,
            mime_type=mime_type,
        )
        self.files[stored.file_id] = stored
        return stored

    # -- inbound updates ----------------------------------------------------------------------

    def push_update(self, update: JSON) -> JSON:
        """Queue an update for getUpdates; assigns ``update_id`` when missing."""
        if "update_id" not in update:
            update = {"update_id": next(self._update_ids), **update}
        self.updates.append(update)
        self._updates_pushed.set()
        return update

    def user(self, user_id: int, first_name: str = "Alice", **extra: Any) -> JSON:
        return {"id": user_id, "is_bot": False, "first_name": first_name, **extra}

    def push_message(
        self, text: str, *, chat_id: int = 1001, user_id: int | None = None, **extra: Any
    ) -> JSON:
        """Queue a ``message`` update as if a user wrote ``text`` in ``chat_id``."""
        message = {
            "message_id": next(self._message_ids),
            "from": self.user(user_id if user_id is not None else chat_id),
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            "text": text,
            **extra,
        }
        self.messages[(chat_id, message["message_id"])] = message
        return self.push_update({"message": message})

    def push_callback_query(
        self, data: str, *, message_id: int, chat_id: int = 1001, user_id: int | None = None
    ) -> JSON:
        """Queue a ``callback_query`` update: the user pressed a button on ``message_id``."""
        message = self.messages.get((chat_id, message_id)) or {
            "message_id": message_id,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
        }
        query = {
            "id": str(next(self._update_ids) * 7919),  # any unique string
            "from": self.user(user_id if user_id is not None else chat_id),
            "chat_instance": f"ci{chat_id}",
            "data": data,
            "message": message,
        }
        return self.push_update({"callback_query": query})

    async def deliver_webhook(self, update: JSON, url: str | None = None) -> int:
        """POST an update to the registered webhook as Telegram would; returns the status.

        Sends ``X-Telegram-Bot-Api-Secret-Token`` when setWebhook gave a secret_token.
        """
        hook = self.webhook or {}
        target = url or hook.get("url")
        if not target:
            raise RuntimeError("no webhook set and no url given")
        if "update_id" not in update:
            update = {"update_id": next(self._update_ids), **update}
        headers = {}
        if hook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook["secret_token"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(target, json=update, headers=headers) as resp,
        ):
            return resp.status

    # -- idempotency helpers ------------------------------------------------------------------

    def sent_to(self, chat_id: int | str) -> list[JSON]:
        return [m for m in self.sent if m["chat"]["id"] == chat_id]

    def sent_counts(self, key: str | Callable[[JSON], Hashable] = "text") -> Counter[Hashable]:
        """How many messages were sent per key ("text", "caption", ... or a callable)."""
        key_fn = key if callable(key) else (lambda m: m.get(key))
        return Counter(key_fn(m) for m in self.sent)

    def duplicate_sends(
        self, key: str | Callable[[JSON], Hashable] = "text"
    ) -> dict[Hashable, int]:
        """Keys sent more than once; ``{}`` means exactly-once held. None keys are skipped."""
        return {k: n for k, n in self.sent_counts(key).items() if n > 1 and k is not None}

    # -- plumbing -----------------------------------------------------------------------------

    def _split_path(self, path: str) -> tuple[str, str, str] | None:
        """'/bot<T>/<m>' -> ('api', T, m); '/file/bot<T>/<p>' -> ('file', T, p)."""
        kind = "api"
        if path.startswith("/file/bot"):
            kind, path = "file", path[len("/file") :]
        if not path.startswith("/bot"):
            return None
        token, _, rest = path[len("/bot") :].partition("/")
        return (kind, token, rest) if rest else None

    def _method_name(self, request: web.Request) -> str | None:
        parts = self._split_path(request.path)
        if parts is None:
            return None
        kind, _, rest = parts
        return "file:download" if kind == "file" else rest

    def _fault_response(self, fault: Fault) -> web.Response:
        if fault.status == 429:
            n = 1 if fault.retry_after is None else fault.retry_after
            description = fault.error or f"Too Many Requests: retry after {n}"
            return _error(429, description, parameters={"retry_after": n})
        description = fault.error or _DEFAULT_DESCRIPTIONS.get(fault.status, "Error")
        return _error(fault.status, description)

    async def _dispatch(self, call: RecordedCall, request: web.Request) -> web.StreamResponse:
        parts = self._split_path(request.path)
        assert parts is not None  # _method_name already accepted the path
        kind, token, rest = parts
        if token not in self.valid_tokens:
            return _error(401, "Unauthorized")
        if kind == "file":
            stored = next((f for f in self.files.values() if f.file_path == rest), None)
            if stored is None:
                return _error(404, "Not Found")
            return web.Response(body=stored.content, content_type="application/octet-stream")
        handler = self.handlers.get(call.method.lower())
        if handler is None:
            return _error(404, "Not Found")
        try:
            for name in _JSON_FIELDS & call.params.keys():
                if isinstance(call.params[name], str):
                    try:
                        call.params[name] = json.loads(call.params[name])
                    except ValueError:
                        raise BotApiError(400, f"Bad Request: can't parse {name} JSON") from None
            result = handler(call)
            if isinstance(result, Awaitable):
                result = await result
        except BotApiError as exc:
            return _error(exc.error_code, exc.description)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    def _bot_user_full(self) -> JSON:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    @staticmethod
    def _chat_id(value: Any) -> int | str:
        if value is None or value == "":
            raise BotApiError(400, "Bad Request: chat_id is empty")
        text = str(value)
        return int(text) if text.lstrip("-").isdigit() else text

    def _chat(self, chat_id: int | str) -> JSON:
        """The Chat object for an id, shaped by Telegram's id conventions."""
        if chat_id in self.chats:
            return self.chats[chat_id]
        if isinstance(chat_id, str):  # "@channelusername"
            return {"id": -1000000000000 - len(chat_id), "type": "channel", "title": chat_id}
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Alice"}
        if str(chat_id).startswith("-100"):
            return {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}
        return {"id": chat_id, "type": "group", "title": f"Group {chat_id}"}

    def _new_message(self, call: RecordedCall, **content: Any) -> JSON:
        chat_id = self._chat_id(call.params.get("chat_id"))
        message: JSON = {
            "message_id": next(self._message_ids),
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        markup = call.params.get("reply_markup")
        # Telegram only echoes inline keyboards back on the Message.
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self.messages[(chat_id, message["message_id"])] = message
        self.sent.append(message)
        return message

    def _find_message(self, call: RecordedCall) -> JSON:
        p = call.params
        if p.get("inline_message_id"):
            raise BotApiError(400, "Bad Request: inline messages are not supported by the fake")
        try:
            key = (self._chat_id(p.get("chat_id")), int(p.get("message_id", "")))
        except ValueError:
            raise BotApiError(400, "Bad Request: message identifier is not specified") from None
        message = self.messages.get(key)
        if message is None:
            raise BotApiError(400, "Bad Request: message to edit not found")
        return message

    def _upload(self, call: RecordedCall, field: str) -> StoredFile:
        """A file from a multipart part (also via ``attach://``), or an existing file_id."""
        ref = call.params.get(field)
        part = call.files.get(field)
        if part is None and isinstance(ref, str) and ref.startswith("attach://"):
            part = call.files.get(ref.removeprefix("attach://"))
        if part is not None:
            return self.add_file(part.content, part.filename or field, part.content_type)
        if isinstance(ref, str) and ref in self.files:
            return self.files[ref]
        if isinstance(ref, str) and ref.startswith(("http://", "https://")):
            return self.add_file(b"", ref.rsplit("/", 1)[-1] or field)
        raise BotApiError(400, f"Bad Request: there is no {field} in the request")

    # -- methods ------------------------------------------------------------------------------

    def _send_message(self, call: RecordedCall) -> JSON:
        text = call.params.get("text")
        if not text:
            raise BotApiError(400, "Bad Request: message text is empty")
        extra = {"entities": call.params["entities"]} if call.params.get("entities") else {}
        return self._new_message(call, text=text, **extra)

    def _send_photo(self, call: RecordedCall) -> JSON:
        stored = self._upload(call, "photo")
        size = len(stored.content)
        photo = [
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "width": w,
                "height": w,
                "file_size": size,
            }
            for w in (90, 800)
        ]
        caption = {"caption": call.params["caption"]} if call.params.get("caption") else {}
        return self._new_message(call, photo=photo, **caption)

    def _send_document(self, call: RecordedCall) -> JSON:
        stored = self._upload(call, "document")
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": stored.file_name,
            "mime_type": stored.mime_type or "application/octet-stream",
            "file_size": len(stored.content),
        }
        caption = {"caption": call.params["caption"]} if call.params.get("caption") else {}
        return self._new_message(call, document=document, **caption)

    def _edit_message_text(self, call: RecordedCall) -> JSON:
        message = self._find_message(call)
        text = call.params.get("text")
        if not text:
            raise BotApiError(400, "Bad Request: message text is empty")
        markup = call.params.get("reply_markup")
        if text == message.get("text") and markup == message.get("reply_markup"):
            # The real API rejects no-op edits; bots must tolerate this error.
            raise BotApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        message["text"] = text
        self._set_markup(message, markup)
        message["edit_date"] = int(time.time())
        return message

    def _edit_message_reply_markup(self, call: RecordedCall) -> JSON:
        message = self._find_message(call)
        markup = call.params.get("reply_markup")
        if markup == message.get("reply_markup"):
            raise BotApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        self._set_markup(message, markup)
        message["edit_date"] = int(time.time())
        return message

    @staticmethod
    def _set_markup(message: JSON, markup: Any) -> None:
        if isinstance(markup, dict) and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)

    def _answer_callback_query(self, call: RecordedCall) -> bool:
        if not call.params.get("callback_query_id"):
            raise BotApiError(400, "Bad Request: query is too old and response timeout expired")
        self.callback_answers.append(dict(call.params))
        return True

    def _get_file(self, call: RecordedCall) -> JSON:
        stored = self.files.get(str(call.params.get("file_id", "")))
        if stored is None:
            raise BotApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.content),
            "file_path": stored.file_path,
        }

    def _set_webhook(self, call: RecordedCall) -> web.Response:
        if not call.params.get("url"):  # an empty url is how the API spells "remove"
            self.webhook = None
        else:
            self.webhook = {k: v for k, v in call.params.items() if k != "certificate"}
        description = "Webhook was set" if self.webhook else "Webhook was deleted"
        return web.json_response({"ok": True, "result": True, "description": description})

    def _delete_webhook(self, call: RecordedCall) -> web.Response:
        description = "Webhook was deleted" if self.webhook else "Webhook is already deleted"
        self.webhook = None
        if str(call.params.get("drop_pending_updates", "")).lower() in ("true", "1"):
            self.updates.clear()
        return web.json_response({"ok": True, "result": True, "description": description})

    def _get_webhook_info(self, call: RecordedCall) -> JSON:
        hook = self.webhook or {}
        return {
            "url": hook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }

    async def _get_updates(self, call: RecordedCall) -> list[JSON]:
        if self.webhook:
            raise BotApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        p = call.params
        offset = int(p.get("offset") or 0)
        limit = min(max(int(p.get("limit") or 100), 1), 100)
        timeout = min(float(p.get("timeout") or 0), self.max_poll_seconds)
        if offset > 0:
            # A positive offset confirms (forgets) every earlier update, as on the real API.
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        if not self.updates and timeout > 0:
            self._updates_pushed.clear()
            pushed = asyncio.ensure_future(self._updates_pushed.wait())
            closing = asyncio.ensure_future(self._closing.wait())
            _, pending = await asyncio.wait(
                {pushed, closing}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        if offset < 0:
            # Negative offset: keep only the last -offset updates, forgetting the rest.
            self.updates = self.updates[offset:]
        return self.updates[:limit]
