"""Leadership: which of several serving processes runs what must run once.

The leader alone runs the scheduler (its jobs would otherwise fire in every process: harmless,
as they are idempotent, but N times the work), the IMAP pollers and Telegram long polling (two
pollers steal each other's updates). Everything else (HTTP, webhooks, inbound SMTP, the outbox)
runs in every process.

* PostgreSQL: a process leads while it holds a session-level advisory lock on a connection of
  its own (asyncpg, outside the pool, so the pool's recycling never drops it). Whoever does not
  get it asks again every ``service.leader_retry_seconds``; the leader checks its connection as
  often and, when it is gone, stops its duties and competes again. The server frees the lock
  when the session ends, also when the process is killed, so a follower takes over within
  about ``leader_retry_seconds`` of the old leader's death.
* SQLite: one machine, one file: the process that may lead (the first of ``serve --workers``)
  leads from the start, as before.

Between the old leader losing its connection and noticing it (at most one check interval),
two processes may run the duties at once; every job is idempotent, so that costs work only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# pg_try_advisory_lock(bigint): the ASCII of "HELPLINE". Advisory locks are per database, so
# deployments on different databases of one server do not compete.
LOCK_KEY = 0x48454C504C494E45

# Starts the leader's duties, registering how to stop each on the stack.
Duties = Callable[[contextlib.AsyncExitStack], Awaitable[None]]


class Leadership:
    """``await start()`` settles the first attempt (a process alone on the database leads when
    its start-up ends); then a task keeps competing until ``stop()``."""

    def __init__(
        self,
        url: str,
        duties: Duties,
        *,
        candidate: bool = True,
        retry_seconds: float = 5.0,
        on_change: Callable[[bool], object] | None = None,
    ) -> None:
        parsed = make_url(url)
        self.postgres = parsed.get_backend_name() == "postgresql"
        # asyncpg takes a plain libpq URL: no "+driver" in the scheme
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.duties = duties
        self.candidate = candidate
        self.retry_seconds = retry_seconds
        self.on_change = on_change
        self.leading = False
        self.terms = 0  # how many times this process took the lead
        self._stack: contextlib.AsyncExitStack | None = None
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.candidate:
            return
        if not self.postgres:
            await self._take_lead()  # errors propagate: a bad configuration fails start-up
            return
        conn = await self._try_lock()
        if conn is not None:
            try:
                await self._take_lead()
            except BaseException:
                await self._close(conn)
                raise
            self._conn = conn
        self._task = asyncio.create_task(self._compete(), name="leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._step_down()
        if self._conn is not None:
            await self._close(self._conn)
            self._conn = None

    # -- PostgreSQL ---------------------------------------------------------------------------

    async def _compete(self) -> None:
        while True:
            if self._conn is None:
                await asyncio.sleep(self.retry_seconds)
                self._conn = await self._try_lock()
                if self._conn is None:
                    continue
                try:
                    await self._take_lead()
                except Exception:
                    log.exception("leader: the leader's duties did not start; letting go")
                    await self._step_down()
                    await self._close(self._conn)
                    self._conn = None
                    continue
            await self._hold(self._conn)
            log.warning("leader: the lock connection is lost; stopping the leader's duties")
            await self._step_down()  # before another process can have started them for long
            await self._close(self._conn)
            self._conn = None

    async def _try_lock(self) -> asyncpg.Connection | None:
        """A connection holding the lock, or None (another process has it, or no database)."""
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=max(1.0, self.retry_seconds),
                server_settings={"application_name": "helpline-leader"},
            )
        except Exception as err:  # refused, timed out, authentication...: try again later
            log.warning("leader: cannot reach the database: %s", err)
            return None
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
        except Exception as err:
            log.warning("leader: cannot ask for the lock: %s", err)
            got = False
        except BaseException:  # cancelled: the session must not keep a lock nobody uses
            conn.terminate()
            raise
        if got:
            return conn
        await self._close(conn)
        return None

    async def _hold(self, conn: asyncpg.Connection) -> None:
        """Returns when the session holding the lock is gone (or does not answer in time)."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            if conn.is_closed():
                return
            try:
                async with asyncio.timeout(max(1.0, self.retry_seconds)):  # see core.outbox
                    await conn.fetchval("SELECT 1")
            except Exception:  # closed, reset, timed out: the lock may be someone else's now
                return

    @staticmethod
    async def _close(conn: asyncpg.Connection) -> None:
        # closing the session releases the lock; terminate() when the server does not answer
        try:
            async with asyncio.timeout(2.0):
                await conn.close()
        except Exception:
            conn.terminate()

    # -- the duties -----------------------------------------------------------------------------

    async def _take_lead(self) -> None:
        stack = contextlib.AsyncExitStack()
        try:
            await self.duties(stack)
        except BaseException:
            await stack.aclose()  # stop what did start
            raise
        self._stack = stack
        self.leading = True
        self.terms += 1
        log.info("leader: this process leads (scheduler, pollers)")
        if self.on_change is not None:
            self.on_change(True)

    async def _step_down(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self.leading = False
        if self.on_change is not None:
            self.on_change(False)
        try:
            await stack.aclose()
        except Exception:
            log.exception("leader: stopping the leader's duties failed")
        log.info("leader: this process no longer leads")


LEADERSHIP = web.AppKey("leadership", Leadership)
