"""What one connection may take, made once from ``Settings``: its deadlines and bounds.

The HTTP protocol (``api/http.py``) and the socket protocol (``api/ws.py``) read them
from here; each setting's default lives in ``settings.py`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from campana.settings import Settings


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float  # a request's line and headers, from the connection or its first byte
    body_timeout: float  # a request's body, from the end of its head
    write_timeout: float  # an answer the client takes less than 16 KiB of in this is dropped
    max_header_bytes: int  # a request's line and headers, each request of a pipeline alone
    close_timeout: float  # a socket's close, whoever starts it, then a TCP reset
    frame_rate: float  # a socket's frames per second, sustained ...
    frame_burst: int  # ... and in a burst
    stop_seconds: float  # at a stop, what the stop plan gives sockets and unread answers

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            write_timeout=settings.http_write_timeout_seconds,
            max_header_bytes=settings.http_max_header_bytes,
            close_timeout=settings.ws_close_timeout_seconds,
            frame_rate=settings.ws_rate_per_second,
            frame_burst=settings.ws_rate_burst,
            stop_seconds=settings.stop_plan.sockets_seconds,
        )


# For a protocol served without the app's services (never in `serve`): the defaults.
DEFAULT_LIMITS = ConnectionLimits.of(Settings.model_construct())
