"""What the benchmarks share: ports, processes, memory and CPU readings, percentiles, and
lean clients for the load generator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

# Every server in a comparison listens with this accept backlog: uvicorn's default, which
# `campana serve` uses and cannot change (asyncio's own default is 100). A shorter queue
# drops SYNs in a reconnect storm and the storm then times the kernel's retransmits.
BACKLOG = 2048


# The tests empty the database `test`: benchmarks keep to their own.
POSTGRES_URL = os.environ.get(
    "CAMPANA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/campana_bench"
)


async def ensure_database(url: str = POSTGRES_URL, *, fresh: bool = False) -> None:
    """Create the benchmark database if it is missing; ``fresh``: empty, whatever it held.

    Each system starts on an empty database: tables grown by earlier runs, with planner
    statistics autovacuum had not caught up with, halved a system's create rate.
    """
    import asyncpg  # only the benchmarks that need PostgreSQL pay for the import

    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:
        if fresh:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str] | None = None) -> Iterator[int]:
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield child.pid
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


async def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time every core of the machine has spent busy so far (``/proc/stat``)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP counters (``TcpExt`` and ``Tcp``), as ``nstat`` names them."""
    counters: dict[str, int] = {}
    for table in ("/proc/net/netstat", "/proc/net/snmp"):
        lines = Path(table).read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=True):
            prefix, *keys = names.split()
            if prefix in ("TcpExt:", "Tcp:"):
                group = prefix.rstrip(":")
                numbers = values.split()[1:]
                counters.update(
                    {f"{group}{key}": int(n) for key, n in zip(keys, numbers, strict=True)}
                )
    return counters


class Server:
    """One server process that can be stopped and started again on the same port."""

    def __init__(self, command: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.command, self.port, self.env, self.log = command, port, env, log
        self._child: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._child is not None, "not started"
        return self._child.pid

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self._child = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._child.returncode is not None:
                raise RuntimeError(f"{' '.join(self.command[1:3])} exited; see {self.log}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"nothing listens on {self.port}; see {self.log}")

    async def stop(self, patience: float = 60) -> bool:
        """SIGTERM and wait; False if it had to be killed after ``patience`` seconds.

        The wait must not block the loop: the generator answers the close handshakes of a
        graceful shutdown.
        """
        child, self._child = self._child, None
        if child is None or child.returncode is not None:
            return True
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), patience)
        except TimeoutError:
            child.kill()
            await child.wait()
            return False
        return True


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class HttpPool:
    """A lean HTTP/1.1 keep-alive client for producers.

    The load generator must cost the server's figures as little as it can: a request is
    one write of headers and body, the answer is read by Content-Length, nothing else.
    """

    def __init__(self, host: str, port: int, size: int, headers: dict[str, str]) -> None:
        self._host, self._port, self._size = host, port, size
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._headers = f"Host: {host}:{port}\r\n{extra}"
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._all: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HttpPool:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            self._idle.put_nowait((reader, writer))
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self._all:
            writer.close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST once; a connection the server closed while idle is reopened and retried."""
        reader, writer = await self._idle.get()
        try:
            return await self._exchange(reader, writer, path, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._all.append(writer)
            return await self._exchange(reader, writer, path, body)
        finally:
            self._idle.put_nowait((reader, writer))

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes
    ) -> tuple[int, bytes]:
        writer.write(
            f"POST {path} HTTP/1.1\r\n{self._headers}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await reader.readexactly(length)


class BareWebSocket:
    """Just enough of a WebSocket client to open a tab and read its opening frames.

    In a reconnect storm the ``websockets`` client spends more CPU per handshake than the
    ceiling server does (10.0 s against 8.6 s for 10,000 sockets here), so the storm would
    time the generator. This one writes a fixed upgrade request and reads unfragmented
    frames: 3.9 s for the same 10,000. It checks no ``Sec-WebSocket-Accept``: every server
    here is ours.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def connect(cls, url: str) -> BareWebSocket:
        target = urlsplit(url)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        path = f"{target.path or '/'}?{target.query}" if target.query else target.path or "/"
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            raise ConnectionError(f"upgrade refused: {status}")
        return cls(reader, writer)

    async def recv(self) -> str:
        while True:
            opcode, payload = await self._read_frame()
            if opcode == 0x1:
                return payload.decode()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise ConnectionError(f"closed by the server with {code}")
            if opcode == 0x9:
                self._write_frame(0xA, payload)

    async def send(self, text: str) -> None:
        self._write_frame(0x1, text.encode())

    def close(self) -> None:
        self._writer.close()

    async def _read_frame(self) -> tuple[int, bytes]:
        first, second = await self._reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._reader.readexactly(8))
        return first & 0x0F, await self._reader.readexactly(length)

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        # A client must mask; an all-zero key leaves the payload as it is, which every
        # server accepts and spares the generator the XOR.
        size = len(payload)
        if size < 126:
            length = bytes([0x80 | size])
        elif size < 65536:
            length = bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            length = bytes([0x80 | 127]) + struct.pack("!Q", size)
        self._writer.write(bytes([0x80 | opcode]) + length + bytes(4) + payload)
