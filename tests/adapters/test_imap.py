"""The IMAP poller against a real Dovecot on loopback, storing into a real Helpdesk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.imap import ImapPoller, pollers_from_settings
from core.config import EmailSettings, ImapMailboxSettings
from core.errors import ConfigError
from core.helpdesk import Helpdesk
from core.messages import InboundMessage
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.persistence.models import Quarantine, Ticket
from tests.conftest import make_settings
from tests.fakes.dovecot import Dovecot, running_dovecot

# Capability lists for servers lacking an extension (Dovecot advertises what we tell it).
BASE_CAPS = ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "UNSELECT", "NAMESPACE"]
WITHOUT_IDLE = [*BASE_CAPS, "UIDPLUS", "MOVE"]
WITHOUT_MOVE = [*BASE_CAPS, "UIDPLUS", "IDLE"]

SEEN = "\\Seen"


def mail(n: int, *, subject: str = "", body: str = "", message_id: bool = True) -> bytes:
    """A customer's mail; each number is another customer, so each opens its own ticket."""
    headers = [
        f"From: Customer {n} <customer{n}@example.org>",
        "To: support@example.com",
        f"Subject: {subject or f'Problem number {n}'}",
        "Date: Mon, 02 Mar 2026 09:00:00 +0000",
    ]
    if message_id:
        headers.append(f"Message-ID: <m{n}@example.org>")
    return ("\r\n".join(headers) + "\r\n\r\n" + (body or f"Help me with {n}.") + "\r\n").encode()


