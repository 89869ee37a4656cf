"""What one client can make a `campana serve` process hold, by what it fails to read, by
one bad body, by sockets it never signs in with, by closing early and by pipelining.

Each test runs against a real server process and looks at it from outside: its open file
descriptors and memory (``/proc/<pid>``), the kernel's sockets on its port
(``/proc/net/tcp``), its log, and the answers and rows a client sees. Bounds are wide:
they tell held from freed, not a figure (the soak in ``bench/soak.py`` measures those).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .support.handshakes import upgrade_head
from .support.servers import Server, ServerPool

NOTIFICATIONS = "/api/v1/notifications/"
WRITE_TIMEOUT = 2.0
# A client that reads nothing: the kernel's window for it closes after a few KB.
CLIENT_RECEIVE_BUFFER = 4096
PAGE_ITEMS = 100
LONG = 2000  # characters of each item's message and link: a page is about 420 KB


@pytest.fixture
async def process(server_pool: ServerPool) -> Server:
    """A `campana serve` process of the embedded kind, with a short write deadline."""
    return await server_pool.get(
        "sqlite",
        "process",
        name="hardening",
        http_write_timeout_seconds=WRITE_TIMEOUT,
        http_idle_timeout_seconds=1.0,
        shutdown_grace_seconds=4.0,
    )


# What the process holds, seen from outside


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def pid_of(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def descriptors(server: Server) -> int:
    return len(os.listdir(f"/proc/{pid_of(server)}/fd"))


def resident_mb(server: Server) -> float:
    with open(f"/proc/{pid_of(server)}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def kernel_connections(server: Server, client_ports: set[int]) -> int:
    """The server's side of these clients' connections that the kernel still holds, open
    or orphaned after the process closed them (FIN_WAIT1 with unsent data, say)."""
    held = 0
    port = port_of(server)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)
            for row in rows:
                local, remote, state = row.split()[1:4]
                if int(local.rsplit(":", 1)[1], 16) != port or state == "0A":  # listening
                    continue
                if int(remote.rsplit(":", 1)[1], 16) in client_ports and state != "06":
                    held += 1  # any state but TIME_WAIT holds memory for the peer
    return held


async def eventually(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.2)
    return bool(check())


# Clients written by hand


def silent_client(server: Server, request: bytes) -> socket.socket:
    """A client that sends ``request`` and never reads a byte of the answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RECEIVE_BUFFER)
    sock.connect(("127.0.0.1", port_of(server)))
    sock.sendall(request)
    return sock


