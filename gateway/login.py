"""Sign-in for the dashboard: GET/POST /login, POST /logout, and who the session belongs to.

Passwords are checked with scrypt in a worker thread (about 0.1 s of CPU each: the event loop
keeps serving meanwhile). POST /login is rate-limited per client IP, and every failure gets the
same answer, so the form does not reveal which emails belong to agents.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from core import accounts
from core.accounts import Role
from gateway import csrf, session
from gateway.http import RateLimiter, client_ip
from gateway.pages import _form_page, _read_form, _text, render
from gateway.state import HELPDESK

LOGIN_LIMITER = web.AppKey("login_limiter", RateLimiter)
LOGIN_ATTEMPTS_PER_MINUTE = 10
DEFAULT_NEXT = "/dashboard"
WRONG = "Wrong email or password."


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return DEFAULT_NEXT
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value) or len(value) > 2000:
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return value


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def _secure(request: web.Request) -> bool:
    return request.app[HELPDESK].settings.service.public_url.startswith("https")


async def signed_in(request: web.Request) -> Any | None:
    """The active agent whose valid session cookie came with the request, else None."""
    raw = request.cookies.get(session.COOKIE)
    claimed = session.parse(raw) if raw else None
    if claimed is None:
        return None
    claim, mac = claimed
    helpdesk = request.app[HELPDESK]
    agent = await helpdesk.db.read(lambda c: accounts.agent_by_id(c, claim.agent_id))
    if agent is None:
        return None
    if not session.verify(helpdesk.secret, claim, mac, agent.password_hash, helpdesk.clock()):
        return None
    return agent


async def manager_or_refusal(request: web.Request) -> tuple[Any | None, web.Response | None]:
    """(the supervisor or admin signed in, None), or (None, the answer instead: a redirect to
    the sign-in page, or a 403 page for an agent)."""
    agent = await signed_in(request)
    if agent is None:
        return None, web.Response(status=303, headers={"Location": login_url(request.path_qs)})
    if not Role(agent.role).allows(Role.SUPERVISOR):
        page = render(
            request,
            "error.html",
            403,
            title="Supervisors only",
            detail=f"{agent.name} is signed in as an agent; the dashboard is for supervisors "
            "and admins.",
        )
        return None, page
    return agent, None


def _login_page(
    request: web.Request, *, status: int = 200, error: str = "", email: str = "", next_path: str
) -> web.Response:
    return _form_page(
        request, "login.html", status=status, error=error, email=email, next=next_path
    )


async def login_page(request: web.Request) -> web.Response:
    return _login_page(request, next_path=safe_next(request.query.get("next")))


async def login(request: web.Request) -> web.Response:
    helpdesk = request.app[HELPDESK]
    wait = request.app[LOGIN_LIMITER].check(client_ip(request))
    if wait is not None:
        response = render(
            request,
            "error.html",
            429,
            title="Too many sign-in attempts",
            detail=f"Please wait {max(1, round(wait))} seconds and try again.",
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    form = await _read_form(request)
    csrf.verify(helpdesk.secret, request, _text(form, "form_id"), _text(form, "csrf"))
    email, password = _text(form, "email").strip(), _text(form, "password")
    next_path = safe_next(_text(form, "next"))
    row = await helpdesk.db.read(lambda c: accounts.agent_by_email(c, email)) if email else None
    stored = row.password_hash if row is not None else None
    # the same scrypt work whether or not the email exists (no timing oracle)
    if not await asyncio.to_thread(accounts.password_matches, stored, password) or row is None:
        return _login_page(request, status=401, error=WRONG, email=email, next_path=next_path)
    response = web.HTTPSeeOther(next_path)
    session.set_cookie(
        response, session.sign(helpdesk.secret, row.id, stored, helpdesk.clock()), _secure(request)
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    helpdesk = request.app[HELPDESK]
    form = await _read_form(request)
    csrf.verify(helpdesk.secret, request, _text(form, "form_id"), _text(form, "csrf"))
    response = web.HTTPSeeOther("/login")
    session.clear_cookie(response, _secure(request))
    raise response


def add_login_routes(app: web.Application) -> None:
    app[LOGIN_LIMITER] = RateLimiter(LOGIN_ATTEMPTS_PER_MINUTE)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
