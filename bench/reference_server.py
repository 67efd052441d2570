"""The yardstick for bench/intake.py: what a plain service would do with the same request.

A bare aiohttp app whose ``POST /api/v1/messages`` parses the same JSON, checks the same required
fields, and does ONE ``INSERT`` + ``COMMIT`` per request on a SQLite file with the same
durability as helpline's durable mode (WAL journal, ``synchronous=FULL``). SQLite allows one
writer at a time, so the plain way is one connection owned by one worker thread.

    python -m bench.reference_server --db /tmp/ref.db --port 8081
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


def make_app(db_path: str) -> web.Application:
    store = Store(db_path)

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
    app.router.add_post("/api/v1/messages", submit)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.db), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