async def eventually(
    check: Callable[[], Awaitable[object] | object], timeout: float = 15.0
) -> None:
    """Wait until ``check()`` (sync or async) is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.05)


async def count(desk: Helpdesk, model: Any) -> int:
    table = model.__table__
    return int(
        await desk.db.read(
            lambda c: c.execute(select(func.count()).select_from(table)).scalar_one()
        )
    )


class Recorder:
    """An Intake in front of the real Helpdesk that records calls and can play an outage."""

    def __init__(self, desk: Helpdesk) -> None:
        self.desk = desk
        self.ingested: list[str] = []
        self.quarantined: list[str] = []
        self.down = False  # the database is unreachable: every call fails
        self.poison: set[str] = set()  # external ids whose intake always fails (a bug)
        self.failed: list[str] = []  # the calls that failed

    def _check(self, call: str) -> None:
        if self.down:
            self.failed.append(call)
            raise ConnectionError("database is down")

    async def ingest(self, msg: InboundMessage) -> Any:
        self._check("ingest")
        if msg.external_id in self.poison:
            self.failed.append("ingest")
            raise KeyError("a bug in the intake")
        result = await self.desk.ingest(msg)
        self.ingested.append(msg.external_id)
        return result

    async def quarantine(self, channel: str, reason: str, raw: bytes) -> int:
        self._check("quarantine")
        row = await self.desk.quarantine(channel, reason, raw)
        self.quarantined.append(reason)
        return row

    async def cursor(self, name: str) -> str | None:
        self._check("cursor")
        return await self.desk.cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        self._check("save_cursor")
        await self.desk.save_cursor(name, value)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def imap() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


async def _desk(url: str, tmp_path: Path) -> AsyncIterator[Helpdesk]:
    db = open_database(url, durable=False)
    upgrade(db)
    yield Helpdesk(db, make_settings(url, tmp_path), b"test-secret" * 4)
    await db.close()


@pytest.fixture
async def desk(backend_url: str, tmp_path: Path) -> AsyncIterator[Helpdesk]:
    async for d in _desk(backend_url, tmp_path):
        yield d


@pytest.fixture
async def desk_both(db_url: str, tmp_path: Path) -> AsyncIterator[Helpdesk]:
    async for d in _desk(db_url, tmp_path):
        yield d


@pytest.fixture
async def pollers() -> AsyncIterator[Callable[..., ImapPoller]]:
    """Makes pollers with quick retries; all are stopped at the end of the test."""
    made: list[ImapPoller] = []

    def make(mailbox: ImapMailboxSettings, password: str = "secret", **kw: Any) -> ImapPoller:
        options: dict[str, Any] = {"timeout": 5.0, "backoff_base": 0.05, "backoff_max": 0.5}
        poller = ImapPoller(mailbox, password=password, **{**options, **kw})
        made.append(poller)
        return poller

    yield make
    for poller in made:
        await poller.stop()


# -- tests ------------------------------------------------------------------------------------


async def test_waiting_mail_becomes_tickets_then_is_flagged_seen(
    imap: Dovecot, desk_both: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    desk = desk_both
    uids = [imap.append(mail(n)) for n in (1, 2, 3)]
    assert all(SEEN not in flags for flags in imap.flags().values())
    poller = pollers(imap.settings())
    await poller.start(desk)

    await eventually(lambda: all(SEEN in f for f in imap.flags().values()))
    assert await count(desk, Ticket) == 3
    validity = imap.uidvalidity()
    assert await desk.cursor("imap:support") == f"{validity}:{uids[-1]}"
    assert poller.connected and poller.using_idle and poller.last_error is None

    started = time.monotonic()
    await poller.stop()
    assert time.monotonic() - started < 2
    assert not poller.connected


@pytest.mark.parametrize("capabilities", [None, WITHOUT_MOVE], ids=["move", "copy-expunge"])
async def test_processed_folder_receives_committed_mail(
    capabilities: list[str] | None, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    with running_dovecot(capabilities) as imap:
        for n in (1, 2):
            imap.append(mail(n))
        poller = pollers(imap.settings(processed_folder="Done"))
        await poller.start(desk)

        await eventually(lambda: len(imap.flags("Done")) == 2)
        assert imap.flags("INBOX") == {}
        assert all(SEEN in flags for flags in imap.flags("Done").values())
        assert await count(desk, Ticket) == 2
        await poller.stop()


async def test_mail_arriving_while_idle_is_picked_up(
    imap: Dovecot, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    # Polling would take a minute: only IDLE can deliver within the wait below.
    poller = pollers(imap.settings(poll_seconds=60.0))
    await poller.start(desk)
    await eventually(lambda: poller.idling)
    assert poller.using_idle

    await asyncio.to_thread(imap.append, mail(1))
    await eventually(lambda: count(desk, Ticket), timeout=3)
    await eventually(lambda: all(SEEN in f for f in imap.flags().values()))


@pytest.mark.parametrize(
    ("idle", "capabilities"),
    [(False, None), (True, WITHOUT_IDLE)],
    ids=["idle-off", "server-without-idle"],
)
async def test_polls_when_idle_is_off_or_missing(
    idle: bool,
    capabilities: list[str] | None,
    desk: Helpdesk,
    pollers: Callable[..., ImapPoller],
) -> None:
    with running_dovecot(capabilities) as imap:
        poller = pollers(imap.settings(idle=idle, poll_seconds=0.2))
        await poller.start(desk)
        await eventually(lambda: poller.connected)
        assert not poller.using_idle

        imap.append(mail(1))
        await eventually(lambda: all(SEEN in f for f in imap.flags().values()))
        assert await count(desk, Ticket) == 1

        started = time.monotonic()
        await poller.stop()
        assert time.monotonic() - started < 1


async def test_restart_neither_refetches_nor_skips(
    imap: Dovecot, desk_both: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    desk = Recorder(desk_both)
    for n in (1, 2):
        imap.append(mail(n))
    first = pollers(imap.settings())
    await first.start(desk)
    await eventually(lambda: len(desk.ingested) == 2)
    await eventually(lambda: all(SEEN in f for f in imap.flags().values()))
    await first.stop()

    # Mail arrives while nobody listens; and someone marks an old message unread again
    # (the cursor, not the \Seen flag, says what is done).
    imap.append(mail(3))
    with imap.client() as client:
        client.select_folder("INBOX")
        client.remove_flags([1], [SEEN])
    second = pollers(imap.settings())
    await second.start(desk)

    await eventually(lambda: len(desk.ingested) == 3)
    await asyncio.sleep(0.3)  # a refetch would show up here
    assert desk.ingested == ["m1@example.org", "m2@example.org", "m3@example.org"]
    assert await count(desk_both, Ticket) == 3


async def test_recreated_folder_is_read_again_without_duplicates(
    imap: Dovecot, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    recorder = Recorder(desk)
    for n in (1, 2):
        imap.append(mail(n), folder="Support")
    old_validity = imap.uidvalidity("Support")
    poller = pollers(imap.settings(folder="Support"))
    await poller.start(recorder)
    await eventually(lambda: len(recorder.ingested) == 2)
    await eventually(lambda: poller.connected)

    # Restored from a backup while the poller is connected and idle: new UIDVALIDITY, the same
    # two old messages plus a new one.
    imap.recreate("Support")
    for n in (1, 2, 3):
        imap.append(mail(n), folder="Support")
    new_validity = imap.uidvalidity("Support")
    assert new_validity != old_validity

    await eventually(lambda: len(recorder.ingested) == 5)
    await eventually(lambda: all(SEEN in f for f in imap.flags("Support").values()))
    assert await count(desk, Ticket) == 3  # the old two were recognised, not opened again
    assert await desk.cursor("imap:support") == f"{new_validity}:3"


async def test_reconnects_after_the_server_goes_away(
    imap: Dovecot, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    poller = pollers(imap.settings())
    await poller.start(desk)
    imap.append(mail(1))
    await eventually(lambda: count(desk, Ticket))
    await eventually(lambda: poller.connected)

    imap.stop()
    await eventually(lambda: not poller.connected)
    await eventually(lambda: poller.last_error is not None)  # refused while down, retrying
    imap.start()
    await asyncio.to_thread(imap.append, mail(2))

    await eventually(lambda: poller.connected)
    await eventually(
        lambda: len(imap.flags()) == 2 and all(SEEN in f for f in imap.flags().values())
    )
    assert await count(desk, Ticket) == 2
    assert poller.using_idle


async def test_unusable_mail_is_quarantined_and_flagged(
    imap: Dovecot, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    recorder = Recorder(desk)
    imap.append(b"   \r\n\r\n")  # nothing at all: the parser gives up
    imap.append(b"Subject: who am I?\r\n\r\nno sender\r\n")  # parses; the intake refuses it
    imap.append(mail(9, body="x" * 3000))  # over the size limit: headers kept
    imap.append(mail(1))
    poller = pollers(imap.settings(), max_message_bytes=2000)
    await poller.start(recorder)

    await eventually(
        lambda: len(imap.flags()) == 4 and all(SEEN in f for f in imap.flags().values())
    )
    assert await count(desk, Ticket) == 1
    assert await count(desk, Quarantine) == 3
    reasons = recorder.quarantined
    assert "uid 1: unparseable" in reasons[0]
    assert "uid 2: rejected: the sender's address is empty" in reasons[1]
    assert "uid 3: message is" in reasons[2]
    kept = await desk.db.read(
        lambda c: c.execute(select(Quarantine.__table__.c.raw).order_by("id")).scalars().all()
    )
    assert kept[2].startswith(b"From: Customer 9") and b"xxx" not in kept[2]
    await poller.stop()

    # Done is done: a restart fetches none of them again.
    again = pollers(imap.settings())
    await again.start(recorder)
    await eventually(lambda: again.connected)
    await asyncio.sleep(0.3)
    assert len(recorder.quarantined) == 3 and len(recorder.ingested) == 1


async def test_storage_outage_leaves_mail_unflagged_and_retries(
    imap: Dovecot, desk_both: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    flaky = Recorder(desk_both)
    uid = imap.append(mail(1))
    poller = pollers(imap.settings())
    await poller.start(flaky)
    await eventually(lambda: flaky.ingested == ["m1@example.org"])
    await eventually(lambda: poller.idling)

    flaky.down = True  # the database goes away; then mail arrives
    for n in (2, 3):
        await asyncio.to_thread(imap.append, mail(n))
    await eventually(lambda: len(flaky.failed) >= 4)  # retried, with backoff
    assert flaky.failed[0] == "ingest"  # the fetched message could not be stored ...
    assert "database is down" in (poller.last_error or "")
    flags = imap.flags()
    assert SEEN in flags[uid]
    assert [SEEN in flags[u] for u in sorted(flags)[1:]] == [False, False]  # ... so not flagged
    assert await count(desk_both, Ticket) == 1

    flaky.down = False
    await eventually(lambda: all(SEEN in f for f in imap.flags().values()))
    assert flaky.ingested == ["m1@example.org", "m2@example.org", "m3@example.org"]
    assert await count(desk_both, Ticket) == 3
    assert await desk_both.cursor("imap:support") == f"{imap.uidvalidity()}:3"
    await eventually(lambda: poller.last_error is None)


async def test_a_message_that_always_fails_is_set_aside_after_retries(
    imap: Dovecot, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    recorder = Recorder(desk)
    recorder.poison = {"m1@example.org"}
    for n in (1, 2):
        imap.append(mail(n))
    await pollers(imap.settings()).start(recorder)

    await eventually(lambda: all(SEEN in f for f in imap.flags().values()), timeout=10)
    assert recorder.failed == ["ingest"] * 8
    assert recorder.quarantined == [
        "imap support uid 1: could not be stored after 8 attempts: KeyError('a bug in the intake')"
    ]
    assert recorder.ingested == ["m2@example.org"]


async def test_stop_is_prompt_while_the_server_is_unreachable(
    imap: Dovecot, desk: Helpdesk, pollers: Callable[..., ImapPoller]
) -> None:
    imap.stop()
    poller = pollers(imap.settings(), backoff_base=30.0, backoff_max=30.0)
    await poller.start(desk)
    await eventually(lambda: poller.last_error is not None)
    started = time.monotonic()
    await poller.stop()
    assert time.monotonic() - started < 1


def test_pollers_from_settings_read_passwords_from_the_environment() -> None:
    mailboxes = (
        ImapMailboxSettings(name="a", host="imap.example.com", username="a"),
        ImapMailboxSettings(
            name="b", host="imap.example.com", username="b", password_env="B_PASSWORD"
        ),
    )
    email = EmailSettings(imap=mailboxes)
    env = {"HELPLINE_IMAP_PASSWORD": "pa", "B_PASSWORD": "pb"}
    found = pollers_from_settings(email, env)
    assert [p.mailbox.name for p in found] == ["a", "b"]
    assert [p.cursor_name for p in found] == ["imap:a", "imap:b"]

    with pytest.raises(ConfigError, match=r"email\.imap\[1\]\.password_env: .*B_PASSWORD"):
        pollers_from_settings(email, {"HELPLINE_IMAP_PASSWORD": "pa"})
    assert pollers_from_settings(EmailSettings(), {}) == []