@contextlib.contextmanager
def silent_clients(server: Server, request: bytes, count: int) -> Iterator[list[socket.socket]]:
    clients = [silent_client(server, request) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def get(path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: campana", *map(": ".join, (headers or {}).items())]
    return "\r\n".join([*lines, "", ""]).encode()


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
    lines = [f"POST {path} HTTP/1.1", "Host: campana", *map(": ".join, head.items())]
    return "\r\n".join([*lines, "", ""]).encode() + body


async def read_answers(
    server: Server, request: bytes, count: int, *, piece: int = 0
) -> list[tuple[int, bytes]]:
    """Writes ``request`` (however many requests it holds: at once, or in pieces of
    ``piece`` bytes that the server reads apart) and reads ``count`` answers, each one's
    status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    answers: list[tuple[int, bytes]] = []
    try:
        for start in range(0, len(request), piece or len(request)):
            writer.write(request[start : start + (piece or len(request))])
            await writer.drain()
            await asyncio.sleep(0.005)
        async with asyncio.timeout(30):
            while len(answers) < count:
                status_line = await reader.readline()
                if not status_line:
                    break
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                answers.append((int(status_line.split()[1]), await reader.readexactly(length)))
    finally:
        writer.close()
    return answers


async def long_page_reader(server: Server) -> str:
    """A user with a full page of long items; the page's path."""
    user = f"reader-{uuid.uuid4().hex[:8]}"
    body = {"user_ids": [user], "type": "GENERIC_INFO", "message": "m" * LONG}
    for _ in range(PAGE_ITEMS):
        body["link_url"] = "/" + "l" * (LONG - 1)
        answer = await server.http.post(NOTIFICATIONS, json=body, headers=server.producer)
        assert answer.status_code == 201, answer.text
    return user


def page_request(server: Server, user: str) -> bytes:
    return get(f"{NOTIFICATIONS}?limit={PAGE_ITEMS}", server.auth(user))


# 1. An answer nobody reads


async def test_an_answer_nobody_reads_is_dropped_at_the_write_deadline(process: Server) -> None:
    user = await long_page_reader(process)
    page = page_request(process, user)
    # Warm: the schema and the first page are built once, whoever asks.
    assert (await process.http.get("/openapi.json")).status_code == 200
    assert len((await read_answers(process, page, 1))[0][1]) > PAGE_ITEMS * LONG * 2
    fds_before, memory_before = descriptors(process), resident_mb(process)

    with (
        silent_clients(process, get("/openapi.json"), 100) as schema_readers,
        silent_clients(process, page, 100) as page_readers,
    ):
        ports = {client.getsockname()[1] for client in schema_readers + page_readers}
        await asyncio.sleep(0.5)
        assert kernel_connections(process, ports) == 200  # the answers are on their way

        # Past the deadline (and the idle close, 1 s), nothing is held for them: neither a
        # descriptor nor the process's memory, nor the kernel's buffers for their close.
        assert await eventually(lambda: kernel_connections(process, ports) == 0, 15), (
            f"{kernel_connections(process, ports)} of 200 still held"
        )
        assert descriptors(process) <= fds_before + 5
        # Held, the answers were 100 x 420 KB + 100 x the schema: more than 50 MB.
        assert resident_mb(process) - memory_before < 20
        for client in page_readers:
            client.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while client.recv(65536):
                    pass

    assert "Traceback" not in process.log()


async def test_a_slow_reader_that_keeps_reading_gets_the_whole_answer(process: Server) -> None:
    user = await long_page_reader(process)
    client = silent_client(process, page_request(process, user))
    received = bytearray()
    try:
        # 4 KB every 50 ms: about 80 KB/s, four write deadlines for the whole page.
        started = time.monotonic()
        while not received.endswith(b"]"):
            chunk = await asyncio.to_thread(client.recv, 4096)
            assert chunk, "closed before the end of the page"
            received += chunk
            await asyncio.sleep(0.05)
        assert time.monotonic() - started > WRITE_TIMEOUT
    finally:
        client.close()
    items = json.loads(received.partition(b"\r\n\r\n")[2])
    assert len(items) == PAGE_ITEMS


# 2. One producer request, amplified


async def create_raw(server: Server, body: bytes) -> tuple[int, bytes]:
    request = post(NOTIFICATIONS, body, server.producer)
    [answer] = await read_answers(server, request, 1)
    return answer


@pytest.mark.parametrize(
    ("entries", "entry"),
    [(200_000, ""), (1_000_000, ""), (200_000, "valid")],
    ids=["200k-empty", "1M-empty", "200k-too-many"],
)
async def test_a_huge_bad_recipient_list_gets_a_small_answer(
    process: Server, entries: int, entry: str
) -> None:
    recipients = [entry] * entries
    body = {"user_ids": recipients, "type": "GENERIC_INFO", "message": "x"}
    raw = json.dumps(body, separators=(",", ":")).encode()  # 1M entries: 3 MB, under the cap
    memory_before = resident_mb(process)

    status, answer = await create_raw(process, raw)

    assert status == 422
    assert len(answer) < 2048, len(answer)  # was 12.5 MB for 200k, 63 MB for 1M
    assert "body.user_ids" in json.loads(answer)["detail"]
    assert resident_mb(process) - memory_before < 200  # was +396 MB and +1,988 MB
    assert await process.unread_count("valid") == 0


async def test_unknown_fields_by_the_hundred_thousand_are_counted_not_listed(
    process: Server,
) -> None:
    fields = {f"k{n}": 0 for n in range(300_000)}
    body = json.dumps({"user_id": "u", "type": "GENERIC_INFO", "message": "x", **fields})

    status, answer = await create_raw(process, body.encode())

    assert status == 422
    assert len(answer) < 1024
    assert "and 299997 more" in json.loads(answer)["detail"]


async def test_a_key_given_twice_is_refused(process: Server) -> None:
    first, second = (f"user-{uuid.uuid4().hex[:8]}" for _ in range(2))
    body = (
        f'{{"user_id": "{first}", "type": "GENERIC_INFO", "message": "x", "user_id": "{second}"}}'
    )

    status, answer = await create_raw(process, body.encode())

    assert status == 422
    assert json.loads(answer) == {
        "error": "validation_failed",
        "detail": "body: key 'user_id' is given twice",
    }
    assert await process.unread_count(first) == 0
    assert await process.unread_count(second) == 0


# 3. One cap on every connection, sockets that never sign in capped lower

DESCRIPTOR_LIMIT = 256
# From the limit: less twice the tests' pool of 2, 2 for Redis and 64 for files.
CONNECTION_CAP = DESCRIPTOR_LIMIT - (2 * 2 + 2 + 64)
UNAUTHENTICATED_CAP = 18  # a tenth of it
READY_BELOW = int(CONNECTION_CAP * 0.9)


@pytest.fixture
async def small_process(server_pool: ServerPool) -> Server:
    """A `campana serve` process with 256 file descriptors, that holds idle connections
    (30 s for a request's head) and refused sockets (10 s for their close) a long time."""
    return await server_pool.start(
        "sqlite",
        "process",
        descriptor_limit=DESCRIPTOR_LIMIT,
        http_header_timeout_seconds=30.0,
        ws_close_timeout_seconds=10.0,
    )


def upgrade(token: str) -> bytes:
    return upgrade_head(query=f"?token={token}").encode()


async def first_line(server: Server, request: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    """Sends ``request`` and reads the answer's first line; the connection stays open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(request)
    async with asyncio.timeout(10):
        line = await reader.readline()
    return line, writer


async def test_sockets_that_never_sign_in_cannot_crowd_out_users(
    small_process: Server, user: str
) -> None:
    server = small_process
    opened: list[asyncio.StreamWriter] = []
    statuses: list[bytes] = []
    try:
        # 300 sockets with a refused token that never complete their close: each would be
        # held for the 10 s close deadline, more than the process has descriptors. The
        # oldest closing one makes room for each newcomer.
        for _ in range(300):
            line, writer = await first_line(server, upgrade("not-a-token"))
            statuses.append(line.split(b" ")[1] if line else b"")
            opened.append(writer)
        assert set(statuses) <= {b"101", b"503"}
        ports = {writer.get_extra_info("sockname")[1] for writer in opened}
        assert await eventually(lambda: kernel_connections(server, ports) <= UNAUTHENTICATED_CAP, 2)

        # Meanwhile a user's tab opens and goes live, and REST answers.
        async with server.connect(user) as tab:
            await tab.start()
            item = await server.send(user)
            assert (await tab.next_event())["payload"] == item
        assert await server.unread_count(user) == 1
        assert (await server.http.get("/readyz")).status_code == 200
        assert descriptors(server) < DESCRIPTOR_LIMIT
    finally:
        for writer in opened:
            writer.close()
    assert "Too many open files" not in server.log()


async def test_near_the_cap_the_process_is_not_ready_and_past_it_answers_503(
    small_process: Server, user: str
) -> None:
    server = small_process
    idle: list[socket.socket] = []
    try:
        async with server.connect(user) as tab:
            await tab.start()
            for _ in range(READY_BELOW):  # connections that never send a byte
                idle.append(socket.create_connection(("127.0.0.1", port_of(server))))
            await asyncio.sleep(0.5)

            # Not ready: a balancer sends new tabs elsewhere, and a new socket is refused.
            ready = await server.http.get("/readyz")
            assert (ready.status_code, ready.json()) == (
                503,
                {"status": "unavailable", "failed": ["capacity"]},
            )
            line, writer = await first_line(server, upgrade(server.token(user)))
            writer.close()
            assert line.startswith(b"HTTP/1.1 503")
            # The tab that is signed in goes on.
            item = await server.send(user)
            assert (await tab.next_event())["payload"] == item

            # Past the cap, a connection is answered 503 before it sends anything.
            for _ in range(CONNECTION_CAP - READY_BELOW + 10):
                idle.append(socket.create_connection(("127.0.0.1", port_of(server))))
            idle[-1].settimeout(5)
            assert idle[-1].recv(4096).startswith(b"HTTP/1.1 503 Service Unavailable")
            assert descriptors(server) < DESCRIPTOR_LIMIT

            ports = {connection.getsockname()[1] for connection in idle}
            for connection in idle:
                connection.close()
            idle.clear()
            # Ready again once the process has let every closed connection go.
            assert await eventually(lambda: kernel_connections(server, ports) == 0, 10)
            assert (await server.http.get("/readyz")).status_code == 200
            async with server.connect(user) as second:
                await second.start()
    finally:
        for connection in idle:
            connection.close()
    assert "Too many open files" not in server.log()


# 4. Clients gone early, and a stop with answers stuck


async def test_clients_gone_mid_pipeline_log_no_traceback(process: Server) -> None:
    user = await long_page_reader(process)
    pipeline = page_request(process, user) * 3
    log_before = len(process.log())
    with silent_clients(process, pipeline, 20) as clients:
        await asyncio.sleep(0.5)
        for client in clients:  # unread data pending: the close is a reset
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The process still answers, and its log did not grow by a traceback per client. The
    # resets reach it before this request, which it answers after several turns of its
    # loop: the answer's line is the marker that ends what is read.
    assert (await process.http.get("/healthz")).status_code == 200
    new_lines = (await process.logged("/healthz", since=log_before)).splitlines()
    assert not [line for line in new_lines if "Traceback" in line or "Exception" in line]
    assert len(new_lines) < 3 * len(clients)  # an access line each; a traceback is 80


async def test_a_stop_with_answers_nobody_reads_logs_no_traceback(server_pool: ServerPool) -> None:
    server = await server_pool.start(
        "sqlite", "process", http_write_timeout_seconds=30.0, shutdown_grace_seconds=3.0
    )
    user = await long_page_reader(server)
    with silent_clients(server, page_request(server, user) * 3, 20):
        await asyncio.sleep(0.5)
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 20)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 2.0  # within the grace, not the write deadline
    text = server.log()
    assert "Traceback" not in text, text[-3000:]


# 5. Pipelines


async def test_pipelined_creates_are_each_answered(process: Server) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"user_id": user, "type": "GENERIC_INFO", "message": "hi"}).encode()
    request = post(NOTIFICATIONS, body, process.producer)

    # Each piece is above the head bound, and most end inside a request's head.
    answers = await read_answers(process, request * 400, 400, piece=20_000)

    assert [status for status, _ in answers] == [201] * 400
    assert len({json.loads(answer)["id"] for _, answer in answers}) == 400
    assert await process.unread_count(user) == 400


async def test_a_refused_request_in_a_pipeline_comes_after_the_answers_before_it(
    process: Server,
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"user_id": user, "type": "GENERIC_INFO", "message": "hi"}).encode()
    create = post(NOTIFICATIONS, body, process.producer)
    too_long = get("/healthz", {"X-Padding": "p" * 20_000})

    answers = await read_answers(process, create * 3 + too_long + create, 5)

    assert [status for status, _ in answers] == [201, 201, 201, 431]
    assert await process.unread_count(user) == 3


# The cheap ones: redirects, page headers, the API docs offline, forwarded addresses


async def test_a_redirect_names_a_path_never_the_hosts_header(process: Server) -> None:
    answer = await process.http.get("/assets", headers={"Host": "evil.example"})
    assert answer.status_code in (307, 308)
    assert answer.headers["location"] == "/assets/"


async def test_the_demo_cannot_be_framed_sniffed_or_leak_its_token(process: Server) -> None:
    page = await process.http.get("/?token=secret")
    script = page.text.split('src="', 1)[1].split('"', 1)[0]
    for answer in (page, await process.http.get(script)):
        assert answer.status_code == 200
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_api_docs_load_nothing_from_another_host(process: Server, page: str) -> None:
    answer = await process.http.get(page)
    assert answer.status_code == 200
    sources = [part.split('"', 1)[0] for part in answer.text.split('src="')[1:]]
    sources += [part.split('"', 1)[0] for part in answer.text.split('href="')[1:]]
    assert sources
    for source in sources:
        assert source.startswith("/docs/assets/"), source
        assert (await process.http.get(source)).status_code == 200


async def test_a_forwarded_address_is_believed_only_from_a_configured_proxy(
    server_pool: ServerPool,
) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    direct = await server_pool.get("sqlite", "process", name="hardening-direct")
    behind = await server_pool.get("sqlite", "process", trusted_proxies="127.0.0.1")
    healthz_lines = []
    for server in (direct, behind):
        since = len(server.log())
        assert (await server.http.get("/healthz", headers=spoofed)).status_code == 200
        log = await server.logged("/healthz", since=since)
        healthz_lines.append([line for line in log.splitlines() if "/healthz" in line])
    assert healthz_lines[0] and "203.0.113.9" not in healthz_lines[0][-1]
    assert "127.0.0.1" in healthz_lines[0][-1]
    assert "203.0.113.9" in healthz_lines[1][-1]
