"""Pytest fixtures for driving headless Chromium with Playwright's async API.

How to use: ``tests/conftest.py`` registers this module as a plugin with
``pytest_plugins = ["tests.browser"]``, so every test under ``tests/`` can simply ask for
the ``browser`` or ``page`` fixture.  ``save_screenshot`` is a plain helper; import it::

    import pytest
    from playwright.async_api import Page

    from tests.browser import save_screenshot

    @pytest.mark.browser
    async def test_something(page: Page) -> None:
        await page.goto(url)
        await save_screenshot(page, "something")

The browser is Debian's Chromium (``/usr/bin/chromium``, override with ``HELPLINE_CHROMIUM``);
Playwright's own browser downloads are not used.  When the executable is missing, the
fixtures skip, unless ``CI`` or ``HELPLINE_REQUIRE_BROWSER`` is set to a true value
(``1``/``true``/``yes``), in which case they fail with a clear message.

Fixtures are function scoped: pytest-asyncio gives every test its own event loop, and
Playwright objects cannot cross loops.  Starting the driver and Chromium costs about
0.7 s per test (plus about 0.5 s for the first page load).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

__all__ = ["ARTIFACTS_DIR", "CHROMIUM_ARGS", "browser", "chromium_path", "page", "save_screenshot"]

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Flags this sandbox needs: no setuid sandbox as root, no GPU, and no background traffic
# (the closed network refuses it). Playwright supplies a fresh temporary --user-data-dir.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# Default Playwright timeout (ms) for pages: fail fast on a loopback server.
PAGE_TIMEOUT_MS = 10_000

_TRUE = {"1", "true", "yes", "on"}


def _browser_required() -> bool:
    """Whether a missing browser is an error rather than a reason to skip."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("CI", "HELPLINE_REQUIRE_BROWSER")
    )


def _resolve_chromium() -> str | None:
    """Return the Chromium executable to use, or None if it is not runnable."""
    candidate = os.environ.get("HELPLINE_CHROMIUM") or DEFAULT_CHROMIUM
    if os.sep not in candidate:
        return shutil.which(candidate)
    path = Path(candidate)
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of the Chromium executable; skips or fails when it is missing."""
    path = _resolve_chromium()
    if path is not None:
        return path
    wanted = os.environ.get("HELPLINE_CHROMIUM") or DEFAULT_CHROMIUM
    message = (
        f"Chromium not found or not executable at {wanted!r}. "
        "Install Debian's package (`apt-get install chromium`, done by .ci/run) "
        "or point HELPLINE_CHROMIUM at a Chromium binary."
    )
    if _browser_required():
        pytest.fail(
            f"{message} (required because CI or HELPLINE_REQUIRE_BROWSER is set)", pytrace=False
        )
    pytest.skip(message)


@pytest_asyncio.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    """A headless Chromium launched for this test."""
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=list(CHROMIUM_ARGS),
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh browser context (own cookies and storage)."""
    context = await browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def save_screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Write a PNG of ``page`` to ``test-artifacts/<name>.png`` and return its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "screenshot"
    if not safe.endswith(".png"):
        safe += ".png"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS_DIR / safe
    await page.screenshot(path=str(target), full_page=full_page)
    return target
