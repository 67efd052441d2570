"""HTTP edge plumbing: the domain errors mapped once to JSON problems, JSON body parsing, rate
limits and the per-route registry the OpenAPI document is built from."""

from __future__ import annotations

import functools
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.accounts import Role
from core.errors import (
    Conflict,
    Forbidden,
    HelplineError,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthorized,
)
from gateway.validation import parse_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATUS_BY_ERROR: list[tuple[type[HelplineError], int]] = [
    (TooLarge, 413),
    (InvalidInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
]
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_for(err: HelplineError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(err, kind):
            return status
    return 500


def problem(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field:
        body["field"] = field
    body.update(extra)
    return web.Response(
        status=status,
        text=json.dumps(body),
        headers=headers,
        content_type="application/problem+json",
    )


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidInput naming what is wrong."""
    if request.content_type != "application/json":
        raise InvalidInput("the body must be JSON (Content-Type: application/json)", "body")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge("the request body is too large", "body") from None
    try:
        data = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInput(f"malformed JSON: {err}", "body") from None
    except RecursionError:
        raise InvalidInput("malformed JSON: nested too deeply", "body") from None
    if not isinstance(data, dict):
        raise InvalidInput("the JSON body must be an object", "body")
    for name, value in data.items():
        check_text(name, "body")
        check_text(value, name)
    return data


# NUL (PostgreSQL's text refuses it) and unpaired surrogates (JSON's "\ud800" escapes; no
# UTF-8 encoder takes them): neither can be stored, so they are bad input, not a 500.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def check_text(value: Any, field: str) -> None:
    """InvalidInput naming ``field`` when a string anywhere in ``value`` cannot be stored."""
    stack = [value]  # iterative: json.loads nests up to the recursion limit
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise InvalidInput(
                    f"{field} contains a NUL character or an unpaired surrogate", field
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def field_str(
    data: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    max_len: int = 100_000,
    default: str = "",
) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{name} is required", name)
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", name)
    if required and not value.strip():
        raise InvalidInput(f"{name} must not be empty", name)
    if len(value) > max_len:
        raise InvalidInput(f"{name} is longer than {max_len} characters", name)
    return value


def query_int(
    request: web.Request,
    name: str,
    default: int,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """An integer query parameter, optionally within [low, high]; InvalidInput names it."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", name) from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidInput(f"{name} must be between {low} and {high}", name)
    return value


def path_number(request: web.Request) -> int:
    raw = request.match_info["number"]
    if (number := parse_id(raw)) is None:
        raise NotFound(f"ticket #{raw} not found")
    return number


class RateLimiter:
    """A sliding window per key (a client IP, a sender) in this process's memory.

    Memory holds only the keys checked within the last two windows or so: keys are kept in
    the order they were last checked, and the least recently checked ones are dropped once
    their hits have expired (O(1) amortized per check). ``max_keys`` caps even that (a flood
    of distinct senders): beyond it the least recently checked key is forgotten, which only
    lets that key start its count afresh."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        # per key, its hits in the window: (time, submission id), oldest first. A list, not a
        # deque: most keys hold a hit or two, and an empty deque alone takes ~600 bytes
        self._hits: OrderedDict[str, list[tuple[float, str | None]]] = OrderedDict()

    def tracked(self) -> int:
        """How many keys are remembered (not ``__len__``: an empty limiter must stay truthy)."""
        return len(self._hits)

    def check(self, key: str, submission: str | None = None) -> float | None:
        """Count a hit; None when allowed, else the seconds until the next hit is allowed.
        A ``submission`` id (an idempotency key) already counted in the window is a retry of
        the same submission: allowed and not counted again (a double-click, a client retry)."""
        now = self.clock()
        since = now - self.window
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = []
        else:
            self._hits.move_to_end(key)
            expired = 0
            while expired < len(hits) and hits[expired][0] <= since:
                expired += 1
            del hits[:expired]
        self._forget(since)
        if submission is not None and any(seen == submission for _, seen in hits):
            return None
        if len(hits) >= self.limit:
            return hits[0][0] + self.window - now
        hits.append((now, submission))
        return None

    def _forget(self, since: float) -> None:
        """Drop the least recently checked keys while they hold no hit after ``since``, or
        while there are too many. A key behind one still counting may hold only expired hits
        (it was refused a while ago); it goes when it reaches the front, within a window."""
        while len(self._hits) > 1:
            key, hits = next(iter(self._hits.items()))
            if len(self._hits) <= self.max_keys and hits and hits[-1][0] > since:
                return
            del self._hits[key]


def sender_key(email: str) -> str:
    """What the per-sender limit counts: the email lower-cased with a +tag dropped, so
    ann+1@example.org and ANN@example.org are one sender."""
    local, _, domain = email.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


@dataclass
class Operation:
    """One API route: how it is served and how the OpenAPI document describes it."""

    method: str
    path: str
    handler: Handler
    summary: str
    role: Role | None  # None: public
    body: dict[str, Any] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    params: list[dict[str, Any]] = field(default_factory=list)
    tag: str = "tickets"


class Api:
    """Collects operations so routes and the OpenAPI document cannot drift apart."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        role: Role | None,
        body: dict[str, Any] | None = None,
        responses: dict[int, str] | None = None,
        params: list[dict[str, Any]] | None = None,
        tag: str = "tickets",
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method,
                    path,
                    handler,
                    summary,
                    role,
                    body,
                    responses or {200: "OK"},
                    params or [],
                    tag,
                )
            )
            return handler

        return register

    def add_to(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, op.path, _checked_query(op.handler))


def _checked_query(handler: Handler) -> Handler:
    """Query parameters reach SQL filters: refuse what no database stores, for every route."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        for name, value in request.query.items():
            check_text(value, name)
        return await handler(request)

    return checked
