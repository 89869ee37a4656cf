"""WebSocket frames read and written by hand (RFC 6455 §5.2), for tests that look below
the ``websockets`` client: raw TCP connections, and the hub's socket seam.

One parser, :func:`split_frames` for bytes already received and :func:`read_frame` for a
stream; :func:`client_frame` writes what a client sends (masked, as a client must).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import orjson

CONTINUATION, TEXT, CLOSE, PING = 0x0, 0x1, 0x8, 0x9
# A 7-bit length of 126 or 127 says that 2 or 8 bytes of length follow.
_EXTENDED_LENGTH_BYTES = {126: 2, 127: 8}
_MASK_BYTES = 4


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes  # unmasked

    @property
    def close_code(self) -> int | None:
        """A close frame's code; ``None`` for any other frame, or a close without a code."""
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2], "big")

    def json(self) -> Any:
        """The payload of a text frame, as JSON."""
        assert self.opcode == TEXT, f"not a text frame: {self}"
        return orjson.loads(self.payload)


def split_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames at the start of ``data``, and what follows them (the start of a
    frame not all received yet, or nothing)."""
    frames = []
    while (sizes := _sizes(data)) is not None and len(data) >= sum(sizes):
        header, length = sizes
        frames.append(_frame(data[:header], data[header : header + length]))
        data = data[header + length :]
    return frames, data


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next frame on ``reader`` (``IncompleteReadError`` if the stream ends first)."""
    head = await reader.readexactly(2)
    extended = _EXTENDED_LENGTH_BYTES.get(head[1] & 0x7F, 0)
    head += await reader.readexactly(extended + (_MASK_BYTES if head[1] & 0x80 else 0))
    sizes = _sizes(head)
    assert sizes is not None
    return _frame(head, await reader.readexactly(sizes[1]))


def close_code(frames: list[Frame]) -> int | None:
    """The code of the first close frame among ``frames``, if there is one."""
    return next((frame.close_code for frame in frames if frame.opcode == CLOSE), None)


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A frame as a client sends it: masked with a random key."""
    mask = os.urandom(_MASK_BYTES)
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 2**16:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return head + mask + _unmask(mask, payload)


def _sizes(data: bytes) -> tuple[int, int] | None:
    """The header's and the payload's length of the frame ``data`` starts with; ``None``
    while its header is not all there."""
    if len(data) < 2:
        return None
    length = data[1] & 0x7F
    extended = _EXTENDED_LENGTH_BYTES.get(length, 0)
    header = 2 + extended + (_MASK_BYTES if data[1] & 0x80 else 0)
    if len(data) < header:
        return None
    if extended:
        length = int.from_bytes(data[2 : 2 + extended], "big")
    return header, length


def _frame(header: bytes, payload: bytes) -> Frame:
    if header[1] & 0x80:
        payload = _unmask(header[-_MASK_BYTES:], payload)
    return Frame(fin=bool(header[0] & 0x80), opcode=header[0] & 0x0F, payload=payload)


def _unmask(mask: bytes, payload: bytes) -> bytes:
    """Masking and unmasking are one XOR with the key, repeated."""
    return bytes(byte ^ mask[i % _MASK_BYTES] for i, byte in enumerate(payload))
