"""The audit log of admin actions: who did what to which object, when and from where.

Every call site passes the connection of the action's own unit of work, so the record commits
with the action or not at all. Details never carry secrets (a created token is recorded by id,
never by value).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from core.persistence.models import AuditEntry, table_of

audit_log = table_of(AuditEntry)

CLI = "cli"  # prefix of actors at the command line: "cli:<os user>"


def record_admin_action(
    conn: Connection,
    *,
    actor: str,
    action: str,
    now: datetime,
    target: str = "",
    details: dict[str, Any] | None = None,
    ip: str | None = None,
) -> int:
    """Append one entry; ``action`` is a dotted verb (``token.create``, ``agent.set``...)."""
    return int(
        conn.execute(
            insert(audit_log)
            .values(
                at=now,
                actor=actor[:320],
                action=action[:100],
                target=target[:500],
                details=details or {},
                ip=ip[:64] if ip else None,
            )
            .returning(audit_log.c.id)
        ).scalar_one()
    )


def entries(
    conn: Connection, *, limit: int, offset: int = 0, action: str | None = None
) -> tuple[list[Any], int]:
    """A page of entries, newest first, and how many there are in all."""
    query = select(audit_log)
    counted = select(func.count()).select_from(audit_log)
    if action:
        query = query.where(audit_log.c.action == action)
        counted = counted.where(audit_log.c.action == action)
    rows = conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), int(conn.execute(counted).scalar_one())
