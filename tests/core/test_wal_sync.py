"""Durable SQLite commits with the fsync outside the write lock (``WalSync``): a caller hears
back only after an fsync of the WAL file that began after its batch committed; the next writer
does not wait for that fsync; batches committed meanwhile share the next one."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from core.persistence.database import SqliteDatabase, WalSync

real_fsync = os.fsync


class Disk:
    """Watches the fsyncs of one WAL file (os.fsync wrapped: the standard library's, not
    ours); each may be made slow or fail."""

    def __init__(self, wal: Path) -> None:
        self.wal = str(wal)
        self.delay = 0.0
        self.error: OSError | None = None
        self.syncs: list[tuple[float, float]] = []  # (began, ended) of each WAL fsync
        self.lock = threading.Lock()
        self.begun = threading.Event()  # set when a WAL fsync starts

    def fsync(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") != self.wal:
            return real_fsync(fd)
        began = time.monotonic()
        self.begun.set()
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        real_fsync(fd)
        with self.lock:
            self.syncs.append((began, time.monotonic()))
        return None


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "helpline.db"


@pytest.fixture
def disk(db_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    watched = Disk(Path(f"{db_file}-wal"))
    monkeypatch.setattr(os, "fsync", watched.fsync)
    yield watched


def make_table(conn: Connection) -> None:
    conn.execute(text("CREATE TABLE IF NOT EXISTS t (v INTEGER)"))


def insert(value: int) -> Callable[[Connection], int]:
    def unit(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
        return value

    return unit


def count(conn: Connection) -> Any:
    return conn.execute(text("SELECT count(*) FROM t")).scalar()


async def timed_write(db: SqliteDatabase, value: int) -> float:
    await db.write(insert(value))
    return time.monotonic()


async def test_callers_hear_back_after_an_fsync_that_began_after_their_commit(
    db_file: Path, disk: Disk
) -> None:
    db = SqliteDatabase(f"sqlite:///{db_file}")
    try:
        db.run_sync(make_table)
        disk.syncs.clear()
        disk.delay = 0.05
        began = time.monotonic()
        returned = await asyncio.gather(*(timed_write(db, i) for i in range(30)))
        assert disk.syncs, "no fsync of the WAL"
        for at in returned:  # each caller was answered after some WAL fsync ended...
            assert any(ended <= at for _, ended in disk.syncs)
        assert min(start for start, _ in disk.syncs) >= began  # ...that began after the call
        # every batch that committed during an fsync waited for the next: fewer fsyncs than
        # callers, but at least one per burst
        assert 1 <= len(disk.syncs) < 30
        assert await db.read(count) == 30
    finally:
        await db.close()


async def test_another_writer_commits_while_the_fsync_runs(db_file: Path, disk: Disk) -> None:
    """Two databases on one file stand for two `serve --workers` processes."""
    first, second = SqliteDatabase(f"sqlite:///{db_file}"), SqliteDatabase(f"sqlite:///{db_file}")
    try:
        first.run_sync(make_table)
        disk.delay = 0.5
        disk.begun.clear()
        slow = asyncio.create_task(first.write(insert(1)))
        # the first batch is committed and its fsync under way
        assert await asyncio.to_thread(disk.begun.wait, 5)
        disk.delay = 0.0
        started = time.monotonic()
        await second.write(insert(2))  # takes the write lock the first one released
        assert time.monotonic() - started < 0.4
        assert not slow.done()  # the first caller still waits for its fsync
        assert await slow == 1
    finally:
        await first.close()
        await second.close()


async def test_a_failed_fsync_is_the_callers_error(db_file: Path, disk: Disk) -> None:
    db = SqliteDatabase(f"sqlite:///{db_file}")
    try:
        db.run_sync(make_table)
        disk.error = OSError(5, "Input/output error")
        with pytest.raises(OSError, match="Input/output error"):
            await db.write(insert(1))
        disk.error = None
        # committed though not known to be durable: a retry finds it (intake dedupes by key)
        assert await db.read(count) == 1
    finally:
        await db.close()


async def test_not_durable_means_no_fsync(db_file: Path, disk: Disk) -> None:
    db = SqliteDatabase(f"sqlite:///{db_file}", durable=False)
    try:
        db.run_sync(make_table)
        await asyncio.gather(*(db.write(insert(i)) for i in range(5)))
        assert disk.syncs == []
    finally:
        await db.close()


def test_a_wal_file_gone_needs_no_fsync(tmp_path: Path) -> None:
    WalSync(tmp_path / "absent.db-wal").sync()  # checkpointed into the database: no error
