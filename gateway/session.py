"""Signed session cookies for the dashboard: ``<agent id>.<expiry>.<hmac>``.

Nothing is stored server-side. The HMAC (SHA-256, the service secret) covers the agent id, the
expiry and a fingerprint of the agent's stored password hash: setting a new password changes
the fingerprint, so every session signed before stops verifying (a stolen cookie dies with the
password change).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from gateway.validation import parse_id

COOKIE = "hl_session"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Session:
    agent_id: int
    expires: int  # unix seconds


def fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()


def _mac(secret: bytes, agent_id: int, expires: int, print_: str) -> str:
    message = f"session:{agent_id}:{expires}:{print_}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign(secret: bytes, agent_id: int, password_hash: str | None, now: datetime) -> str:
    expires = int((now + LIFETIME).timestamp())
    return f"{agent_id}.{expires}.{_mac(secret, agent_id, expires, fingerprint(password_hash))}"


def parse(value: str) -> tuple[Session, str] | None:
    """The claimed session and its MAC, before verification; None when malformed."""
    agent, _, rest = value.partition(".")
    expires, _, mac = rest.partition(".")
    agent_id, until = parse_id(agent), parse_id(expires)
    if agent_id is None or until is None or len(mac) != 64:
        return None
    return Session(agent_id, until), mac


def verify(
    secret: bytes, session: Session, mac: str, password_hash: str | None, now: datetime
) -> bool:
    """Whether the MAC matches the agent's current password and the session has not expired."""
    if password_hash is None or session.expires <= now.timestamp():
        return False
    expected = _mac(secret, session.agent_id, session.expires, fingerprint(password_hash))
    return hmac.compare_digest(expected.encode(), mac.encode("ascii", "replace"))


def set_cookie(response: web.StreamResponse, value: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        value,
        httponly=True,
        samesite="Lax",
        secure=secure,
        max_age=int(LIFETIME.total_seconds()),
        path="/",
    )


def clear_cookie(response: web.StreamResponse, secure: bool) -> None:
    response.del_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="Lax")
