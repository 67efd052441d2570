"""Remember that something happened, once: repeated clicks and retried webhooks do nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete

from core.persistence.records import insert_ignoring_duplicates, receipts


def first_time(conn: Connection, scope: str, key: str, now: datetime) -> bool:
    """True the first time (scope, key) is seen; False ever after (same transaction rules)."""
    return insert_ignoring_duplicates(
        conn, receipts, {"channel": scope[:20], "external_id": key[:500], "created_at": now}
    )


def forget(conn: Connection, scope: str, key: str) -> None:
    """Undo ``first_time``: the thing did not happen after all and may be tried again."""
    conn.execute(
        delete(receipts).where(
            receipts.c.channel == scope[:20], receipts.c.external_id == key[:500]
        )
    )
