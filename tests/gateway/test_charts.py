"""The SVG charts: well-formed, accessible, deterministic, and drawn to scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway.charts import Series, bar_chart, gauge, line_chart, nice_max, number

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on malformed XML (an unescaped "<" or "&")


def accessible(root: ET.Element, title: str) -> None:
    assert root.get("role") == "img" and root.get("aria-label") == title
    assert root.findtext(f"{SVG}title") == title
    desc = root.find(f"{SVG}desc")
    assert desc is not None and root.get("aria-describedby") == desc.get("id")


def test_number_and_nice_scale() -> None:
    assert [number(v) for v in (0, 3, 2.0, 2.25, 1 / 3, -4.96)] == [
        "0", "3", "2", "2.2", "0.3", "-5",
    ]  # fmt: skip
    assert [nice_max(v) for v in (0, 0.4, 1, 3, 7, 10, 11, 23, 240, 999)] == [
        1, 1, 1, 5, 10, 10, 20, 25, 250, 1000,
    ]  # fmt: skip


def test_line_chart_plots_each_series_to_scale_with_its_values_as_text() -> None:
    labels = ["03-01", "03-02", "03-03"]
    svg = line_chart(
        "flow",
        "Created & resolved",
        labels,
        [
            Series("created", [0, 5, 10], "#111"),
            Series("resolved", [10, 5, 0], "#222"),
            Series("backlog", [100, 150, 200], "#333", right_axis=True, dashed=True),
        ],
        width=344,
        height=160,
    )
    root = parse(svg)
    accessible(root, "Created & resolved")
    desc = root.findtext(f"{SVG}desc") or ""
    assert "created: 03-01 0, 03-02 5, 03-03 10" in desc and "backlog: 03-01 100" in desc
    lines = {p.get("data-series"): p for p in root.iter(f"{SVG}polyline")}
    # plot: x 44..296 (right scale: 48 px), y 30..130; left scale 0..10, right 0..200
    assert lines["created"].get("points") == "44,130 170,80 296,30"
    assert lines["resolved"].get("points") == "44,30 170,80 296,130"
    assert lines["backlog"].get("points") == "44,80 170,55 296,30"
    assert lines["backlog"].get("stroke-dasharray") == "5 4"
    tips = [c.findtext(f"{SVG}title") for c in root.iter(f"{SVG}circle")]
    assert tips[:3] == ["03-01: created 0", "03-02: created 5", "03-03: created 10"]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "backlog (right scale)" in texts and "200" in texts and "03-02" in texts


def test_line_chart_is_deterministic_and_handles_one_day_and_no_data() -> None:
    args = ("c", "t", ["a"], [Series("s", [1 / 3], "#000")])
    assert line_chart(*args) == line_chart(*args)
    (line,) = parse(line_chart(*args)).iter(f"{SVG}polyline")
    assert line.get("points", "").startswith("374,")  # one day: the middle of 44..704
    empty = parse(line_chart("c", "Nothing", [], []))
    accessible(empty, "Nothing")
    assert "No data for this period" in [t.text for t in empty.iter(f"{SVG}text")]
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        line_chart("c", "t", ["a", "b", "c"], [Series("s", [1, 2], "#000")])


def test_bar_chart_bars_are_proportional_and_labelled() -> None:
    svg = bar_chart(
        "st", "Time <in> status", [("new", 3600), ("open", 7200), ("pending", 0)], fmt=str
    )
    root = parse(svg)
    accessible(root, "Time <in> status")
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    widths = [float(r.get("width", "")) for r in bars]
    assert widths == [230, 460, 0]  # plot width 720 - 150 - 110 = 460, scaled to the largest
    assert [r.findtext(f"{SVG}title") for r in bars] == ["new: 3600", "open: 7200", "pending: 0"]
    assert "<in>" not in svg and "&lt;in&gt;" in svg  # escaped
    assert "No data" in bar_chart("e", "Empty", [])


def test_gauge_shows_the_value_and_clamps_the_arc() -> None:
    root = parse(gauge("g", "CSAT", 4.2, 1, 5, caption="12 answers"))
    accessible(root, "CSAT")
    assert root.findtext(f"{SVG}desc") == "CSAT: 4.2 of 5. 12 answers"
    assert "4.2" in [t.text for t in root.iter(f"{SVG}text")]
    (needle,) = [p for p in root.iter(f"{SVG}path") if p.get("class") == "needle"]
    # 80% of the half circle (r = 100, centre 120,126): the arc ends at angle 36 degrees
    assert needle.get("d") == "M 20 126 A 100 100 0 0 1 200.9 67.2"
    full = parse(gauge("g", "x", 9, 1, 5))
    (needle,) = [p for p in full.iter(f"{SVG}path") if p.get("class") == "needle"]
    assert needle.get("d", "").endswith("220 126")  # clamped to the end of the scale
    none = parse(gauge("g", "CSAT", None, 1, 5))
    assert not [p for p in none.iter(f"{SVG}path") if p.get("class") == "needle"]
    assert none.findtext(f"{SVG}desc") == "CSAT: no answers yet."
    with pytest.raises(ValueError):
        gauge("g", "x", 1, 5, 5)
