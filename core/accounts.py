"""Agents, teams and API tokens. Tokens are random, shown once, and stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from core.persistence.models import Agent, ApiToken, Team, table_of
from core.persistence.records import insert_ignoring_duplicates

agents = table_of(Agent)
teams = table_of(Team)
tokens = table_of(ApiToken)

TOKEN_PREFIX = "hl_"


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"unknown role {value!r} (agent, supervisor or admin)", "role") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a bearer token."""

    token_id: int
    name: str
    role: Role
    agent_id: int | None
    agent_name: str | None
    team_id: int | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def team_id(conn: Connection, name: str) -> int:
    insert_ignoring_duplicates(conn, teams, {"name": name})
    return int(conn.execute(select(teams.c.id).where(teams.c.name == name)).scalar_one())


def add_agent(
    conn: Connection,
    *,
    name: str,
    email: str,
    role: Role,
    now: datetime,
    team: str | None = None,
    skills: tuple[str, ...] = (),
    max_open: int = 25,
    slack_user_id: str | None = None,
    telegram_user_id: str | None = None,
) -> int:
    if not name.strip():
        raise InvalidInput("name must not be empty", "name")
    if "@" not in email:
        raise InvalidInput(f"invalid email {email!r}", "email")
    if max_open < 1:
        raise InvalidInput("max open tickets must be at least 1", "max_open")
    email = email.strip().lower()
    if conn.execute(select(agents.c.id).where(agents.c.email == email)).first():
        raise Conflict(f"an agent with email {email} exists already")
    return int(
        conn.execute(
            insert(agents)
            .values(
                name=name.strip(),
                email=email,
                role=role.value,
                team_id=team_id(conn, team) if team else None,
                skills=sorted(set(skills)),
                max_open_tickets=max_open,
                active=True,
                created_at=now,
                slack_user_id=slack_user_id or None,
                telegram_user_id=telegram_user_id or None,
            )
            .returning(agents.c.id)
        ).scalar_one()
    )


def create_token(
    conn: Connection, *, name: str, role: Role, now: datetime, agent_email: str | None = None
) -> str:
    """Create a token and return it; only its hash is kept, so it cannot be shown again."""
    agent_id = None
    if agent_email:
        agent_id = conn.execute(
            select(agents.c.id).where(agents.c.email == agent_email.strip().lower())
        ).scalar()
        if agent_id is None:
            raise NotFound(f"no agent with email {agent_email}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        insert(tokens).values(
            name=name,
            token_hash=hash_token(token),
            role=role.value,
            agent_id=agent_id,
            created_at=now,
        )
    )
    return token


def revoke_token(conn: Connection, token_id: int, now: datetime) -> None:
    done = conn.execute(
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if not done:
        raise NotFound(f"no active token {token_id}")


def authenticate(conn: Connection, token: str) -> Principal:
    row = conn.execute(
        select(
            tokens.c.id,
            tokens.c.name,
            tokens.c.role,
            tokens.c.agent_id,
            tokens.c.revoked_at,
            agents.c.name.label("agent_name"),
            agents.c.team_id,
            agents.c.active,
        )
        .outerjoin(agents, agents.c.id == tokens.c.agent_id)
        .where(tokens.c.token_hash == hash_token(token))
    ).first()
    if row is None or row.revoked_at is not None or row.active is False:
        raise Unauthorized("invalid or revoked token")
    return Principal(row.id, row.name, Role(row.role), row.agent_id, row.agent_name, row.team_id)


CHAT_ID_COLUMNS = {"slack": agents.c.slack_user_id, "telegram": agents.c.telegram_user_id}


def agent_by_chat_id(conn: Connection, channel: str, user_id: str) -> Any | None:
    """The active agent behind a Slack or Telegram user id, if any."""
    column = CHAT_ID_COLUMNS.get(channel)
    if column is None:
        return None
    return conn.execute(select(agents).where(column == user_id, agents.c.active)).first()


def link_chat_id(conn: Connection, email: str, channel: str, user_id: str) -> None:
    column = CHAT_ID_COLUMNS.get(channel)
    if column is None:
        raise InvalidInput(f"agents have no {channel} identity", "channel")
    done = conn.execute(
        update(agents).where(agents.c.email == email.strip().lower()).values({column.name: user_id})
    ).rowcount
    if not done:
        raise NotFound(f"no agent with email {email}")


def agent_by_email(conn: Connection, email: str) -> Any | None:
    return conn.execute(
        select(agents).where(agents.c.email == email.strip().lower(), agents.c.active)
    ).first()
