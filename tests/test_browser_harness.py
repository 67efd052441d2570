"""Smoke test for the headless Chromium harness in tests/browser.py."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page, expect

from tests.browser import save_screenshot

FORM_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Contact us</title></head>
<body>
  <h1>Contact us</h1>
  <form method="post" action="/submit">
    <label for="name">Your name</label>
    <input id="name" name="name" type="text">
    <button type="submit">Send</button>
  </form>
</body>
</html>
"""

RESULT_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Thanks</title></head>
<body><h1>Thanks, {name}!</h1><p id="ref">Request received.</p></body>
</html>
"""


@dataclass
class FormServer:
    """A running form app and what it received."""

    url: str
    received: list[str] = field(default_factory=list)


def _make_app(server: FormServer) -> web.Application:
    async def form(_: web.Request) -> web.Response:
        return web.Response(text=FORM_PAGE, content_type="text/html")

    async def submit(request: web.Request) -> web.Response:
        data = await request.post()
        name = str(data.get("name", ""))
        server.received.append(name)
        body = RESULT_PAGE.format(name=html.escape(name))
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/", form), web.post("/submit", submit)])
    return app


@pytest_asyncio.fixture
async def form_server() -> AsyncIterator[FormServer]:
    """Serve the form app on an ephemeral loopback port."""
    server = FormServer(url="")
    runner = web.AppRunner(_make_app(server))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.mark.browser
async def test_form_round_trip_in_chromium(page: Page, form_server: FormServer) -> None:
    """Fill and submit a plain HTML form; the server gets the value and the reply renders."""
    value = "Ada Lovelace & Co. <ü>"

    await page.goto(f"{form_server.url}/")
    await expect(page).to_have_title("Contact us")
    await page.get_by_label("Your name").fill(value)
    await page.get_by_role("button", name="Send").click()

    await page.wait_for_url(f"{form_server.url}/submit")
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Thanks, {value}!")
    assert form_server.received == [value]
    assert "Request received." in await page.locator("body").inner_text()

    shot = await save_screenshot(page, "browser_harness_form_result")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
