"""The supervisors' daily digest: yesterday's numbers and the SLA queue, once per UTC day, to
the team channel and to every supervisor with an email address.

"Once" holds across restarts and several serving processes: the day's receipt
(``core.once.first_time``) is written in the same transaction as the outbox rows, so either
both are committed or neither is, and a second run finds the receipt and queues nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from string import Template

from sqlalchemy import Connection

from bots.agents import team_channel
from bots.supervisors import parse_supervisor
from core.config import Settings
from core.dashboard_queries import FIRST_RESPONSE, QueueEntry, live_queue
from core.helpdesk import Helpdesk
from core.messages import Channel, OutboundMessage, ThreadRef
from core.once import first_time
from core.outbox import enqueue
from core.reports import Dashboard, ReportFilter, all_kpis

SCOPE = "digest"
QUEUE_LINES = 10  # the digest names the most urgent tickets; the dashboard has the rest

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "subject": "Helpdesk digest for $day",
        "title": "Helpdesk digest for $day (UTC)",
        "flow": "Tickets: $created created, $resolved resolved; backlog $start → $end",
        "first_response": "First response: mean $mean, median $p50 ($count answered)",
        "resolution": "Resolution: mean $mean, median $p50 ($count resolved)",
        "sla": "SLA met: first response $first, resolution $resolution",
        "csat": "CSAT: $csat ($responses answers) · NPS: $nps · KB deflection: $deflection",
        "queue": "SLA queue now: $breached breached, $soon due within 2 h",
        "queue_empty": "SLA queue now: nothing breached or due within 2 h",
        "breached": "breached $minutes min ago",
        "due": "due in $minutes min",
        "first_response_target": "first response",
        "resolution_target": "resolution",
        "nobody": "unassigned",
        "more": "… and $count more on the dashboard",
        "none": "–",
        "s": "$n s",
        "min": "$n min",
        "h": "$n h",
        "d": "$n d",
    },
    "zh": {
        "subject": "客服日报 $day",
        "title": "客服日报 $day（UTC）",
        "flow": "工单：新建 $created，已解决 $resolved；积压 $start → $end",
        "first_response": "首次响应：平均 $mean，中位数 $p50（$count 张已回复）",
        "resolution": "解决时长：平均 $mean，中位数 $p50（$count 张已解决）",
        "sla": "SLA 达成率：首次响应 $first，解决 $resolution",
        "csat": "满意度：$csat（$responses 份评价）· NPS：$nps · 知识库自助解决率：$deflection",
        "queue": "当前 SLA 队列：$breached 张已超时，$soon 张将在 2 小时内到期",
        "queue_empty": "当前 SLA 队列：没有超时或 2 小时内到期的工单",
        "breached": "已超时 $minutes 分钟",
        "due": "$minutes 分钟后到期",
        "first_response_target": "首次响应",
        "resolution_target": "解决",
        "nobody": "未分配",
        "more": "……另有 $count 张，请查看仪表板",
        "none": "–",
        "s": "$n 秒",
        "min": "$n 分钟",
        "h": "$n 小时",
        "d": "$n 天",
    },
}


def _table(language: str | None) -> dict[str, str]:
    return TEXTS.get((language or "en").split("-")[0], TEXTS["en"])


def _t(table: dict[str, str], key: str, **values: object) -> str:
    return Template(table[key]).safe_substitute({k: str(v) for k, v in values.items()})


def _duration(table: dict[str, str], seconds: float | None) -> str:
    if seconds is None:
        return table["none"]
    if seconds < 90:
        return _t(table, "s", n=f"{seconds:.0f}")
    if seconds < 90 * 60:
        return _t(table, "min", n=f"{seconds / 60:.0f}")
    if seconds < 48 * 3600:
        return _t(table, "h", n=f"{seconds / 3600:.1f}")
    return _t(table, "d", n=f"{seconds / 86400:.1f}")


def _percent(table: dict[str, str], rate: float | None) -> str:
    return table["none"] if rate is None else f"{100 * rate:.1f}%"


def digest_text(dashboard: Dashboard, live_queue: Sequence[QueueEntry], language: str) -> str:
    """The digest as plain text (the same text on every channel)."""
    t = _table(language)
    k = dashboard
    lines = [
        _t(t, "title", day=k.filter.since.astimezone(UTC).date().isoformat()),
        "",
        _t(
            t,
            "flow",
            created=k.flow.created,
            resolved=k.flow.resolved,
            start=k.flow.backlog_start,
            end=k.flow.backlog_end,
        ),
        _t(
            t,
            "first_response",
            mean=_duration(t, k.first_response.mean),
            p50=_duration(t, k.first_response.p50),
            count=k.first_response.count,
        ),
        _t(
            t,
            "resolution",
            mean=_duration(t, k.resolution.mean),
            p50=_duration(t, k.resolution.p50),
            count=k.resolution.count,
        ),
        _t(
            t,
            "sla",
            first=_percent(t, k.sla.first_response.rate),
            resolution=_percent(t, k.sla.resolution.rate),
        ),
        _t(
            t,
            "csat",
            csat=t["none"] if k.csat.average is None else f"{k.csat.average:.2f}",
            responses=k.csat.responses,
            nps=t["none"] if k.nps.score is None else f"{k.nps.score:.1f}",
            deflection=_percent(t, k.deflection.rate),
        ),
        "",
    ]
    breached = sum(1 for q in live_queue if q.breached)
    if live_queue:
        lines.append(_t(t, "queue", breached=breached, soon=len(live_queue) - breached))
    else:
        lines.append(t["queue_empty"])
    for q in live_queue[:QUEUE_LINES]:
        target = t["first_response_target" if q.target == FIRST_RESPONSE else "resolution_target"]
        when = _t(t, "breached" if q.breached else "due", minutes=abs(q.minutes))
        lines.append(f"  #{q.number} {q.subject} · {target} {when} · {q.assignee or t['nobody']}")
    if len(live_queue) > QUEUE_LINES:
        lines.append("  " + _t(t, "more", count=len(live_queue) - QUEUE_LINES))
    return "\n".join(lines) + "\n"


def destinations(settings: Settings) -> list[ThreadRef]:
    """The team channel, then every supervisor reached by email (chat supervisors read the
    team channel), without duplicates."""
    found: list[ThreadRef] = []
    if (team := team_channel(settings)) is not None:
        found.append(team)
    for entry in settings.bots.supervisors:
        to = parse_supervisor(entry)
        if to.channel is Channel.EMAIL and to not in found:
            found.append(to)
    return found


def yesterday(now: datetime) -> ReportFilter:
    """The UTC day before ``now``'s."""
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    return ReportFilter(midnight - timedelta(days=1), midnight)


