"""The demo notification centre in headless Chromium against a real `campana serve`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, WebSocket, expect

from .support.servers import Server, ServerPool

# `make screenshot` sets this to refresh the README's picture; otherwise it goes to a temp dir.
SCREENSHOT = os.environ.get("CAMPANA_TEST_SCREENSHOT")
# `npm install` in clients/typescript brings it (a devDependency); `make test` does that.
AXE = Path(__file__).parents[1] / "clients/typescript/node_modules/axe-core/axe.min.js"
# Where the focus is, as the test needs it: the element's test id, or its row's when in a row.
FOCUSED_ROW = "document.activeElement.closest('[data-testid=item]')?.dataset.id ?? null"
FOCUS_IN_LIST = "!!document.activeElement.closest('[data-testid=list]')"
FOCUSED_TEST_ID = "document.activeElement.dataset.testid ?? null"

pytestmark = pytest.mark.timeout(120)
COUNTS = "/api/v1/notifications/counts"


async def open_centre(
    browser: Browser, base_url: str, token: str, *, width: int = 1000, height: int = 640
) -> Page:
    page = await browser.new_page(viewport={"width": width, "height": height})
    await goto_centre(page, base_url, token)
    return page


async def goto_centre(page: Page, base_url: str, token: str) -> None:
    await page.goto(f"{base_url}/?token={token}")
    await expect(page.get_by_test_id("connection")).to_have_text("Live")


async def open_feed(page: Page) -> None:
    """Click the bell unless its feed is open already."""
    bell = page.get_by_test_id("bell")
    if await bell.get_attribute("aria-expanded") != "true":
        await bell.click()
    await expect(bell).to_have_attribute("aria-expanded", "true")
    await expect(page.locator("#feed")).to_be_visible()


async def open_sockets(server: Server) -> float:
    """The server's `campana_open_sockets` gauge."""
    answer = await server.http.get("/metrics")
    assert answer.status_code == 200, answer.text
    for line in answer.text.splitlines():
        if line.startswith("campana_open_sockets"):
            return float(line.split()[-1])
    raise AssertionError(f"no campana_open_sockets in /metrics:\n{answer.text}")


