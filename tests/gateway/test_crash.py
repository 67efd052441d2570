"""Three `helpline serve` processes on one PostgreSQL database, one of them killed (SIGKILL)
mid-run and restarted, under customer messages (5,000 in the full run; see TOTAL) sent
concurrently over HTTP and SMTP by clients that retry on connection errors (same
Idempotency-Key / Message-ID, at another process).

At the end, with the outbox drained:
- every acknowledged message (HTTP 2xx, SMTP 250) is stored exactly once;
- every outbound row reached the fake Slack / Telegram / SMTP relay once. Slack: exactly once
  even for a row the killed process had delivered but not marked (the survivor finds it by
  the key in its metadata, ``find_delivered``). Telegram and SMTP have no such look-up: only
  a row the killed process had in flight may have arrived twice (at least once across a
  crash), and the test reports how many did;
- every SLA breach (a 6-second first-response target on "outage" tickets) fired once, with one
  ping per supervisor, although the killed process was the leader running the sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.fakes.slack_api import FakeSlack
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.telegram_api import FakeTelegram
from tests.gateway.test_cli import free_port

PROCESSES = 3
# The full run is CRASH_TOTAL=5000 CRASH_DEADLINE=900 (352 s on a shared 2-core machine). The
# default fits the suite's time bound: every new ticket takes the ticket-number counter row,
# locked until its commit, so new tickets are opened one at a time across all processes.
TOTAL = int(os.environ.get("CRASH_TOTAL", 1200))
SMTP_EVERY = 5  # every 5th message comes by SMTP (of 5,000: 1,000 mails, 4,000 HTTP)
URGENT_EVERY = 150  # every 150th is an "outage": urgent, 6 s to a first response, breaches
HTTP_CONCURRENCY = 32
SMTP_THREADS = 6
KILL_AFTER = 0.4  # the leader is killed when this share of the messages is acknowledged
FIRST_RESPONSE_SECONDS = 6
SUPERVISORS = ["slack:U0BOSS", "telegram:4242", "email:lead@example.com"]
NOTIFY = ["slack:U0ONCALL", "telegram:5151"]  # told of every new outage ticket
# the whole test, start-up to verdict
DEADLINE_SECONDS = float(os.environ.get("CRASH_DEADLINE", 170))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(DEADLINE_SECONDS + 120)]


def is_urgent(i: int) -> bool:
    return i % URGENT_EVERY == 7


def by_smtp(i: int) -> bool:
    return i % SMTP_EVERY == 0


def text_of(i: int) -> str:
    return f"We have an outage at site {i}" if is_urgent(i) else f"Question number {i}"


@dataclass
class Node:
    """One `helpline serve` process: its own HTTP and SMTP port, its config in a file."""

    index: int
    config: Path
    http_port: int
    smtp_port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log(self) -> Path:
        return self.config.with_suffix(".log")

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "--config", str(self.config), "serve"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.config.parent,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def errors(self) -> int:
        return sum(" ERROR " in line for line in self.log.read_text(errors="replace").splitlines())


def write_config(
    path: Path, node: int, http_port: int, smtp_port: int, db: str, fakes: Fakes
) -> None:
    path.write_text(
        f"""
[service]
port = {http_port}
public_url = "http://127.0.0.1:{http_port}"
data_dir = "{path.parent / ("data-" + str(node))}"
log_level = "warning"
leader_retry_seconds = 1

[database]
url = "{db}"
pool_size = 5

[intake]
rate_limit_per_minute = 1000000

[outbox]
poll_seconds = 0.2
lease_seconds = 20
backoff_base_seconds = 0.5
backoff_max_seconds = 2

[email]
addresses = ["support@example.com"]
from_address = "support@example.com"

[email.smtp_server]
host = "127.0.0.1"
port = {smtp_port}

[email.relay]
host = "127.0.0.1"
port = {fakes.sink.port}
starttls = false
timeout_seconds = 10

[slack]
enabled = true
api_url = "{fakes.slack.base_url}"

[telegram]
enabled = true
mode = "polling"
api_url = "{fakes.telegram.origin}"

[bots]
supervisors = {list(SUPERVISORS)!r}

