"""Runs units of work: plain functions of a SQLAlchemy ``Connection``, one transaction each.

Units of work are synchronous functions so the same code runs on both backends:

* SQLite (the embedded default): one writer thread does group commit. Units that arrive together
  run in one transaction, each inside its own SAVEPOINT, so one failing unit rolls back only
  itself; a single fsync then makes the whole batch durable. Reads use a small pool of
  connections in worker threads (WAL lets them run beside the writer).
* PostgreSQL: an asyncpg ``AsyncEngine``; each unit runs in its own transaction through
  ``AsyncConnection.run_sync`` and is retried on serialization failures and deadlocks.

A unit must not do I/O other than the database: it may run twice when a transaction retries.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[Connection], T]

MAX_BATCH = 200
PG_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected


class Database:
    """Common face of both backends: ``await db.write(unit)`` and ``await db.read(unit)``."""

    dialect: str

    async def write(self, unit: Unit[T]) -> T:
        raise NotImplementedError

    async def read(self, unit: Unit[T]) -> T:
        raise NotImplementedError

    def run_sync(self, unit: Unit[T]) -> T:
        """Run a unit outside the event loop (CLI commands)."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ping(self) -> bool:
        try:
            return await self.read(lambda c: c.execute(text("SELECT 1")).scalar() == 1)
        except Exception:
            log.warning("database ping failed", exc_info=True)
            return False


def open_database(url: str, *, durable: bool = True, pool_size: int = 10) -> Database:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SqliteDatabase(url, durable=durable)
    if parsed.get_backend_name() == "postgresql":
        return PostgresDatabase(url, pool_size=pool_size)
    raise ValueError(f"unsupported database url: {url}")


def sqlite_engine(url: str, *, durable: bool, pool_size: int = 5) -> Engine:
    parsed = make_url(url).set(drivername="sqlite+pysqlite")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=0,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (savepoints need it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: no lock upgrade deadlock with a CLI writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("writer") else "BEGIN")

    return engine


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, *, durable: bool = True) -> None:
        self.engine = sqlite_engine(url, durable=durable)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")
        self._queue: asyncio.Queue[tuple[Unit[Any], asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    async def write(self, unit: Unit[T]) -> T:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._commit_loop(), name="sqlite-group-commit")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((unit, future))
        return await future

    async def read(self, unit: Unit[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, unit)

    def run_sync(self, unit: Unit[T]) -> T:
        with self._lock, self.engine.connect() as conn:
            conn.info["writer"] = True
            try:
                with conn.begin():
                    return unit(conn)
            finally:
                conn.info["writer"] = False

    def _read(self, unit: Unit[T]) -> T:
        with self.engine.connect() as conn, conn.begin():
            return unit(conn)

    async def _commit_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await loop.run_in_executor(self._writer, self._commit_batch, batch)
            except Exception as err:  # the commit itself failed: nothing in the batch happened
                outcomes = [(False, err)] * len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit_batch(self, batch: list[tuple[Unit[Any], asyncio.Future[Any]]]) -> list[Any]:
        outcomes: list[tuple[bool, Any]] = []
        with self._lock, self.engine.connect() as conn:
            conn.info["writer"] = True
            try:
                with conn.begin():
                    for unit, _future in batch:
                        # Plain SQL savepoints: begin_nested() builds and compiles an uncacheable
                        # construct per unit, ~5x the cost of these two statements.
                        conn.exec_driver_sql("SAVEPOINT unit")
                        try:
                            result = unit(conn)
                        except Exception as err:
                            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT unit")
                            conn.exec_driver_sql("RELEASE SAVEPOINT unit")
                            outcomes.append((False, err))
                        else:
                            conn.exec_driver_sql("RELEASE SAVEPOINT unit")
                            outcomes.append((True, result))
            finally:
                conn.info["writer"] = False
        return outcomes

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        # Whatever driver the URL names, PostgreSQL is driven through asyncpg.
        self.url = make_url(url).set(drivername="postgresql+asyncpg")
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )

    async def write(self, unit: Unit[T]) -> T:
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(unit)
            except DBAPIError as err:
                code = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
                if code not in PG_RETRYABLE or attempt == 4:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    async def read(self, unit: Unit[T]) -> T:
        async with self.engine.connect() as conn:
            return await conn.run_sync(unit)

    def run_sync(self, unit: Unit[T]) -> T:
        # A private engine in a private loop: this works whether or not a loop is running.
        def in_thread() -> T:
            return asyncio.run(self._run_once(unit))

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(in_thread).result()

    async def _run_once(self, unit: Unit[T]) -> T:
        engine = create_async_engine(self.url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(unit)
        finally:
            await engine.dispose()

    async def close(self) -> None:
        await self.engine.dispose()
