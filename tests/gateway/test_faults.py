"""Fault injection: the real server against fake Slack, Telegram and SMTP relay servers that
fail a share of the calls, and a database that loses its connections under load.

- The platforms answer ~30% of the sends 429 (with Retry-After), 5xx, or hang past the
  client's timeout *without processing the call* (seeded: the same calls fail on every run);
  the relay refuses connections for a stretch, then answers 451 for another, then recovers.
  Every outbox row must end ``sent``, every row must have reached its fake exactly once as an
  accepted delivery, and no request may reach a destination before the Retry-After it was
  answered has elapsed.
- A call the platform *processed* before hanging is delivered again: delivery is at least
  once, and the window is that of a crash between send and record (tests/gateway/test_crash.py).
- PostgreSQL: the server's connections are terminated a few times while clients post; every
  acknowledged message is stored once and the server keeps serving.

Loopback only; the whole file takes about a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import select

from adapters.slack import SlackAdapter
from core.persistence.models import Ticket, table_of
from core.persistence.records import outbox
from core.ratelimit import Pace, RateGate
from gateway.state import INBOUND
from tests.conftest import Server, ServerFactory
from tests.fakes.signing import signed_json
from tests.fakes.slack_api import FakeSlack, FaultMix, RecordedCall
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.telegram_api import FakeTelegram

SECRET = "slack-signing-secret"
TG_SECRET = "tg-secret-123"
PER_CHANNEL = 70  # customers per channel: Telegram, Slack DMs, email (the API)
CONCURRENCY = 16
SLACK_TIMEOUT = 2  # the Slack client's timeout in these tests (slack_sdk's default is 30 s)
TELEGRAM_TIMEOUT = 5.0  # python-telegram-bot's default read timeout
CLOCK_SLACK = 0.05  # seconds: the two ends of the wire read the clock at different moments
DRAIN_SECONDS = 40
SEND_METHODS = {
    "slack": frozenset({"chat.postMessage", "chat.update"}),
    "telegram": frozenset({"sendMessage", "editMessageText"}),
}


def chaos(channel: str, hang: float) -> FaultMix:
    return FaultMix(
        rate=0.3,
        methods=SEND_METHODS[channel],
        weights={"429": 1.0, "5xx": 1.0, "hang": 1.0},
        retry_after=(1, 2, 3),  # longer than the pacing (1/s per chat) on purpose
        hang=hang,
    )


@dataclass
class Fakes:
    slack: FakeSlack
    telegram: FakeTelegram
    sink: SmtpSink


@contextlib.asynccontextmanager
async def fakes(faulty: bool, seed: int = 7) -> AsyncIterator[Fakes]:
    slack_faults = chaos("slack", SLACK_TIMEOUT + 1.0) if faulty else None
    telegram_faults = chaos("telegram", TELEGRAM_TIMEOUT + 1.0) if faulty else None
    async with (
        FakeSlack(faults=slack_faults, seed=seed) as slack,
        FakeTelegram(faults=telegram_faults, seed=seed) as telegram,
        SmtpSink() as sink,
    ):
        yield Fakes(slack, telegram, sink)


async def serve(
    server_factory: ServerFactory, db_url: str | None, f: Fakes, **tables: Any
) -> Server:
    env = {
        "HELPLINE_SLACK_BOT_TOKEN": f.slack.token,
        "HELPLINE_SLACK_SIGNING_SECRET": SECRET,
        "HELPLINE_TELEGRAM_TOKEN": f.telegram.token,
        "HELPLINE_TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
    }
    server: Server = await server_factory(
        db_url,
        env=env,
        slack={"enabled": True, "api_url": f.slack.base_url},
        telegram={"enabled": True, "api_url": f.telegram.origin},
        email={
            "relay": {
                "host": "127.0.0.1",
                "port": f.sink.port,
                "starttls": False,
                "timeout_seconds": 3,
            }
        },
        intake={"rate_limit_per_minute": 1_000_000, "rate_limit_per_identity_per_minute": 1000},
        outbox={
            "poll_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 1.0,
            "max_attempts": 50,  # the relay is down for seconds: more tries than the default
        },
        **tables,
    )
    for source in server.app[INBOUND]:
        if isinstance(source, SlackAdapter):
            source.client.timeout = SLACK_TIMEOUT
    return server


# -- customers ---------------------------------------------------------------------------------


def slack_dm(i: int, text: str) -> dict[str, Any]:
    user = f"U{1000 + i}"
    ts = f"{1700000000 + i}.000100"
    return {
        "token": "legacy",
        "team_id": "T0HELPLINE",
        "api_app_id": "A0HELPLINE",
        "type": "event_callback",
        "event_id": f"EvDm{i}",
        "event_time": 1700000000 + i,
        "authorizations": [{"team_id": "T0HELPLINE", "user_id": "U0HELPBOT", "is_bot": True}],
        "event": {
            "type": "message",
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel": f"D{1000 + i}",
            "channel_type": "im",
        },
    }


def telegram_update(i: int, text: str) -> dict[str, Any]:
    chat = 7_000_000 + i
    return {
        "update_id": 10_000 + i,
        "message": {
            "message_id": 1,
            "from": {"id": chat, "is_bot": False, "first_name": f"Tg{i}"},
            "chat": {"id": chat, "type": "private", "first_name": f"Tg{i}"},
            "date": int(time.time()),
            "text": text,
        },
    }


async def post_ok(
    http: aiohttp.ClientSession, url: str, *, tries: int = 200, **kwargs: Any
) -> dict[str, Any]:
    """POST until a 2xx, retrying 5xx and connection errors with the same request (and so the
    same idempotency key); returns the JSON body or {}."""
    for attempt in range(tries):
        try:
            async with http.post(url, **kwargs) as response:
                if response.status < 300:
                    if response.content_type == "application/json":
                        return dict(await response.json())
                    return {}
                assert response.status >= 500, f"{url}: {response.status} {await response.text()}"
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(min(0.5, 0.02 * (attempt + 1)))
    raise AssertionError(f"{url} never answered 2xx")


async def customers_write(server: Server, f: Fakes, n: int) -> None:
    """n customers on each channel open a ticket."""
    for i in range(n):
        f.slack.add_user(f"U{1000 + i}", f"user{i}", f"User {i}", None)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(http: aiohttp.ClientSession, channel: str, i: int) -> None:
        async with gate:
            text = f"{channel} customer {i} needs help"
            if channel == "telegram":
                body = json.dumps(telegram_update(i, text)).encode()
                headers = {
                    "X-Telegram-Bot-Api-Secret-Token": TG_SECRET,
                    "Content-Type": "application/json",
                }
                await post_ok(
                    http, f"{server.base_url}/telegram/webhook", data=body, headers=headers
                )
            elif channel == "slack":
                body, headers = signed_json(SECRET, slack_dm(i, text))
                await post_ok(http, f"{server.base_url}/slack/events", data=body, headers=headers)
            else:
                await post_ok(
                    http,
                    f"{server.base_url}/api/v1/messages",
                    json={"email": f"c{i}@example.org", "subject": f"Mail {i}", "body": text},
                    headers={"Idempotency-Key": f"mail-{i}"},
                )

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            *(one(http, ch, i) for i in range(n) for ch in ("telegram", "slack", "email"))
        )


async def agents_reply(server: Server) -> int:
    """An agent answers every ticket through the API; returns how many."""
    token, _ = await server.token("agent")
    numbers = await ticket_numbers(server)
    async with aiohttp.ClientSession() as http:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(number: int) -> None:
            async with (
                gate,
                http.post(
                    f"{server.base_url}/api/v1/tickets/{number}/replies",
                    json={"text": f"Agent reply to ticket {number}"},
                    headers={"Authorization": f"Bearer {token}"},
                ) as response,
            ):
                assert response.status in (200, 201), await response.text()

        await asyncio.gather(*(one(n) for n in numbers))
    return len(numbers)


async def ticket_numbers(server: Server) -> list[int]:
    t = table_of(Ticket)
    return await server.helpdesk.db.read(
        lambda c: [int(n) for n in c.execute(select(t.c.number).order_by(t.c.number)).scalars()]
    )


# -- what reached the fakes --------------------------------------------------------------------


async def outbox_rows(server: Server) -> list[Any]:
    return await server.helpdesk.db.read(
        lambda c: c.execute(select(outbox).order_by(outbox.c.id)).all()
    )


async def drained(server: Server, deadline: float) -> list[Any]:
    while True:
        rows = await outbox_rows(server)
        if all(r.status in ("sent", "dead") for r in rows):
            return rows
        left = Counter(r.status for r in rows if r.status not in ("sent",))
        assert time.monotonic() < deadline, f"outbox not drained: {dict(left)}"
        await asyncio.sleep(0.2)


def slack_destination(call: RecordedCall) -> str:
    channel = str(call.params.get("channel", ""))
    return "D" + channel[1:] if channel.startswith(("U", "W")) else channel  # the DM of a user


def telegram_destination(call: RecordedCall) -> str:
    return str(call.params.get("chat_id", ""))


def retry_after_violations(
    calls: list[RecordedCall], destination: Callable[[RecordedCall], str]
) -> list[str]:
    """Requests that reached a destination before the Retry-After it was answered elapsed."""
    by_destination: dict[str, list[RecordedCall]] = {}
    for call in calls:
        by_destination.setdefault(destination(call), []).append(call)
    found = []
    for where, seen in by_destination.items():
        for limited in seen:
            if limited.status != 429 or limited.answered_at is None:
                continue
            assert limited.retry_after is not None
            until = limited.answered_at + limited.retry_after - CLOCK_SLACK
            for later in seen:
                if limited.answered_at < later.at < until:
                    found.append(
                        f"{where}: {later.method} {until - later.at:.2f}s before the "
                        f"Retry-After of {limited.retry_after}s ran out"
                    )
    return found


def fault_kinds(calls: list[RecordedCall]) -> Counter[str]:
    return Counter(
        "429" if c.status == 429 else c.fault if c.fault != "status" else "5xx"
        for c in calls
        if c.faulted
    )


def check_exactly_once(rows: list[Any], f: Fakes) -> Counter[str]:
    """Every row sent, and each reached its fake once as an accepted delivery."""
    assert Counter(r.status for r in rows) == {"sent": len(rows)}, [
        (r.idempotency_key, r.status, r.last_error) for r in rows if r.status != "sent"
    ][:5]
    by_channel = Counter(r.channel for r in rows)
    slack_posts = f.slack.post_counts("client_msg_id")
    mails = f.sink.counts()
    telegram_sent = Counter((str(m["chat"]["id"]), m["text"]) for m in f.telegram.sent)
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
        if row.channel == "slack" and not payload.get("replaces"):
            assert slack_posts[row.idempotency_key] == 1, row.idempotency_key
        elif row.channel == "telegram" and not payload.get("replaces"):
            # Telegram has no idempotency key: the row's chat and text, and the message id
            # the fake gave it, name the delivery
            assert telegram_sent[(row.address, payload["text"])] == 1, row.idempotency_key
            assert (int(row.address), int(row.external_id)) in f.telegram.messages
        elif row.channel == "email":
            assert mails[f"<{payload['message_id']}>"] == 1, row.idempotency_key
    posts = sum(1 for r in rows if r.channel == "slack" and not r.payload.get("replaces"))
    sends = sum(1 for r in rows if r.channel == "telegram" and not r.payload.get("replaces"))
    assert len(f.slack.posted) == posts  # nothing else (no second delivery) reached the fakes
    assert len(f.telegram.sent) == sends
    assert len(f.sink.received) == by_channel["email"]
    return by_channel


# -- the tests ---------------------------------------------------------------------------------


async def test_flaky_platforms_and_a_relay_outage_lose_and_repeat_nothing(
    server_factory: ServerFactory, db_url: str
) -> None:
    began = time.monotonic()
    async with fakes(faulty=True) as f:
        server = await serve(server_factory, db_url, f)
        # the relay is down from the start: first refusing connections, then answering 451
        await f.sink.outage(3)
        load = asyncio.create_task(customers_write(server, f, PER_CHANNEL))
        await asyncio.sleep(3.2)
        await f.sink.outage(3, "451 4.3.0 relay busy, try again later")
        await load
        written = time.monotonic()
        replies = await agents_reply(server)
        rows = await drained(server, time.monotonic() + DRAIN_SECONDS)
        done = time.monotonic()

        by_channel = check_exactly_once(rows, f)
        assert (
            by_channel["slack"] == by_channel["telegram"] == by_channel["email"] == 2 * PER_CHANNEL
        )
        assert replies == 3 * PER_CHANNEL
        # Retry-After was honoured, per destination
        slack_calls = [c for c in f.slack.calls if c.method in SEND_METHODS["slack"]]
        tg_calls = [c for c in f.telegram.calls if c.method in SEND_METHODS["telegram"]]
        assert retry_after_violations(slack_calls, slack_destination) == []
        assert retry_after_violations(tg_calls, telegram_destination) == []
        # the faults did happen, at about the rate asked for
        for calls in (slack_calls, tg_calls):
            kinds = fault_kinds(calls)
            assert kinds["429"] and kinds["5xx"] and kinds["hang"], kinds
            assert 0.2 < sum(kinds.values()) / len(calls) < 0.4
        # the relay's outage: deferred mails were retried; nothing got through while it was down
        assert f.sink.deferred
        retried = Counter(r.attempts for r in rows if r.channel == "email")
        assert max(retried) > 1
        print(
            f"\nfaults ({db_url.split(':')[0]}): {3 * PER_CHANNEL} customers in "
            f"{written - began:.1f}s, {replies} replies, {len(rows)} rows {dict(by_channel)} "
            f"drained at {done - began:.1f}s; slack {dict(fault_kinds(slack_calls))} of "
            f"{len(slack_calls)} calls, telegram {dict(fault_kinds(tg_calls))} of "
            f"{len(tg_calls)}; relay deferred {len(f.sink.deferred)} mails; attempts per "
            f"email row {dict(sorted(retried.items()))}"
        )


async def test_database_connections_killed_under_load_lose_no_acknowledged_message(
    server_factory: ServerFactory, pg_url: str
) -> None:
    """PostgreSQL restarts (here: every server connection terminated, three times) while
    clients post; they retry 5xx and connection errors with the same Idempotency-Key."""
    server = await server_factory(
        pg_url,
        intake={"rate_limit_per_minute": 1_000_000, "rate_limit_per_identity_per_minute": 1000},
    )
    database = pg_url.rsplit("/", 1)[-1]
    admin = await asyncpg.connect(pg_url)
    acked: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    killed: list[int] = []
    sent: list[str] = []
    minimum = 300
    restarted = asyncio.Event()  # the load lasts until the three restarts are done, however
    numbers = itertools.count()  # fast the machine serves it: each must find connections

    async def client(http: aiohttp.ClientSession) -> None:
        while (i := next(numbers)) < minimum or not restarted.is_set():
            await post(http, i)

    async def post(http: aiohttp.ClientSession, i: int) -> None:
        key = f"db-restart-{i}"
        sent.append(key)
        body = {"email": f"d{i}@example.org", "subject": f"Question {i}", "body": f"Text {i}"}
        for attempt in range(200):
            try:
                async with http.post(
                    f"{server.base_url}/api/v1/messages",
                    json=body,
                    headers={"Idempotency-Key": key},
                ) as response:
                    if response.status in (200, 201):
                        acked[key] += 1
                        return
                    assert response.status >= 500, await response.text()
                    errors[f"http {response.status}"] += 1
            except (aiohttp.ClientError, TimeoutError) as err:
                errors[type(err).__name__] += 1
            await asyncio.sleep(min(0.5, 0.02 * (attempt + 1)))
        raise AssertionError(f"{key} was never acknowledged")

    async def restarts() -> None:
        for _ in range(3):
            await asyncio.sleep(0.6)
            killed.append(
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            )
        restarted.set()

    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)), restarts())
            assert len(killed) == 3 and all(killed), killed  # connections were there to kill
            # the server keeps serving: the next health check and the next message succeed
            async with http.get(f"{server.base_url}/healthz") as response:
                assert response.status == 200, await response.text()
            async with http.post(
                f"{server.base_url}/api/v1/messages",
                json={"email": "after@example.org", "subject": "After", "body": "Still there?"},
            ) as response:
                assert response.status == 201, await response.text()
        stored = Counter(
            {
                r["external_id"]: r["n"]
                for r in await admin.fetch(
                    "SELECT external_id, count(*) AS n FROM messages WHERE channel = 'api' "
                    "AND external_id LIKE 'db-restart-%' GROUP BY external_id"
                )
            }
        )
        assert set(acked) == set(stored) == set(sent) and len(sent) >= minimum
        assert set(stored.values()) == {1}
        print(f"\ndatabase restarts: killed {killed} connections; client retries {dict(errors)}")
    finally:
        await admin.close()


async def test_a_send_processed_then_hung_is_delivered_again(
    server_factory: ServerFactory,
) -> None:
    """The at-least-once window: the platform took the message but its answer never came (a
    timeout). The outbox cannot tell this from a send that never arrived and sends again; Slack
    and the relay see the same key/Message-ID twice, Telegram a second, identical message."""
    async with fakes(faulty=False) as f:
        server = await serve(server_factory, None, f)
        f.slack.hang_next(1, SLACK_TIMEOUT + 1.0, method="chat.postMessage", after=True)
        f.telegram.hang_next(1, TELEGRAM_TIMEOUT + 1.0, method="sendMessage", after=True)
        f.sink.hang_next(4.0)  # the relay's timeout is 3 s
        await customers_write(server, f, 1)
        rows = await drained(server, time.monotonic() + 20)

        assert Counter(r.status for r in rows) == {"sent": 3}
        assert {r.channel: r.attempts for r in rows} == {"slack": 2, "telegram": 2, "email": 2}
        by_channel = {r.channel: r for r in rows}
        assert f.slack.post_counts("client_msg_id") == {by_channel["slack"].idempotency_key: 2}
        [(mail_id, mails)] = f.sink.counts().items()
        assert mail_id == f"<{by_channel['email'].payload['message_id']}>" and mails == 2
        # Telegram: the same text twice in the chat; the row names the second message
        texts = Counter(m["text"] for m in f.telegram.sent)
        assert list(texts.values()) == [2]
        first, second = f.telegram.sent
        assert by_channel["telegram"].external_id == str(second["message_id"])
        assert first["text"] == second["text"]


async def test_a_retry_after_binds_a_slot_booked_before_it() -> None:
    """Regression (found by the flaky-platform test): two rows to one chat in a batch; the
    first is answered 429 "retry after 3 s" while the second sleeps towards the slot it booked
    1 s later. It left at that slot, 2 s before the platform allowed: RateGate.wait checked
    the real departures after sleeping, but not the holds."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)  # the other sender runs meanwhile
        now[0] += seconds

    gate = RateGate(clock=lambda: now[0], sleep=sleep)
    chat = [Pace("tg:42", 1, 1.0)]
    await gate.wait(chat)  # the first message leaves at 0 ...
    second = asyncio.create_task(gate.wait(chat))  # ... the second books ~1.02 and sleeps
    await asyncio.sleep(0)
    gate.hold("tg:42", 3.0)  # the first was answered 429, retry after 3 s
    await second
    assert now[0] >= 3.0
