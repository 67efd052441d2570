"""Robustness runs for what channels hand us: hypothesis feeds the email parser, the Slack
listeners and the Telegram webhook arbitrary and mutated input. Each must answer with a result
or its documented rejection (``UnparseableEmail``; for chat, the update is handled, ignored or
quarantined), never with another exception, and never hang.

Bounded for CI: ``EXAMPLES`` per test, derandomized (the same inputs every run, so a failure
reproduces), and ``EXAMPLE_SECONDS`` per example. Real payloads are read from the shared
corpus in place (/work/shared/corpus/chat) and mutated.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st
from slack_bolt.async_app import AsyncAck, AsyncBoltContext

from adapters.email_parse import UnparseableEmail, parse_email
from adapters.slack import SlackAdapter
from adapters.telegram import SECRET_HEADER, TelegramAdapter
from core.config import SlackSettings, TelegramSettings
from core.helpdesk import Helpdesk
from core.messages import InboundMessage, Interaction, InteractionReply
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from tests.conftest import make_settings
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

CORPUS = Path("/work/shared/corpus/chat")
EXAMPLES = 150
EXAMPLE_SECONDS = 5.0

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the per-example bound below is what catches a hang
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no "explain": slow, and noisy
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # time_bound is stateless between examples
    ],
)


class Hung(Exception):
    """An example ran past EXAMPLE_SECONDS."""


@pytest.fixture
def time_bound() -> Iterator[Callable[[], Any]]:
    """A context manager factory: SIGALRM interrupts an example that runs too long (the
    parser is synchronous, so a thread-based timeout could not stop it)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hung(f"an example ran over {EXAMPLE_SECONDS}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)

    class Bound:
        def __enter__(self) -> None:
            signal.setitimer(signal.ITIMER_REAL, EXAMPLE_SECONDS)

        def __exit__(self, *exc: object) -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)

    yield Bound
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


# -- strategies -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path in a JSON document."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def apply(doc: Any, edits: list[tuple[tuple[Any, ...], str, Any]]) -> Any:
    """``doc`` with each (path, how, value) edit applied; a path gone by then is skipped."""
    doc = copy.deepcopy(doc)
    for path, how, value in edits:
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            parent[last]  # the path must still exist
        except (KeyError, IndexError, TypeError):
            continue
        if how == "delete":
            del parent[last]
        elif how == "replace":
            parent[last] = value
        else:  # "stringify": the right value with the wrong type, a common producer bug
            parent[last] = json.dumps(parent[last])
    return doc


def mutated(doc: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    edit = st.tuples(
        st.sampled_from(paths(doc)),
        st.sampled_from(["delete", "replace", "stringify"]),
        json_values,
    )
    return st.lists(edit, min_size=1, max_size=4).map(lambda edits: apply(doc, edits))


def corpus(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / name).read_text())


def shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with the keys a handler reads, each present or not, plausible or arbitrary."""
    return st.fixed_dictionaries(
        {}, optional={key: values | json_values for key, values in fields.items()}
    )


# -- email ------------------------------------------------------------------------------------

charsets = st.sampled_from(
    ["utf-8", "iso-8859-1", "windows-1252", "shift_jis", "iso-2022-jp", "gb2312", "utf-7"]
) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
header_names = st.sampled_from(
    [
        "From",
        "To",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Auto-Submitted",
        "Precedence",
        "Return-Path",
        "X-Autoreply",
        "Date",
    ]
) | st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20
)
raw_text = st.binary(max_size=200) | st.text(max_size=200).map(
    lambda t: t.encode("utf-8", "surrogatepass")
)


@st.composite
def encoded_words(draw: st.DrawFn) -> bytes:
    """RFC 2047 encoded-words with real or bogus charsets and damaged payloads."""
    charset = draw(charsets).encode("ascii", "replace")
    encoding = draw(st.sampled_from([b"B", b"Q", b"b", b"q", b"X"]))
    payload = draw(st.binary(max_size=60)).replace(b"?=", b"")
    return b"=?" + charset + b"?" + encoding + b"?" + payload + b"?="


header_values = st.lists(
    raw_text | encoded_words() | st.just(b"\r\n\t") | st.binary(min_size=1000, max_size=20_000),
    max_size=4,
).map(b" ".join)


@st.composite
def mime_parts(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A MIME entity: headers, then a leaf body or (sometimes) a multipart with bad or
    missing boundaries, nested a few levels."""
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
    lines = [name.encode() + b": " + value for name, value in headers]
    if depth < 3 and draw(st.booleans()):
        boundary = draw(st.sampled_from([b"b1", b"", b"b1 b1", b"=_\x00\xff", b"x" * 200]))
        subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"report", b"x"]))
        lines.append(b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"')
        children = draw(st.lists(mime_parts(depth + 1), max_size=3))
        closing = draw(st.sampled_from([b"--" + boundary + b"--", b"", b"--" + boundary]))
        used = draw(st.sampled_from([boundary, boundary + b"x", b"other"]))
        body = b"".join(b"--" + used + b"\r\n" + child + b"\r\n" for child in children) + closing
    else:
        cte = draw(
            st.sampled_from([b"base64", b"quoted-printable", b"7bit", b"8bit", b"x-uue", b"bogus"])
        )
        kind = draw(
            st.sampled_from(
                [
                    b"text/plain",
                    b"text/html",
                    b"application/pdf",
                    b"message/rfc822",
                    b"message/delivery-status",
                    b"image/png",
                ]
            )
        )
        charset = draw(charsets).encode("ascii", "replace")
        lines.append(
            b"Content-Type: "
            + kind
            + b"; charset="
            + charset
            + b'; name="=?'
            + charset
            + b'?B?AAAA?="'
        )
        lines.append(b"Content-Transfer-Encoding: " + cte)
        body = draw(
            raw_text
            | st.binary(max_size=300).map(lambda b: b"=" + b.hex().encode() + b"=\r\n=ZZ=")
            | st.text(
                alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/=\r\n!", max_size=300
            ).map(str.encode)
        )
    newline = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    return newline.join(lines) + newline + newline + body


def parse_or_reject(raw: bytes) -> None:
    note(f"raw={raw!r}")
    try:
        result = parse_email(raw)
    except UnparseableEmail:
        return
    assert isinstance(result, InboundMessage)
    assert isinstance(result.text, str) and isinstance(result.subject, str)


@FUZZ
@given(raw=st.binary(max_size=4096))
@example(raw=b"")
@example(raw=b"\r\n\r\n")
def test_email_parser_takes_arbitrary_bytes(raw: bytes, time_bound: Any) -> None:
    with time_bound():
        parse_or_reject(raw)


@FUZZ
@given(raw=mime_parts())
# found by this test: an 8-bit byte in a uuencoded part came back from compat32 as "\ufffd",
# and encoding that as ASCII raised UnicodeEncodeError
@example(
    raw=b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: x-uue\r\n\r\n\x80"
)
def test_email_parser_takes_broken_mime(raw: bytes, time_bound: Any) -> None:
    with time_bound():
        parse_or_reject(raw)


def test_email_parser_strategy_reaches_real_mail(time_bound: Any) -> None:
    """The strategies above are only worth something if the parser also gets mail it reads:
    a sanity check that a well-formed message goes through."""
    msg = MIMEText("Hello, my printer is on fire.", "plain", "utf-8")
    msg["From"], msg["Subject"] = "Ann <ann@example.org>", "=?utf-8?q?Dr=C3=BCcker?="
    with time_bound():
        parsed = parse_email(msg.as_bytes())
    assert (parsed.sender.email, parsed.subject) == ("ann@example.org", "Drücker")


# -- chat: one event loop for the module, driven from hypothesis's synchronous tests -----------


@dataclass
class RecordingIntake:
    """The Intake port: messages and quarantine go to a real Helpdesk (SQLite); interactions,
    the bots' business, are recorded and answered."""

    desk: Helpdesk
    interactions: list[Interaction] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)

    async def ingest(self, msg: InboundMessage) -> Any:
        return await self.desk.ingest(msg)

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int:
        self.quarantined.append(reason)
        return await self.desk.quarantine(channel, reason, raw)

    async def cursor(self, name: str) -> str | None:
        return await self.desk.cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        await self.desk.save_cursor(name, value)

    async def interact(self, interaction: Interaction) -> InteractionReply:
        self.interactions.append(interaction)
        return InteractionReply("noted")


@dataclass
class Chat:
    loop: asyncio.AbstractEventLoop
    intake: RecordingIntake
    slack: SlackAdapter
    telegram_url: str

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, EXAMPLE_SECONDS))


