"""The customer pages in real headless Chromium: the form and portal work with JavaScript
disabled, and customer HTML shown on the portal runs no script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Dialog, Page, expect

from tests.browser import PAGE_TIMEOUT_MS, save_screenshot
from tests.conftest import Server
from tests.gateway.test_pages import EVIL_HTML, Desk, inbound, ingest_html

pytestmark = pytest.mark.browser


@pytest_asyncio.fixture
async def no_js_page(browser: Browser) -> AsyncIterator[Page]:
    """A page whose context runs no JavaScript at all: proves the pages need none."""
    context = await browser.new_context(java_script_enabled=False)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def test_form_submit_and_portal_reply_work_without_javascript(
    no_js_page: Page, server: Server, http: aiohttp.ClientSession
) -> None:
    page = no_js_page
    await page.goto(f"{server.base_url}/")
    await expect(page).to_have_title("Contact support · Acme Support")
    honeypot = await page.locator("#website").bounding_box()
    assert honeypot is not None and honeypot["x"] + honeypot["width"] <= 0  # off screen

    await page.get_by_label("Your name").fill("Ann Lee")
    await page.get_by_label("Email").fill("ann@example.org")
    await page.get_by_label("Subject").fill("Printer on fire")
    await page.get_by_label("Message").fill("Smoke is coming out of the printer.")
    await page.locator("#attachments").set_input_files(
        [{"name": "error-log.txt", "mimeType": "text/plain", "buffer": b"E42 overheating\n"}]
    )
    await save_screenshot(page, "form")
    await page.get_by_role("button", name="Send").click()

    await expect(page.locator("#ticket-number")).to_have_text("#1")
    link = page.locator("#status-link")
    status_url = await link.get_attribute("href")
    assert status_url is not None and status_url.startswith(f"{server.base_url}/t/1/")
    await save_screenshot(page, "submitted")
    desk = await Desk.open(http, server)
    (message,) = inbound(await desk.ticket(1))
    assert message["text"] == "Smoke is coming out of the printer."
    assert [a["filename"] for a in message["attachments"]] == ["error-log.txt"]

    await link.click()
    await expect(page).to_have_url(status_url)
    await expect(page.locator("#ticket-status")).to_have_text("Received")
    await expect(page.locator("#history")).to_contain_text("Smoke is coming out of the printer.")
    await expect(page.locator("#history")).to_contain_text("error-log.txt")

    await page.get_by_label("Reply").fill("It is smoking again.")
    await page.get_by_role("button", name="Send reply").click()

    await expect(page.locator("#sent-notice")).to_be_visible()
    await expect(page.locator("#history")).to_contain_text("It is smoking again.")
    await save_screenshot(page, "portal")
    ticket = await desk.ticket(1)
    assert [m["text"] for m in inbound(ticket)] == [
        "Smoke is coming out of the printer.",
        "It is smoking again.",
    ]
    assert await desk.total() == 1


async def test_server_side_validation_keeps_the_values_without_javascript(
    no_js_page: Page, server: Server
) -> None:
    page = no_js_page
    await page.goto(f"{server.base_url}/")
    await page.get_by_label("Your name").fill("Ann Lee")
    # passes the browser's own type=email check, fails ours (no dot in the domain)
    await page.get_by_label("Email").fill("ann@localhost")
    await page.get_by_label("Message").fill("Help!")

    await page.get_by_role("button", name="Send").click()

    await expect(page.locator("#email-error")).to_contain_text("not a valid email address")
    await expect(page.get_by_label("Your name")).to_have_value("Ann Lee")
    await expect(page.get_by_label("Message")).to_have_value("Help!")
    await save_screenshot(page, "form_error")
    await page.get_by_label("Email").fill("ann@example.org")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#ticket-number")).to_have_text("#1")


async def test_customer_html_on_the_portal_runs_no_script(page: Page, server: Server) -> None:
    dialogs: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", dismiss)
    status_url = await ingest_html(server, EVIL_HTML)

    await page.goto(status_url)

    await expect(page.locator("#history")).to_contain_text("the guide")
    await expect(page.locator("#history b")).to_have_text("team")
    await page.locator("#history a", has_text="click me").click()  # a javascript: link, defused
    await page.wait_for_load_state("load")
    assert await page.title() == "Ticket #1 · Acme Support"  # scripts would have set "pwned"
    assert dialogs == []
    history = page.locator("#history")
    for selector in (
        "script",
        "iframe",
        "svg",
        "style",
        "form",
        "input",
        "[onerror]",
        "[onclick]",
        "[onload]",
        "[style]",
        "a[href^='javascript' i]",
    ):
        assert await history.locator(selector).count() == 0, selector
    assert await page.get_by_role("button", name="Send reply").is_visible()
    await save_screenshot(page, "portal_sanitized")
