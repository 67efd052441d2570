"""The yardstick for bench/intake.py: what a plain service would do with the same request.

A bare aiohttp app whose ``POST /api/v1/messages`` parses the same JSON, checks the same required
fields, and does ONE ``INSERT`` + ``COMMIT`` per request on a SQLite file with the same
durability as helpline's durable mode (WAL journal, ``synchronous=FULL``). SQLite allows one
writer at a time, so the plain way is one connection owned by one worker thread.

With ``--pg URL`` the same handler does its one ``INSERT`` (autocommit: one durable commit per
request, PostgreSQL's default ``synchronous_commit = on``) through an asyncpg pool of
``--pool`` connections instead: the yardstick for helpline on PostgreSQL.

    python -m bench.reference_server --db /tmp/ref.db --port 8081
    python -m bench.reference_server --pg postgresql://postgres@127.0.0.1:5432/scratch --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""
INSERT = (
    "INSERT INTO messages (idempotency_key, name, email, subject, body, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_reference_messages (
    id BIGSERIAL PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""
PG_INSERT = (
    "INSERT INTO bench_reference_messages"
    " (idempotency_key, name, email, subject, body, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
)


class PgStore:
    """An asyncpg pool; each request one INSERT in its own (implicit) transaction."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.pool: Any = None

    async def open(self, _app: web.Application) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.url, min_size=self.size, max_size=self.size)
        async with self.pool.acquire() as conn:
            await conn.execute(PG_SCHEMA)

    async def close(self, _app: web.Application) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def insert(self, row: tuple[Any, ...]) -> int | None:
        import asyncpg

        try:
            async with self.pool.acquire() as conn:
                return int(await conn.fetchval(PG_INSERT, *row))
        except asyncpg.UniqueViolationError:  # a repeated Idempotency-Key
            return None


class Store:
    """One connection, used only from its one thread."""

    def __init__(self, path: str) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.executor.submit(self._open).result()

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(SCHEMA)
        self.conn = conn

    def _insert(self, row: tuple[Any, ...]) -> int | None:
        assert self.conn is not None
        try:
            with self.conn:  # BEGIN ... COMMIT: one fsync per request
                self.conn.execute("BEGIN")
                return self.conn.execute(INSERT, row).lastrowid
        except sqlite3.IntegrityError:  # a repeated Idempotency-Key
            return None

    async def insert(self, row: tuple[Any, ...]) -> int | None:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._insert, row)


def make_app(db_path: str | None, pg_url: str | None = None, pool: int = 10) -> web.Application:
    store: Store | PgStore = PgStore(pg_url, pool) if pg_url else Store(str(db_path))

    async def submit(request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return web.json_response({"detail": "malformed JSON"}, status=400)
        if not isinstance(data, dict):
            return web.json_response({"detail": "the body must be an object"}, status=400)
        email, body = data.get("email"), data.get("body")
        if not isinstance(email, str) or "@" not in email or not isinstance(body, str) or not body:
            return web.json_response({"detail": "email and body are required"}, status=400)
        key = request.headers.get("Idempotency-Key") or None
        row = (
            key,
            str(data.get("name") or ""),
            email,
            str(data.get("subject") or ""),
            body,
            datetime.now(UTC).isoformat(),
        )
        number = await store.insert(row)
        if number is None:
            return web.json_response({"duplicate": True}, status=200)
        return web.json_response({"ticket": {"number": number}, "duplicate": False}, status=201)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    if isinstance(store, PgStore):
        app.on_startup.append(store.open)
        app.on_cleanup.append(store.close)
    app.router.add_post("/api/v1/messages", submit)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite file (WAL, synchronous=FULL)")
    where.add_argument("--pg", metavar="URL", help="PostgreSQL database (asyncpg pool)")
    parser.add_argument("--pool", type=int, default=10, help="asyncpg pool size (with --pg)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = make_app(args.db, args.pg, args.pool)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
