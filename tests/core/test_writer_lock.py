"""The SQLite writer lock: one writer at a time across threads and across forked processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

from core.persistence.database import SqliteDatabase, WriterLock


def _take_and_report(lock: WriterLock, queue: multiprocessing.Queue, held: Event) -> None:  # type: ignore[type-arg]
    held.wait(10)
    queue.put("waiting")
    lock.acquire()
    queue.put(time.time())
    lock.release()


def test_a_forked_process_does_not_share_the_parents_lock(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "db.sqlite.write-lock")
    with lock:  # the lock file is opened in this process, and inherited by the child
        pass
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    held = ctx.Event()
    child = ctx.Process(target=_take_and_report, args=(lock, queue, held))
    child.start()
    lock.acquire()
    held.set()
    try:
        assert queue.get(timeout=10) == "waiting"
        time.sleep(0.3)  # the child is blocked meanwhile
        released = time.time()
        lock.release()
        acquired = queue.get(timeout=10)
        assert acquired >= released
    finally:
        child.join(10)
    assert child.exitcode == 0


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "db.sqlite.write-lock")
    inside = 0
    overlaps = 0

    def work() -> None:
        nonlocal inside, overlaps
        for _ in range(200):
            with lock:
                inside += 1
                overlaps += inside > 1
                time.sleep(0)
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == 0


def test_the_lock_file_lies_beside_the_database(tmp_path: Path) -> None:
    db = SqliteDatabase(f"sqlite:///{tmp_path}/helpline.db")
    db.run_sync(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
    assert [p.name for p in tmp_path.glob("*.write-lock")] == ["helpline.db.write-lock"]
    db.engine.dispose()
