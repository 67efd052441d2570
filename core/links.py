"""Signed, unguessable links: customer status pages and one-click actions.

A portal token is HMAC-SHA256(secret, ticket id + version), 192 bits in URL-safe base64. Nothing
secret is stored; bumping the ticket's ``portal_version`` revokes every earlier link.
"""

from __future__ import annotations

import base64
import hmac

TOKEN_BYTES = 24  # 192 bits


def _sign(secret: bytes, purpose: str, *parts: object) -> str:
    message = ":".join([purpose, *map(str, parts)]).encode()
    # one call into OpenSSL: hmac.new builds a Python HMAC object, ~4x the cost of the digest
    digest = hmac.digest(secret, message, "sha256")[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def portal_token(secret: bytes, ticket_id: int, version: int) -> str:
    return _sign(secret, "portal", ticket_id, version)


def _same(expected: str, given: str) -> bool:
    # bytes: compare_digest refuses non-ASCII str, and a token is whatever a client sent
    return hmac.compare_digest(expected.encode(), given.encode())


def check_portal_token(secret: bytes, ticket_id: int, version: int, token: str) -> bool:
    return _same(portal_token(secret, ticket_id, version), token)


def status_url(public_url: str, number: int, token: str) -> str:
    return f"{public_url.rstrip('/')}/t/{number}/{token}"


def action_token(secret: bytes, *parts: object) -> str:
    """Signs a one-click action (e.g. an email survey answer) so it cannot be forged."""
    return _sign(secret, "action", *parts)


def check_action_token(secret: bytes, token: str, *parts: object) -> bool:
    return _same(action_token(secret, *parts), token)


class ActionLinks:
    """Signed one-click URLs for email, where buttons cannot call back: /a/<n>/<action>/..."""

    def __init__(self, secret: bytes, public_url: str) -> None:
        self.secret = secret
        self.public_url = public_url.rstrip("/")

    def url(self, number: int, action: str, value: str) -> str:
        token = action_token(self.secret, number, action, value)
        return f"{self.public_url}/a/{number}/{action}/{value}/{token}"

    def check(self, number: int, action: str, value: str, token: str) -> bool:
        return check_action_token(self.secret, token, number, action, value)
