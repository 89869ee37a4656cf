"""The demo notification centre in headless Chromium against a real `campana serve`."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from .conftest import REQUIRE_SERVICES, ServerPool

CHROMIUM = os.environ.get("CAMPANA_TEST_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()
# `make screenshot` sets this to refresh the README's picture; otherwise it goes to a temp dir.
SCREENSHOT = os.environ.get("CAMPANA_TEST_SCREENSHOT")
# Without these, Chromium reaches for Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_INSTALLED:
        if REQUIRE_SERVICES:
            pytest.fail(f"Chromium is not installed at {CHROMIUM}")
        pytest.skip("Chromium is not installed")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


async def open_centre(browser: Browser, base_url: str, token: str) -> Page:
    page = await browser.new_page(viewport={"width": 900, "height": 560})
    await page.goto(f"{base_url}/?token={token}")
    await expect(page.get_by_test_id("connection")).to_have_text("Live")
    return page


async def test_badge_and_list_update_live_and_two_tabs_stay_in_sync(
    servers: ServerPool, browser: Browser, user: str, tmp_path: Path
) -> None:
    server = await servers.get("sqlite", "process", allowed_origins="")
    token = server.token(user)
    first = await open_centre(browser, server.base_url, token)
    second = await open_centre(browser, server.base_url, token)
    await expect(first.get_by_test_id("badge")).to_be_hidden()

    await server.send(user, "Template 'Welcome' was approved.", type="TEMPLATE_APPROVED")
    await server.send(
        user,
        "Campaign 'Black Friday' is scheduled for 09:00.",
        type="CAMPAIGN_SCHEDULED",
        link_url="/campaigns/981",
    )
    await server.send(
        user, "Campaign 'Spring sale' failed: 3 recipients bounced.", type="CAMPAIGN_ERROR"
    )
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_have_text("3")
        await expect(page.get_by_test_id("item")).to_have_count(3)
    await expect(first.get_by_test_id("item").first).to_contain_text("Spring sale")
    await expect(first.get_by_role("link", name="Open")).to_have_attribute("href", "/campaigns/981")

    await first.get_by_test_id("item").first.get_by_test_id("mark-read").click()
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_have_text("2")
        await expect(page.locator(".item.read")).to_have_count(1)
    await first.screenshot(path=SCREENSHOT or str(tmp_path / "demo.png"))

    await second.get_by_test_id("read-all").click()
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_be_hidden()
        await expect(page.locator(".item.unread")).to_have_count(0)


async def test_the_page_recovers_after_the_server_restarts(
    servers: ServerPool, browser: Browser, user: str
) -> None:
    server = await servers.start("sqlite", "process", allowed_origins="")
    page = await open_centre(browser, server.base_url, server.token(user))
    restarted = await servers.restart(server)
    await expect(page.get_by_test_id("connection")).to_have_text("Live", timeout=20_000)
    await restarted.send(user, "Sent after the restart")
    await expect(page.get_by_test_id("item")).to_have_count(1)
    await expect(page.get_by_test_id("badge")).to_have_text("1")


async def test_the_page_notices_a_frozen_server_and_recovers_without_a_reload(
    servers: ServerPool, browser: Browser, user: str
) -> None:
    # A 2 s keepalive: the page counts the socket dead after 2 x 2 s + 1 s without a frame.
    server = await servers.start("sqlite", "process", allowed_origins="", keepalive_seconds=2)
    assert server.process is not None
    page = await browser.new_page()
    await page.goto(f"{server.base_url}/?token={server.token(user)}&keepalive=2")
    connection = page.get_by_test_id("connection")
    await expect(connection).to_have_text("Live")
    await page.evaluate("window.sameDocument = true")

    # A frozen process keeps its TCP connections open: only the missing keepalives tell.
    server.process.send_signal(signal.SIGSTOP)
    try:
        await expect(connection).not_to_have_text("Live", timeout=10_000)
    finally:
        server.process.send_signal(signal.SIGCONT)

    await expect(connection).to_have_text("Live", timeout=15_000)
    await server.send(user, "Sent after the thaw")
    await expect(page.get_by_test_id("item")).to_have_count(1)
    assert await page.evaluate("window.sameDocument") is True


async def test_a_refused_token_shows_signed_out_until_a_good_one_is_pasted(
    servers: ServerPool, browser: Browser, user: str
) -> None:
    server = await servers.get("sqlite", "process", allowed_origins="")
    page = await browser.new_page()
    await page.goto(f"{server.base_url}/?token=not-a-token")
    connection = page.get_by_test_id("connection")
    await expect(connection).to_have_text("Signed out", timeout=10_000)
    await expect(page.get_by_test_id("signed-out")).to_be_visible()

    await page.get_by_test_id("token-input").fill(server.token(user))
    await page.get_by_test_id("use-token").click()
    await expect(connection).to_have_text("Live")
    await expect(page.get_by_test_id("signed-out")).to_be_hidden()
