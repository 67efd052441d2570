"""CPU per new ticket of the intake unit alone (no HTTP), on a temp SQLite database.

Runs ``ingest_unit`` for ``--tickets`` distinct customers (the message shape of
``bench/intake.py``) the way the server's group commit runs them: in batches of ``--batch``
units, each unit in its own SAVEPOINT, one durable commit per batch
(``SqliteDatabase._commit_batch``), without HTTP. Prints CPU microseconds per
ticket (fsync waits are not CPU); ``--profile`` adds a cProfile listing.

    python -m bench.unit_profile                  # timing, 3000 tickets in batches of 50
    python -m bench.unit_profile --profile --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from core.config import Settings, parse_settings
from core.intake import ingest_unit
from core.messages import Channel, InboundMessage, Sender
from core.persistence.database import SqliteDatabase, open_database
from core.persistence.migrate import upgrade
from core.views import UnitContext
from gateway.app import bots
from gateway.hub import KbCache

SECRET = b"secret" * 8
BODY = (
    "Hello, my order #{i} arrived damaged: the box was crushed and two items are broken. "
    "Could you send a replacement or refund it? Photos available on request. Thanks!"
)


def settings_for(data: Path) -> Settings:
    return parse_settings(
        {
            "service": {"data_dir": str(data), "public_url": "http://127.0.0.1:8080"},
            "database": {"url": f"sqlite:///{data}/helpline.db", "durable": False},
        }
    )


def message(tag: str, i: int, now: datetime) -> InboundMessage:
    email = f"customer-{tag}-{i}@example.com"
    return InboundMessage(
        channel=Channel.API,
        external_id=f"bench-{tag}-{i}",
        sender=Sender(address=email, name=f"Customer {i}", email=email),
        subject=f"Damaged order #{i}",
        text=BODY.format(i=i),
        received_at=now,
    )


def run(settings: Settings, tag: str, count: int, batch: int) -> float:
    """Seconds of CPU for ``count`` intakes, committed in batches of ``batch``."""
    db = open_database(settings.database.url, durable=True)
    assert isinstance(db, SqliteDatabase)
    upgrade(db)
    reactions = bots(settings, SECRET)  # the server's bots
    now = datetime.now(UTC)

    def unit(msg: InboundMessage) -> Callable[[Connection], Any]:
        # a clock reading per unit, as Helpdesk.context() does
        return lambda conn: ingest_unit(
            conn, UnitContext(settings, SECRET, datetime.now(UTC), reactions, KbCache()()), msg
        )

    units = [unit(message(tag, i, now)) for i in range(count)]

    async def commit_all() -> None:
        for start in range(0, count, batch):
            for ok, value in await db._commit_batch(units[start : start + batch]):
                if not ok:
                    raise value

    try:
        started = time.process_time()
        asyncio.run(commit_all())
        return time.process_time() - started
    finally:
        asyncio.run(db.close())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--tickets", type=int, default=3000)
    p.add_argument("--batch", type=int, default=50, help="units per group commit")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="helpline-unit-") as tmp:
        settings = settings_for(Path(tmp))
        run(settings, "warm", 200, args.batch)  # statement caches, imports
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
        seconds = run(settings, "measured", args.tickets, args.batch)
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    print(f"{args.tickets} new tickets: {seconds / args.tickets * 1e6:.0f} us CPU per ticket")


if __name__ == "__main__":
    main()