async def wait_for_open_sockets(server: Server, expected: int, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (count := await open_sockets(server)) != expected:
        assert loop.time() < deadline, f"{count} open sockets, expected {expected}"
        await asyncio.sleep(0.1)


async def serious_axe_violations(page: Page) -> list[dict[str, object]]:
    """axe-core's violations of impact serious or critical, in a form worth printing."""
    if not await page.evaluate("typeof axe !== 'undefined'"):
        # Evaluated from outside the page: its CSP allows no inline script tag.
        await page.evaluate(AXE.read_text() + "\n;undefined")
    violations: list[dict[str, object]] = await page.evaluate(
        """async () => (await axe.run()).violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.map((n) => n.target.join(' ')) }))"""
    )
    return violations


async def test_badge_and_list_update_live_and_two_tabs_stay_in_sync(
    server_pool: ServerPool, browser: Browser, user: str, tmp_path: Path
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    token = server.token(user)
    first = await open_centre(browser, server.base_url, token)
    second = await open_centre(browser, server.base_url, token)
    await expect(first.get_by_test_id("badge")).to_be_hidden()
    await expect(first.get_by_test_id("bell")).to_have_accessible_name("Notifications")

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
        await expect(page.get_by_test_id("bell")).to_have_accessible_name("Notifications, 3 unread")
        await open_feed(page)
        await expect(page.get_by_test_id("item")).to_have_count(3)
    await expect(first.get_by_test_id("item").first).to_contain_text("Spring sale")
    scheduled = first.get_by_role("link", name=re.compile("Black Friday"))
    await expect(scheduled).to_have_attribute("href", "/campaigns/981")

    await first.get_by_test_id("item").first.get_by_test_id("mark-read").click()
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_have_text("2")
        await expect(page.locator(".item.read")).to_have_count(1)
    await first.mouse.move(10, 600)  # no hover highlight in the picture
    await first.screenshot(path=SCREENSHOT or str(tmp_path / "demo.png"))

    await second.get_by_test_id("read-all").click()
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_be_hidden()
        await expect(page.locator(".item.unread")).to_have_count(0)


async def test_two_tabs_of_one_user_share_one_socket_and_hand_it_over_when_the_leader_closes(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", name="one-socket", allowed_origins="")
    token = server.token(user)
    context = await browser.new_context(viewport={"width": 1000, "height": 640})
    first, second = await context.new_page(), await context.new_page()
    opened: dict[Page, int] = {first: 0, second: 0}  # WebSockets each page opened

    def count_sockets_of(page: Page) -> Callable[[WebSocket], None]:
        def count(_: WebSocket) -> None:
            opened[page] += 1

        return count

    for page in (first, second):
        page.on("websocket", count_sockets_of(page))
    await goto_centre(first, server.base_url, token)
    await goto_centre(second, server.base_url, token)
    await wait_for_open_sockets(server, 1)
    assert sorted(opened.values()) == [0, 1], opened  # one page holds the socket
    leader = first if opened[first] else second
    follower = second if leader is first else first

    await server.send(user, "First of two")
    await server.send(user, "Second of two")
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_have_text("2")
        await open_feed(page)
        await expect(page.get_by_test_id("item")).to_have_count(2)
    await second.get_by_test_id("item").first.get_by_test_id("mark-read").click()
    for page in (first, second):
        await expect(page.get_by_test_id("badge")).to_have_text("1")
        await expect(page.locator(".item.read")).to_have_count(1)
    assert await open_sockets(server) == 1

    # The tab holding the socket closes: the other opens its own and carries on.
    await leader.close()
    await server.send(user, "After the handover")
    await expect(follower.get_by_test_id("item")).to_have_count(3, timeout=10_000)
    await expect(follower.get_by_test_id("item").first).to_contain_text("After the handover")
    await expect(follower.get_by_test_id("badge")).to_have_text("2")
    await expect(follower.get_by_test_id("connection")).to_have_text("Live")
    assert opened[follower] == 1, opened
    await wait_for_open_sockets(server, 1)
    await context.close()


async def test_the_demo_has_no_serious_or_critical_accessibility_violations(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    await server.send(user, "Template 'Welcome' was approved.", type="TEMPLATE_APPROVED")
    await server.send(user, "Campaign 'Autumn' is sending.", type="CAMPAIGN_SENDING")
    read = await server.send(
        user, "Campaign 'Spring' was scheduled.", type="CAMPAIGN_SCHEDULED", link_url="/c/1"
    )
    await server.mark_read(user, read["id"])
    page = await open_centre(browser, server.base_url, server.token(user))
    await expect(page.get_by_test_id("badge")).to_have_text("2")

    closed = await serious_axe_violations(page)
    assert closed == [], closed
    await open_feed(page)
    await expect(page.locator(".item.read")).to_have_count(1)
    opened = await serious_axe_violations(page)
    assert opened == [], opened

    await page.goto(f"{server.base_url}/?token=not-a-token")
    await expect(page.get_by_test_id("signed-out")).to_be_visible(timeout=10_000)
    signed_out = await serious_axe_violations(page)
    assert signed_out == [], signed_out


async def test_the_feed_works_with_the_keyboard_alone_and_keeps_focus_in_place(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    for number in (1, 2, 3):
        await server.send(user, f"Notification number {number}")
    page = await open_centre(browser, server.base_url, server.token(user))
    badge, bell = page.get_by_test_id("badge"), page.get_by_test_id("bell")
    await expect(badge).to_have_text("3")

    for _ in range(10):
        if await page.evaluate(FOCUSED_TEST_ID) == "bell":
            break
        await page.keyboard.press("Tab")
    assert await page.evaluate(FOCUSED_TEST_ID) == "bell"
    await page.keyboard.press("Enter")
    await expect(bell).to_have_attribute("aria-expanded", "true")

    for _ in range(10):
        if await page.evaluate(FOCUS_IN_LIST):
            break
        await page.keyboard.press("Tab")
    items = page.get_by_test_id("item")
    newest = await items.nth(0).get_attribute("data-id")
    assert await page.evaluate(FOCUSED_ROW) == newest
    await expect(items.nth(0).locator(".row")).to_have_accessible_name(
        re.compile(r"^Unread: Notification number 3")
    )

    # Arrow down to the second row; Enter on it reads it, and focus stays on it.
    await page.keyboard.press("ArrowDown")
    second = await items.nth(1).get_attribute("data-id")
    assert await page.evaluate(FOCUSED_ROW) == second
    await page.keyboard.press("Enter")
    await expect(badge).to_have_text("2")
    await expect(items.nth(1)).to_have_class(re.compile(r"\bread\b"))
    await expect(items.nth(1).locator(".row")).to_have_accessible_name(
        re.compile(r"^Read: Notification number 2")
    )
    assert await page.evaluate(FOCUSED_ROW) == second

    # The third row's Mark read button: the button goes, focus moves to its row.
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Tab")
    assert await page.evaluate(FOCUSED_TEST_ID) == "mark-read"
    await expect(page.locator(":focus")).to_have_accessible_name("Mark read: Notification number 1")
    await page.keyboard.press("Enter")
    await expect(badge).to_have_text("1")
    assert await page.evaluate(FOCUS_IN_LIST)
    third = await items.nth(2).get_attribute("data-id")
    assert await page.evaluate(FOCUSED_ROW) == third

    # A new item arrives above: the list updates around the focused row, not through it.
    await server.send(user, "Notification number 4")
    await expect(items).to_have_count(4)
    await expect(badge).to_have_text("2")
    assert await page.evaluate(FOCUSED_ROW) == third
    await expect(page.get_by_role("status")).to_have_text("New notification: Notification number 4")

    await page.keyboard.press("Escape")
    await expect(page.locator("#feed")).to_be_hidden()
    await expect(bell).to_have_attribute("aria-expanded", "false")
    assert await page.evaluate(FOCUSED_TEST_ID) == "bell"


async def test_at_375_px_the_header_stays_on_one_line_and_the_feed_fits(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    await server.send(user, "A rather long message that has to wrap inside a narrow feed.")
    page = await open_centre(browser, server.base_url, server.token(user), width=375, height=740)
    title = await page.get_by_role("heading", name="Campana").bounding_box()
    bell = await page.get_by_test_id("bell").bounding_box()
    assert title is not None and bell is not None
    # Centred on one line: the middles match (the bell is a larger target than the title).
    assert abs((title["y"] + title["height"] / 2) - (bell["y"] + bell["height"] / 2)) < 4
    assert bell["x"] + bell["width"] <= 375
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375

    await open_feed(page)
    feed = await page.locator("#feed").bounding_box()
    assert feed is not None
    assert feed["x"] >= 0 and feed["x"] + feed["width"] <= 375


async def test_the_page_recovers_after_the_server_restarts(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.start("sqlite", "process", allowed_origins="")
    page = await open_centre(browser, server.base_url, server.token(user))
    restarted = await server_pool.restart(server)
    await expect(page.get_by_test_id("connection")).to_have_text("Live", timeout=20_000)
    await restarted.send(user, "Sent after the restart")
    await open_feed(page)
    await expect(page.get_by_test_id("item")).to_have_count(1)
    await expect(page.get_by_test_id("badge")).to_have_text("1")


async def test_the_page_notices_a_frozen_server_and_recovers_without_a_reload(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    # A 2 s keepalive: the page counts the socket dead after 2 x 2 s + 1 s without a frame.
    server = await server_pool.start("sqlite", "process", allowed_origins="", keepalive_seconds=2)
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
    await open_feed(page)
    await expect(page.get_by_test_id("item")).to_have_count(1)
    assert await page.evaluate("window.sameDocument") is True


async def test_a_refused_token_shows_signed_out_until_a_good_one_is_pasted(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    page = await browser.new_page()
    await page.goto(f"{server.base_url}/?token=not-a-token")
    connection = page.get_by_test_id("connection")
    await expect(connection).to_have_text("Signed out", timeout=10_000)
    await expect(page.get_by_test_id("signed-out")).to_be_visible()

    await page.get_by_test_id("token-input").fill(server.token(user))
    await page.get_by_test_id("use-token").click()
    await expect(connection).to_have_text("Live")
    await expect(page.get_by_test_id("signed-out")).to_be_hidden()


async def test_the_feed_loads_older_pages_as_it_scrolls_and_stops_at_the_end(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    for number in range(45):  # a snapshot of 20, then pages of 20 and 5
        await server.send(user, f"Older notification {number}")
    page = await open_centre(browser, server.base_url, server.token(user))
    await open_feed(page)
    items, load_more = page.get_by_test_id("item"), page.get_by_test_id("load-more")
    await expect(items).to_have_count(20)
    await expect(load_more).to_have_text("Load more")
    await items.last.scroll_into_view_if_needed()  # the sentinel comes into view
    await expect(items).to_have_count(40)
    await load_more.click()  # the fallback without scrolling further
    await expect(items).to_have_count(45)
    await expect(items.last).to_contain_text("Older notification 0")
    await expect(load_more).to_be_hidden()
    await expect(page.get_by_test_id("empty")).to_be_hidden()


async def test_an_item_read_before_the_page_loads_has_no_mark_read_button(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    read = await server.send(user, "Read before the page loaded")
    await server.mark_read(user, read["id"])
    await server.send(user, "Still unread")
    page = await open_centre(browser, server.base_url, server.token(user))
    await open_feed(page)
    await expect(page.locator(".item.read")).to_have_count(1)
    await expect(page.locator(".item.read").get_by_test_id("mark-read")).to_have_count(0)
    await expect(page.locator(".item.unread").get_by_test_id("mark-read")).to_have_count(1)


async def test_a_click_outside_the_feed_closes_it_and_gives_focus_back_to_the_bell(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    page = await open_centre(browser, server.base_url, server.token(user))
    await open_feed(page)
    await page.mouse.click(10, 600)  # a bare spot of the page
    await expect(page.locator("#feed")).to_be_hidden()
    await expect(page.get_by_test_id("bell")).to_be_focused()


async def test_the_feeds_states_stay_in_sync_across_tabs_and_browsers(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    """Opening the bell marks everything seen (unseen to 0, unread unchanged); archive,
    mark unread and the category tabs, with their exact counts, in two tabs of one browser
    and in a second browser."""
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    token = server.token(user)
    one = await browser.new_context(viewport={"width": 1000, "height": 640})
    other = await browser.new_context(viewport={"width": 1000, "height": 640})
    try:
        first, second = await one.new_page(), await one.new_page()
        elsewhere = await other.new_page()
        for page in (first, second, elsewhere):
            await goto_centre(page, server.base_url, token)
        await server.send(user, "Template 'Welcome' was approved.", type="TEMPLATE_APPROVED")
        await server.send(user, "Campaign 'Black Friday' is scheduled.", type="CAMPAIGN_SCHEDULED")
        await server.send(user, "Campaign 'Spring sale' failed.", type="CAMPAIGN_ERROR")
        for page in (first, second, elsewhere):
            await expect(page.get_by_test_id("badge")).to_have_text("3")

        # The bell counts what is new: opening it makes that 0, and nothing is read.
        await elsewhere.get_by_test_id("badge-unseen").check()
        await expect(elsewhere.get_by_test_id("badge")).to_have_text("3")
        await open_feed(first)
        await expect(elsewhere.get_by_test_id("badge")).to_be_hidden()
        for page in (first, second):
            await expect(page.get_by_test_id("badge")).to_have_text("3")
        counts = (await server.http.get(COUNTS, headers=server.auth(user))).json()
        assert (counts["unread"], counts["unseen"]) == (3, 0)

        # Tabs by category, each with its exact unread count.
        await expect(first.get_by_test_id("tab-campaigns")).to_contain_text("2")
        await expect(first.get_by_test_id("tab-templates")).to_contain_text("1")
        await first.get_by_test_id("tab-campaigns").click()
        await expect(first.get_by_test_id("item")).to_have_count(2)

        # Archive the failed campaign in the first tab: out of every inbox and its counts.
        failed = first.get_by_test_id("item").filter(has_text="Spring sale")
        await failed.get_by_test_id("archive").click()
        for page in (first, second):
            await expect(page.get_by_test_id("badge")).to_have_text("2")
        await expect(first.get_by_test_id("tab-campaigns")).to_contain_text("1")
        await open_feed(elsewhere)
        await expect(elsewhere.get_by_test_id("item")).to_have_count(2)
        await elsewhere.get_by_test_id("tab-archived").click()
        await expect(elsewhere.get_by_test_id("item")).to_have_count(1)
        await expect(elsewhere.get_by_test_id("item")).to_contain_text("Spring sale")

        # Read, then unread again, from the other browser: every tab follows.
        await elsewhere.get_by_test_id("tab-templates").click()
        template = elsewhere.get_by_test_id("item").filter(has_text="Welcome")
        await template.get_by_test_id("mark-read").click()
        for page in (first, second):
            await expect(page.get_by_test_id("badge")).to_have_text("1")
        await template.get_by_test_id("mark-unread").click()
        for page in (first, second):
            await expect(page.get_by_test_id("badge")).to_have_text("2")
        await open_feed(second)
        await expect(second.locator(".item.unread")).to_have_count(2)
        counts = (await server.http.get(COUNTS, headers=server.auth(user))).json()
        assert (counts["unread"], counts["unseen"]) == (2, 0)
        assert counts["by_type"]["CAMPAIGN_ERROR"] == {"unread": 0, "unseen": 0}
    finally:
        await one.close()
        await other.close()
