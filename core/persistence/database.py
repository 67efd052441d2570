"""Runs units of work: plain functions of a SQLAlchemy ``Connection``, one transaction each.

Units of work are synchronous functions so the same code runs on both backends:

* SQLite (the embedded default): group commit on one writer connection. Units that arrive
  together run in one transaction; one failing unit rolls back only itself (the others run
  again, each inside its own SAVEPOINT: see ``_commit_batch``). BEGIN (which may wait for the
  write lock) and COMMIT run in a writer thread, the units themselves on the event loop's
  thread (see ``_transaction``). A durable database is made durable after the commit, outside
  the write lock: one fsync of the WAL file covers every batch committed before it, and the
  units' callers hear back only then (``WalSync``). Reads use a small pool of connections in
  worker threads (WAL lets them run beside the writer).
* PostgreSQL: an asyncpg ``AsyncEngine``; each unit runs in its own transaction through
  ``AsyncConnection.run_sync`` and is retried on serialization failures and deadlocks.

A unit must not do I/O other than the database: it may run twice when a transaction retries.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
UNITS_PER_SLICE = 20  # units run between two chances for the event loop to serve requests
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


# pysqlite binds an exact int, float or str directly; any other value, None included, goes
# through its adapter lookup, which raises and clears two AttributeErrors (``__adapt__``,
# ``__conform__``) per value: ~0.75 us, and an intake binds a dozen NULLs. A registered adapter
# is found by one dict lookup instead; it returns None, which pysqlite binds as NULL as before.
sqlite3.register_adapter(type(None), lambda _: None)


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json.dumps with its default settings builds a new C encoder for every call (through two
# Python frames), ~1 us of the ~1.5 us it takes for a small value; an intake writes five JSON
# columns. One encoder, made once with the same settings, gives the same text. (No circular
# reference check: a cycle raises RecursionError instead of ValueError; our values are trees.)
_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)  # not in the typeshed stubs
_ENCODE = _MAKE_ENCODER and _MAKE_ENCODER(
    markers=None,
    default=_not_serializable,
    encoder=json.encoder.encode_basestring_ascii,
    indent=None,
    key_separator=": ",
    item_separator=", ",
    sort_keys=False,
    skipkeys=False,
    allow_nan=True,
)


def _encoded(value: Any) -> str:
    return "".join(_ENCODE(value, 0))  # type: ignore[misc]  # only chosen when _ENCODE is set


# ``json.dumps(value)``, faster: what SQLite's JSON columns are written with (json.dumps itself
# on a Python without the C accelerator)
json_text: Callable[[Any], str] = json.dumps if _ENCODE is None else _encoded


def sqlite_engine(url: str, *, synchronous: str, pool_size: int = 5) -> Engine:
    """``synchronous``: FULL (each COMMIT fsyncs the WAL) or NORMAL (only checkpoints sync)."""
    parsed = make_url(url).set(drivername="sqlite+pysqlite")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=pool_size,
        max_overflow=0,
        json_serializer=json_text,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (savepoints need it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writer = conn.info.get("writer")
        # The group commit wraps each unit in a SAVEPOINT, whose undo journal SQLite spills to a
        # temp file past 64 KiB (one intake touches more): a temp file per unit, ~25% of an
        # intake's CPU. In memory it is truncated at each RELEASE instead. Readers keep files,
        # so a large report's sorts cannot grow the process. (Read when the transaction begins.)
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            f"PRAGMA temp_store={'MEMORY' if writer else 'DEFAULT'}"
        )
        # IMMEDIATE takes the write lock up front: no lock upgrade deadlock with a CLI writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def apply_units(conn: Connection, units: list[Unit[Any]]) -> list[tuple[bool, Any]]:
    """Runs units in the open transaction, each in its own SAVEPOINT: (True, result) or
    (False, exception) per unit; a failed unit leaves no trace."""
    # Plain SQL savepoints on the DBAPI connection: begin_nested() builds and compiles an
    # uncacheable construct per unit, and even exec_driver_sql costs ~3x the statement itself.
    execute = conn.connection.driver_connection.execute  # type: ignore[union-attr]
    outcomes: list[tuple[bool, Any]] = []
    for unit in units:
        execute("SAVEPOINT unit")
        try:
            result = unit(conn)
        except Exception as err:
            execute("ROLLBACK TO SAVEPOINT unit")
            execute("RELEASE SAVEPOINT unit")
            outcomes.append((False, err))
        else:
            execute("RELEASE SAVEPOINT unit")
            outcomes.append((True, result))
    return outcomes


class UnitFailed(Exception):
    """A unit of a batch run without savepoints failed: the transaction holds its partial
    writes and must be rolled back."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"unit {index} failed: {error!r}")
        self.index = index
        self.error = error


def apply_units_together(conn: Connection, units: list[Unit[Any]], first: int = 0) -> list[Any]:
    """Runs units in the open transaction without a savepoint each; their results, or
    ``UnitFailed`` (numbered from ``first``) at the first that raises."""
    results = []
    for index, unit in enumerate(units, first):
        try:
            results.append(unit(conn))
        except Exception as err:
            raise UnitFailed(index, err) from err
    return results


