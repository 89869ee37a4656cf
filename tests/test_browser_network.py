"""The demo on a network that behaves like one: drops, a token endpoint that fails, expiries.

The page gets its tokens as an app's frontend does, from a token endpoint of the app's
backend on its own origin (the demo's `token_url`), which the tests break and mend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from .support.servers import Server, ServerPool, free_port
from .support.waits import until
from .test_browser import open_feed

pytestmark = pytest.mark.timeout(150)

# Every text the connection label showed, in order (repeats folded), from the page's start.
RECORD_CONNECTION_TEXTS = """
window.connectionTexts = [];
new MutationObserver(() => {
  const text = document.querySelector('[data-testid=connection]')?.textContent;
  if (text && text !== window.connectionTexts.at(-1)) window.connectionTexts.push(text);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""

# How many WebSockets the page opened, counted as it opens them.
COUNT_SOCKETS = """
window.socketsOpened = 0;
window.WebSocket = class extends WebSocket {
  constructor(...args) {
    super(...args);
    window.socketsOpened += 1;
  }
};
"""


class TokenEndpoint:
    """An app's backend on its own port: `GET /token` answers a Campana token for `user`.

    `mode` is what it does: `ok`, `signed_out` (401), `unavailable` (503); `stop()` closes
    its port (connection refused) until `start()`. `GET /landing` is a page on this other
    origin, for links to follow.
    """

    def __init__(self, server: Server, user: str, ttl: int) -> None:
        self.server, self.user, self.ttl = server, user, ttl
        self.port = free_port()
        self.mode = "ok"
        self.tokens_served = 0
        self._listener: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def landing(self) -> str:
        return f"http://127.0.0.1:{self.port}/landing"

    async def start(self) -> None:
        self._listener = await asyncio.start_server(
            self._answer, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            path = urlsplit(target).path
            status, content_type, body = self._response(path, parse_qs(urlsplit(target).query))
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nAccess-Control-Allow-Origin: *\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    def _response(self, path: str, query: dict[str, list[str]]) -> tuple[str, str, bytes]:
        if path == "/landing":
            return "200 OK", "text/html", b"<!doctype html><title>Landing</title><h1>Landing</h1>"
        if path != "/token" or self.mode == "signed_out":
            return "401 Unauthorized", "text/plain", b"signed out"
        if self.mode == "unavailable":
            return "503 Service Unavailable", "text/plain", b"try later"
        self.tokens_served += 1
        return "200 OK", "text/plain", self.server.token(self.user, ttl=self.ttl).encode()


@contextlib.asynccontextmanager
async def token_endpoint(server: Server, user: str, *, ttl: int) -> AsyncIterator[TokenEndpoint]:
    endpoint = TokenEndpoint(server, user, ttl)
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


async def open_with_endpoint(
    browser: Browser, server: Server, endpoint: TokenEndpoint
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport={"width": 1000, "height": 640})
    await context.add_init_script(RECORD_CONNECTION_TEXTS)
    page = await context.new_page()
    await page.goto(f"{server.base_url}/?token_url={endpoint.url}&user={endpoint.user}")
    return context, page


async def connection_texts(page: Page) -> list[str]:
    texts: list[str] = await page.evaluate("window.connectionTexts")
    return texts


async def shows_a_send_made_now(page: Page, server: Server, user: str, message: str) -> None:
    await server.send(user, message)
    await open_feed(page)
    await expect(page.get_by_test_id("item").first).to_contain_text(message)


async def test_twenty_seconds_offline_then_online_is_live_again_without_a_click(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    async with token_endpoint(server, user, ttl=3600) as endpoint:
        context, page = await open_with_endpoint(browser, server, endpoint)
        connection = page.get_by_test_id("connection")
        await expect(connection).to_have_text("Live")

        await context.set_offline(True)
        await expect(connection).to_have_text("Offline")
        await asyncio.sleep(20)
        await expect(connection).to_have_text("Offline")
        await context.set_offline(False)

        await expect(connection).to_have_text("Live", timeout=5_000)
        assert "Signed out" not in await connection_texts(page)
        await shows_a_send_made_now(page, server, user, "Sent after the network came back")
        await context.close()


async def test_a_token_endpoint_down_then_answering_503_around_expiries_recovers_by_itself(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    # 6 s tokens: each 10 s outage spans at least one expiry, which the server enforces (4401).
    async with token_endpoint(server, user, ttl=6) as endpoint:
        context, page = await open_with_endpoint(browser, server, endpoint)
        connection = page.get_by_test_id("connection")
        await expect(connection).to_have_text("Live")

        for outage in ("connection refused", "503"):
            shown_before = len(await connection_texts(page))
            if outage == "connection refused":
                await endpoint.stop()
            else:
                endpoint.mode = "unavailable"
            await asyncio.sleep(10)
            if outage == "connection refused":
                await endpoint.start()
            endpoint.mode = "ok"
            # A token ended meanwhile: the server closed its socket, and no new one came.
            assert "Reconnecting…" in (await connection_texts(page))[shown_before:]
            await expect(connection).to_have_text("Live", timeout=15_000)
            await shows_a_send_made_now(page, server, user, f"Sent after the {outage}")

        assert "Signed out" not in await connection_texts(page)
        await context.close()


async def test_a_token_endpoint_that_says_signed_out_is_signed_out_at_once_until_retried(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    async with token_endpoint(server, user, ttl=3600) as endpoint:
        endpoint.mode = "signed_out"
        context, page = await open_with_endpoint(browser, server, endpoint)
        connection = page.get_by_test_id("connection")
        await expect(connection).to_have_text("Signed out", timeout=2_000)
        await expect(page.get_by_test_id("signed-out")).to_be_visible()
        assert "Reconnecting…" not in await connection_texts(page)

        endpoint.mode = "ok"  # the user signed in again
        await page.get_by_test_id("retry").click()
        await expect(connection).to_have_text("Live")
        await expect(page.get_by_test_id("signed-out")).to_be_hidden()
        await shows_a_send_made_now(page, server, user, "Sent after signing in again")
        await context.close()


async def test_a_refused_origin_shows_its_own_state_and_one_console_line(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    # The default test server allows http://app.example only: the demo's origin is refused.
    server = await server_pool.get("sqlite", "process")
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    await page.add_init_script(COUNT_SOCKETS)
    await page.clock.install()
    await page.goto(f"{server.base_url}/?token={server.token(user)}")
    await expect(page.get_by_test_id("connection")).to_have_text("Origin not allowed")
    await expect(page.get_by_test_id("forbidden")).to_contain_text("CAMPANA_ALLOWED_ORIGINS")
    await until(lambda: any("CAMPANA_ALLOWED_ORIGINS" in line for line in console), within=5)
    # Nothing reconnects: with the page's clock run past the longest backoff (30 s), every
    # retry it had scheduled would have opened its socket by now; none did.
    await page.clock.run_for(60_000)
    assert await page.evaluate("window.socketsOpened") == 1
    await expect(page.get_by_test_id("connection")).to_have_text("Origin not allowed")
    named = [line for line in console if "CAMPANA_ALLOWED_ORIGINS" in line]
    assert len(named) == 1, console  # nothing more is said (a second line needs a socket)
    assert server.base_url in named[0]
    await page.close()


async def test_ten_clicks_on_link_rows_store_ten_reads(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    async with token_endpoint(server, user, ttl=3600) as endpoint:
        links = [f"/campaigns/{n}" for n in range(5)] + [
            f"{endpoint.landing}?n={n}" for n in range(5)
        ]
        sent = [
            await server.send(user, f"Link row {n}", link_url=url) for n, url in enumerate(links)
        ]
        context, page = await open_with_endpoint(browser, server, endpoint)
        demo = page.url
        for item in sent:
            await expect(page.get_by_test_id("connection")).to_have_text("Live")
            await open_feed(page)
            row = page.locator(f"[data-testid=item][data-id='{item['id']}'] a.row")
            async with page.expect_navigation():
                await row.click()
            assert page.url.startswith(item["link_url"]) or item["link_url"] in page.url
            await page.goto(demo)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (unread := await server.unread_count(user)) != 0:
            assert loop.time() < deadline, f"{unread} of 10 reads were lost"
            await asyncio.sleep(0.2)
        await context.close()


async def test_across_five_token_expiries_the_page_never_leaves_live(
    server_pool: ServerPool, browser: Browser, user: str
) -> None:
    server = await server_pool.get("sqlite", "process", allowed_origins="")
    async with token_endpoint(server, user, ttl=20) as endpoint:
        context, page = await open_with_endpoint(browser, server, endpoint)
        connection = page.get_by_test_id("connection")
        await expect(connection).to_have_text("Live")
        # Renewed halfway through each token: the fifth token ends 60 s in, the sixth is live.
        await asyncio.sleep(61)
        assert endpoint.tokens_served >= 6, endpoint.tokens_served
        await expect(connection).to_have_text("Live")
        texts = await connection_texts(page)
        assert texts[texts.index("Live") :] == ["Live"], texts
        await shows_a_send_made_now(page, server, user, "Sent after five expiries")
        await context.close()