SLACK_TEAM, SLACK_SUPPORT, TELEGRAM_TEAM = "C0TEAM", "C0SUPPORT", -1001


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    """Real adapters on a private loop: Slack against the fake Web API, Telegram's webhook
    behind a real aiohttp route against the fake Bot API, one Helpdesk behind both."""
    os.environ.setdefault("PTB_TIMEDELTA", "true")  # PTB warns on RetryAfter otherwise
    loop = asyncio.new_event_loop()
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp}/helpline.db"
    db = open_database(url, durable=False)
    upgrade(db)
    intake = RecordingIntake(Helpdesk(db, make_settings(url, tmp), b"fuzz-secret" * 4))

    async def start() -> tuple[Any, ...]:
        slack_api = await FakeSlack().__aenter__()
        slack_settings = SlackSettings(
            enabled=True,
            api_url=slack_api.base_url,
            support_channels=(SLACK_SUPPORT,),
            team_channel=SLACK_TEAM,
        )
        env = {
            "HELPLINE_SLACK_BOT_TOKEN": slack_api.token,
            "HELPLINE_SLACK_SIGNING_SECRET": "s" * 32,
        }
        slack = SlackAdapter.from_settings(slack_settings, env)
        await slack.start(intake)
        tg = await FakeTelegram().__aenter__()
        holder: list[TelegramAdapter] = []

        async def route(request: web.Request) -> web.Response:
            return await holder[0].handle_webhook(request)

        app = web.Application()
        app.router.add_post("/telegram/webhook", route)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        telegram = TelegramAdapter.from_settings(
            TelegramSettings(enabled=True, api_url=tg.origin, team_chat=str(TELEGRAM_TEAM)),
            {"HELPLINE_TELEGRAM_TOKEN": tg.token, "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "fuzz"},
            public_url=f"http://127.0.0.1:{runner.addresses[0][1]}",
        )
        holder.append(telegram)
        await telegram.start(intake)
        return slack_api, slack, tg, telegram, runner

    slack_api, slack, tg, telegram, runner = loop.run_until_complete(start())
    try:
        yield Chat(loop, intake, slack, telegram.webhook_url)
    finally:

        async def stop() -> None:
            await telegram.stop()
            await runner.cleanup()
            await tg.__aexit__(None, None, None)
            await slack.stop()
            await slack_api.__aexit__(None, None, None)
            await db.close()

        loop.run_until_complete(stop())
        loop.close()


# -- Slack: the listeners bolt calls with a verified payload ----------------------------------

slack_ids = st.sampled_from(["D0CUSTOMER", SLACK_SUPPORT, SLACK_TEAM, "C0OTHER", "U0CUSTOMER", ""])
slack_ts = st.sampled_from(["1700000100.000100", "1700000200.000200", "0", "-1", "abc", "1e400"])
slack_events = shaped(
    {
        "type": st.just("message"),
        "subtype": st.sampled_from(
            ["file_share", "thread_broadcast", "bot_message", "message_changed"]
        ),
        "user": slack_ids,
        "channel": slack_ids,
        "channel_type": st.sampled_from(["im", "channel", "group", "mpim"]),
        "ts": slack_ts,
        "thread_ts": slack_ts,
        "text": st.text(max_size=60) | st.just("<@U1|ann> <https://x.test|x> <!here> &lt;"),
        "files": st.lists(
            shaped({"name": st.text(max_size=10), "permalink": st.text(max_size=10)}), max_size=2
        ),
        "bot_id": st.just("B1"),
    }
)
slack_message_corpus = [
    corpus(name)["event"]
    for name in ("slack_event_message.bolt-fixture.json", "slack_event_message_channels.docs.json")
]
slack_action_corpus = corpus("slack_block_actions_button.bolt-fixture.json")
slack_command = {
    "token": "t",
    "team_id": "T1",
    "channel_id": SLACK_TEAM,
    "user_id": "U0AGENT",
    "user_name": "bob",
    "command": "/helpline",
    "text": "claim 1",
    "response_url": "",
    "trigger_id": "1.2.3",
}


async def noop_respond(**kwargs: Any) -> None:
    """Stands in for bolt's respond(): the answer's delivery is Slack's side, not this test's."""


@FUZZ
@given(
    event=slack_events
    | st.sampled_from(slack_message_corpus).flatmap(mutated)
    | st.sampled_from(slack_message_corpus)
    .map(lambda e: {**e, "channel_type": "im"})
    .flatmap(mutated)
)
# found by this test: a message event without ts, or with one float() refuses, raised (bolt
# answered 500 and Slack retried what could never succeed); now it is quarantined
@example(event={"type": "message", "user": "U1", "channel": "D1", "channel_type": "im"})
@example(
    event={"type": "message", "user": "U1", "channel": "D1", "channel_type": "im", "ts": "None"}
)
@example(
    event={"type": "message", "user": "U1", "channel": "D1", "channel_type": "im", "ts": "1e400"}
)
@example(event={"type": "message", "user": "U1", "channel": SLACK_TEAM, "thread_ts": "1.0"})
def test_slack_message_listener_handles_any_event(chat: Chat, event: dict[str, Any]) -> None:
    note(f"event={json.dumps(event)}")
    context = AsyncBoltContext({"bot_user_id": "U0HELPBOT"})
    chat.run(chat.slack._on_message(event, context, AsyncAck()))


@FUZZ
@given(
    body=st.just(slack_action_corpus).flatmap(mutated)
    | shaped({key: st.just(value) for key, value in slack_action_corpus.items()})
)
# found by this test: a field of another type than Slack documents (a list for an object, null
# in the actions) raised AttributeError/TypeError in the click's lazy listener
@example(body={"type": "block_actions", "container": [None], "actions": []})
@example(body={"type": "block_actions", "container": 1.0, "user": "W111"})
@example(body={"type": "block_actions", "actions": [None]})
@example(body={"type": "block_actions", "actions": None})
@example(body={"type": "block_actions", "actions": '[{"action_id": "a"}]'})
def test_slack_action_listener_handles_any_click(chat: Chat, body: dict[str, Any]) -> None:
    note(f"body={json.dumps(body)}")
    chat.run(chat.slack._on_action(body, noop_respond))


@FUZZ
@given(command=st.just(slack_command).flatmap(mutated))
# found by this test: a command without user_id raised KeyError when answering
@example(command={k: v for k, v in slack_command.items() if k != "user_id"})
def test_slack_command_listener_handles_any_command(chat: Chat, command: dict[str, Any]) -> None:
    note(f"command={json.dumps(command)}")
    chat.run(chat.slack._on_command(command, noop_respond))


# -- Telegram: the webhook, which parses, quarantines or hands the update on ------------------

telegram_corpus = [corpus(path.name) for path in sorted(CORPUS.glob("telegram_update_*.json"))]
telegram_updates = st.sampled_from(telegram_corpus).flatmap(mutated) | shaped(
    {
        "update_id": st.integers(),
        "message": st.sampled_from([u["message"] for u in telegram_corpus if "message" in u]),
        "callback_query": st.sampled_from(
            [u["callback_query"] for u in telegram_corpus if "callback_query" in u]
        ),
    }
)


async def post_update(chat: Chat, body: bytes) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", SECRET_HEADER: "fuzz"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(chat.telegram_url, data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


callback = next(u for u in telegram_corpus if "callback_query" in u)
message = next(u for u in telegram_corpus if "message" in u)


@FUZZ
@given(update=telegram_updates | st.dictionaries(st.text(max_size=12), json_values, max_size=5))
# found by this test: PTB parses a callback query without "from", and reading the clicker's id
# raised AttributeError: a 500, which Telegram would have delivered again for hours
@example(
    update={
        **callback,
        "callback_query": {k: v for k, v in callback["callback_query"].items() if k != "from"},
    }
)
# ... and so did a message without "chat" (now quarantined), or a click on one
@example(
    update={
        **callback,
        "callback_query": {
            **callback["callback_query"],
            "message": {
                k: v for k, v in callback["callback_query"]["message"].items() if k != "chat"
            },
        },
    }
)
@example(
    update={**message, "message": {k: v for k, v in message["message"].items() if k != "chat"}}
)
# ... and a "text" that is not a string (PTB does not check types) raised TypeError
@example(update={**message, "message": {**message["message"], "text": True}})
# ... and so did a button's "data" that is not a string (AttributeError)
@example(update={**callback, "callback_query": {**callback["callback_query"], "data": []}})
def test_telegram_webhook_handles_any_update(chat: Chat, update: dict[str, Any]) -> None:
    # 500 means "not stored, deliver again": right for a database failure, a retry loop for
    # an update that can never be handled
    note(f"update={json.dumps(update)}")
    status, text = chat.run(post_update(chat, json.dumps(update).encode()))
    assert status == 200, (status, text)


def test_telegram_fuzzing_reaches_the_handlers(chat: Chat) -> None:
    """Guards the strategy: corpus updates are handled, not all quarantined as unparseable."""
    before = len(chat.intake.interactions), len(chat.intake.quarantined)
    for update in telegram_corpus:
        status, _ = chat.run(post_update(chat, json.dumps(update).encode()))
        assert status == 200
    interactions, quarantined = len(chat.intake.interactions), len(chat.intake.quarantined)
    assert interactions > before[0]  # the callback query became an Interaction
    assert quarantined - before[1] < len(telegram_corpus)
