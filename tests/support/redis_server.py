"""A redis-server of a test's own, which the test may stop, kill, pause or restart."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time

from .servers import free_port


class RedisServer:
    """A redis-server of the test's own, on a spare port, that the test may stop, kill,
    pause or restart (the machine's shared Redis is never touched)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """SIGTERM: Redis closes its clients' connections and exits."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL: connections die with the process, nothing is said to the clients."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def shutdown_nosave(self) -> None:
        """What an operator types: ``redis-cli shutdown nosave``."""
        assert self.process is not None
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(10)
