"""Shared fixtures: databases on both backends and the real service on a loopback port."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from adapters.email import SmtpServer
from core import accounts
from core.config import Settings, parse_settings
from core.helpdesk import Helpdesk
from core.ports import ChannelAdapter, Clock, utc_now
from gateway.app import create_app
from gateway.state import DISPATCHER, HELPDESK, INBOUND

pytest_plugins = ["tests.browser"]

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_DSN = os.environ.get("HELPLINE_TEST_PG", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test")


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def postgres_reachable() -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((PG_HOST, PG_PORT)) == 0


def _run(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, whether or not a loop is running."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    if not postgres_reachable():
        if _truthy("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (CI requires it)")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"helpline_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/helpline.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def make_settings(
    db_url: str, data_dir: Path, port: int = 8080, **tables: dict[str, Any]
) -> Settings:
    table: dict[str, Any] = {
        "service": {
            "data_dir": str(data_dir),
            "public_url": f"http://127.0.0.1:{port}",
            "name": "Acme Support",
        },
        "database": {"url": db_url, "durable": False},
        "outbox": {"poll_seconds": 0.05, "backoff_base_seconds": 0.05},
        # port 0: tests never collide on the example's 2525
        "email": {"smtp_server": {"port": 0}},
        # the periodic jobs are started by the tests that are about them
        "scheduler": {"enabled": False},
    }
    for key, values in tables.items():
        table[key] = _merge(table.get(key, {}), values) if isinstance(values, dict) else values
    return parse_settings(table)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


@dataclass
class Server:
    """The real service on a loopback port."""

    base_url: str
    app: web.Application
    settings: Settings

    @property
    def helpdesk(self) -> Helpdesk:
        return self.app[HELPDESK]

    async def token(
        self, role: str = "agent", *, name: str = "", team: str | None = None
    ) -> tuple[str, int | None]:
        """A bearer token for a new agent with this role (admin tokens belong to no agent)."""
        db = self.helpdesk.db
        now = utc_now()
        email = f"{role}-{uuid.uuid4().hex[:8]}@support.test"
        agent_id = await db.write(
            lambda c: accounts.add_agent(
                c,
                name=name or f"{role.title()} {email[:12]}",
                email=email,
                role=accounts.Role(role),
                now=now,
                team=team,
            )
        )
        token = await db.write(
            lambda c: accounts.create_token(
                c, name=f"test {role}", role=accounts.Role(role), now=now, agent_email=email
            )
        )
        return token, agent_id

    @property
    def smtp_port(self) -> int:
        """The port of the inbound SMTP server (configured with port 0)."""
        (smtp,) = [s for s in self.app[INBOUND] if isinstance(s, SmtpServer)]
        return smtp.port

    async def deliver_outbox(self) -> int:
        return await self.app[DISPATCHER].dispatch_once()


ServerFactory = Callable[..., Any]


@pytest.fixture
async def server_factory(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    runners: list[web.AppRunner] = []

    async def start(
        db_url: str | None = None,
        *,
        clock: Clock = utc_now,
        adapters: dict[str, ChannelAdapter] | None = None,
        env: dict[str, str] | None = None,
        **tables: dict[str, Any],
    ) -> Server:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        data_dir = tmp_path / f"data-{port}"
        url = db_url or f"sqlite:///{data_dir}/helpline.db"
        settings = make_settings(url, data_dir, port, **tables)
        app = create_app(settings, clock=clock, adapters=adapters, env=env or {})
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        return Server(f"http://127.0.0.1:{port}", app, settings)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def server(server_factory: ServerFactory) -> Server:
    return await server_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
