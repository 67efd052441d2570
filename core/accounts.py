"""Agents, teams and API tokens. Tokens are random, shown once, and stored only as hashes.
Dashboard passwords are stored as scrypt hashes with a random salt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select, update

from core import audit
from core.assign import parse_days, parse_hours, zone
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
    conn: Connection,
    *,
    name: str,
    role: Role,
    now: datetime,
    agent_email: str | None = None,
    actor: str = "system",
    ip: str | None = None,
) -> str:
    """Create a token and return it; only its hash is kept, so it cannot be shown again.
    The audit log records it (by id, never its value) in the same transaction."""
    agent_id = None
    if agent_email:
        agent_id = conn.execute(
            select(agents.c.id).where(agents.c.email == agent_email.strip().lower())
        ).scalar()
        if agent_id is None:
            raise NotFound(f"no agent with email {agent_email}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = conn.execute(
        insert(tokens)
        .values(
            name=name,
            token_hash=hash_token(token),
            role=role.value,
            agent_id=agent_id,
            created_at=now,
        )
        .returning(tokens.c.id)
    ).scalar_one()
    details = {"name": name, "role": role.value, "agent": agent_email or None}
    audit.record_admin_action(
        conn,
        actor=actor,
        action="token.create",
        target=f"token:{token_id}",
        details=details,
        ip=ip,
        now=now,
    )
    return token


def revoke_token(
    conn: Connection, token_id: int, now: datetime, *, actor: str = "system", ip: str | None = None
) -> None:
    done = conn.execute(
        update(tokens)
        .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    ).rowcount
    if not done:
        raise NotFound(f"no active token {token_id}")
    audit.record_admin_action(
        conn, actor=actor, action="token.revoke", target=f"token:{token_id}", ip=ip, now=now
    )


def list_tokens(conn: Connection) -> list[Any]:
    """Every token (never its value: only the hash is stored), oldest first."""
    return list(
        conn.execute(
            select(
                tokens.c.id,
                tokens.c.name,
                tokens.c.role,
                agents.c.email.label("agent_email"),
                tokens.c.created_at,
                tokens.c.revoked_at,
            )
            .outerjoin(agents, agents.c.id == tokens.c.agent_id)
            .order_by(tokens.c.id)
        ).all()
    )


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


# -- dashboard passwords ---------------------------------------------------------------------

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt's cost grows with the input: bound what a login form may send
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * r * n + 2**20
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64url): the parameters travel with the hash, so they can
    be raised later without invalidating stored passwords."""
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD} characters", "password")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput(f"the password is longer than {MAX_PASSWORD} characters", "password")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


# Compared against when the email is unknown or has no password, so such a login takes as long
# as a real one and its timing does not reveal which emails exist.
_DUMMY_HASH = (
    f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'helpline-dummy!!')}${_b64(bytes(SCRYPT_LEN))}"
)


def password_matches(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored hash; always does the full scrypt work."""
    candidate = stored or _DUMMY_HASH
    try:
        scheme, n, r, p, salt, digest = candidate.split("$")
        expected = _unb64(digest)
        if scheme != "scrypt" or not 0 < len(password) <= MAX_PASSWORD:
            raise ValueError(scheme)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p), len(expected))
    except ValueError:  # a malformed stored hash (or an oversized password) never matches
        actual, expected = _scrypt("x", b"salt", SCRYPT_N, SCRYPT_R, SCRYPT_P, 32), b""
    return hmac.compare_digest(actual, expected) and stored is not None


def set_password(conn: Connection, email: str, password: str) -> None:
    """Set (or change) an agent's dashboard password; earlier sessions stop working."""
    hashed = hash_password(password)
    done = conn.execute(
        update(agents).where(agents.c.email == email.strip().lower()).values(password_hash=hashed)
    ).rowcount
    if not done:
        raise NotFound(f"no agent with email {email}")


def verify_password(conn: Connection, email: str, password: str) -> Any | None:
    """The active agent with this email and password, else None. An unknown email, an agent
    without a password and a wrong password all take the same scrypt path."""
    row = agent_by_email(conn, email)
    ok = password_matches(row.password_hash if row is not None else None, password)
    return row if ok and row is not None else None


def agent_by_id(conn: Connection, agent_id: int) -> Any | None:
    return conn.execute(select(agents).where(agents.c.id == agent_id, agents.c.active)).first()


# -- assignment profile ----------------------------------------------------------------------


def update_agent(conn: Connection, email: str, **changes: Any) -> dict[str, Any]:
    """Change what assignment reads of an agent: ``region``, ``away``, ``timezone``,
    ``working_days`` (["mon", ...] or "mon,tue"), ``working_hours`` ("09:00-17:00"; "" = all
    day), ``skills``, ``max_open_tickets``, ``team``. Checked here, so assignment can trust them.
    Returns the stored values that changed."""
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key == "region":
            values[key] = str(value).strip().lower()
        elif key == "away":
            values[key] = bool(value)
        elif key == "timezone":
            try:
                zone(value)
            except ValueError as err:
                raise InvalidInput(str(err), "timezone") from None
            values[key] = value
        elif key == "working_days":
            days = value.split(",") if isinstance(value, str) else list(value)
            days = [d.strip().lower()[:3] for d in days if d.strip()]
            try:
                parse_days(days)
            except ValueError as err:
                raise InvalidInput(str(err), "working_days") from None
            values[key] = ",".join(days)
        elif key == "working_hours":
            if value:
                try:
                    parse_hours(value)
                except ValueError as err:
                    raise InvalidInput(str(err), "working_hours") from None
            values[key] = value
        elif key == "skills":
            skills = value.split(",") if isinstance(value, str) else list(value)
            values[key] = sorted({s.strip().lower() for s in skills if s.strip()})
        elif key == "max_open_tickets":
            if int(value) < 1:
                raise InvalidInput("max open tickets must be at least 1", "max_open_tickets")
            values[key] = int(value)
        elif key == "team":
            values["team_id"] = team_id(conn, value) if value else None
        else:
            raise InvalidInput(f"unknown agent setting {key!r}", key)
    if not values:
        return {}
    done = conn.execute(
        update(agents).where(agents.c.email == email.strip().lower()).values(**values)
    ).rowcount
    if not done:
        raise NotFound(f"no agent with email {email}")
    return values
