"""Prepared statements answer exactly like ``conn.execute`` on both backends (both take the
fast path on the DBAPI cursor: pysqlite's, SQLAlchemy's asyncpg adapter), inside the caller's
transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import Connection, Float, bindparam, cast, insert, select
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound, StatementError

from core.messages import Action, Channel, OutboundMessage, ThreadRef
from core.outbox import to_payload
from core.persistence.database import Database, open_database
from core.persistence.migrate import upgrade
from core.persistence.models import Customer, Identity, OutboxRow, UtcDateTime, table_of
from core.persistence.prepared import Prepared, _sqlite_utc_text
from core.persistence.records import InsertIgnoring

customers = table_of(Customer)
identities = table_of(Identity)
outbox = table_of(OutboxRow)
NOW = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=UTC)

INSERT_CUSTOMER = Prepared(insert(customers).returning(customers.c.id))
INSERT_IDENTITY = Prepared(InsertIgnoring(identities))
IDENTITY = Prepared(
    select(identities, customers.c.attributes, customers.c.created_at.label("customer_since"))
    .join(customers, customers.c.id == identities.c.customer_id)
    .where(identities.c.address == bindparam("address"))
)
INSERT_OUTBOX = Prepared(insert(outbox).returning(outbox.c.id))
OUTBOX = Prepared(select(outbox).where(outbox.c.id == bindparam("id")))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = open_database(db_url, durable=False)
    upgrade(database)
    yield database
    await database.close()


def customer(conn: Connection, email: str, attributes: dict[str, Any]) -> int:
    values = {"name": "Ann", "email": email, "attributes": attributes, "created_at": NOW}
    return int(INSERT_CUSTOMER.run(conn, values).scalar_one())


def identity(conn: Connection, customer_id: int, address: str, bouncing: bool) -> bool:
    values = {
        "customer_id": customer_id,
        "channel": "email",
        "address": address,
        "display_name": "Ann",
        "bouncing": bouncing,
        # another zone, same instant: stored as UTC like SQLAlchemy does it
        "created_at": NOW.astimezone(timezone(timedelta(hours=-5))),
    }
    return INSERT_IDENTITY.run(conn, values).rowcount == 1


async def test_rows_are_those_of_conn_execute(db: Database) -> None:
    def unit(conn: Connection) -> tuple[Any, Any]:
        cid = customer(conn, "ann@example.org", {"vip": True, "tags": ["a", "é"]})
        assert identity(conn, cid, "ann@example.org", bouncing=True)
        assert not identity(conn, cid, "ann@example.org", bouncing=False)  # a duplicate
        fast = IDENTITY.run(conn, {"address": "ann@example.org"}).one()
        plain = conn.execute(IDENTITY.statement, {"address": "ann@example.org"}).one()
        return fast, plain

    fast, plain = await db.write(unit)
    assert tuple(fast) == tuple(plain)
    assert fast._asdict() == dict(plain._mapping)
    assert fast.bouncing is True
    assert fast.created_at == NOW and fast.created_at.tzinfo is not None
    assert fast.customer_since == NOW
    assert fast.attributes == {"vip": True, "tags": ["a", "é"]}


async def test_both_backends_take_the_fast_path(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    delegated: list[Any] = []
    original = Prepared._delegate
    monkeypatch.setattr(
        Prepared, "_delegate", lambda self, c, p: delegated.append(p) or original(self, c, p)
    )

    def unit(conn: Connection) -> None:
        cid = customer(conn, "eve@example.org", {})
        identity(conn, cid, "eve@example.org", bouncing=False)
        IDENTITY.run(conn, {"address": "eve@example.org"}).one()

    await db.write(unit)
    assert delegated == []


async def test_a_float_column_reads_as_through_sqlalchemy(db: Database) -> None:
    # asyncpg's numeric result processors need the column's type code, known only after the
    # statement ran: there the fast path hands such a statement to SQLAlchemy
    share = Prepared(
        select(customers.c.id, cast(bindparam("share"), Float).label("share")).where(
            customers.c.email == bindparam("email")
        )
    )

    def unit(conn: Connection) -> tuple[Any, Any]:
        customer(conn, "flo@example.org", {})
        params = {"share": 0.25, "email": "flo@example.org"}
        return share.run(conn, params).one(), conn.execute(share.statement, params).one()

    fast, plain = await db.write(unit)
    assert tuple(fast) == tuple(plain) and fast.share == 0.25 and type(fast.share) is float


async def test_left_out_columns_get_their_defaults(db: Database) -> None:
    def unit(conn: Connection) -> Any:
        # attempts, last_error and automatic have plain defaults; the rest is nullable
        row_id = INSERT_OUTBOX.run(
            conn,
            {
                "idempotency_key": "k1",
                "channel": "email",
                "address": "ann@example.org",
                "payload": {"text": "hi"},
                "status": "queued",
                "next_attempt_at": NOW,
                "created_at": NOW,
            },
        ).scalar_one()
        return OUTBOX.run(conn, {"id": row_id}).one()

    row = await db.write(unit)
    assert (row.attempts, row.last_error, row.automatic) == (0, "", False)
    assert row.payload == {"text": "hi"} and row.next_attempt_at == NOW and row.lease_until is None


async def test_callable_defaults_and_missing_parameters_go_through_sqlalchemy(
    db: Database,
) -> None:
    def unit(conn: Connection) -> Any:
        values = {"name": "Bob", "email": "bob@example.org", "created_at": NOW}
        cid = INSERT_CUSTOMER.run(conn, values).scalar_one()  # attributes: default=dict
        return conn.execute(select(customers.c.attributes).where(customers.c.id == cid)).scalar()

    assert await db.write(unit) == {}
    with pytest.raises(StatementError):  # SQLAlchemy's own error for a missing value
        await db.write(lambda c: IDENTITY.run(c, {}).all())


async def test_errors_and_result_helpers_match_sqlalchemy(db: Database) -> None:
    def duplicate_email_identity(conn: Connection) -> None:
        cid = customer(conn, "cy@example.org", {})
        plain = Prepared(insert(identities))
        values = {
            "customer_id": cid,
            "channel": "email",
            "address": "cy@example.org",
            "display_name": "",
            "bouncing": False,
            "created_at": NOW,
        }
        plain.run(conn, values)
        plain.run(conn, values)

    with pytest.raises(IntegrityError):
        await db.write(duplicate_email_identity)

    def helpers(conn: Connection) -> None:
        for email in ("d1@example.org", "d2@example.org"):
            identity(conn, customer(conn, email, {}), email, bouncing=False)
        nobody = {"address": "nobody@example.org"}
        assert IDENTITY.run(conn, nobody).first() is None
        assert IDENTITY.run(conn, nobody).scalar() is None
        assert list(IDENTITY.run(conn, nobody).all()) == []
        with pytest.raises(NoResultFound):
            IDENTITY.run(conn, {"address": "nobody@example.org"}).one()
        both = Prepared(select(identities.c.address).order_by(identities.c.address))
        addresses = [r.address for r in both.run(conn, {}).all()]
        assert addresses == ["d1@example.org", "d2@example.org"]
        assert both.run(conn, {}).scalar() == "d1@example.org"
        with pytest.raises(MultipleResultsFound):
            both.run(conn, {}).one()

    await db.write(helpers)


async def test_a_failed_unit_in_a_batch_leaves_no_trace(db: Database) -> None:
    def failing(conn: Connection) -> None:
        customer(conn, "gone@example.org", {})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await db.write(failing)
    count = Prepared(select(customers.c.id).where(customers.c.email == bindparam("email")))
    assert await db.read(lambda c: count.run(c, {"email": "gone@example.org"}).all()) == []


def test_to_payload_is_asdict_with_the_channel_value() -> None:
    message = OutboundMessage(
        to=ThreadRef(Channel.EMAIL, "ann@example.org", "t-1"),
        text="Hello",
        subject="Re: help",
        html="<p>Hello</p>",
        actions=(Action("claim", "Claim", "1", "primary"), Action("close", "Close")),
        replaces="card:1",
        in_reply_to=("<a@x>", "<b@x>"),
        automatic=True,
        message_id="<m@x>",
    )
    expected = asdict(message)
    expected["to"]["channel"] = "email"
    assert to_payload(message) == expected
    bare = OutboundMessage(to=ThreadRef(Channel.SLACK, "C1"), text="hi")
    expected = asdict(bare)
    expected["to"]["channel"] = "slack"
    assert to_payload(bare) == expected


ZONES = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45))]


@given(st.datetimes(timezones=st.sampled_from(ZONES)))
@example(datetime(1, 1, 1, tzinfo=ZONES[2]))  # found by hypothesis: year 0 in UTC
def test_a_utc_datetime_is_stored_as_sqlalchemy_would(value: datetime) -> None:
    """The fast path's text for SQLite (one isoformat for a UTC datetime) is SQLAlchemy's; a
    moment whose UTC time lies outside datetime's range (1 January of year 1 at +05:45) is
    refused by both alike."""
    dialect = sqlite_dialect()
    theirs = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert theirs is not None
    ours = _sqlite_utc_text(theirs)
    try:
        expected = theirs(value)
    except OverflowError:
        with pytest.raises(OverflowError):
            ours(value)
        return
    assert ours(value) == expected
