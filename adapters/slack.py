"""Slack channel: a slack-bolt AsyncApp behind the gateway's POST /slack/events (or Socket Mode),
and chat.postMessage / chat.update for outbound.

Who is who:
- a customer writes to the app in a DM, or in one of ``support_channels`` (e.g. Slack Connect);
- agents work in ``team_channel``: an answer in a ticket card's thread becomes an Interaction
  ("thread_reply"), as do button clicks and the /helpline command.

Acknowledgement. A customer's message is committed before Slack gets its HTTP 200
(``process_before_response``): if the database fails we answer 500 and Slack delivers the event
again, and a retried or duplicated delivery is a no-op because the message's external id is
``<channel>:<ts>``. Clicks and commands are acknowledged at once and handled in bolt's lazy
listeners, since Slack shows the user an error after 3 seconds and does not retry them.

Files are not downloaded: their names and permalinks are added to the message text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters import slack_blocks
from core.config import SlackSettings
from core.errors import ChannelRejected, ChannelUnavailable, ConfigError, InvalidInput
from core.messages import (
    Channel,
    DeliveryReceipt,
    InboundMessage,
    Interaction,
    OutboundMessage,
    Sender,
    ThreadHints,
    ThreadRef,
)
from core.ports import Intake
from core.ratelimit import Pace, RateGate

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# Message subtypes a person wrote; the rest (edits, deletions, joins, bots...) are ignored.
CUSTOMER_SUBTYPES = (None, "file_share", "thread_broadcast")
# How far back find_delivered pages through a conversation (200 messages a page) for a
# message whose sender died mid-delivery: it was posted minutes ago at most.
MAX_RECONCILE_PAGES = 5
# API errors that say nothing about the message itself: retry later.
TRANSIENT_ERRORS = frozenset(
    {
        "ratelimited",
        "service_unavailable",
        "fatal_error",
        "internal_error",
        "request_timeout",
        # our token or scopes are wrong: an admin can fix it while the outbox backs off
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
    }
)
PROFILE_CACHE_SIZE = 10_000
# <https://x|label>, <@U123>, <#C123|general>, <!here>, <mailto:a@b|a@b>
MARKUP = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


class SlackAdapter:
    channel = Channel.SLACK.value

    def __init__(
        self,
        settings: SlackSettings,
        client: AsyncWebClient,
        *,
        signing_secret: str | None,
        app_token: str | None = None,
        gate: RateGate | None = None,
        profile_timeout: float = 2.0,
    ) -> None:
        self.settings = settings
        self.client = client
        self.signing_secret = signing_secret
        self.app_token = app_token
        self.gate = gate or RateGate()
        # a profile lookup must not eat Slack's 3 s budget for the event's acknowledgement
        self.profile_timeout = profile_timeout
        self.app: AsyncApp | None = None
        self.intake: Intake | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._auth: AuthorizeResult | None = None
        self._profiles: dict[str, tuple[str, str | None]] = {}
        self._dms: dict[str, str] = {}  # user id -> the app's DM channel with them

    @classmethod
    def from_settings(
        cls, settings: SlackSettings, env: Mapping[str, str], *, gate: RateGate | None = None
    ) -> SlackAdapter:
        token = _secret(env, settings.bot_token_env, "slack.bot_token_env")
        socket = settings.mode == "socket"
        # Socket Mode requests arrive over our own authenticated websocket, unsigned
        signing_secret = (
            env.get(settings.signing_secret_env) or None
            if socket
            else _secret(env, settings.signing_secret_env, "slack.signing_secret_env")
        )
        app_token = _secret(env, settings.app_token_env, "slack.app_token_env") if socket else None
        kwargs: JSON = {"base_url": settings.api_url} if settings.api_url else {}
        # No retry handlers (the default retries connection errors once): the outbox dispatcher
        # retries with backoff honouring Retry-After, and inbound work must not stall on retries.
        client = AsyncWebClient(token=token, retry_handlers=[], **kwargs)
        return cls(settings, client, signing_secret=signing_secret, app_token=app_token, gate=gate)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, intake: Intake) -> None:
        self.intake = intake

        async def authorize() -> AuthorizeResult:
            return await self._authorize()  # bolt passes a bound method's `self` as a kwarg

        app = AsyncApp(
            # bolt copies this client per request and gives it the token `_authorize` returns
            client=AsyncWebClient(
                base_url=self.client.base_url, timeout=self.client.timeout, retry_handlers=[]
            ),
            authorize=authorize,
            signing_secret=self.signing_secret or "",
            request_verification_enabled=self.signing_secret is not None,
            # ack after our listener returns: a customer's message is committed before the 200
            process_before_response=True,
            name="helpline",
        )
        app.event("message")(self._on_message)
        # Every subscribed event needs a listener: bolt answers an unhandled one 404, and Slack
        # retries non-200s. app_mention repeats what message.channels already told us.
        app.event(re.compile(".*"))(_ignore)
        app.action(re.compile(".*"))(ack=_ack, lazy=[self._on_action])
        app.command(re.compile(".*"))(ack=_ack, lazy=[self._on_command])
        self.app = app
        if self.settings.mode == "socket":
            self._socket = AsyncSocketModeHandler(app, self.app_token)
            await self._socket.connect_async()
            log.info("Slack Socket Mode connected")

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        self.app = None

    async def handle_request(self, request: web.Request) -> web.Response:
        """POST /slack/events: events, interactivity and slash commands; bolt verifies the
        signature (401 when it is missing, wrong or older than 5 minutes)."""
        if self.app is None:
            return web.json_response({"error": "slack is not started"}, status=503)
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _authorize(self) -> AuthorizeResult:
        """Our bot's identity (auth.test, once). With a plain token bolt would answer a failed
        auth.test with 200 and an apology, dropping the event; raising anything but
        SlackApiError makes it a 500, which Slack retries."""
        if self._auth is None:
            try:
                response = await self.client.auth_test()
            except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
                raise ChannelUnavailable(f"Slack auth.test failed: {err}") from err
            self._auth = AuthorizeResult.from_auth_test_response(
                auth_test_response=response, bot_token=self.client.token
            )
        return self._auth

    # -- inbound: messages -----------------------------------------------------------------------

    async def _on_message(self, event: JSON, context: AsyncBoltContext, ack: AsyncAck) -> None:
        if is_from_bot(event, context.bot_user_id) or event.get("subtype") not in CUSTOMER_SUBTYPES:
            await ack()
            return
        channel, user = str(event.get("channel", "")), event.get("user")
        if not user or not channel:
            await ack()
            return
        thread_ts = event.get("thread_ts")
        if channel == self.settings.team_channel:
            if message_time(event.get("ts")) is None:
                await ack()  # not a message Slack sent; nothing to answer or dedupe by
                return
            if thread_ts and thread_ts != event.get("ts"):
                await self._thread_reply(event, ack)
            else:
                await ack()  # top-level talk among agents is none of our business
            return
        if event.get("channel_type") == "im" or channel in self.settings.support_channels:
            await self._customer_message(event)
        await ack()

    async def _customer_message(self, event: JSON) -> None:
        assert self.intake is not None
        try:
            msg = await self.inbound_message(event)
        except InvalidInput as err:  # malformed: Slack's retries would not mend it
            await self.intake.quarantine(self.channel, f"malformed event: {err}", _raw(event))
            return
        try:
            await self.intake.ingest(msg)
        except InvalidInput as err:  # retrying will not help: keep it for a person to look at
            await self.intake.quarantine(self.channel, f"rejected by intake: {err}", _raw(event))

    async def inbound_message(self, event: JSON) -> InboundMessage:
        """The customer's message; InvalidInput when the event lacks what identifies it."""
        channel, ts, user = str(event.get("channel", "")), event.get("ts"), event.get("user")
        received_at = message_time(ts)
        if not (channel and user) or received_at is None:
            raise InvalidInput(f"a message event needs channel, user and ts (ts: {ts!r})", "ts")
        user, thread_ts = str(user), event.get("thread_ts")
        name, email = await self.profile(user)
        dm = event.get("channel_type") == "im"
        refs: tuple[str, ...] = ()
        if thread_ts and thread_ts != ts:
            refs = (f"{channel}:{thread_ts}",)
            if dm:
                # Our messages to a DM are addressed to the user id; whoever records their refs
                # from the address sees "<user>:<ts>", so offer that spelling as well.
                refs = (f"{user}:{thread_ts}", *refs)
        root = thread_ts or ts
        return InboundMessage(
            channel=Channel.SLACK,
            external_id=f"{channel}:{ts}",
            sender=Sender(address=user, name=name, email=email),
            text=message_text(event),
            received_at=received_at,
            thread_hints=ThreadHints(references=refs),
            raw=json.dumps(event).encode(),
            metadata={
                # Answers go to the customer's user id (the DM); in a support channel they must
                # go to that channel's thread instead, which `send` reads from "<channel>:<ts>".
                "reply_thread": root if dm else f"{channel}:{root}",
                "thread_refs": [f"{channel}:{ts}"],
            },
        )

    async def _thread_reply(self, event: JSON, ack: AsyncAck) -> None:
        assert self.intake is not None
        channel, ts, user = str(event["channel"]), str(event["ts"]), str(event["user"])
        name, _ = await self.profile(user)
        reply = await self.intake.interact(
            Interaction(
                channel=Channel.SLACK,
                external_id=f"{channel}:{ts}",
                user=user,
                action="thread_reply",
                text=message_text(event),
                user_name=name,
                refs=(f"{channel}:{event['thread_ts']}",),
            )
        )
        await ack()  # committed; the ephemeral answer below is a courtesy
        if reply.text:
            await self._ephemeral(channel, user, reply.text, thread_ts=event["thread_ts"])

    # -- inbound: clicks and commands ------------------------------------------------------------

    async def _on_action(self, body: JSON, respond: AsyncRespond) -> None:
        assert self.intake is not None
        # bolt hands the payload on as Slack sent it: every level is read as "a dict, or empty"
        user = _obj(body.get("user"))
        user_id = str(user.get("id", ""))
        container = _obj(body.get("container"))
        channel = str(_obj(body.get("channel")).get("id") or container.get("channel_id") or "")
        message_ts = str(container.get("message_ts") or _obj(body.get("message")).get("ts") or "")
        refs: tuple[str, ...] = (f"{channel}:{message_ts}",) if channel and message_ts else ()
        if refs and channel.startswith("D"):
            refs = (f"{user_id}:{message_ts}", *refs)  # as in inbound_message: DM alias
        actions = body.get("actions")
        for action in actions if isinstance(actions, list) else ():
            if not isinstance(action, dict):
                continue
            if "url" in action and "value" not in action:
                continue  # a link button: Slack opened the link, nothing for us to do
            reply = await self.intake.interact(
                Interaction(
                    channel=Channel.SLACK,
                    external_id=f"action:{message_ts}:{action.get('action_ts', '')}:{user_id}",
                    user=user_id,
                    action=slack_blocks.action_id_of(str(action.get("action_id", ""))),
                    value=str(action.get("value") or _selected(action)),
                    user_name=str(user.get("name") or user.get("username") or ""),
                    refs=refs,
                )
            )
            if reply.text:
                await self._answer(respond, body, channel, user_id, reply.text)

    async def _on_command(self, command: JSON, respond: AsyncRespond) -> None:
        assert self.intake is not None
        reply = await self.intake.interact(
            Interaction(
                channel=Channel.SLACK,
                external_id=f"command:{command.get('trigger_id', '')}",
                user=str(command.get("user_id", "")),
                action="command",
                text=plain_text(str(command.get("text", ""))).strip(),
                user_name=str(command.get("user_name", "")),
            )
        )
        if reply.text:
            await self._answer(
                respond,
                command,
                str(command.get("channel_id", "")),
                str(command.get("user_id", "")),
                reply.text,
            )

    async def _answer(
        self, respond: AsyncRespond, body: JSON, channel: str, user: str, text: str
    ) -> None:
        """Show ``text`` to the person who acted, and only to them."""
        try:
            if body.get("response_url"):
                await respond(
                    text=slack_blocks.escape(text),
                    response_type="ephemeral",
                    replace_original=False,
                )
                return
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            log.warning("Slack response_url failed (%s); trying chat.postEphemeral", err)
        if channel:
            await self._ephemeral(channel, user, text)

    async def _ephemeral(
        self, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> None:
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=slack_blocks.escape(text), thread_ts=thread_ts
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
            log.warning("could not show an ephemeral answer to %s in %s: %s", user, channel, err)

    # -- people -----------------------------------------------------------------------------------

    async def profile(self, user: str) -> tuple[str, str | None]:
        """(real name, email) from users.info, cached; the user id alone when Slack won't say."""
        if user in self._profiles:
            return self._profiles[user]
        try:
            async with asyncio.timeout(self.profile_timeout):  # not wait_for: see core.outbox
                response = await self.client.users_info(user=user)
        except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
            log.warning("users.info %s failed: %s", user, err)
            return user, None  # not cached: the next message asks again
        info: JSON = response.get("user") or {}
        profile: JSON = info.get("profile") or {}
        name = (
            profile.get("real_name")
            or info.get("real_name")
            or profile.get("display_name")
            or info.get("name")
            or user
        )
        found = (str(name), profile.get("email") or None)
        if len(self._profiles) >= PROFILE_CACHE_SIZE:
            self._profiles.pop(next(iter(self._profiles)))  # the oldest
        self._profiles[user] = found
        return found

    # -- outbound ---------------------------------------------------------------------------------

    async def send(self, message: OutboundMessage, idempotency_key: str) -> DeliveryReceipt:
        channel, thread_ts = destination(message.to)
        text = slack_blocks.escape(message.text)  # also the notification's fallback text
        blocks = slack_blocks.render(message)
        key = f"slack:{channel}"
        try:
            if message.replaces:
                # chat.update wants the conversation id; a DM was addressed by user id
                conversation = await self._conversation(channel)
                await self.gate.wait([Pace(key, 1, 1.0)])
                await self.client.chat_update(
                    channel=conversation, ts=message.replaces, text=text, blocks=blocks
                )
                return DeliveryReceipt(message.replaces)
            await self.gate.wait([Pace(key, 1, 1.0)])
            response = await self.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                # shows which outbox row a message came from (and lets tests count duplicates)
                metadata={
                    "event_type": "helpline_message",
                    "event_payload": {"client_msg_id": idempotency_key},
                },
            )
            return DeliveryReceipt(str(response["ts"]))
        except SlackApiError as err:
            raise self._api_failure(err, key) from err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise ChannelUnavailable(f"Slack is unreachable: {err!r}") from err

    async def find_delivered(
        self, message: OutboundMessage, idempotency_key: str, since: datetime
    ) -> DeliveryReceipt | None:
        """The message posted with this outbox key since ``since`` (its metadata names the key),
        from the conversation's history or the thread's replies. An update (chat.update) is
        simply made again."""
        if message.replaces:
            return None
        channel, thread_ts = destination(message.to)
        conversation = await self._conversation(channel)
        args: dict[str, Any] = {
            "channel": conversation,
            "oldest": f"{since.timestamp() - 60:.6f}",  # a minute of clock skew either way
            "include_all_metadata": True,
            "limit": 200,
        }
        read: Callable[..., Awaitable[Any]] = self.client.conversations_history
        if thread_ts:  # replies are not in the history, only in their thread
            read, args["ts"] = self.client.conversations_replies, thread_ts
        try:
            for _ in range(MAX_RECONCILE_PAGES):
                response = await read(**args)
                for item in response.get("messages") or []:
                    payload = (item.get("metadata") or {}).get("event_payload") or {}
                    if payload.get("client_msg_id") == idempotency_key:
                        return DeliveryReceipt(str(item["ts"]))
                cursor = (response.get("response_metadata") or {}).get("next_cursor")
                if not (response.get("has_more") and cursor):
                    return None
                args["cursor"] = cursor
        except SlackApiError as err:
            raise self._api_failure(err, f"slack:{channel}") from err
        return None

    async def _conversation(self, address: str) -> str:
        if not address.startswith(("U", "W")):
            return address
        if address not in self._dms:
            response = await self.client.conversations_open(users=address)
            self._dms[address] = str(response["channel"]["id"])
        return self._dms[address]

    def _api_failure(self, err: SlackApiError, key: str) -> Exception:
        status = err.response.status_code
        error = str(err.response.get("error") or f"HTTP {status}")
        if status == 429:
            retry_after = _retry_after(err.response.headers)
            self.gate.hold(key, retry_after)
            return ChannelUnavailable(f"Slack rate limit: {error}", retry_after=retry_after)
        if status >= 500 or error in TRANSIENT_ERRORS:
            return ChannelUnavailable(f"Slack: {error}")
        return ChannelRejected(f"Slack: {error}")


