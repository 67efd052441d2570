"""The composition root: builds the aiohttp application and wires core, adapters and bots."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from adapters.email import EmailSender, SmtpServer
from adapters.imap import pollers_from_settings
from adapters.slack import SlackAdapter
from adapters.telegram import TelegramAdapter
from bots.agents import AgentBot, team_channel
from bots.customer import CustomerBot
from bots.digest import send_daily_digest
from bots.interactions import Interactions
from bots.pings import PingBot
from bots.supervisors import SupervisorBot
from core.config import Settings, load_settings
from core.errors import ConfigError, HelplineError
from core.helpdesk import Helpdesk
from core.links import ActionLinks
from core.outbox import Dispatcher
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.ports import ChannelAdapter, Clock, utc_now
from core.views import Reaction
from gateway.admin_api import admin
from gateway.api import api
from gateway.dashboard import add_dashboard_routes
from gateway.http import Handler, RateLimiter, problem, status_for
from gateway.hub import ChannelHub, KbCache
from gateway.leader import LEADERSHIP, Leadership
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.pages import render, routes, templates
from gateway.reports_api import reports
from gateway.scheduler import DIGEST, OUTBOX, PROACTIVE, SLA_SWEEP, Job, Scheduler
from gateway.state import (
    DISPATCHER,
    HELPDESK,
    HUB,
    INBOUND,
    INTAKE_LIMITER,
    KB,
    METRICS,
    SENDER_LIMITER,
    SETTINGS,
    TEMPLATES,
    ChatAdapter,
    InboundSource,
)

log = logging.getLogger(__name__)

try:
    VERSION = version("helpline")
except PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0.0.0"


API = (api, admin, reports)  # every REST route lives in one of these registries


def load_secret(settings: Settings) -> bytes:
    """The signing key: from the environment, else generated once and kept in the data dir."""
    if value := os.environ.get(settings.service.secret_key_env):
        return value.encode()
    path = settings.data_path / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


# The chat libraries write secrets to their logs below these levels: httpx logs each request's
# URL at INFO (a Bot API URL carries the bot token), python-telegram-bot the token and the
# webhook secret at DEBUG, slack_sdk whole payloads (status links too) at DEBUG.
SECRET_LOGGING_LIBRARIES = {
    "httpx": logging.WARNING,
    "telegram": logging.INFO,
    "slack_sdk": logging.INFO,
}


def chat_adapters(settings: Settings, env: Mapping[str, str]) -> dict[str, ChatAdapter]:
    """Slack and Telegram, when enabled: both receive (webhooks) and send (outbox)."""
    found: dict[str, ChatAdapter] = {}
    if settings.slack.enabled or settings.telegram.enabled:
        for name, level in SECRET_LOGGING_LIBRARIES.items():
            library = logging.getLogger(name)
            library.setLevel(max(level, library.level))  # a higher level set elsewhere stays
    if settings.slack.enabled:
        found["slack"] = SlackAdapter.from_settings(settings.slack, env)
    if settings.telegram.enabled:
        found["telegram"] = TelegramAdapter.from_settings(
            settings.telegram, env, public_url=settings.service.public_url
        )
    return found


def polls(chat: ChatAdapter, settings: Settings) -> bool:
    """Whether this adapter pulls updates itself (must run in one process only)."""
    return chat.channel == "telegram" and settings.telegram.mode == "polling"


def bots(settings: Settings, secret: bytes) -> list[Reaction]:
    links = ActionLinks(secret, settings.service.public_url)
    team = team_channel(settings)
    return [
        CustomerBot(
            settings.service.name,
            settings.service.language,
            settings=settings.bots,
            links=links,
        ),
        AgentBot(team),
        SupervisorBot(settings.bots.supervisors),
        PingBot(settings.bots.supervisors, team),
    ]


def scheduled_jobs(helpdesk: Helpdesk, dispatcher: Dispatcher) -> dict[str, Job]:
    """The periodic jobs: thin calls into the helpdesk with the service's clock."""

    async def outbox_retries() -> None:
        dispatcher.wake()  # a safety net: the dispatcher also wakes itself for due retries

    async def proactive_rules() -> str:
        report = await helpdesk.run_proactive(helpdesk.clock(), helpdesk.settings.proactive)
        return ", ".join(f"{rule}: {counts}" for rule, counts in report.counts.items())

    async def sla_sweep() -> str:
        fired = await helpdesk.sweep_sla(helpdesk.clock())
        return f"{fired} SLA signal(s) fired" if fired else ""

    async def digest() -> str:
        queued = await send_daily_digest(helpdesk, helpdesk.clock())
        return f"daily digest queued to {queued} destination(s)" if queued else ""

    jobs: dict[str, Job] = {SLA_SWEEP: sla_sweep, OUTBOX: outbox_retries, DIGEST: digest}
    if helpdesk.settings.proactive:
        jobs[PROACTIVE] = proactive_rules
    return jobs


