"""The dashboard in real headless Chromium, with JavaScript off, over the `helpline demo` data:
sign in through the form, see the SVG charts and the KPI numbers, keep a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from core import accounts
from core.persistence.database import open_database
from core.persistence.migrate import upgrade
from core.ports import utc_now
from core.reports import ReportFilter, all_kpis
from gateway.demo import seed
from tests.browser import PAGE_TIMEOUT_MS
from tests.conftest import ServerFactory, make_settings

pytestmark = pytest.mark.browser

PASSWORD = "demo password 1"
SUPERVISOR = "sam@support.example"  # the demo's supervisor
CHART_TITLES = [
    "Tickets created and resolved per day, and the backlog",
    "Customer satisfaction (CSAT, 1-5)",
    "NPS answers: promoters, passives, detractors",
    "Average time per visit in each status",
]


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HELPLINE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_supervisor_signs_in_and_reads_the_demo_dashboard(
    browser: Browser, server_factory: ServerFactory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/demo/helpline.db"
    db = open_database(url, durable=False)
    upgrade(db)
    await db.close()
    print(await seed(make_settings(url, tmp_path / "demo"), tickets=120))
    server = await server_factory(url)
    await server.helpdesk.db.write(lambda c: accounts.set_password(c, SUPERVISOR, PASSWORD))

    context = await browser.new_context(java_script_enabled=False)  # the page needs none
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    try:
        await page.goto(f"{server.base_url}/dashboard")
        await expect(page).to_have_url(f"{server.base_url}/login?next=/dashboard")
        await page.get_by_label("Email").fill(SUPERVISOR)
        await page.get_by_label("Password").fill("not it at all")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()

        await expect(page).to_have_url(f"{server.base_url}/dashboard")
        await expect(page.locator("#signed-in")).to_have_text("Sam Supervisor (supervisor)")
        charts = page.locator('svg[role="img"]')
        await expect(charts).to_have_count(4)
        titles = [await charts.nth(i).get_attribute("aria-label") for i in range(4)]
        assert sorted(titles) == sorted(CHART_TITLES)
        svg_titles = await page.locator("svg[role=img] > title").all_text_contents()
        assert sorted(svg_titles) == sorted(CHART_TITLES)
        await expect(page.locator("#chart-flow polyline")).to_have_count(3)
        await expect(page.locator("#chart-status rect.bar")).to_have_count(3)

        now = utc_now()
        kpis = await server.helpdesk.db.read(lambda c: all_kpis(c, ReportFilter.last(30, now)))
        assert kpis.flow.created > 50  # the demo's tickets are in the last 30 days
        await expect(page.locator("#kpi-flow .value")).to_have_text(
            f"{kpis.flow.created} / {kpis.flow.resolved}"
        )
        rate = kpis.sla.first_response.rate
        await expect(page.locator("#kpi-sla-first .value")).to_have_text(
            "–" if rate is None else f"{100 * rate:.1f}%"
        )
        await expect(page.locator("#kpi-first-response .detail")).to_contain_text(
            f"{kpis.first_response.count} tickets"
        )
        # every active demo agent (five agents, the supervisor, the admin) with their load
        await expect(page.locator("#agent-load tr.load-row")).to_have_count(7)
        await expect(page.locator("#agent-load")).to_contain_text("Alice Meyer")

        shot = artifacts(tmp_path) / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"dashboard screenshot: {shot}")

        await page.get_by_role("button", name="Sign out").click()
        await expect(page).to_have_url(f"{server.base_url}/login")
        await page.goto(f"{server.base_url}/dashboard")
        await expect(page).to_have_url(f"{server.base_url}/login?next=/dashboard")
    finally:
        await context.close()
