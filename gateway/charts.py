"""Server-side charts as inline SVG: pure functions of their data, no JavaScript, no fonts or
files to fetch (the dashboard works offline under a strict CSP).

Every chart is ``role="img"`` with an ``aria-label``, a ``<title>`` and a ``<desc>`` that spells
the values out; each point or bar also carries its value as text (a ``<title>`` tooltip or a
label), so the numbers are readable without seeing the picture. Output is deterministic:
coordinates are rounded to 0.1 and the same data gives the same bytes (tests compare them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

FONT = 'font-family="system-ui, sans-serif"'
MUTED, GRID, TRACK = "#5b6776", "#e3e7ec", "#e3e7ec"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]
    color: str
    right_axis: bool = False  # a second scale (the backlog dwarfs the per-day counts)
    dashed: bool = False


def number(value: float) -> str:
    """A value as a chart shows it: integers plainly, others with one decimal."""
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.1f}"


def _c(value: float) -> str:
    """A coordinate, rounded so the output does not depend on float noise."""
    return number(value)


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (>= 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _open(chart_id: str, title: str, desc: str, width: int, height: int) -> list[str]:
    label = escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}" class="chart" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" '
        f'aria-describedby="{escape(chart_id)}-desc">',
        f"<title>{label}</title>",
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]


def _text(
    x: float, y: float, text: str, *, anchor: str = "start", size: int = 11, **attrs: str
) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return (
        f'<text x="{_c(x)}" y="{_c(y)}" text-anchor="{anchor}" font-size="{size}" {FONT}'
        f"{extra}>{escape(text)}</text>"
    )


def _empty(chart_id: str, title: str, width: int, height: int) -> str:
    parts = _open(chart_id, title, f"{title}: no data for this period.", width, height)
    parts.append(
        _text(width / 2, height / 2, "No data for this period", anchor="middle", fill=MUTED)
    )
    return "".join(parts) + "</svg>"


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 720,
    height: int = 260,
) -> str:
    """Lines over shared x labels (days); series with ``right_axis`` get their own scale."""
    if not labels or not series:
        return _empty(chart_id, title, width, height)
    for s in series:
        if len(s.values) != len(labels):
            raise ValueError(
                f"series {s.name!r} has {len(s.values)} values for {len(labels)} labels"
            )
    left, right, top, bottom = 44, 48 if any(s.right_axis for s in series) else 16, 30, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    scales = {
        side: nice_max(
            max((max(s.values, default=0) for s in series if s.right_axis is side), default=0)
        )
        for side in (False, True)
    }
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else i * plot_w / (n - 1))

    def y(value: float, side: bool) -> float:
        return top + plot_h - plot_h * value / scales[side]

    summary = "; ".join(
        f"{s.name}: "
        + ", ".join(f"{lab} {number(v)}" for lab, v in zip(labels, s.values, strict=True))
        for s in series
    )
    parts = _open(chart_id, title, f"{title}. {summary}.", width, height)
    for k in range(5):  # grid and the scales' tick labels
        frac = k / 4
        gy = top + plot_h - plot_h * frac
        parts.append(
            f'<line x1="{left}" y1="{_c(gy)}" x2="{left + plot_w}" y2="{_c(gy)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            _text(left - 6, gy + 4, number(scales[False] * frac), anchor="end", fill=MUTED)
        )
        if right > 16:
            parts.append(_text(left + plot_w + 6, gy + 4, number(scales[True] * frac), fill=MUTED))
    step = max(1, math.ceil(n / 8))  # at most about eight x labels
    for i in range(0, n, step):
        parts.append(_text(x(i), height - 10, labels[i], anchor="middle", fill=MUTED))
    legend_x = left
    for s in series:
        parts.append(
            f'<rect x="{legend_x}" y="8" width="12" height="12" fill="{escape(s.color)}"/>'
        )
        name = s.name + (" (right scale)" if s.right_axis and right > 16 else "")
        parts.append(_text(legend_x + 16, 18, name))
        legend_x += 24 + 7 * len(name)
    for s in series:
        points = " ".join(f"{_c(x(i))},{_c(y(v, s.right_axis))}" for i, v in enumerate(s.values))
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        parts.append(
            f'<polyline class="series" data-series="{escape(s.name)}" points="{points}" '
            f'fill="none" stroke="{escape(s.color)}" stroke-width="2"{dash}/>'
        )
        for i, v in enumerate(s.values):
            parts.append(
                f'<circle cx="{_c(x(i))}" cy="{_c(y(v, s.right_axis))}" r="2.5" '
                f'fill="{escape(s.color)}"><title>{escape(labels[i])}: {escape(s.name)} '
                f"{number(v)}</title></circle>"
            )
    return "".join(parts) + "</svg>"


def bar_chart(
    chart_id: str,
    title: str,
    bars: Sequence[tuple[str, float]],
    *,
    fmt: Callable[[float], str] = number,
    color: str = "#1f6feb",
    width: int = 720,
    row: int = 30,
    label_width: int = 150,
    value_width: int = 110,
) -> str:
    """Horizontal bars, each with its label on the left and its value (``fmt``) on the right."""
    height = 16 + row * max(len(bars), 1)
    if not bars:
        return _empty(chart_id, title, width, height + 40)
    left, right = label_width, value_width
    plot_w = width - left - right
    top = max(value for _, value in bars)
    scale = top if top > 0 else 1.0
    summary = ", ".join(f"{label} {fmt(value)}" for label, value in bars)
    parts = _open(chart_id, title, f"{title}: {summary}.", width, height)
    for i, (label, value) in enumerate(bars):
        y = 8 + i * row
        w = plot_w * max(value, 0) / scale
        parts.append(_text(left - 8, y + row / 2 + 2, label, anchor="end"))
        parts.append(
            f'<rect x="{left}" y="{_c(y + 4)}" width="{_c(plot_w)}" height="{row - 10}" '
            f'fill="{TRACK}" rx="3"/>'
        )
        parts.append(
            f'<rect class="bar" x="{left}" y="{_c(y + 4)}" width="{_c(w)}" height="{row - 10}" '
            f'fill="{escape(color)}" rx="3"><title>{escape(label)}: {escape(fmt(value))}</title>'
            "</rect>"
        )
        parts.append(_text(left + plot_w + 8, y + row / 2 + 2, fmt(value)))
    return "".join(parts) + "</svg>"


def gauge(
    chart_id: str,
    title: str,
    value: float | None,
    low: float,
    high: float,
    *,
    caption: str = "",
    color: str = "#1a7f37",
    width: int = 240,
) -> str:
    """A half-circle gauge of ``value`` between ``low`` and ``high`` (None: no value yet)."""
    if high <= low:
        raise ValueError("high must be above low")
    height = width // 2 + 44
    cx, cy, r = width / 2, width / 2 + 6, width / 2 - 20
    shown = "no answers yet" if value is None else f"{number(value)} of {number(high)}"
    parts = _open(chart_id, title, f"{title}: {shown}. {caption}".strip(), width, height)

    def point(frac: float) -> str:
        angle = math.pi * (1 - frac)
        return f"{_c(cx + r * math.cos(angle))} {_c(cy - r * math.sin(angle))}"

    parts.append(
        f'<path d="M {point(0)} A {_c(r)} {_c(r)} 0 0 1 {point(1)}" fill="none" '
        f'stroke="{TRACK}" stroke-width="18"/>'
    )
    if value is not None:
        frac = min(max((value - low) / (high - low), 0.0), 1.0)
        parts.append(
            f'<path class="needle" d="M {point(0)} A {_c(r)} {_c(r)} 0 0 1 {point(frac)}" '
            f'fill="none" stroke="{escape(color)}" stroke-width="18"/>'
        )
    big = "–" if value is None else number(value)
    parts.append(_text(cx, cy - 8, big, anchor="middle", size=28, font_weight="700"))
    parts.append(_text(cx - r, cy + 18, number(low), anchor="middle", fill=MUTED))
    parts.append(_text(cx + r, cy + 18, number(high), anchor="middle", fill=MUTED))
    if caption:
        parts.append(_text(cx, height - 6, caption, anchor="middle", fill=MUTED))
    return "".join(parts) + "</svg>"
