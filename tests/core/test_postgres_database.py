"""PostgreSQL without a pool ping: a pooled connection the server dropped fails at a unit's first
statement, before anything could commit, and the unit runs again on a new connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import Connection, bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError

from core.persistence.database import PostgresDatabase
from core.persistence.migrate import upgrade
from core.persistence.models import Customer, table_of
from core.persistence.prepared import Prepared

customers = table_of(Customer)
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
INSERT = Prepared(insert(customers).returning(customers.c.id))
BY_EMAIL = Prepared(select(customers.c.id).where(customers.c.email == bindparam("email")))


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[PostgresDatabase]:
    database = PostgresDatabase(pg_url, pool_size=3)
    upgrade(database)
    yield database
    await database.close()


async def drop_server_connections(pg_url: str) -> int:
    """What a server restart does to the pool: every connection of the database is gone."""
    admin = await asyncpg.connect(pg_url)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                pg_url.rsplit("/", 1)[-1],
            )
        )
    finally:
        await admin.close()


def add(email: str) -> Callable[[Connection], int]:
    def unit(conn: Connection) -> int:
        values = {"name": "Ann", "email": email, "attributes": {}, "created_at": NOW}
        return int(INSERT.run(conn, values).scalar_one())

    return unit


@pytest.mark.parametrize("first", ["prepared", "sqlalchemy"])
async def test_units_run_again_after_the_server_dropped_the_pool(
    db: PostgresDatabase, pg_url: str, first: str
) -> None:
    # fill the pool with idle connections, then have the server drop them all
    await asyncio.gather(*(db.write(add(f"a{i}@example.org")) for i in range(3)))
    assert await drop_server_connections(pg_url) >= 1
    calls = 0

    def unit(conn: Connection) -> int:
        nonlocal calls
        calls += 1
        if first == "sqlalchemy":  # SQLAlchemy's own path flags the lost connection too
            conn.execute(text("SELECT 1"))
        return add("after@example.org")(conn)

    new_id = await db.write(unit)
    assert calls == 2  # the first attempt met the dead connection, the second a new one
    rows = await db.read(lambda c: BY_EMAIL.run(c, {"email": "after@example.org"}).all())
    assert [r.id for r in rows] == [new_id]  # written once

    assert await drop_server_connections(pg_url) >= 1
    assert await db.read(lambda c: len(BY_EMAIL.run(c, {"email": "a0@example.org"}).all())) == 1


async def test_a_lost_connection_is_flagged_by_the_fast_path(
    db: PostgresDatabase, pg_url: str
) -> None:
    """Without the retry: the error says the connection was invalidated, like SQLAlchemy's."""
    async with db.engine.connect() as conn:
        await conn.run_sync(lambda c: BY_EMAIL.run(c, {"email": "x"}).all())
        await conn.commit()
        await drop_server_connections(pg_url)
        with pytest.raises(DBAPIError) as raised:
            await conn.run_sync(lambda c: BY_EMAIL.run(c, {"email": "x"}).all())
        assert raised.value.connection_invalidated
        assert conn.invalidated


async def test_other_errors_are_not_retried(db: PostgresDatabase) -> None:
    calls = 0

    def unit(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        conn.execute(text("SELECT 1 / 0"))

    with pytest.raises(DBAPIError) as raised:
        await db.write(unit)
    assert not raised.value.connection_invalidated
    assert calls == 1
