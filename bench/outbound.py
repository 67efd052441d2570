"""Outbound pacing benchmark: a burst through the real outbox against fakes that enforce the limits.

500 messages to one Slack channel and 500 spread over 50 Telegram chats are queued in one unit of
work; the service's outbox dispatcher delivers them through the real adapters (slack_sdk,
python-telegram-bot) to the fake Slack and Telegram APIs, which here answer 429 (with
Retry-After / retry_after) whenever a request would exceed the platform's limit:

- Slack: 1 message per second per channel (chat.postMessage and chat.update, sliding window);
- Telegram: 30 messages per second overall, 1 per second per chat, 20 per minute per group.

Time is scaled by ``--speedup`` S: the adapters get a ``RateGate`` whose clock runs S times
faster than real time (so it paces in platform seconds), and the fakes enforce windows of 1/S
real seconds. Rates are reported in platform seconds. ``--speedup 1`` is a real-time run (the
Slack channel alone then takes ~8.5 minutes; use ``--slack 60`` for a shorter one).

    python -m bench.outbound                    # defaults: S = 20, ~30 s
    python -m bench.outbound --check            # exit 1 when a target is missed

Targets (the issue's): zero 429s provoked by us and >= 95% of the allowed rate (Slack: 1/s to
the channel; Telegram: 30/s overall). The fakes run in their own process, so their clock and
event loop are not those of the service they judge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from adapters.slack import SlackAdapter
from adapters.telegram import TelegramAdapter
from core.config import SlackSettings, TelegramSettings, parse_settings
from core.messages import Channel, OutboundMessage, ThreadRef
from core.outbox import DEAD, SENT, enqueue
from core.persistence.records import outbox
from core.ratelimit import Pace, RateGate
from gateway.app import create_app
from gateway.state import DISPATCHER, HELPDESK, HUB
from tests.fakes.slack_api import FakeSlack, RecordedCall
from tests.fakes.telegram_api import FakeTelegram, _error

MIN_SHARE = 0.95  # of the allowed rate
SLACK_CHANNEL = "C0BENCH"
FIRST_CHAT = 7_000_001  # private chats (positive ids): 30/s overall, 1/s each
STARTUP_TIMEOUT = 30.0


# -- fakes that enforce the platforms' limits -------------------------------------------------


class Window:
    """At most ``count`` accepted requests per ``per`` seconds (a sliding window) per key."""

    def __init__(self, count: int, per: float) -> None:
        self.count = count
        self.per = per
        self.seen: dict[Any, deque[float]] = {}

    def wait(self, key: Any, now: float) -> float:
        """Seconds until one more request on ``key`` keeps the limit; 0: it does now."""
        times = self.seen.setdefault(key, deque())
        while times and times[0] <= now - self.per:
            times.popleft()
        return times[0] + self.per - now if len(times) >= self.count else 0.0

    def add(self, key: Any, now: float) -> None:
        self.seen[key].append(now)


@dataclass
class Enforcement:
    """What one strict fake saw: accepted messages (arrival time, key) and the 429s it sent."""

    accepted: list[tuple[float, str]] = field(default_factory=list)
    # arrival, key, the limit it broke, and how much too early it came (real seconds)
    throttled: list[tuple[float, str, str, float]] = field(default_factory=list)

    def admit(self, windows: list[tuple[str, Window, Any]], key: str, now: float) -> float:
        """0 and recorded when every window allows it; else the wait, and a 429 is counted."""
        waits = [(w.wait(k, now), name) for name, w, k in windows]
        worst, name = max(waits)
        if worst > 0:
            self.throttled.append((now, key, name, worst))
            return worst
        for _, w, k in windows:
            w.add(k, now)
        self.accepted.append((now, key))
        return 0.0


def retry_after(wait: float, speedup: float) -> int:
    """What the platform says, in its whole seconds: never 0."""
    return max(1, math.ceil(wait * speedup))


class StrictSlack(FakeSlack):
    """FakeSlack answering 429 + Retry-After past 1 message/s per channel (time / speedup)."""

    PACED = frozenset({"chat.postMessage", "chat.update"})

    def __init__(self, speedup: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.speedup = speedup
        self.per_channel = Window(1, 1.0 / speedup)
        self.enforcement = Enforcement()

    async def _dispatch(self, call: RecordedCall, request: web.Request) -> web.Response:
        if call.method in self.PACED:
            channel = str(call.params.get("channel", ""))
            windows = [("1/s per channel", self.per_channel, channel)]
            wait = self.enforcement.admit(windows, channel, call.at)
            if wait:
                headers = {"Retry-After": str(retry_after(wait, self.speedup))}
                body = {"ok": False, "error": "ratelimited"}
                return web.json_response(body, status=429, headers=headers)
        return await super()._dispatch(call, request)


class StrictTelegram(FakeTelegram):
    """FakeTelegram answering 429 + retry_after past 30/s overall, 1/s per chat, 20/min per
    group (time / speedup)."""

    PACED = frozenset(
        {"sendmessage", "editmessagetext", "editmessagereplymarkup", "sendphoto", "senddocument"}
    )

    def __init__(self, speedup: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.speedup = speedup
        self.overall = Window(30, 1.0 / speedup)
        self.per_chat = Window(1, 1.0 / speedup)
        self.per_group = Window(20, 60.0 / speedup)
        self.enforcement = Enforcement()

    async def _dispatch(self, call: RecordedCall, request: web.Request) -> web.StreamResponse:
        if call.method.lower() in self.PACED:
            chat = str(call.params.get("chat_id", ""))
            windows = [("30/s overall", self.overall, "bot"), ("1/s per chat", self.per_chat, chat)]
            if chat.startswith(("-", "@")):
                windows.append(("20/min per group", self.per_group, chat))
            wait = self.enforcement.admit(windows, chat, call.at)
            if wait:
                n = retry_after(wait, self.speedup)
                description = f"Too Many Requests: retry after {n}"
                return _error(429, description, parameters={"retry_after": n})
        return await super()._dispatch(call, request)


def fake_process(conn: Connection, speedup: float) -> None:
    """The fakes' own process: serve until told to stop, then send back what they saw."""
    asyncio.run(_serve_fakes(conn, speedup))


