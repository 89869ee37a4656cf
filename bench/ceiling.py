"""The ceiling: the same frames to the same sockets with the ``websockets`` library alone.

No database, no authentication, no broker: the best a Python process can do for this job.

* ``ws://HOST:PORT/?user=<id>``: a tab. It gets a ``snapshot`` and an
  ``unread_count.updated`` frame, then ``notification.created`` and
  ``unread_count.updated`` for each notification of its user, as Campana sends them.
* ``ws://HOST:PORT/produce``: a producer. Each text message is a JSON object
  ``{"user_ids": [...], "message": "..."}``; the server builds one ``notification.created``
  frame per user, serialises it once, and sends it to that user's tabs, then answers
  ``ok``.

Usage: ``python bench/ceiling.py PORT``.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import orjson
from common import BACKLOG
from websockets.asyncio.server import ServerConnection, broadcast, serve

SNAPSHOT = orjson.dumps({"event": "snapshot", "payload": []}).decode()
COUNT = orjson.dumps({"event": "unread_count.updated", "payload": {"count": 0}}).decode()

tabs: dict[str, set[ServerConnection]] = {}
unread: dict[str, int] = {}


async def handler(connection: ServerConnection) -> None:
    request = connection.request
    assert request is not None
    target = urlsplit(request.path)
    if target.path == "/produce":
        await produce(connection)
        return
    user = parse_qs(target.query).get("user", [""])[0]
    tabs.setdefault(user, set()).add(connection)
    try:
        await connection.send(SNAPSHOT)
        await connection.send(COUNT)
        await connection.wait_closed()
    finally:
        tabs[user].discard(connection)
        if not tabs[user]:
            del tabs[user]


async def produce(connection: ServerConnection) -> None:
    async for raw in connection:
        command = orjson.loads(raw)
        for user in command["user_ids"]:
            item = {
                "id": str(uuid.uuid4()),
                "message": command["message"],
                "type": "GENERIC_INFO",
                "link_url": None,
                "is_read": False,
                "created_at": datetime.now(UTC).isoformat(),
            }
            frame = orjson.dumps({"event": "notification.created", "payload": item}).decode()
            unread[user] = unread.get(user, 0) + 1
            count = {"event": "unread_count.updated", "payload": {"count": unread[user]}}
            broadcast(tabs.get(user, ()), frame)
            broadcast(tabs.get(user, ()), orjson.dumps(count).decode())
        await connection.send("ok")


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**24, backlog=BACKLOG):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
