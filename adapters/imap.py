"""Inbound email from IMAP mailboxes: one worker thread per mailbox (imapclient is blocking).

For each mailbox the poller keeps a cursor ``imap:<name>`` = ``"<UIDVALIDITY>:<last UID>"`` in the
database and, in UID order, fetches each newer message, parses it, hands it to the intake and
waits for the commit; only then does it flag the message ``\\Seen`` (or move it to
``processed_folder``) and advance the cursor. So a crash anywhere re-reads at most the message in
hand, and the intake's receipts (keyed by Message-ID) make that re-read a no-op: nothing is
stored twice, nothing is skipped.

Every message in the folder above the cursor is read, ``\\Seen`` or not: on the first run that is
the whole folder, so point the poller at a mailbox dedicated to support.

Between passes it waits in IDLE when the mailbox allows it and the server has it, otherwise it
sleeps ``poll_seconds``. IDLE brings new mail at once but is not a guarantee: a server may not
report mail that arrived between our last command and IDLE (Dovecot 2.3 doesn't, until the next
change), so IDLE is also ended for a pass every ``poll_seconds`` (at most ``idle_seconds``, well
under the 29 minutes RFC 2177 allows and common NAT timeouts): nothing waits longer than with
polling. Any failure (server gone, login refused, database down) closes the connection and
retries with capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from imapclient import DELETED, SEEN, IMAPClient

from adapters.email_parse import UnparseableEmail, parse_email
from core.config import EmailSettings, ImapMailboxSettings
from core.errors import ConfigError, InvalidInput
from core.messages import Channel, InboundMessage
from core.ports import Clock, Intake, utc_now

__all__ = ["ImapPoller", "pollers_from_settings"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Parse = Callable[..., InboundMessage]

# How often a waiting worker looks at the stop flag; bounds how long stop() takes.
_TICK_SECONDS = 0.5
# Message sizes are asked for this many UIDs at a time (keeps command lines short).
_BATCH = 200
# Failed attempts to store one message (while quarantine still works) before it is set aside.
_POISON_ATTEMPTS = 8


class IntakeFailed(Exception):
    """Storing a message failed for a reason that may pass (database down): retry it later."""


class ImapPoller:
    """Reads one IMAP folder into the intake; ``start(intake)`` / ``stop()``.

    ``connected``, ``using_idle``, ``idling`` and ``last_error`` describe the worker (health
    pages, tests).
    """

    channel = Channel.EMAIL

    def __init__(
        self,
        mailbox: ImapMailboxSettings,
        *,
        password: str | None,
        parse: Parse = parse_email,
        clock: Clock = utc_now,
        timeout: float = 30.0,
        idle_seconds: float = 240.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        max_message_bytes: int = 26_214_400,
    ) -> None:
        self.mailbox = mailbox
        self._password = password
        self._parse = parse
        self._clock = clock
        self._timeout = timeout
        self._idle_seconds = idle_seconds
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_bytes = max_message_bytes
        self.connected = False
        self.using_idle = False
        self.idling = False
        self.last_error: str | None = None
        self._failures = 0
        self._stuck: tuple[int, int] = (0, 0)  # (UID, failed attempts) of the message in hand
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: IMAPClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._intake: Intake | None = None

    @property
    def cursor_name(self) -> str:
        return f"imap:{self.mailbox.name}"

    @property
    def _inbox(self) -> str:
        return self.mailbox.address or self.mailbox.name

    # -- lifecycle (called on the event loop) -------------------------------------------------

    async def start(self, intake: Intake) -> None:
        if self._thread is not None:
            raise RuntimeError(f"IMAP poller {self.mailbox.name!r} is already running")
        mb = self.mailbox
        if not (mb.ssl or mb.starttls) and mb.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "imap %s: %s is used without TLS; the password crosses in clear", mb.name, mb.host
            )
        self._loop = asyncio.get_running_loop()
        self._intake = intake
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"imap-{mb.name}", daemon=True)
        self._thread.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish (it logs out) and wait; within ``timeout`` seconds."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        # Waits (IDLE, poll sleep, backoff) notice the flag within a tick ...
        grace = min(timeout / 2, 2 * _TICK_SECONDS + 1)
        await asyncio.to_thread(thread.join, grace)
        if thread.is_alive():
            # ... but a read from a hung server only ends when its socket is closed under it.
            client = self._client
            if client is not None:
                with contextlib.suppress(Exception):
                    client.shutdown()
            await asyncio.to_thread(thread.join, timeout - grace)
        if thread.is_alive():
            log.error("imap %s: the worker did not stop", self.mailbox.name)

    # -- the worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        name = self.mailbox.name
        while not self._stopping.is_set():
            try:
                self._session()
            except Exception as err:
                if self._stopping.is_set() or (self._loop and self._loop.is_closed()):
                    break  # stopped, or the service is gone without stopping us
                self._failures += 1
                delay = self._backoff(self._failures)
                self.last_error = f"{type(err).__name__}: {err}"
                # A traceback only for the unexpected (a bug rather than the network or storage).
                expected = isinstance(err, OSError | IMAPClient.Error | IntakeFailed)
                log.warning(
                    "imap %s: %s; retrying in %.1fs",
                    name,
                    self.last_error,
                    delay,
                    exc_info=not expected,
                )
                self._stopping.wait(delay)
        log.info("imap %s: stopped", name)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)  # jitter: many pollers don't retry in step

    def _session(self) -> None:
        """One connection: sync, then wait (IDLE or sleep), until stopped or something fails."""
        client = self._connect()
        self._client = client
        try:
            processed = self.mailbox.processed_folder
            if processed and not client.folder_exists(processed):
                client.create_folder(processed)
            self.using_idle = self.mailbox.idle and client.has_capability("IDLE")
            self.connected = True
            log.info(
                "imap %s: connected to %s (%s)",
                self.mailbox.name,
                self.mailbox.host,
                "IDLE" if self.using_idle else f"polling every {self.mailbox.poll_seconds}s",
            )
            # 0 is never a real UIDVALIDITY: the first pass reads the cursor.
            uidvalidity, last_uid = 0, 0
            while not self._stopping.is_set():
                uidvalidity, last_uid = self._sync(client, uidvalidity, last_uid)
                self._failures, self.last_error = 0, None
                if self._stopping.is_set():
                    break
                if self.using_idle:
                    self._idle(client)
                else:
                    self._stopping.wait(self.mailbox.poll_seconds)
        finally:
            self.connected = False
            self._client = None
            with contextlib.suppress(Exception):
                client.logout()

    def _connect(self) -> IMAPClient:
        mb = self.mailbox
        context = ssl.create_default_context() if mb.ssl or mb.starttls else None
        client = IMAPClient(
            mb.host, port=mb.port, ssl=mb.ssl, ssl_context=context, timeout=self._timeout
        )
        try:
            if mb.starttls and not mb.ssl:
                client.starttls(context)
            client.login(mb.username, self._password or "")
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def _load_cursor(self, uidvalidity: int) -> int:
        """The last UID stored from this folder incarnation (0: none yet)."""
        intake = self._intake_()
        saved = self._call(intake.cursor(self.cursor_name))
        validity, _, uid = (saved or "").partition(":")
        if validity == str(uidvalidity) and uid.isdigit():
            last_uid = int(uid)
        else:
            if saved is not None:
                # The folder was recreated (or restored): old UIDs mean nothing. Read it all
                # again; messages already stored are known by their Message-ID, not stored twice.
                log.warning(
                    "imap %s: UIDVALIDITY of %s changed (cursor %r, now %d): reading "
                    "it again from the start",
                    self.mailbox.name,
                    self.mailbox.folder,
                    saved,
                    uidvalidity,
                )
            last_uid = 0
            self._call(intake.save_cursor(self.cursor_name, f"{uidvalidity}:0"))
        log.info(
            "imap %s: folder %s, UIDVALIDITY %d, reading after UID %d",
            self.mailbox.name,
            self.mailbox.folder,
            uidvalidity,
            last_uid,
        )
        return last_uid

    def _sync(self, client: IMAPClient, uidvalidity: int, last_uid: int) -> tuple[int, int]:
        """Store every message above ``last_uid``, in UID order; returns the new position."""
        # Re-SELECT rather than NOOP: a session whose folder was deleted and recreated keeps
        # showing the old one (Dovecot) until the folder is opened again.
        current = int(client.select_folder(self.mailbox.folder)[b"UIDVALIDITY"])
        if current != uidvalidity:
            uidvalidity, last_uid = current, self._load_cursor(current)
        # "UID n:*" always matches the highest message, even when its UID is below n: filter.
        uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        for start in range(0, len(uids), _BATCH):
            batch = uids[start : start + _BATCH]
            sizes = client.fetch(batch, ["RFC822.SIZE"])
            for uid in batch:
                if self._stopping.is_set():
                    return uidvalidity, last_uid
                if uid in sizes:  # else expunged by someone else meanwhile
                    self._process(client, uid, int(sizes[uid].get(b"RFC822.SIZE", 0)))
                self._call(self._intake_().save_cursor(self.cursor_name, f"{uidvalidity}:{uid}"))
                last_uid = uid
        return uidvalidity, last_uid

    def _process(self, client: IMAPClient, uid: int, size: int) -> None:
        # One message at a time keeps memory bounded by the largest message we accept.
        where = f"imap {self.mailbox.name} uid {uid}"
        intake = self._intake_()
        if size > self._max_bytes:
            head = client.fetch([uid], ["BODY.PEEK[HEADER]"]).get(uid, {})
            self._quarantine(
                where,
                f"message is {size} bytes (limit {self._max_bytes}); "
                "headers kept, the message stays in the mailbox",
                head.get(b"BODY[HEADER]", b""),
            )
        else:
            fetched = client.fetch([uid], ["BODY.PEEK[]"]).get(uid)
            if fetched is None:  # expunged by someone else since the listing
                return
            raw = bytes(fetched[b"BODY[]"])
            try:
                msg = self._parse(raw, received_at=self._clock(), inbox=self._inbox)
            except UnparseableEmail as err:
                self._quarantine(where, f"unparseable: {err}", raw)
            except Exception as err:  # the parser is pure: retrying would fail the same way
                log.exception("%s: the parser failed", where)
                self._quarantine(where, f"parser error: {type(err).__name__}: {err}", raw)
            else:
                try:
                    self._call(intake.ingest(msg))
                except InvalidInput as err:
                    self._quarantine(where, f"rejected: {err}", raw)
                except Exception as err:
                    self._ingest_failed(uid, where, raw, err)
        self._acknowledge(client, uid)

    def _ingest_failed(self, uid: int, where: str, raw: bytes, err: Exception) -> None:
        """Retry later (raise), unless this very message keeps failing while storage works.

        A database outage fails every write, so the quarantine below fails too and we keep
        retrying. A message the intake chokes on (a bug) would otherwise block the folder
        forever: after ``_POISON_ATTEMPTS`` tries it is quarantined and the folder moves on.
        """
        count = self._stuck[1] + 1 if self._stuck[0] == uid else 1
        self._stuck = (uid, count)
        if count < _POISON_ATTEMPTS:
            raise IntakeFailed(f"{where}: could not store the message: {err}") from err
        log.error("%s: storing failed %d times, quarantining it: %r", where, count, err)
        self._quarantine(where, f"could not be stored after {count} attempts: {err!r}", raw)

    def _quarantine(self, where: str, reason: str, raw: bytes) -> None:
        log.warning("%s: quarantined: %s", where, reason)
        try:
            self._call(self._intake_().quarantine(Channel.EMAIL.value, f"{where}: {reason}", raw))
        except Exception as err:
            raise IntakeFailed(f"{where}: could not quarantine the message: {err}") from err

    def _acknowledge(self, client: IMAPClient, uid: int) -> None:
        """Mark a committed message done on the server: flag it read, or move it away."""
        client.add_flags([uid], [SEEN])
        target = self.mailbox.processed_folder
        if not target:
            return
        if client.has_capability("MOVE"):
            client.move([uid], target)
            return
        client.copy([uid], target)
        client.add_flags([uid], [DELETED])
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])
        else:  # plain EXPUNGE also removes what others marked \Deleted: still their intent
            client.expunge()

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the server reports something, the renewal time, or stop."""
        client.idle()
        self.idling = True
        try:
            renew_at = time.monotonic() + min(self._idle_seconds, self.mailbox.poll_seconds)
            while not self._stopping.is_set() and time.monotonic() < renew_at:
                started = time.monotonic()
                if client.idle_check(timeout=_TICK_SECONDS):
                    break  # new mail, expunge, flags or BYE: sync (a dead link fails there)
                if time.monotonic() - started < _TICK_SECONDS / 2:
                    # Readable but no line: imapclient swallows EOF here, so leave IDLE and
                    # let DONE find out whether the server is still there.
                    break
        finally:
            self.idling = False
            client.idle_done()

    # -- bridge to the event loop -------------------------------------------------------------

    def _intake_(self) -> Intake:
        assert self._intake is not None, "start() first"
        return self._intake

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an intake coroutine on the service's loop and wait for its commit."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def pollers_from_settings(email: EmailSettings, env: Mapping[str, str]) -> list[ImapPoller]:
    """One poller per ``[[email.imap]]`` mailbox; each password from its ``password_env``."""
    pollers = []
    for index, mailbox in enumerate(email.imap):
        password = env.get(mailbox.password_env)
        if not password:
            raise ConfigError(
                f"email.imap[{index}].password_env: environment variable "
                f"{mailbox.password_env} is not set"
            )
        pollers.append(
            ImapPoller(
                mailbox, password=password, max_message_bytes=email.smtp_server.max_message_bytes
            )
        )
    return pollers
