"""Leadership among processes on one PostgreSQL database: exactly one leads, a follower takes
over when the leader stops or loses its lock connection, and the scheduler's jobs run in the
leader only. (Here the "processes" are applications in one test process, each with its own
connections, as separate processes have.)"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from core.ports import utc_now
from gateway.app import create_app
from gateway.leader import LEADERSHIP, Leadership
from tests.conftest import make_settings

RETRY = 0.3  # service.leader_retry_seconds: a follower asks (and the leader checks) this often
TAKEOVER_SECONDS = 10 * RETRY + 3  # generous: a busy machine delays every step


@dataclass
class Process:
    """One serving application, with a clock that counts its calls."""

    base_url: str
    app: web.Application
    runner: web.AppRunner
    ticks: list[datetime] = field(default_factory=list)

    @property
    def leadership(self) -> Leadership:
        return self.app[LEADERSHIP]

    async def health(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}/healthz") as r:
            assert r.status == 200
            return dict(await r.json())

    async def leader_gauge(self) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}/metrics") as r:
            for line in (await r.text()).splitlines():
                if line.startswith("helpline_leader "):
                    return float(line.split()[1])
        raise AssertionError("no helpline_leader metric")


Start = Callable[..., Any]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    processes: list[Process] = []

    async def start_one(url: str, *, leader: bool = True, **tables: Any) -> Process:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        tables.setdefault("service", {})["leader_retry_seconds"] = RETRY
        settings = make_settings(url, tmp_path / f"data-{port}", port, **tables)
        ticks: list[datetime] = []

        def clock() -> datetime:
            # an SLA sweep reads the clock once; in a quiet process nothing else does
            now = utc_now()
            ticks.append(now)
            return now

        app = create_app(settings, clock=clock, env={}, leader=leader)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        process = Process(f"http://127.0.0.1:{port}", app, runner, ticks)
        processes.append(process)
        return process

    yield start_one
    for process in processes:
        await process.runner.cleanup()  # a second cleanup of a stopped one is a no-op


async def until(condition: Callable[[], bool], seconds: float) -> float:
    """Waits for the condition; returns how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "condition not met in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def leaders(*processes: Process) -> list[Process]:
    return [p for p in processes if p.leadership.leading]


SWEEPING = {"scheduler": {"enabled": True, "sla_sweep_seconds": 1}}


async def test_one_leader_and_a_follower_takes_over_when_it_stops(pg_url: str, start) -> None:
    first = await start(pg_url, **SWEEPING)
    second = await start(pg_url, **SWEEPING)
    # the first took the lock during its start-up; the second asks in vain meanwhile
    await asyncio.sleep(4 * RETRY)
    assert leaders(first, second) == [first]
    assert (await first.health())["leader"] is True
    assert (await second.health())["leader"] is False
    assert await first.leader_gauge() == 1.0
    assert await second.leader_gauge() == 0.0

    # the scheduler's jobs run in the leader only (the sweep runs at start and every second)
    await until(lambda: len(first.ticks) >= 3, 10)
    assert second.ticks == []

    await first.runner.cleanup()
    took = await until(lambda: second.leadership.leading, TAKEOVER_SECONDS)
    assert (await second.health())["leader"] is True
    assert await second.leader_gauge() == 1.0
    swept = len(second.ticks)
    await until(lambda: len(second.ticks) >= swept + 2, 10)  # its scheduler now sweeps
    print(f"takeover after {took:.2f}s")


async def test_a_lost_lock_connection_stops_the_duties_and_the_lead_is_taken_again(
    pg_url: str, start
) -> None:
    first = await start(pg_url, **SWEEPING)
    second = await start(pg_url, **SWEEPING)
    assert leaders(first, second) == [first]
    admin = await asyncpg.connect(pg_url)
    try:
        # what a network cut or a database restart does to the leader's session
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'helpline-leader' AND datname = current_database()"
        )
        assert killed == 1
        await until(lambda: not first.leadership.leading, TAKEOVER_SECONDS)
        await until(lambda: len(leaders(first, second)) == 1, TAKEOVER_SECONDS)
        holders = await admin.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await admin.close()
    assert holders == 1
    assert first.leadership.terms + second.leadership.terms == 2  # stopped, then taken again
    (leader,) = leaders(first, second)
    follower = second if leader is first else first
    ticks = len(follower.ticks)
    swept = len(leader.ticks)
    await until(lambda: len(leader.ticks) >= swept + 2, 10)
    assert len(follower.ticks) == ticks  # the old leader's scheduler stopped with its lead


async def test_a_forked_worker_never_leads(pg_url: str, start) -> None:
    worker = await start(pg_url, leader=False)
    await asyncio.sleep(4 * RETRY)
    assert not worker.leadership.leading  # alone on the database, yet it does not ask
    assert (await worker.health())["leader"] is False


async def test_on_sqlite_the_candidate_leads_at_once(sqlite_url: str, start) -> None:
    leader = await start(sqlite_url)
    worker = await start(sqlite_url, leader=False)
    assert (await leader.health())["leader"] is True
    assert (await worker.health())["leader"] is False
