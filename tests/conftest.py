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


# Which backend the database-facing tests run on. "both" (the default): ``db_url`` tests run
# on SQLite and on PostgreSQL, the served ones (``server_factory``, ``backend_url``) on SQLite.
# "postgresql" (CI's second pass): only the tests that ran on SQLite alone and touch a
# database, i.e. the served ones, run again on PostgreSQL; the rest is deselected (it ran
# on PostgreSQL already, or touches no database).
BACKEND = os.environ.get("HELPLINE_TEST_BACKEND", "both")
if BACKEND not in ("both", "postgresql"):
    raise RuntimeError(f"HELPLINE_TEST_BACKEND must be both or postgresql, not {BACKEND!r}")
SERVED_FIXTURES = {"backend_url", "server_factory", "server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND != "postgresql":
        return

    def sqlite_only(item: pytest.Item) -> bool:
        names = set(getattr(item, "fixturenames", ()))
        return bool(SERVED_FIXTURES & names) and "db_url" not in names

    keep = [i for i in items if sqlite_only(i)]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep


def _require_postgres() -> None:
    if not postgres_reachable():
        if _truthy("CI") or BACKEND == "postgresql":
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (required here)")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database; drop it with ``drop_pg_database``."""
    _require_postgres()
    name = f"helpline_test_{uuid.uuid4().hex[:12]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/helpline.db"


@pytest.fixture(params=["postgresql"] if BACKEND == "postgresql" else ["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test on SQLite and on PostgreSQL (only the latter in the PostgreSQL pass)."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def backend_url(request: pytest.FixtureRequest) -> str:
    """The pass's database: SQLite, or PostgreSQL in the PostgreSQL pass."""
    name = "pg_url" if BACKEND == "postgresql" else "sqlite_url"
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
    databases: list[str] = []

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
        url = db_url
        if url is None and BACKEND == "postgresql":
            url = create_pg_database()
            databases.append(url)
        url = url or f"sqlite:///{data_dir}/helpline.db"
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
    for url in databases:
        drop_pg_database(url)


@pytest.fixture
async def server(server_factory: ServerFactory) -> Server:
    return await server_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
