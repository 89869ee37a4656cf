"""What the benchmarks share: ports, processes, memory readings, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


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
