"""The yardstick for bench/email.py: what a plain SMTP intake would do with the same mail.

A bare aiosmtpd server (the same library and options helpline's listener uses) whose DATA
handler only stores the raw message: ONE ``INSERT`` + ``COMMIT`` per mail on a SQLite file with
the same durability as helpline's durable mode (WAL journal, ``synchronous=FULL``), answered
250 after the commit. No parsing, no tickets. SQLite allows one writer at a time, so the plain
way is one connection owned by one worker thread.

    python -m bench.smtp_reference --db /tmp/ref.db --port 2526
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

SCHEMA = """
CREATE TABLE IF NOT EXISTS mails (
    id INTEGER PRIMARY KEY,
    mail_from TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,
    raw BLOB NOT NULL,
    received_at TEXT NOT NULL
)
"""
INSERT = "INSERT INTO mails (mail_from, rcpt_to, raw, received_at) VALUES (?, ?, ?, ?)"


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

    def _insert(self, row: tuple[str, str, bytes, str]) -> int | None:
        assert self.conn is not None
        with self.conn:  # BEGIN ... COMMIT: one fsync per mail
            self.conn.execute("BEGIN")
            return self.conn.execute(INSERT, row).lastrowid

    async def insert(self, row: tuple[str, str, bytes, str]) -> int | None:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._insert, row)


class Handler:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        row = (
            str(envelope.mail_from or ""),
            ",".join(envelope.rcpt_tos),
            bytes(raw) if not isinstance(raw, str) else raw.encode("utf-8", "surrogateescape"),
            datetime.now(UTC).isoformat(),
        )
        try:
            number = await self.store.insert(row)
        except sqlite3.Error:
            return "451 4.3.0 temporary failure, please try again later"
        return f"250 2.0.0 OK: #{number}"


async def serve(db: str, host: str, port: int) -> None:
    handler = Handler(Store(db))

    def protocol() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=26_214_400,
            enable_SMTPUTF8=True,
            decode_data=False,
            require_starttls=False,
            hostname="reference.test",
            ident="reference ESMTP",
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--db", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    asyncio.run(serve(args.db, args.host, args.port))


if __name__ == "__main__":
    main()
