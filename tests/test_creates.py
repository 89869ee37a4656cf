"""Group commit's batching rule, as a table: which queued creates share a transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from campana.creates import CreateBatcher, _QueuedCreate


def queued(rows: int, *, cancelled: bool = False) -> _QueuedCreate:
    written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    if cancelled:
        written.cancel()
    return _QueuedCreate(rows=[object()] * rows, items=[], written=written)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("sizes", "max_rows", "batches"),
    [
        ([1], 10, [[1]]),
        ([3, 4, 5], 8, [[3, 4], [5]]),
        ([3, 4, 5], 12, [[3, 4, 5]]),
        ([12, 1], 10, [[12], [1]]),  # a call bigger than a batch is never split: alone
        ([1, 12], 10, [[1], [12]]),
        ([5, "cancelled", 5], 10, [[5, 5]]),  # a caller gone before its write is dropped
        (["cancelled"], 10, []),
    ],
)
async def test_take_batch_fills_each_transaction_without_splitting_a_call(
    sizes: list[Any], max_rows: int, batches: list[list[int]]
) -> None:
    batcher = CreateBatcher(None, None, max_rows=max_rows)  # type: ignore[arg-type]
    for size in sizes:
        create = queued(0, cancelled=True) if size == "cancelled" else queued(size)
        batcher._queue.append(create)
    taken = []
    while batch := batcher._take_batch():
        taken.append([len(create.rows) for create in batch])
    assert taken == batches
    assert not batcher._queue
