"""Alembic, driven from code: the migrations ship inside the package, no alembic.ini needed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from core.persistence.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x68656C70  # "help"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; call before the service starts)."""

    def run(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            # several processes may start at once: one migrates, the others wait and find it done
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        command.upgrade(alembic_config(conn), revision)

    db.run_sync(run)