def reload_management(helpdesk: Helpdesk) -> None:
    """SIGHUP: re-read the routing rules, SLA policies and proactive rules from the config file
    (and the rules file). A file with an error is refused and the running ones stay."""
    settings = helpdesk.settings
    if not settings.source:
        log.warning("SIGHUP: no configuration file to re-read")
        return
    try:
        fresh = load_settings(settings.source)
    except ConfigError as err:
        log.error("SIGHUP: configuration refused, the running rules stay: %s", err)
        return
    helpdesk.settings = dataclasses.replace(
        settings, rules=fresh.rules, sla=fresh.sla, proactive=fresh.proactive
    )
    log.info(
        "SIGHUP: %d routing rule(s), %d SLA policy(ies), %d proactive rule(s) in force",
        len(fresh.rules),
        len(fresh.sla.policies),
        len(fresh.proactive),
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    adapters: dict[str, ChannelAdapter] | None = None,
    env: Mapping[str, str] | None = None,
    migrate: bool = True,
    leader: bool = True,
    reuse_port: bool = False,
) -> web.Application:
    """The application. All serving processes listen (with ``reuse_port`` on one port) and
    deliver the outbox; one of them leads: it runs the scheduler and polls (IMAP, Telegram long
    polling). ``leader=False`` (a forked ``serve --workers`` process) never leads; otherwise
    SQLite leads at once and PostgreSQL competes for the lead (gateway/leader.py)."""
    env = os.environ if env is None else env
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.intake.max_request_bytes,
        middlewares=[metrics.middleware(), errors_middleware],
    )
    app[SETTINGS] = settings
    app[TEMPLATES] = templates()
    app[INTAKE_LIMITER] = RateLimiter(settings.intake.rate_limit_per_minute)
    app[SENDER_LIMITER] = RateLimiter(settings.intake.rate_limit_per_identity_per_minute)
    app[METRICS] = metrics
    # a polling adapter runs in the leader alone (two pollers would steal each other's updates)
    chats: dict[str, ChatAdapter] = {}
    polling: dict[str, ChatAdapter] = {}
    for name, chat in chat_adapters(settings, env).items():
        if not polls(chat, settings):
            chats[name] = chat
        elif leader:
            polling[name] = chat
    if leader:  # a mistake in [[email.imap]] fails start-up, not a later change of leader
        pollers_from_settings(settings.email, env)
    wakes: list[Dispatcher] = []  # the outbox lanes to wake when rows are queued
    kb = app[KB] = KbCache()

    async def core_context(app: web.Application) -> AsyncIterator[None]:
        db = open_database(
            settings.database.url,
            durable=settings.database.durable,
            pool_size=settings.database.pool_size,
        )
        if migrate:
            await asyncio.to_thread(upgrade, db)
        secret = load_secret(settings)
        helpdesk = Helpdesk(
            db, settings, secret, clock=clock, reactions=bots(settings, secret), kb=kb
        )
        await kb.refresh(helpdesk)
        kb.start(helpdesk)
        channels: dict[str, ChannelAdapter] = {**chats, **(adapters or {})}
        if settings.email.relay.host:
            channels.setdefault(
                "email", EmailSender(settings.email, env.get(settings.email.relay.password_env))
            )
        dispatcher = Dispatcher(db, channels, settings.outbox, clock)
        wakes.append(dispatcher)

        def wake_outbox() -> None:
            for lane in wakes:
                lane.wake()

        helpdesk.on_outbox = wake_outbox
        helpdesk.bus.subscribe(metrics.on_event)
        app[HELPDESK] = helpdesk
        app[HUB] = ChannelHub(helpdesk, Interactions(helpdesk, settings.bots))
        app[DISPATCHER] = dispatcher
        dispatcher.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, reload_management, helpdesk
            )
        try:
            yield
        finally:
            await dispatcher.stop()
            await kb.stop()
            await db.close()

    async def inbound_context(app: web.Application) -> AsyncIterator[None]:
        """Inbound listeners start after the core is up and stop before it goes down."""
        sources: list[InboundSource] = [*chats.values()]
        if settings.email.smtp_server.enabled:
            sources.append(SmtpServer(settings.email, settings.inboxes, clock, reuse_port))
        for source in sources:
            await source.start(app[HUB])
        app[INBOUND] = sources
        try:
            yield
        finally:
            for source in reversed(sources):
                await source.stop()

    async def lead(stack: contextlib.AsyncExitStack) -> None:
        """The leader's duties; leaving the stack stops them (when the lead is lost)."""
        helpdesk, dispatcher = app[HELPDESK], app[DISPATCHER]
        if settings.scheduler.enabled:
            scheduler = Scheduler(settings, scheduled_jobs(helpdesk, dispatcher))
            scheduler.start()
            stack.callback(scheduler.stop)
        sources: list[InboundSource] = [
            *polling.values(),
            *pollers_from_settings(settings.email, env),
        ]
        for source in sources:
            await source.start(app[HUB])
            stack.push_async_callback(source.stop)
        if polling:  # a polling channel's rows go out from the process where it runs
            lane = Dispatcher(helpdesk.db, {**polling}, settings.outbox, clock)
            lane.start()
            wakes.append(lane)
            stack.callback(wakes.remove, lane)
            stack.push_async_callback(lane.stop)

    leadership = app[LEADERSHIP] = Leadership(
        settings.database.url,
        lead,
        candidate=leader,
        retry_seconds=settings.service.leader_retry_seconds,
        on_change=metrics.leader.set,
    )

    async def leader_context(app: web.Application) -> AsyncIterator[None]:
        """The lead is taken last and given up first: its duties need the core and the hub."""
        await leadership.start()
        try:
            yield
        finally:
            await leadership.stop()

    app.cleanup_ctx.append(core_context)
    app.cleanup_ctx.append(inbound_context)
    app.cleanup_ctx.append(leader_context)
    app.router.add_routes(routes)
    add_dashboard_routes(app)
    if isinstance(slack := chats.get("slack"), SlackAdapter):
        app.router.add_post("/slack/events", slack.handle_request)
    if isinstance(telegram := chats.get("telegram"), TelegramAdapter):
        app.router.add_post("/telegram/webhook", telegram.handle_webhook)
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
        "leader": request.app[LEADERSHIP].leading,
        "version": VERSION,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics_page(request: web.Request) -> web.Response:
    return await request.app[METRICS].render(request.app[HELPDESK].db)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "text/html" not in request.headers.get("Accept", "")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
