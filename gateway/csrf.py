"""CSRF for the HTML forms: a random cookie per browser, and in each form a per-render id plus an
HMAC binding it to that cookie. Another site can neither read the cookie nor forge the HMAC.

The form id doubles as the submission's idempotency key: a double-clicked submit or a reload
of the result page finds the first ticket instead of opening a second one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from core.errors import Forbidden

COOKIE = "hl_csrf"


@dataclass(frozen=True, slots=True)
class FormToken:
    form_id: str
    token: str


def _sign(secret: bytes, cookie: str, form_id: str) -> str:
    return hmac.new(secret, f"csrf:{cookie}:{form_id}".encode(), hashlib.sha256).hexdigest()


def browser_cookie(request: web.Request) -> tuple[str, bool]:
    """The browser's CSRF cookie; the flag says it is new and must be set on the response."""
    cookie = request.cookies.get(COOKIE, "")
    if 20 <= len(cookie) <= 100:
        return cookie, False
    return secrets.token_urlsafe(24), True


def issue(secret: bytes, cookie: str) -> FormToken:
    form_id = secrets.token_urlsafe(16)
    return FormToken(form_id, _sign(secret, cookie, form_id))


def verify(secret: bytes, request: web.Request, form_id: str, token: str) -> None:
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not form_id or not token:
        raise Forbidden("the form has expired or cookies are disabled: reload the page and retry")
    # bytes: compare_digest raises TypeError on non-ASCII str, which was a 500 instead of a 403
    if not hmac.compare_digest(_sign(secret, cookie, form_id).encode(), token.encode()):
        raise Forbidden("invalid form token: reload the page and retry")


def set_cookie(response: web.StreamResponse, cookie: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Lax",
        secure=secure,
        max_age=7 * 24 * 3600,
        path="/",
    )
