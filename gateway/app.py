"""The composition root: builds the aiohttp application and wires core, adapters and bots."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from adapters.email import EmailSender, SmtpServer
from bots.customer import CustomerBot
from core.config import Settings
from core.errors import HelplineError
from core.helpdesk import Helpdesk
from core.outbox import Dispatcher
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.ports import ChannelAdapter, Clock, utc_now
from gateway.admin_api import admin
from gateway.api import api
from gateway.http import RateLimiter, problem, status_for
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.pages import render, routes, templates
from gateway.state import (
    DISPATCHER,
    HELPDESK,
    INBOUND,
    INTAKE_LIMITER,
    METRICS,
    SETTINGS,
    TEMPLATES,
    InboundSource,
)

log = logging.getLogger(__name__)

try:
    VERSION = version("helpline")
except PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0.0.0"


API = (api, admin)  # every REST route lives in one of these registries


def load_secret(settings: Settings) -> bytes:
    """The signing key: from the environment, else generated once and kept in the data dir."""
    if value := os.environ.get(settings.service.secret_key_env):
        return value.encode()
    path = settings.data_path / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def configured_adapters(settings: Settings, env: Mapping[str, str]) -> dict[str, ChannelAdapter]:
    """The outbound channels the settings configure (a channel left out keeps rows queued)."""
    found: dict[str, ChannelAdapter] = {}
    relay = settings.email.relay
    if relay.host:
        found["email"] = EmailSender(settings.email, env.get(relay.password_env))
    return found


def inbound_sources(settings: Settings, clock: Clock) -> list[InboundSource]:
    sources: list[InboundSource] = []
    if settings.email.smtp_server.enabled:
        sources.append(SmtpServer(settings.email, settings.inboxes, clock))
    return sources


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    adapters: dict[str, ChannelAdapter] | None = None,
    migrate: bool = True,
) -> web.Application:
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.intake.max_request_bytes,
        middlewares=[metrics.middleware(), errors_middleware],
    )
    app[SETTINGS] = settings
    app[TEMPLATES] = templates()
    app[INTAKE_LIMITER] = RateLimiter(settings.intake.rate_limit_per_minute)
    app[METRICS] = metrics

    async def core_context(app: web.Application) -> AsyncIterator[None]:
        db = open_database(
            settings.database.url,
            durable=settings.database.durable,
            pool_size=settings.database.pool_size,
        )
        if migrate:
            await asyncio.to_thread(upgrade, db)
        helpdesk = Helpdesk(
            db,
            settings,
            load_secret(settings),
            clock=clock,
            reactions=[CustomerBot(settings.service.name, settings.service.language)],
        )
        channels = {**configured_adapters(settings, os.environ), **(adapters or {})}
        dispatcher = Dispatcher(db, channels, settings.outbox, clock)
        helpdesk.on_outbox = dispatcher.wake
        helpdesk.bus.subscribe(metrics.on_event)
        app[HELPDESK] = helpdesk
        app[DISPATCHER] = dispatcher
        dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()
            await db.close()

    async def inbound_context(app: web.Application) -> AsyncIterator[None]:
        """Inbound listeners start after the core is up and stop before it goes down."""
        sources = inbound_sources(settings, clock)
        for source in sources:
            await source.start(app[HELPDESK])
        app[INBOUND] = sources
        try:
            yield
        finally:
            for source in reversed(sources):
                await source.stop()

    app.cleanup_ctx.append(core_context)
    app.cleanup_ctx.append(inbound_context)
    app.router.add_routes(routes)
    for registry in API:
        registry.add_to(app)
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(
        openapi_document(API, VERSION, request.app[SETTINGS].service.public_url)
    )


async def healthz(request: web.Request) -> web.Response:
    ok = await request.app[HELPDESK].db.ping()
    body = {
        "status": "ok" if ok else "unavailable",
        "database": "ok" if ok else "unreachable",
        "version": VERSION,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics_page(request: web.Request) -> web.Response:
    return await request.app[METRICS].render(request.app[HELPDESK].db)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "text/html" not in request.headers.get("Accept", "")


@web.middleware
async def errors_middleware(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Maps the domain's error vocabulary, once, to HTTP (JSON problems or an HTML page)."""
    try:
        return await handler(request)
    except HelplineError as err:
        status, detail = status_for(err), str(err)
        field = getattr(err, "field", None)
    except web.HTTPRequestEntityTooLarge:
        status, detail, field = 413, "the request body is too large", None
    except web.HTTPException as err:
        if err.status < 400:
            raise
        status, detail, field = err.status, err.reason, None
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        status, detail, field = 500, "internal error", None
    if status == 500 and detail != "internal error":
        log.error("unmapped domain error on %s: %s", request.path, detail)
    if _wants_json(request):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem(status, detail, field=field, headers=headers)
    return render(request, "error.html", status, title=_html_title(status), detail=detail)


def _html_title(status: int) -> str:
    return {
        400: "Please check your input",
        403: "This form has expired",
        404: "Not found",
        413: "Too large",
    }.get(status, "Something went wrong")
