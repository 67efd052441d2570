"""A Helpdesk on a migrated database (both backends) with a clock the test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bots.customer import CustomerBot
from core.helpdesk import Helpdesk
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from tests.conftest import make_settings


class StepClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
async def helpdesk(db_url: str, tmp_path: Path, clock: StepClock) -> AsyncIterator[Helpdesk]:
    db = open_database(db_url, durable=False)
    upgrade(db)
    settings = make_settings(db_url, tmp_path)
    desk = Helpdesk(
        db,
        settings,
        b"test-secret" * 4,
        clock=clock,
        reactions=[CustomerBot(settings.service.name)],
    )
    yield desk
    await db.close()