class WriterLock:
    """One writer at a time on a SQLite file: across this process's threads, and across the
    processes of ``serve --workers N`` (an ``flock`` on a file beside the database).

    SQLite's own busy handler, when another process holds the write lock, sleeps and retries
    (1, 2, 5, ... up to 100 ms a try), so two group-committing processes wasted most of their
    time asleep (measured: 2 workers 759 tickets/s, p99 1 s, against 1,184/s for one). A
    blocking ``flock`` wakes the next writer as soon as the lock is released; SQLite then finds
    its write lock free. The file is opened lazily in each process: a descriptor inherited
    across ``fork`` would share one lock between parent and child."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: an in-memory database, one process
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        self._threads.acquire()
        if self.path is None:
            return
        try:
            if self._pid != os.getpid():
                if self._fd is not None:  # the parent's: closing this copy leaves its lock be
                    os.close(self._fd)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid = os.getpid()
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        try:
            if self.path is not None and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _settle(
    batch: list[tuple[Unit[Any], asyncio.Future[Any]]],
    outcomes: list[tuple[bool, Any]],
    error: BaseException | None,
) -> None:
    """Hand each unit's outcome to its caller; ``error``: the batch committed but could not
    be made durable, which its successful units report instead of their result."""
    for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if not ok:
            future.set_exception(value)
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class WalSync:
    """Makes what SQLite committed durable: an fsync of the WAL file, outside the write lock.

    With ``synchronous=NORMAL`` a COMMIT writes its pages to the WAL file without waiting for
    the disk; SQLite fsyncs the WAL itself only before a checkpoint copies it into the database
    (and the database before the WAL is reused). So once an fsync of the WAL file that began
    after a COMMIT returns, that transaction is on disk, wherever its pages are by then. Done
    here instead of inside COMMIT (``synchronous=FULL``), the fsync no longer holds the write
    lock: the next batch, of this process or another ``serve`` worker, runs meanwhile, and the
    batches committed during one fsync share the next. The units' callers hear back only after
    it; a reader may see a batch a few milliseconds before it is durable (a power cut then
    would lose what no client was told was stored)."""

    def __init__(self, wal: Path | None) -> None:
        self.wal = wal  # None: nothing to make durable (in memory, or durable = false)
        self._waiting: list[Callable[[BaseException | None], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-fsync")

    def sync(self) -> None:
        """Blocking: fsync the WAL file (a fresh descriptor: SQLite may have made a new one)."""
        if self.wal is None:
            return
        try:
            fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # the last connection checkpointed it into the database (synced) and left
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def after(self, done: Callable[[BaseException | None], None]) -> None:
        """Call ``done(None)`` once all that was committed so far is durable (``done(error)``
        if the fsync failed)."""
        if self.wal is None:
            done(None)
            return
        self._waiting.append(done)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sqlite-wal-fsync")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                covered, self._waiting = self._waiting, []
                error: BaseException | None = None
                try:
                    await loop.run_in_executor(self._thread, self.sync)
                except Exception as err:
                    error = err
                for done in covered:
                    done(error)
        finally:
            self._task = None

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._thread.shutdown(wait=True)


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, *, durable: bool = True) -> None:
        # NORMAL: a COMMIT writes the WAL without waiting for the disk; WalSync does the fsync
        self.engine = sqlite_engine(url, synchronous="NORMAL")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")
        self._queue: asyncio.Queue[tuple[Unit[Any], asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        file = make_url(url).database
        on_disk = file and file != ":memory:" and not file.startswith("file:")
        self._lock = WriterLock(Path(f"{file}.write-lock") if on_disk else None)
        self._sync = WalSync(Path(f"{file}-wal") if on_disk and durable else None)

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
                    result = unit(conn)
            finally:
                conn.info["writer"] = False
        self._sync.sync()
        return result

    def _read(self, unit: Unit[T]) -> T:
        with self.engine.connect() as conn, conn.begin():
            return unit(conn)

    async def _commit_loop(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await self._commit_batch([unit for unit, _ in batch])
            except Exception as err:  # the commit itself failed: nothing in the batch happened
                _settle(batch, [(False, err)] * len(batch), None)
                continue
            # the next batch begins at once; this one's callers hear back once it is durable
            self._sync.after(functools.partial(_settle, batch, outcomes))

    async def _commit_batch(self, units: list[Unit[Any]]) -> list[tuple[bool, Any]]:
        """One transaction for the units: (True, result) or (False, exception) per unit.

        Optimistically without a savepoint per unit: SQLite copies each page a savepoint is
        about to change first, ~6% of an intake's instructions, for the rare unit that fails.
        When one does, the transaction is rolled back, that unit's error is its outcome, and the
        others run again, each in its own savepoint (units may run twice, as a retried
        PostgreSQL transaction runs them). The earlier units were applied before it in both
        runs, so it failed on the same state it would have met in the second."""
        try:
            results = await self._transaction(units, isolated=False)
        except UnitFailed as failed:
            others = units[: failed.index] + units[failed.index + 1 :]
            outcomes = await self._transaction(others, isolated=True) if others else []
            outcomes.insert(failed.index, (False, failed.error))
            return outcomes
        return [(True, result) for result in results]

    async def _transaction(self, units: list[Unit[Any]], *, isolated: bool) -> list[Any]:
        """BEGIN and COMMIT (the waits: write lock, disk writes) in the writer thread; the units in
        between on the event loop's thread, as on PostgreSQL. A unit is ~13 short statements and
        pysqlite releases the GIL around each one: run in the writer thread, every statement was
        a GIL hand-off to and from the busy event loop, which cost ~30% of the server's CPU.
        ``isolated``: each unit in a savepoint, outcomes as ``apply_units`` gives them; else
        the units' results, or ``UnitFailed`` with nothing committed."""
        begun = self._writer.submit(self._begin_batch)
        try:
            conn = await asyncio.wrap_future(begun)
        except asyncio.CancelledError:  # the thread may still begin: end it there, right after
            self._writer.submit(self._end_if_begun, begun)
            raise
        ending = None
        try:
            outcomes: list[Any] = []
            for start in range(0, len(units), UNITS_PER_SLICE):
                if start:
                    await asyncio.sleep(0)  # let the loop serve requests between slices
                part = units[start : start + UNITS_PER_SLICE]
                if isolated:
                    outcomes += apply_units(conn, part)
                else:
                    outcomes += apply_units_together(conn, part, start)
            # COMMIT and the write lock's release in one step of the writer thread: the lock is
            # not held until this busy event loop gets round to the next step (another `serve`
            # worker waits for it)
            ending = self._writer.submit(self._commit_and_end, conn)
            # shielded: a cancelled caller must not cancel the job, which ends the batch
            await asyncio.shield(asyncio.wrap_future(ending))
            return outcomes
        finally:
            if ending is None:  # a unit failed or the slices were cancelled: roll back, end it
                # queued in the one writer thread: the connection is never used by two threads
                await asyncio.wrap_future(self._writer.submit(self._end_batch, conn))

    def _commit_and_end(self, conn: Connection) -> None:
        try:
            conn.commit()
        finally:
            self._end_batch(conn)

    def _begin_batch(self) -> Connection:
        self._lock.acquire()  # released by _end_batch
        try:
            conn = self.engine.connect()
            conn.info["writer"] = True
            try:
                conn.begin()
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._lock.release()
            raise
        return conn

    def _end_if_begun(self, begun: Future[Connection]) -> None:
        if not begun.cancelled() and begun.exception() is None:
            self._end_batch(begun.result())

    def _end_batch(self, conn: Connection) -> None:
        try:
            if conn.in_transaction():  # not committed: a unit slice or the commit failed
                conn.rollback()
        finally:
            conn.info["writer"] = False
            conn.close()
            self._lock.release()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._sync.close()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()


