"""Waiting for a condition instead of for a while."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Checks made back to back before the wait starts sleeping between them: work the loop
# already has (tasks, callbacks) is done within a few; past that only a timer or I/O can
# make the condition true, and spinning would burn a core meanwhile.
_QUICK_CHECKS = 100
_POLL_SECONDS = 0.005


async def until(holds: Callable[[], bool], *, within: float = 1.0, what: str = "") -> None:
    """Return as soon as ``holds()`` is true, yielding to the event loop between checks;
    fail, saying ``what`` was awaited, if it is still false after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    checks = 0
    while not holds():
        if loop.time() > deadline:
            raise AssertionError(f"still not true after {within} s: {what or holds}")
        checks += 1
        await asyncio.sleep(0 if checks < _QUICK_CHECKS else _POLL_SECONDS)
