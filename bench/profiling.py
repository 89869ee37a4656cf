"""Where a server's time goes: ``py-spy`` attached for one step, and a text summary.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``), which
speedscope (https://www.speedscope.app) and ``flamegraph.pl`` open as they are; the
summary next to them ranks functions by own time and by cumulative time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
RATE = 100  # samples per second: enough for a 10 s step, light on a 2-core machine
TOP = 25


class Profiler:
    """Records one collapsed-stack file per (step, process) into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def record(self, name: str, pid: int) -> AsyncIterator[None]:
        stacks = self.directory / f"{name}.txt"
        # --nonblocking: reading the stacks without pausing the server keeps the profile
        # from slowing what it measures. --function: one entry per function, not per line.
        command = [PY_SPY, "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking"]
        command += ["--function", "--format", "raw", "--output", str(stacks)]
        with (self.directory / f"{name}.log").open("wb") as log:
            spy = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
        await asyncio.sleep(0.5)  # attaching takes a moment; the step should not start first
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            await spy.wait()
        if stacks.exists():
            summary = summarize(stacks.read_text(), name, seconds)
            (self.directory / f"{name}-summary.txt").write_text(summary)


def summarize(collapsed: str, name: str, seconds: float) -> str:
    stacks = []
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks.append((stack.split(";"), int(count)))
    total = sum(samples for _, samples in stacks)
    if not total:
        return f"{name}: no samples (was the server idle, or py-spy refused to attach?)\n"
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    plumbing = shared_outer_frames(stacks)
    for frames, samples in stacks:
        own[frames[-1]] += samples
        packages[package_of(frames[-1])] += samples
        for frame in set(frames) - plumbing:  # a recursive function counts once per sample
            cumulative[frame] += samples
    lines = [
        f"{name}: {total:,} samples in {seconds:.1f} s at {RATE}/s, all threads: non-idle "
        f"{total / (seconds * RATE):.0%} of the time (py-spy leaves idle samples out; "
        "compare.py's CPU table has the exact CPU time).",
        "",
        f"Top {TOP} functions by own time (share of busy samples):",
        *(f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(TOP)),
        "",
        f"Top {TOP} functions by cumulative time (the function and what it calls):",
        "  (SQLAlchemy runs each query in a greenlet, whose stack py-spy shows apart, rooted",
        "  at Session.*: a caller's cumulative share leaves out its queries' greenlet time.)",
        *(f"  {n / total:6.1%}  {frame}" for frame, n in cumulative.most_common(TOP)),
        "",
        "Own time by package:",
        *(f"  {n / total:6.1%}  {package}" for package, n in packages.most_common(TOP)),
    ]
    return "\n".join(lines) + "\n"


def shared_outer_frames(stacks: list[tuple[list[str], int]]) -> set[str]:
    """The frames every stack of the main thread passes through: ``main``, ``Server.run``,
    the event loop. They would top the cumulative ranking and say nothing."""
    weight: Counter[str] = Counter()
    for frames, samples in stacks:
        weight[frames[0]] += samples
    main_root = weight.most_common(1)[0][0]
    shared: list[str] | None = None
    for frames, _ in stacks:
        if frames[0] != main_root:
            continue
        if shared is None:
            shared = frames
        else:
            common = next(
                (i for i, (a, b) in enumerate(zip(shared, frames, strict=False)) if a != b),
                min(len(shared), len(frames)),
            )
            shared = shared[:common]
    return set(shared or [])


def package_of(frame: str) -> str:
    """``execute (sqlalchemy/engine/base.py:1360)`` -> ``sqlalchemy``."""
    location = frame.rpartition(" (")[2].rstrip(")")
    path = location.rpartition(":")[0]
    return path.split("/", 1)[0].removesuffix(".py") or "?"
