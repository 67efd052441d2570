"""Fake Slack Web API for tests that drive the real ``slack_sdk`` against it.

Usage::

    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.token, base_url=slack.base_url)
        await client.chat_postMessage(channel="C123", text="hi")
        assert slack.calls_to("chat.postMessage")[0].params["text"] == "hi"

This module also holds the loopback-server plumbing (call recording, fault injection)
shared with ``telegram_api.py``; it lives here only because the fakes are kept to a fixed
set of files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

JSON = dict[str, Any]

# --------------------------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------------------------


@dataclass
class UploadedFile:
    """A file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    content: bytes


@dataclass
class RecordedCall:
    """One request as the fake saw it, kept for assertions."""

    method: str
    params: JSON
    headers: CIMultiDict[str]  # case-insensitive, so call.headers["authorization"] works
    http_method: str
    path: str
    raw_body: bytes  # empty for multipart (aiohttp streams those)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)
    status: int | None = None  # HTTP status we answered with
    faulted: bool = False  # True when the answer came from fault injection
    fault: str | None = None  # the injected kind: "status", "hang" or "hang_after"
    retry_after: int | None = None  # what a 429 answer asked for
    answered_at: float | None = None  # when the answer was written (monotonic)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass
class Fault:
    """A queued fault: the next ``remaining`` matching calls answer with ``status``.

    ``kind`` "status" answers at once; "hang" holds the call ``hang`` seconds and then answers
    504 *without processing it* (the client timed out: the outcome is unambiguous, nothing was
    delivered); "hang_after" processes the call, then holds the answer (the client times out
    although the call took effect: the at-least-once window).
    """

    remaining: int
    status: int
    retry_after: int | None
    method: str | None  # None = any method
    error: str | None  # overrides the default error text/code for this fault
    kind: str = "status"
    hang: float = 0.0


@dataclass(frozen=True)
class FaultMix:
    """Deterministic chaos for a share of the calls: of the calls to ``methods`` (None: all),
    about ``rate`` fail, each with a kind drawn from ``weights``: "429" (with a Retry-After from
    ``retry_after``), "5xx" (one of ``statuses``), "hang" or "hang_after" (for ``hang`` s)."""

    rate: float = 0.3
    methods: frozenset[str] | None = None
    weights: Mapping[str, float] = field(
        default_factory=lambda: {"429": 1.0, "5xx": 1.0, "hang": 1.0}
    )
    retry_after: tuple[int, ...] = (1, 2)
    statuses: tuple[int, ...] = (500, 502, 503)
    hang: float = 3.0

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method.lower() in {m.lower() for m in self.methods}

    def draw(self, rng: random.Random) -> Fault:
        kinds = sorted(self.weights)
        kind = rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
        if kind == "429":
            return Fault(1, 429, rng.choice(self.retry_after), None, None)
        if kind == "5xx":
            return Fault(1, rng.choice(self.statuses), None, None, None)
        if kind in ("hang", "hang_after"):
            return Fault(1, 504, None, None, None, kind=kind, hang=self.hang)
        raise ValueError(f"unknown fault kind {kind!r}")


class FaultInjector:
    """Decides whether a call is answered with an injected error instead of the real handler.

    Queued faults (``fail_next``) take precedence over the probabilistic ``fault_rate``; the RNG
    is seeded so a flaky-network test fails the same calls on every run.
    """

    def __init__(
        self,
        fault_rate: float = 0.0,
        fault_status: int = 500,
        seed: int = 0,
        mix: FaultMix | None = None,
    ) -> None:
        self.fault_rate = fault_rate
        self.fault_status = fault_status
        self.rng = random.Random(seed)
        self.queue: list[Fault] = []
        self.mix = mix  # when set, replaces fault_rate/fault_status

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: int | None = 1,
        *,
        method: str | None = None,
        error: str | None = None,
        kind: str = "status",
        hang: float = 0.0,
    ) -> None:
        retry_after = retry_after if status == 429 else None
        self.queue.append(Fault(n, status, retry_after, method, error, kind, hang))

    def take(self, method: str) -> Fault | None:
        for fault in self.queue:
            if fault.method is None or fault.method.lower() == method.lower():
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.queue.remove(fault)
                return fault
        if self.mix is not None:
            if self.mix.applies_to(method) and self.rng.random() < self.mix.rate:
                return self.mix.draw(self.rng)
            return None
        if self.fault_rate > 0 and self.rng.random() < self.fault_rate:
            retry_after = 1 if self.fault_status == 429 else None
            return Fault(1, self.fault_status, retry_after, None, None)
        return None