class _CommitFailed(Exception):
    """A COMMIT that failed: whether it took effect is unknown, so it is not retried."""

    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        # Whatever driver the URL names, PostgreSQL is driven through asyncpg.
        self.url = make_url(url).set(drivername="postgresql+asyncpg")
        # No pool_pre_ping: SQLAlchemy's asyncpg ping is three round trips (BEGIN, an empty
        # query, ROLLBACK) before every unit, a fifth of an intake. A pooled connection that
        # died (the server restarted) fails at the unit's first statement instead, before
        # anything could commit: the pool is dropped and the unit runs again (``_attempts``).
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size
        )

    async def write(self, unit: Unit[T]) -> T:
        async def attempt() -> T:
            async with self.engine.connect() as conn:
                await conn.begin()
                result = await conn.run_sync(unit)
                try:
                    await conn.commit()
                except DBAPIError as err:  # the commit may have happened: never run it again
                    raise _CommitFailed(err) from err
                return result

        try:
            return await self._attempts(attempt)
        except _CommitFailed as failed:
            raise failed.error from failed.error.__cause__

    async def read(self, unit: Unit[T]) -> T:
        async def attempt() -> T:
            async with self.engine.connect() as conn:
                return await conn.run_sync(unit)

        return await self._attempts(attempt)

    async def _attempts(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run a transaction again after a serialization failure or deadlock (PostgreSQL rolled
        it back), or a connection lost before the commit (nothing of it was written)."""
        for number in range(5):
            try:
                return await attempt()
            except DBAPIError as err:
                code = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
                if number == 4 or not (err.connection_invalidated or code in PG_RETRYABLE):
                    raise
                if err.connection_invalidated:
                    # the pool's other connections are most likely dead as well
                    await self.engine.dispose()
                else:
                    await asyncio.sleep(0.01 * 2**number)
        raise AssertionError("unreachable")

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
