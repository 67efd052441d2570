"""Periodic jobs on APScheduler (AsyncIOScheduler) with its job store in our own database.

Jobs are thin: each calls one helpdesk method with the current time, and all of them are
idempotent (SLA signals, proactive actions and the digest are claimed with ``once.first_time``),
so a run repeated by a restart or by a second process changes nothing.

The store holds each job's next run time, so a job missed while the service was down runs once
(coalesced) when it starts again: the SLA sweep and proactive rules also run at start-up, and a
daily digest missed by a few hours still goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from core.config import Settings
from core.persistence.database import sqlite_engine
from core.persistence.models import SchedulerJob

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[Any]]  # reads the time from the service's clock

# The running scheduler's jobs by id: the store keeps a textual reference to ``run`` and the
# job id, never a pickled helpdesk.
_jobs: dict[str, Job] = {}

SLA_SWEEP, PROACTIVE, OUTBOX, DIGEST = "sla-sweep", "proactive-rules", "outbox-retries", "digest"
OUTBOX_SAFETY_NET_SECONDS = 30.0


async def run(job_id: str) -> None:
    """What the store calls: the job registered under ``job_id`` in this process."""
    job = _jobs.get(job_id)
    if job is None:
        log.warning("scheduled job %r has no handler in this process", job_id)
        return
    result = await job()
    if result:
        log.info("job %s: %s", job_id, result)


def store_engine(url: str) -> Engine:
    """A synchronous engine on our database for APScheduler's store (it is not async)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return sqlite_engine(url, synchronous="FULL", pool_size=1)  # WAL, busy timeout: as ours
    return create_engine(parsed.set(drivername="postgresql+psycopg"), pool_size=1)


class Scheduler:
    def __init__(self, settings: Settings, jobs: dict[str, Job]) -> None:
        self.settings = settings
        self.jobs = jobs
        self._engine: Engine | None = None
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        cfg = self.settings.scheduler
        self._engine = store_engine(self.settings.database.url)
        store = SQLAlchemyJobStore(engine=self._engine, tablename=SchedulerJob.__tablename__)
        scheduler = AsyncIOScheduler(
            jobstores={"default": store},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        _jobs.clear()
        _jobs.update(self.jobs)
        scheduler.start(paused=True)  # the store is open: jobs can be looked at before running
        now = datetime.now(UTC)
        intervals = {
            SLA_SWEEP: cfg.sla_sweep_seconds,
            PROACTIVE: cfg.proactive_minutes * 60,
            OUTBOX: OUTBOX_SAFETY_NET_SECONDS,
        }
        for job_id, seconds in intervals.items():
            if job_id in self.jobs:  # at start-up too: catches up with what came due meanwhile
                self._add(scheduler, job_id, IntervalTrigger(seconds=seconds), next_run_time=now)
        if DIGEST in self.jobs and cfg.digest_time:
            hour, minute = cfg.digest_at
            trigger = CronTrigger(hour=hour, minute=minute, timezone=cfg.digest_timezone)
            existing = scheduler.get_job(DIGEST)
            if existing is None or str(existing.trigger) != str(trigger):
                self._add(scheduler, DIGEST, trigger, misfire_grace_time=6 * 3600)
        for job in scheduler.get_jobs():
            if job.id not in self.jobs or (job.id == DIGEST and not cfg.digest_time):
                job.remove()  # switched off in the configuration since it was stored
        scheduler.resume()
        self._scheduler = scheduler
        log.info("scheduler started: %s", ", ".join(sorted(self.jobs)))

    @staticmethod
    def _add(scheduler: AsyncIOScheduler, job_id: str, trigger: Any, **options: Any) -> None:
        scheduler.add_job(
            run,
            trigger,
            args=[job_id],
            id=job_id,
            name=job_id,
            replace_existing=True,
            misfire_grace_time=options.pop("misfire_grace_time", None),
            **options,
        )

    def next_run(self, job_id: str) -> datetime | None:
        job = self._scheduler.get_job(job_id) if self._scheduler else None
        return job.next_run_time if job else None

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        _jobs.clear()