class LoopbackServer:
    """aiohttp server on 127.0.0.1:<random port> usable as ``async with``.

    Subclasses implement ``_dispatch``; this class records calls, applies delay and faults.
    """

    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        fault_status: int = 500,
        seed: int = 0,
        delay: float = 0.0,
        faults: FaultMix | None = None,
    ) -> None:
        self.calls: list[RecordedCall] = []
        self.faults = FaultInjector(fault_rate, fault_status, seed, faults)
        self.delay = delay  # seconds before every answer; use with client timeouts
        self.delay_for: dict[str, float] = {}  # per-method delay, overrides ``delay``
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        # Set on shutdown so delayed/long-poll handlers return at once instead of making
        # runner.cleanup() wait for them.
        self._closing = asyncio.Event()
        self._call_event = asyncio.Event()

    # -- fault helpers (the public names the tests use) --------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: int | None = 1,
        *,
        method: str | None = None,
        error: str | None = None,
    ) -> None:
        """Answer the next ``n`` calls (optionally only to ``method``) with ``status``."""
        self.faults.fail_next(n, status, retry_after, method=method, error=error)

    def hang_next(
        self, n: int = 1, seconds: float = 3.0, *, method: str | None = None, after: bool = False
    ) -> None:
        """Hold the next ``n`` calls ``seconds`` (longer than the client waits), then answer
        504; with ``after`` the call is processed first (it took effect, the client never
        hears so)."""
        kind = "hang_after" if after else "hang"
        self.faults.fail_next(n, 504, None, method=method, kind=kind, hang=seconds)

    @property
    def fault_rate(self) -> float:
        return self.faults.fault_rate

    @fault_rate.setter
    def fault_rate(self, value: float) -> None:
        self.faults.fault_rate = value

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- assertions -----------------------------------------------------------------------------

    def calls_to(self, method: str, *, include_faulted: bool = True) -> list[RecordedCall]:
        return [
            c
            for c in self.calls
            if c.method.lower() == method.lower() and (include_faulted or not c.faulted)
        ]

    async def wait_for_calls(
        self, method: str, n: int = 1, timeout: float = 5.0
    ) -> list[RecordedCall]:
        """Wait until ``method`` was called ``n`` times; for code that calls in the background."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.calls_to(method)) < n:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                got = len(self.calls_to(method))
                raise TimeoutError(f"expected {n} call(s) to {method}, got {got}")
            self._call_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: see core.outbox
                    await self._call_event.wait()
        return self.calls_to(method)

    # -- request handling -------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return early when the server shuts down."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = self._method_name(request)
        if method is None:
            return web.json_response({"ok": False, "error": "not_found"}, status=404)
        params, files, raw = await parse_request(request)
        call = RecordedCall(
            method=method,
            params=params,
            headers=CIMultiDict(request.headers),
            http_method=request.method,
            path=request.path,
            raw_body=raw,
            files=files,
        )
        self.calls.append(call)
        self._call_event.set()

        await self._sleep(self.delay_for.get(method, self.delay))
        fault = self.faults.take(method)
        if fault is None:
            response = await self._dispatch(call, request)
        elif fault.kind == "hang":  # never processed: the client has given up meanwhile
            call.faulted, call.fault = True, fault.kind
            await self._sleep(fault.hang)
            response = self._fault_response(fault)
        elif fault.kind == "hang_after":  # processed, but the answer comes too late
            call.faulted, call.fault = True, fault.kind
            response = await self._dispatch(call, request)
            await self._sleep(fault.hang)
        else:
            call.faulted, call.fault = True, fault.kind
            call.retry_after = fault.retry_after if fault.status == 429 else None
            response = self._fault_response(fault)
        call.status = response.status
        call.answered_at = time.monotonic()
        return response

    def _method_name(self, request: web.Request) -> str | None:
        raise NotImplementedError

    def _fault_response(self, fault: Fault) -> web.Response:
        raise NotImplementedError

    async def _dispatch(self, call: RecordedCall, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


async def parse_request(request: web.Request) -> tuple[JSON, dict[str, UploadedFile], bytes]:
    """Merge query string and body (JSON, urlencoded or multipart) into one params dict.

    Both clients mix these: slack_sdk sends some methods' args as query params on a POST, and
    python-telegram-bot sends form fields whose structured values are JSON strings.
    """
    params: JSON = dict(request.query)
    files: dict[str, UploadedFile] = {}
    raw = b""
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        form = await request.post()  # consumes the stream, hence no raw body
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = UploadedFile(
                    key, value.filename, value.content_type, value.file.read()
                )
            else:
                params[key] = value if isinstance(value, str) else bytes(value).decode()
        return params, files, raw
    raw = await request.read()
    if not raw:
        return params, files, raw
    if ctype == "application/json":
        with contextlib.suppress(ValueError):  # bad JSON: no params, handler rejects the call
            body = json.loads(raw)
            if isinstance(body, dict):
                params.update(body)
    else:  # urlencoded, or a missing content type: treat as a form like the real APIs do
        params.update(parse_qsl(raw.decode(), keep_blank_values=True))
    return params, files, raw


# --------------------------------------------------------------------------------------------
# Slack
# --------------------------------------------------------------------------------------------

SlackHandler = Callable[[RecordedCall], JSON | Awaitable[JSON]]

# Form-encoded requests carry these as JSON strings; Slack decodes them server-side.
_SLACK_JSON_FIELDS = ("blocks", "attachments", "metadata", "users")


class SlackError(Exception):
    """Raised by a handler to answer ``{"ok": false, "error": code}``."""

    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


class FakeSlack(LoopbackServer):
    """Fake Slack Web API at ``{base_url}<method>``; point ``AsyncWebClient(base_url=...)`` at it.

    State worth asserting on: ``calls``, ``messages`` (channel, ts) -> message,
    ``posted`` (every successful chat.postMessage in order), ``ephemerals``, ``reactions``.
    """

    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",
        team_id: str = "T0HELPLINE",
        team: str = "Helpline Test",
        bot_user_id: str = "U0HELPBOT",
        bot_id: str = "B0HELPBOT",
        bot_name: str = "helpline",
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
        self.team_id = team_id
        self.team = team
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.users: dict[str, JSON] = {}
        self.add_user("U0CUSTOMER", "alice", "Alice Example", "alice@example.com")
        self.messages: dict[tuple[str, str], JSON] = {}
        self.posted: list[JSON] = []
        self.ephemerals: list[JSON] = []
        self.reactions: list[JSON] = []
        self.dm_channels: dict[str, str] = {}  # user id -> D... channel id
        # Microseconds since the epoch, as Slack's are (a reader asks for "oldest" by time);
        # each message at least 100 later than the last, so two never share one.
        self._ts_counter = int(time.time()) * 1_000_000
        self.handlers: dict[str, SlackHandler] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "reactions.add": self._reactions_add,
        }

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/"

    def on(self, method: str, handler: SlackHandler) -> None:
        """Add or replace a method; the handler gets the call and returns the JSON body."""
        self.handlers[method] = handler

    def add_user(
        self, user_id: str, name: str, real_name: str, email: str | None = None, **extra: Any
    ) -> JSON:
        profile: JSON = {"real_name": real_name, "display_name": name}
        if email is not None:
            profile["email"] = email
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": False,
            "tz": "Europe/London",
            "profile": profile,
            **extra,
        }
        self.users[user_id] = user
        return user

    # -- idempotency helpers ------------------------------------------------------------------

    def posts(self, *, channel: str | None = None, text: str | None = None) -> list[JSON]:
        return [
            m
            for m in self.posted
            if (channel is None or m["channel"] == channel) and (text is None or m["text"] == text)
        ]

    def post_counts(self, key: str | Callable[[JSON], Hashable] = "text") -> Counter[Hashable]:
        """How many messages were posted per key: "text", "client_msg_id", or a callable."""
        key_fn = key if callable(key) else (lambda m: m.get(key))
        return Counter(key_fn(m) for m in self.posted)

    def duplicate_posts(
        self, key: str | Callable[[JSON], Hashable] = "client_msg_id"
    ) -> dict[Hashable, int]:
        """Keys posted more than once; ``{}`` means exactly-once held. None keys are skipped."""
        return {k: n for k, n in self.post_counts(key).items() if n > 1 and k is not None}

    # -- plumbing -----------------------------------------------------------------------------

    def _method_name(self, request: web.Request) -> str | None:
        prefix = "/api/"
        if not request.path.startswith(prefix) or len(request.path) == len(prefix):
            return None
        return request.path[len(prefix) :]

    def _fault_response(self, fault: Fault) -> web.Response:
        headers = {}
        if fault.status == 429:
            headers["Retry-After"] = str(1 if fault.retry_after is None else fault.retry_after)
            error = fault.error or "ratelimited"
        else:
            error = fault.error or ("internal_error" if fault.status >= 500 else "request_failed")
        return web.json_response(
            {"ok": False, "error": error}, status=fault.status, headers=headers
        )

    def _token_of(self, call: RecordedCall) -> str | None:
        auth = call.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :]
        token = call.params.get("token")  # Slack still accepts a token form field
        return token if isinstance(token, str) else None

    async def _dispatch(self, call: RecordedCall, request: web.Request) -> web.Response:
        handler = self.handlers.get(call.method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        token = self._token_of(call)
        if token is None:
            return web.json_response({"ok": False, "error": "not_authed"})
        if token not in self.valid_tokens:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        for name in _SLACK_JSON_FIELDS:
            value = call.params.get(name)
            if isinstance(value, str) and value[:1] in ("[", "{"):
                call.params[name] = json.loads(value)
        try:
            result = handler(call)
            body = await result if isinstance(result, Awaitable) else result
        except SlackError as exc:
            return web.json_response({"ok": False, "error": exc.error}, status=exc.status)
        return web.json_response({"ok": True, **body})

    def _next_ts(self) -> str:
        self._ts_counter = max(self._ts_counter + 100, int(time.time() * 1_000_000))
        return f"{self._ts_counter // 1_000_000}.{self._ts_counter % 1_000_000:06d}"

    def _dm_for(self, user_id: str) -> str:
        return self.dm_channels.setdefault(user_id, "D" + user_id.removeprefix("U"))

    @staticmethod
    def _require(call: RecordedCall, name: str, error: str) -> str:
        value = call.params.get(name)
        if not value:
            raise SlackError(error)
        return str(value)

    # -- methods ------------------------------------------------------------------------------

    def _api_test(self, call: RecordedCall) -> JSON:
        return {"args": {k: v for k, v in call.params.items() if k != "token"}}

    def _auth_test(self, call: RecordedCall) -> JSON:
        return {
            "url": f"https://{self.team.lower().replace(' ', '-')}.slack.com/",
            "team": self.team,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _channel(self, call: RecordedCall) -> str:
        channel = self._require(call, "channel", "channel_not_found")
        # Posting to a user id lands in the bot's DM with that user, as on real Slack.
        return self._dm_for(channel) if channel.startswith(("U", "W")) else channel

    def _chat_post_message(self, call: RecordedCall) -> JSON:
        channel = self._channel(call)
        p = call.params
        if not (p.get("text") or p.get("blocks") or p.get("attachments")):
            raise SlackError("no_text")
        ts = self._next_ts()
        message: JSON = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "team": self.team_id,
            "text": p.get("text", ""),
            "ts": ts,
        }
        for opt in ("blocks", "attachments", "thread_ts", "metadata"):
            if p.get(opt):
                message[opt] = p[opt]
        self.messages[(channel, ts)] = message
        # client_msg_id is not a chat.postMessage arg on real Slack; we keep whatever the
        # caller sent (arg or metadata.event_payload) so exactly-once tests can key on it.
        metadata = p.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        client_msg_id = p.get("client_msg_id") or metadata.get("event_payload", {}).get(
            "client_msg_id"
        )
        self.posted.append({**message, "channel": channel, "client_msg_id": client_msg_id})
        return {"channel": channel, "ts": ts, "message": message}

    def _chat_update(self, call: RecordedCall) -> JSON:
        channel = self._channel(call)
        ts = self._require(call, "ts", "message_not_found")
        message = self.messages.get((channel, ts))
        if message is None:
            raise SlackError("message_not_found")
        p = call.params
        for opt in ("text", "blocks", "attachments"):
            if opt in p:
                message[opt] = p[opt]
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {"channel": channel, "ts": ts, "text": message.get("text", ""), "message": message}

    def _chat_post_ephemeral(self, call: RecordedCall) -> JSON:
        channel = self._channel(call)
        user = self._require(call, "user", "user_not_found")
        if user not in self.users:
            raise SlackError("user_not_in_channel")
        ts = self._next_ts()
        self.ephemerals.append({**call.params, "channel": channel, "message_ts": ts})
        return {"message_ts": ts}

    def _conversations_open(self, call: RecordedCall) -> JSON:
        users = call.params.get("users")
        if isinstance(users, str):
            users = [u for u in users.split(",") if u]
        if not users:
            raise SlackError("users_list_not_supplied")
        if len(users) > 1:
            channel: JSON = {"id": "G" + "".join(u.removeprefix("U") for u in users)}
            return {"channel": channel}
        already = users[0] in self.dm_channels
        channel = {"id": self._dm_for(users[0]), "is_im": True, "user": users[0]}
        return {"no_op": already, "already_open": already, "channel": channel}

    def _conversations_history(self, call: RecordedCall) -> JSON:
        """Newest first; thread replies are not in it (only in conversations.replies)."""
        channel = self._require(call, "channel", "channel_not_found")
        found = [
            m
            for (c, ts), m in self.messages.items()
            if c == channel and m.get("thread_ts", ts) == ts
        ]
        return self._page(call, sorted(found, key=lambda m: float(m["ts"]), reverse=True))

    def _conversations_replies(self, call: RecordedCall) -> JSON:
        """The thread's parent, then its replies, oldest first."""
        channel = self._require(call, "channel", "channel_not_found")
        parent = self._require(call, "ts", "thread_not_found")
        found = [
            m
            for (c, ts), m in self.messages.items()
            if c == channel and (ts == parent or m.get("thread_ts") == parent)
        ]
        if not found:
            raise SlackError("thread_not_found")
        return self._page(call, sorted(found, key=lambda m: float(m["ts"])))

    @staticmethod
    def _page(call: RecordedCall, messages: list[JSON]) -> JSON:
        """``oldest``/``latest`` (exclusive), ``limit`` and a cursor (the offset), as Slack
        pages a conversation; metadata only with ``include_all_metadata``."""
        p = call.params
        oldest, latest = float(p.get("oldest") or 0), float(p.get("latest") or "inf")
        messages = [m for m in messages if oldest < float(m["ts"]) < latest]
        start = int(p.get("cursor") or 0)
        limit = int(p.get("limit") or 100)
        page = messages[start : start + limit]
        if str(p.get("include_all_metadata", "")).lower() not in ("1", "true"):
            page = [{k: v for k, v in m.items() if k != "metadata"} for m in page]
        more = start + limit < len(messages)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _users_info(self, call: RecordedCall) -> JSON:
        user = self.users.get(str(call.params.get("user", "")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def _reactions_add(self, call: RecordedCall) -> JSON:
        channel = self._channel(call)
        name = self._require(call, "name", "invalid_name")
        timestamp = self._require(call, "timestamp", "no_item_specified")
        reaction = {"channel": channel, "timestamp": timestamp, "name": name}
        # Messages the user wrote never pass through the fake, so unknown ts is accepted.
        if reaction in self.reactions:
            raise SlackError("already_reacted")
        self.reactions.append(reaction)
        return {}