async def send_daily_digest(helpdesk: Helpdesk, now: datetime) -> int:
    """Queue today's digest to every destination, once per UTC day; the rows queued (0 when
    it went out already today, or there is nowhere to send it)."""
    settings = helpdesk.settings
    to = destinations(settings)
    if not to:
        return 0
    f = yesterday(now)
    day = now.astimezone(UTC).date().isoformat()

    def read(conn: Connection) -> tuple[Dashboard, list[QueueEntry]]:
        return all_kpis(conn, f), live_queue(conn, now)

    # read first, outside the write: the KPIs need not hold the writer (a lost race only
    # means this process computed a digest another one sent)
    board, queue = await helpdesk.db.read(read)
    language = settings.service.language
    text = digest_text(board, queue, language)
    subject = _t(_table(language), "subject", day=f.since.date().isoformat())
    mail_domain = settings.email.from_address.rsplit("@", 1)[-1].lower()

    def queue_rows(conn: Connection) -> int:
        if not first_time(conn, SCOPE, day, now):
            return 0
        return sum(
            enqueue(
                conn,
                f"digest:{day}:{dest.channel.value}:{dest.address}",
                OutboundMessage(to=dest, text=text, subject=subject),
                now=now,
                mail_domain=mail_domain,
            )
            for dest in to
        )

    queued = await helpdesk.db.write(queue_rows)
    if queued:
        helpdesk.on_outbox()
    return queued