async def _serve_fakes(conn: Connection, speedup: float) -> None:
    async with StrictSlack(speedup) as slack, StrictTelegram(speedup) as telegram:
        conn.send(
            {
                "slack_base_url": slack.base_url,
                "slack_token": slack.token,
                "telegram_origin": telegram.origin,
                "telegram_token": telegram.token,
            }
        )
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        conn.send(
            {
                "slack": slack.enforcement,
                "telegram": telegram.enforcement,
                "slack_duplicates": slack.duplicate_posts(),
                "telegram_duplicates": telegram.duplicate_sends(),
            }
        )


# -- the service ------------------------------------------------------------------------------


class RecordingGate(RateGate):
    """The adapters' RateGate, with a clock running ``speedup`` times faster than real time (it
    paces in platform seconds), noting when each message left it: booked vs real instant."""

    def __init__(self, speedup: float) -> None:
        async def sleep(seconds: float) -> None:
            await asyncio.sleep(seconds / speedup)

        super().__init__(clock=lambda: time.monotonic() * speedup, sleep=sleep)
        self.speedup = speedup
        self.released: list[tuple[str, float, float]] = []  # last key, booked, left (real s)
        self._booked: dict[object, float] = {}

    def reserve(self, paces: list[Pace], now: float) -> float:
        booked = super().reserve(paces, now)
        self._booked[asyncio.current_task()] = booked  # concurrent senders each have a slot
        return booked

    async def wait(self, paces: list[Pace]) -> None:
        await super().wait(paces)  # the adapters' own pacing, departure check included
        booked = self._booked.pop(asyncio.current_task())
        self.released.append((paces[-1].key, booked / self.speedup, time.monotonic()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Run:
    speedup: float
    slack_total: int
    telegram_total: int
    chats: int
    queued_at: float = 0.0  # monotonic, when the burst was committed and the dispatcher woken
    drained_at: float = 0.0  # when every row was sent or dead
    sent: int = 0
    dead: int = 0
    left: int = 0  # neither sent nor dead at the deadline
    fakes: dict[str, Any] = field(default_factory=dict)
    gates: list[RecordingGate] = field(default_factory=list)  # Slack's, Telegram's


async def burst(args: argparse.Namespace, work: Path, fakes: dict[str, Any], run: Run) -> None:
    port = free_port()
    settings = parse_settings(
        {
            "service": {
                "name": "Bench Support",
                "public_url": f"http://127.0.0.1:{port}",
                "data_dir": str(work / "data"),
                "log_level": "warning",
            },
            "database": {"url": f"sqlite:///{work}/data/helpline.db", "durable": True},
            "email": {"smtp_server": {"enabled": False}},
        }
    )
    env = {
        "HELPLINE_SLACK_BOT_TOKEN": fakes["slack_token"],
        "HELPLINE_SLACK_SIGNING_SECRET": "bench-signing-secret",
        "HELPLINE_TELEGRAM_TOKEN": fakes["telegram_token"],
        "HELPLINE_TELEGRAM_WEBHOOK_SECRET": "bench-secret",
    }
    gates = run.gates = [RecordingGate(run.speedup), RecordingGate(run.speedup)]
    slack = SlackAdapter.from_settings(
        SlackSettings(enabled=True, api_url=fakes["slack_base_url"], team_channel="C0TEAM"),
        env,
        gate=gates[0],
    )
    telegram = TelegramAdapter.from_settings(
        TelegramSettings(enabled=True, api_url=fakes["telegram_origin"]),
        env,
        public_url=settings.service.public_url,
        gate=gates[1],
    )
    # The configured chat adapters stay off: these, with the scaled gate, replace them.
    app = create_app(settings, adapters={"slack": slack, "telegram": telegram}, env=env)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        await slack.start(app[HUB])
        await telegram.start(app[HUB])  # getMe, setWebhook
        helpdesk, dispatcher = app[HELPDESK], app[DISPATCHER]

        def queue_burst(conn: Any, ctx: Any) -> None:
            # interleaved, as replies to many tickets arrive; one transaction, as a big unit
            # of work (an import, a broadcast) would write them
            for i in range(max(run.slack_total, run.telegram_total)):
                if i < run.slack_total:
                    to = ThreadRef(Channel.SLACK, SLACK_CHANNEL)
                    message = OutboundMessage(to=to, text=f"Slack reply {i}")
                    enqueue(conn, f"bench-slack-{i}", message, now=ctx.now)
                if i < run.telegram_total:
                    chat = FIRST_CHAT + i % run.chats
                    to = ThreadRef(Channel.TELEGRAM, str(chat))
                    message = OutboundMessage(to=to, text=f"Telegram reply {i} to {chat}")
                    enqueue(conn, f"bench-telegram-{i}", message, now=ctx.now)

        await helpdesk.run(queue_burst)
        run.queued_at = time.monotonic()
        dispatcher.wake()
        total = run.slack_total + run.telegram_total
        deadline = run.queued_at + args.timeout

        def count(conn: Any) -> dict[str, int]:
            query = select(outbox.c.status, func.count()).group_by(outbox.c.status)
            return {status: int(n) for status, n in conn.execute(query).all()}

        while True:
            counts = await helpdesk.db.read(count)
            run.sent, run.dead = counts.get(SENT, 0), counts.get(DEAD, 0)
            if run.sent + run.dead >= total or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        run.drained_at = time.monotonic()
        run.left = total - run.sent - run.dead
    finally:
        await telegram.stop()
        await slack.stop()
        await runner.cleanup()


# -- report -------------------------------------------------------------------------------------


@dataclass
class Flow:
    """The accepted messages of one flow (a channel, a chat, a whole bot), in platform seconds."""

    name: str
    times: list[float]  # real monotonic arrival times at the fake
    allowed: float  # messages per platform second
    speedup: float
    start: float  # when the burst was queued

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def span(self) -> float:
        """Platform seconds from the first accepted message to the last."""
        return (self.times[-1] - self.times[0]) * self.speedup if self.n > 1 else 0.0

    @property
    def rate(self) -> float:
        """Messages per platform second while draining: (n - 1) gaps over the span."""
        return (self.n - 1) / self.span if self.span else float("nan")

    @property
    def first_after(self) -> float:
        return (self.times[0] - self.start) * self.speedup if self.times else float("nan")

    @property
    def ideal(self) -> float:
        """Platform seconds the burst needs at exactly the allowed rate (first one at once)."""
        return (self.n - 1) / self.allowed

    @property
    def drain(self) -> float:
        return (self.times[-1] - self.start) * self.speedup if self.times else float("nan")

    @property
    def min_gap_ms(self) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return min(gaps) * 1000 if gaps else float("nan")

    @property
    def max_gap(self) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return max(gaps) * self.speedup if gaps else float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(run: Run) -> bool:
    slack: Enforcement = run.fakes["slack"]
    telegram: Enforcement = run.fakes["telegram"]
    s = run.speedup
    flows = [
        Flow(
            f"Slack {SLACK_CHANNEL}",
            sorted(t for t, key in slack.accepted if key == SLACK_CHANNEL),
            1.0,
            s,
            run.queued_at,
        ),
        Flow("Telegram overall", sorted(t for t, _ in telegram.accepted), 30.0, s, run.queued_at),
    ]
    per_chat = [
        Flow(chat, sorted(t for t, key in telegram.accepted if key == chat), 1.0, s, run.queued_at)
        for chat in sorted({key for _, key in telegram.accepted})
    ]

    print()
    print(
        f"Outbound burst: {run.slack_total} messages to one Slack channel + "
        f"{run.telegram_total} over {run.chats} Telegram chats, one transaction; "
        f"time scale x{s:g} (rates and times in platform seconds)"
    )
    head = (
        f"{'flow':<22} | {'sent':>5} | {'429s':>5} | {'allowed/s':>9} | {'rate/s':>7} | "
        f"{'share':>6} | {'first s':>7} | {'drain s':>8} | {'ideal s':>8} | {'max gap s':>9}"
    )
    print(head)
    print("-" * len(head))
    throttled = {"slack": len(slack.throttled), "telegram": len(telegram.throttled)}
    for flow, fake in zip(flows, ("slack", "telegram"), strict=True):
        share = flow.rate / flow.allowed
        print(
            f"{flow.name:<22} | {flow.n:>5} | {throttled[fake]:>5} | {flow.allowed:>9.2f} | "
            f"{flow.rate:>7.3f} | {share:>6.1%} | {flow.first_after:>7.2f} | "
            f"{flow.drain:>8.1f} | {flow.ideal:>8.1f} | {flow.max_gap:>9.2f}"
        )
    if per_chat:
        rates = [f.rate for f in per_chat if f.n > 1]
        fair = min(1.0, 30.0 / len(per_chat))
        print(
            f"{'Telegram per chat':<22} | {len(per_chat):>5} chats, rate/s min "
            f"{min(rates):.3f} / median {statistics.median(rates):.3f} / max {max(rates):.3f} "
            f"(allowed 1/s each; 30/s shared by {len(per_chat)} chats is {fair:.2f}/s each)"
        )
    for name, enforcement in (("Slack", slack), ("Telegram", telegram)):
        by_limit: dict[str, list[float]] = {}
        for _, _, limit, early in enforcement.throttled:
            by_limit.setdefault(limit, []).append(early * s * 1000)
        for limit, earlies in sorted(by_limit.items()):
            print(
                f"  {name} 429: {limit} x{len(earlies)}, too early by {min(earlies):.1f}-"
                f"{max(earlies):.1f} ms of platform time (median {statistics.median(earlies):.1f})"
            )
    # Where a 429 comes from: a message that left the gate late already breaks the window on
    # our side (the gate books by spacing; a late departure crowds the ones booked after it)
    # (count, per platform seconds, key: a shared one, or None for the message's own)
    limits: list[tuple[str, list[tuple[int, float, str | None]]]] = [
        ("Slack", [(1, 1.0, None)]),
        ("Telegram", [(30, 1.0, "bot"), (1, 1.0, None)]),
    ]
    for (name, windows), gate in zip(limits, run.gates, strict=True):
        if not gate.released:
            continue
        late = sorted((left - booked) * 1000 for _, booked, left in gate.released)
        broke = 0
        ours = [(Window(count, per / s), key) for count, per, key in windows]
        for key, _, left in sorted(gate.released, key=lambda r: r[2]):
            if any(w.wait(k or key, left) for w, k in ours):
                broke += 1
            else:
                for w, k in ours:
                    w.add(k or key, left)
        print(
            f"  {name} gate: left late by p50 {late[len(late) // 2]:.1f} / p99 "
            f"{late[int(len(late) * 0.99)]:.1f} / max {late[-1]:.1f} ms (real); "
            f"{broke} departures already broke a limit on our side"
        )
    total = run.slack_total + run.telegram_total
    elapsed = run.drained_at - run.queued_at
    print(
        f"rows: {run.sent} sent, {run.dead} dead, {run.left} left; real time {elapsed:.1f} s; "
        f"duplicates: Slack {len(run.fakes['slack_duplicates'])}, "
        f"Telegram {len(run.fakes['telegram_duplicates'])}"
    )
    print(
        "(rate: (sent - 1) / (last - first arrival at the fake); share: rate / allowed; "
        "first: from commit to the first arrival; drain: to the last; ideal: (sent - 1) / allowed)"
    )

    checks = [
        ("0 429s provoked", not slack.throttled and not telegram.throttled,
         f"Slack {len(slack.throttled)}, Telegram {len(telegram.throttled)}"),
        (f"Slack >= {MIN_SHARE:.0%} of 1/s per channel",
         flows[0].rate / flows[0].allowed >= MIN_SHARE, f"{flows[0].rate:.3f}/s"),
        (f"Telegram >= {MIN_SHARE:.0%} of 30/s overall",
         flows[1].rate / flows[1].allowed >= MIN_SHARE, f"{flows[1].rate:.2f}/s"),
        ("every row sent, none dead", run.sent == total, f"{run.sent}/{total}, {run.dead} dead"),
        ("no duplicates", not run.fakes["slack_duplicates"] and not run.fakes[
            "telegram_duplicates"], "per idempotency key / text"),
    ]  # fmt: skip
    print()
    for label, ok, value in checks:
        print(f"  {verdict(ok)}  {label:<36} ({value})")
    return all(ok for _, ok, _ in checks)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--speedup", type=float, default=10.0, help="time scale (1: real time)")
    p.add_argument("--slack", type=int, default=500, help="messages to the one Slack channel")
    p.add_argument("--telegram", type=int, default=500, help="messages over the Telegram chats")
    p.add_argument("--chats", type=int, default=50, help="Telegram chats")
    p.add_argument("--timeout", type=float, default=0.0, help="real seconds (0: from the load)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (database)")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if not args.timeout:  # three times what the slowest flow needs, and a minute to spare
        ideal = max(args.slack, args.telegram / 30, args.telegram / max(args.chats, 1))
        args.timeout = 3 * ideal / args.speedup + 60
    return args


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="helpline-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args.speedup, args.slack, args.telegram, args.chats)
    ideal = max(args.slack, args.telegram / 30) / args.speedup
    print(
        f"outbound burst at x{args.speedup:g}: needs ~{ideal:.0f} s of real time "
        f"(timeout {args.timeout:.0f} s) ...",
        flush=True,
    )
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    fakes = ctx.Process(target=fake_process, args=(child, args.speedup), daemon=True)
    fakes.start()
    try:
        if not parent.poll(STARTUP_TIMEOUT):
            raise RuntimeError("the fake APIs did not start")
        addresses = parent.recv()
        with workdir(args.keep) as work:
            asyncio.run(burst(args, work, addresses, run))
        parent.send("stop")
        run.fakes = parent.recv()
    finally:
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()
    passed = report(run)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