# -- pure helpers -------------------------------------------------------------------------------


def destination(to: ThreadRef) -> tuple[str, str | None]:
    """(channel, thread_ts): a thread "<channel>:<ts>" names its own channel (a support
    channel's thread), a bare ts threads in ``to.address``."""
    if to.thread and ":" in to.thread:
        channel, _, ts = to.thread.partition(":")
        return channel, ts
    return to.address, to.thread


def is_from_bot(event: JSON, bot_user_id: str | None) -> bool:
    """Ours or any other bot's: customers are people, and bots answering bots loop."""
    return bool(
        event.get("bot_id")
        or event.get("subtype") == "bot_message"
        or (bot_user_id and event.get("user") == bot_user_id)
    )


def message_time(ts: Any) -> datetime | None:
    """When a message was sent, from its ts ("1700000100.000100"); None when it is not one."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (ValueError, OverflowError, OSError):  # "abc", "nan", "1e400", year 300000
        return None


def _raw(event: JSON) -> bytes:
    return json.dumps(event).encode()


def message_text(event: JSON) -> str:
    """The text as a person reads it, with the names and links of shared files."""
    text = plain_text(str(event.get("text") or ""))
    files = [
        f"{f.get('name') or f.get('title') or 'file'}: {f.get('permalink') or ''}".strip()
        for f in event.get("files") or ()
        if isinstance(f, dict)
    ]
    if files:
        text = "\n\n".join(p for p in (text, "Files:\n" + "\n".join(files)) if p)
    return text


def plain_text(text: str) -> str:
    """Slack's wire markup (``<url|label>``, ``<@U1>``, ``&lt;``) to plain text."""

    def one(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target[0] in "@#":
            return f"{target[0]}{label or target[1:]}"
        if target.startswith("!"):
            return "@" + (label or target[1:].split("^", 1)[0])
        shown = target.removeprefix("mailto:")
        return f"{label} ({shown})" if label and label != shown else shown

    text = MARKUP.sub(one, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _selected(action: JSON) -> str:
    """A menu's choice, for completeness: our messages only carry buttons."""
    return str(_obj(action.get("selected_option")).get("value", ""))


def _obj(value: Any) -> JSON:
    """A payload's object field, or {} when it is missing or of another type."""
    return value if isinstance(value, dict) else {}


def _retry_after(headers: Mapping[str, Any]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                break
    return 1.0


def _secret(env: Mapping[str, str], name: str, key: str) -> str:
    value = env.get(name)
    if not value:
        raise ConfigError(f"{key}: environment variable {name} is not set")
    return value


async def _ack(ack: AsyncAck) -> None:
    await ack()


async def _ignore(ack: AsyncAck) -> None:
    await ack()
