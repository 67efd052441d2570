"""SQLite's group commit: units that arrive together share one transaction, run without a
savepoint each; a failing unit is rolled back alone, its neighbours run again in savepoints.
And how values are bound on SQLite (NULL, JSON text) by the shortcuts taken for speed."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, event, text

from core.persistence.database import SqliteDatabase, json_text


class Broken(Exception):
    pass


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(f"sqlite:///{tmp_path}/group.db")
    database.run_sync(lambda c: c.exec_driver_sql("CREATE TABLE notes (name TEXT UNIQUE)"))
    yield database
    await database.close()


def statements(db: SqliteDatabase) -> list[str]:
    """Every statement the database's connections run from now on (new connections)."""
    seen: list[str] = []
    db.engine.dispose()

    @event.listens_for(db.engine, "connect")
    def trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(seen.append)

    return seen


class Units:
    """Units that each insert a note, counting how often each ran; ``failing`` ones raise
    after their insert (so a leftover write would show)."""

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.runs: Counter[str] = Counter()

    def __call__(self, name: str) -> Callable[[Connection], str]:
        def unit(conn: Connection) -> str:
            self.runs[name] += 1
            conn.execute(text("INSERT INTO notes VALUES (:n)"), {"n": name})
            if name in self.failing:
                raise Broken(name)
            return name.upper()

        return unit


async def write_together(db: SqliteDatabase, units: Units, names: list[str]) -> list[Any]:
    # queued in one turn of the loop: the commit loop takes them as one batch
    return await asyncio.gather(*(db.write(units(name)) for name in names), return_exceptions=True)


async def notes(db: SqliteDatabase) -> list[str]:
    rows = await db.read(lambda c: c.execute(text("SELECT name FROM notes")).scalars().all())
    return sorted(rows)


async def test_a_batch_runs_each_unit_once_without_savepoints(db: SqliteDatabase) -> None:
    seen = statements(db)
    units = Units()
    assert await write_together(db, units, ["a", "b", "c"]) == ["A", "B", "C"]
    written = list(seen)
    assert units.runs == {"a": 1, "b": 1, "c": 1}
    assert await notes(db) == ["a", "b", "c"]
    assert [s for s in written if s.startswith("INSERT")] == [
        f"INSERT INTO notes VALUES ('{name}')" for name in "abc"
    ]
    assert not [s for s in written if "SAVEPOINT" in s]
    assert written.count("COMMIT") == 1  # one transaction for the three


async def test_a_failing_unit_is_rolled_back_alone(db: SqliteDatabase) -> None:
    seen = statements(db)
    units = Units("c")
    results = await write_together(db, units, ["a", "b", "c", "d", "e"])
    written = list(seen)
    assert results[:2] == ["A", "B"] and results[3:] == ["D", "E"]
    assert isinstance(results[2], Broken)
    assert await notes(db) == ["a", "b", "d", "e"]
    # the first pass stopped at c; the others ran again, each in its own savepoint
    assert units.runs == {"a": 2, "b": 2, "c": 1, "d": 1, "e": 1}
    assert written.count("SAVEPOINT unit") == 4
    assert written.count("ROLLBACK") == 1 and written.count("COMMIT") == 1


async def test_units_failing_in_both_passes_each_get_their_error(db: SqliteDatabase) -> None:
    units = Units("a", "d")
    results = await write_together(db, units, ["a", "b", "c", "d"])
    assert [type(r) for r in results] == [Broken, str, str, Broken]
    assert [str(r) for r in results] == ["a", "B", "C", "d"]
    assert await notes(db) == ["b", "c"]
    assert units.runs == {"a": 1, "b": 1, "c": 1, "d": 1}


async def test_a_lone_failing_unit_is_not_run_again(db: SqliteDatabase) -> None:
    units = Units("x")
    with pytest.raises(Broken):
        await db.write(units("x"))
    assert units.runs == {"x": 1}
    assert await notes(db) == []
    assert await db.write(units("y")) == "Y"  # and the writer goes on


async def test_none_and_bool_bind_as_null_and_integer(db: SqliteDatabase) -> None:
    """None takes pysqlite's registered adapter (a dict lookup, not two AttributeErrors):
    still NULL; a bool, untouched, still an integer."""
    types = await db.read(
        lambda c: c.exec_driver_sql("SELECT typeof(?), typeof(?), ?", (None, True, False)).one()
    )
    assert tuple(types) == ("null", "integer", 0)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_json_columns_are_written_as_json_dumps_writes_them(value: Any) -> None:
    assert json_text(value) == json.dumps(value)


def test_a_value_json_cannot_encode_is_a_type_error_naming_its_type() -> None:
    with pytest.raises(TypeError, match="Object of type datetime is not JSON serializable"):
        json_text({"at": datetime.now(UTC)})
