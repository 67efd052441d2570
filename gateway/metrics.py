"""Prometheus metrics of one application instance (its own registry, so tests can run many)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from core.events import Event
from core.persistence.database import Database
from core.persistence.models import OutboxRow, table_of
from gateway.http import Handler

outbox = table_of(OutboxRow)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "helpline_http_request_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "helpline_events_total",
            "Committed domain events by type",
            ["type"],
            registry=self.registry,
        )
        self.outbox = Gauge(
            "helpline_outbox_rows",
            "Outbox rows by channel and status",
            ["channel", "status"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "helpline_leader",
            "1 while this process leads (runs the scheduler and the pollers), else 0",
            registry=self.registry,
        )
        self._known: dict[tuple[Any, tuple[str, ...]], Any] = {}

    async def on_event(self, event: Event) -> None:
        self._series(self.events, type(event).__name__).inc()

    def _series(self, metric: Histogram | Counter, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client validates and locks on
        every call (~3 us), and every request and event would pay it."""
        key = (metric, labels)
        series = self._known.get(key)
        if series is None:
            series = self._known[key] = metric.labels(*labels)
        return series

    async def render(self, db: Database) -> web.Response:
        rows = await db.read(
            lambda c: c.execute(
                select(outbox.c.channel, outbox.c.status, func.count()).group_by(
                    outbox.c.channel, outbox.c.status
                )
            ).all()
        )
        self.outbox.clear()
        for channel, status, count in rows:
            self.outbox.labels(channel, status).set(count)
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    def middleware(self) -> web.middleware:  # type: ignore[valid-type]
        @web.middleware
        async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as err:
                status = err.status
                raise
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                self._series(self.requests, route, request.method, str(status)).observe(
                    time.perf_counter() - started
                )

        return observe