[scheduler]
sla_sweep_seconds = 1
digest_time = ""

[[rules]]
name = "outage"
when = {{ keywords = ["outage"] }}
then = {{ priority = "urgent", notify = {list(NOTIFY)!r} }}

[[sla.policies]]
name = "outage"
priorities = ["urgent"]
first_response_minutes = {FIRST_RESPONSE_SECONDS / 60}
resolution_minutes = 6000
warn_at = 0
""".replace("'", '"')
    )


@dataclass
class Fakes:
    slack: FakeSlack
    telegram: FakeTelegram
    sink: SmtpSink


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    async with FakeSlack() as slack, FakeTelegram() as telegram, SmtpSink() as sink:
        yield Fakes(slack, telegram, sink)


@dataclass
class Clients:
    """What the clients saw: acknowledged keys, and how often they had to try again."""

    http_acked: set[str] = field(default_factory=set)
    smtp_acked: set[str] = field(default_factory=set)
    retries: Counter[str] = field(default_factory=Counter)
    duplicates_answered: int = 0  # a retry answered "already have it" (HTTP 200)

    @property
    def acked(self) -> int:
        return len(self.http_acked) + len(self.smtp_acked)


async def submit_http(
    http: aiohttp.ClientSession, i: int, nodes: list[Node], seen: Clients
) -> None:
    key = f"crash-{i}"
    body = {"email": f"c{i}@example.org", "subject": f"Message {i}", "body": text_of(i)}
    for attempt in range(400):
        node = nodes[(i + attempt) % len(nodes)]  # a retry goes to the next process, as an LB
        try:
            async with http.post(
                f"{node.base}/api/v1/messages", json=body, headers={"Idempotency-Key": key}
            ) as response:
                if response.status in (200, 201):
                    seen.http_acked.add(key)
                    seen.duplicates_answered += response.status == 200
                    return
                assert response.status >= 500, await response.text()  # 5xx: try again
                seen.retries[f"http {response.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as err:
            seen.retries[f"http {type(err).__name__}"] += 1
        await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
    raise AssertionError(f"message {key} was never acknowledged")


def submit_smtp(i: int, nodes: list[Node], seen: Clients) -> None:
    """A sending MTA: another try (here: at another process) until a 250 or a 5xx."""
    mail = EmailMessage()
    mail["From"] = f"c{i}@example.org"
    mail["To"] = "support@example.com"
    mail["Subject"] = f"Message {i}"
    mail["Message-ID"] = f"<crash-{i}@customer.test>"
    mail.set_content(text_of(i))
    raw = mail.as_bytes()
    for attempt in range(400):
        node = nodes[(i + attempt) % len(nodes)]
        try:
            smtp = smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=30)
            try:
                smtp.sendmail(mail["From"], ["support@example.com"], raw)
            finally:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.quit()
            seen.smtp_acked.add(f"crash-{i}@customer.test")
            return
        except smtplib.SMTPResponseException as err:
            assert err.smtp_code < 500, f"mail {i} refused: {err}"
            seen.retries[f"smtp {err.smtp_code}"] += 1
        except (smtplib.SMTPException, OSError) as err:
            seen.retries[f"smtp {type(err).__name__}"] += 1
        time.sleep(min(1.0, 0.05 * (attempt + 1)))
    raise AssertionError(f"mail {i} was never accepted")


async def healthy(node: Node, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            assert node.proc is not None and node.proc.poll() is None, (
                f"process {node.index} exited:\n{node.log.read_text()[-3000:]}"
            )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{node.base}/healthz") as response:
                    if response.status == 200:
                        return dict(await response.json())
            assert time.monotonic() < deadline, f"process {node.index} did not come up"
            await asyncio.sleep(0.2)


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.5)


async def test_three_processes_one_killed_nothing_lost_nothing_twice(
    tmp_path: Path, pg_url: str, fakes: Fakes
) -> None:
    began = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env |= {
        "HELPLINE_SECRET_KEY": "crash-test-shared-secret-key",  # one key: links work anywhere
        "HELPLINE_SLACK_BOT_TOKEN": fakes.slack.token,
        "HELPLINE_SLACK_SIGNING_SECRET": "crash-test-signing-secret",
        "HELPLINE_TELEGRAM_TOKEN": fakes.telegram.token,
    }
    nodes = []
    for n in range(PROCESSES):
        config = tmp_path / f"helpline-{n}.toml"
        http_port, smtp_port = free_port(), free_port()
        write_config(config, n, http_port, smtp_port, pg_url, fakes)
        nodes.append(Node(n, config, http_port, smtp_port, env))
    db = await asyncpg.connect(pg_url)
    pool = ThreadPoolExecutor(SMTP_THREADS, thread_name_prefix="mta")
    seen = Clients()
    try:
        nodes[0].start()  # the first leads: started alone, it takes the lock first
        await healthy(nodes[0])
        for node in nodes[1:]:
            node.start()
        health = [await healthy(node) for node in nodes]
        assert [h["leader"] for h in health] == [True, False, False]
        started = time.monotonic()

        # -- the load, and the kill in the middle of it ----------------------------------------
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(TOTAL):
            if not by_smtp(i):
                queue.put_nowait(i)

        async def http_worker(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                await submit_http(http, queue.get_nowait(), nodes, seen)

        in_flight: set[str] = set()
        killed: dict[str, float] = {}

        async def kill_the_leader() -> None:
            await until(
                lambda: seen.acked >= KILL_AFTER * TOTAL, DEADLINE_SECONDS, "load before the kill"
            )
            (leader,) = [n for n in nodes if (await healthy(n))["leader"]]
            leader.kill()
            killed["at"] = time.monotonic()
            # rows the dead process may have sent but not marked: their lease (20 s) keeps
            # them "sending" until another process takes them again
            rows = await db.fetch("SELECT idempotency_key FROM outbox WHERE status = 'sending'")
            in_flight.update(r["idempotency_key"] for r in rows)
            survivors = [n for n in nodes if n is not leader]
            await until(lambda: one_leader(survivors), 20, "a survivor takes the lead")
            killed["takeover"] = time.monotonic()
            leader.start()  # same ports, same configuration
            await healthy(leader)
            killed["back"] = time.monotonic()
            assert await one_leader(nodes)  # the restarted process follows

        async def progress() -> None:
            while seen.acked < TOTAL:
                await asyncio.sleep(5)
                print(f"{time.monotonic() - started:5.1f}s: {seen.acked} acknowledged", flush=True)

        async def one_leader(among: list[Node]) -> bool:
            return sum([(await healthy(n))["leader"] for n in among]) == 1

        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=HTTP_CONCURRENCY)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            mails = [
                loop.run_in_executor(pool, submit_smtp, i, nodes, seen)
                for i in range(TOTAL)
                if by_smtp(i)
            ]
            await asyncio.gather(
                *(http_worker(http) for _ in range(HTTP_CONCURRENCY)),
                *mails,
                kill_the_leader(),
                progress(),
            )
        sent_in = time.monotonic() - started
        assert seen.acked == TOTAL

        # -- the drain: every row out, every breach fired ----------------------------------
        urgent = sum(1 for i in range(TOTAL) if is_urgent(i))

        async def drained() -> bool:
            pending = await db.fetchval(
                "SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')"
            )
            breaches = await db.fetchval(
                "SELECT count(*) FROM ticket_events WHERE kind = 'sla_breach'"
            )
            return pending == 0 and breaches >= urgent

        await until(drained, max(10, DEADLINE_SECONDS - (time.monotonic() - began)), "drain")
        drained_in = time.monotonic() - started

        # -- inbound: every acknowledged message stored exactly once -------------------------
        stored = Counter(
            {
                (r["channel"], r["external_id"]): r["n"]
                for r in await db.fetch(
                    "SELECT channel, external_id, count(*) AS n FROM messages "
                    "WHERE author = 'customer' GROUP BY channel, external_id"
                )
            }
        )
        expected = {("api", k) for k in seen.http_acked} | {("email", k) for k in seen.smtp_acked}
        assert set(stored) == expected
        assert max(stored.values()) == 1, [k for k, n in stored.items() if n > 1][:10]
        receipts = await db.fetchval(
            "SELECT count(*) FROM inbound_receipts WHERE channel IN ('api', 'email')"
        )
        tickets = await db.fetchval("SELECT count(*) FROM tickets")
        assert receipts == tickets == TOTAL  # distinct customers: every message opened one

        # -- outbound: every row reached its fake once -------------------------------------
        rows = await db.fetch(
            "SELECT idempotency_key, channel, address, status, external_id, payload "
            "FROM outbox ORDER BY id"
        )
        assert Counter(r["status"] for r in rows) == {"sent": len(rows)}
        twice: Counter[str] = Counter()
        mail_counts = fakes.sink.counts()
        slack_counts = fakes.slack.post_counts("client_msg_id")
        telegram_sent = Counter(
            (str(m["chat"]["id"]), str(m["message_id"])) for m in fakes.telegram.sent
        )
        telegram_rows = set()
        by_channel: Counter[str] = Counter()
        for row in rows:
            key, channel = row["idempotency_key"], row["channel"]
            by_channel[channel] += 1
            if channel == "email":
                payload = json.loads(row["payload"])
                arrived = mail_counts[f"<{payload['message_id']}>"]
            elif channel == "slack":
                arrived = slack_counts[key]
            else:
                assert channel == "telegram", channel
                telegram_rows.add((row["address"], row["external_id"]))
                arrived = telegram_sent[(row["address"], row["external_id"])]
            assert arrived >= 1, f"{key} never arrived"
            if arrived > 1:
                twice[channel] += 1
                assert key in in_flight, f"{key} arrived {arrived} times"
        # Telegram has no idempotency key: a second delivery is a message no row names
        orphans = [m for m in telegram_sent if m not in telegram_rows]
        twice["telegram"] += len(orphans)
        tg_in_flight = {r["idempotency_key"] for r in rows if r["channel"] == "telegram"}
        assert len(orphans) <= len(in_flight & tg_in_flight)
        assert sum(mail_counts.values()) == by_channel["email"] + twice["email"]
        assert sum(slack_counts.values()) == by_channel["slack"]
        assert twice["slack"] == 0, "a Slack message the dead process had posted went out again"

        # -- SLA: every breach fired once, its pings queued once -------------------------------
        breaches = Counter(
            r["ticket_id"]
            for r in await db.fetch("SELECT ticket_id FROM ticket_events WHERE kind = 'sla_breach'")
        )
        assert len(breaches) == urgent and set(breaches.values()) == {1}
        pings = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE idempotency_key LIKE 'sla:%:breach:%'"
        )
        assert pings == urgent * len(SUPERVISORS)
        notices = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE idempotency_key LIKE 'notify:%'"
        )
        assert notices == urgent * len(NOTIFY)

        total = time.monotonic() - began
        print(
            f"\ncrash test: {TOTAL} messages ({len(seen.http_acked)} HTTP, "
            f"{len(seen.smtp_acked)} SMTP) into {PROCESSES} processes in {sent_in:.1f}s; "
            f"leader killed at {killed['at'] - started:.1f}s, a new leader after "
            f"{killed['takeover'] - killed['at']:.1f}s, the killed one back at "
            f"{killed['back'] - started:.1f}s; drained at {drained_in:.1f}s; total {total:.1f}s\n"
            f"client retries: {dict(seen.retries)}; answered as duplicates: "
            f"{seen.duplicates_answered}\n"
            f"stored: {len(stored)} messages, {tickets} tickets, each once\n"
            f"outbox: {len(rows)} rows {dict(by_channel)}, all sent; rows in flight at the "
            f"kill: {len(in_flight)}; delivered twice (in flight at the kill): {dict(twice)}\n"
            f"SLA: {len(breaches)} breaches, each once; {pings} breach pings, {notices} "
            f"new-ticket notices\n"
            f"error lines in the logs: {[n.errors() for n in nodes]}"
        )
        assert total < DEADLINE_SECONDS + 10
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for node in nodes:  # all at once: a follower must not take the lead while stopping
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGINT)
        for node in nodes:
            node.stop()
        await db.close()
