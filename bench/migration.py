"""The feed's states' migration (``20261203_0004``) on a database that is already large.

One command: loads a database at the revision before it (``--users`` users with
``--per-user`` items each, plus one user with ``--heavy``; half of the items unread, of
every type), then times ``campana migrate`` to the newest revision, then the unread
backfill alone run again on the migrated tables (it is what grows with the users), and
checks every user's counts against a count of their rows.

Usage::

    .venv/bin/python bench/migration.py --users 100000 --per-user 100 --heavy 1000000
    .venv/bin/python bench/migration.py --database sqlite --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alembic import command
from common import POSTGRES_URL, ensure_database
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from campana import migrations
from campana.models import COUNTED_TYPES

BEFORE = "20261130_0003"
MIGRATION_URL = POSTGRES_URL.rsplit("/", 1)[0] + "/campana_migration"
TYPES = "ARRAY[" + ", ".join(f"'{kind}'" for kind in COUNTED_TYPES) + "]"


def load_statements(dialect: str, users: int, per_user: int, heavy: int) -> list[str]:
    """Rows straight into the old tables: items, then each user's version and unread."""
    if dialect == "postgresql":
        items = (
            "INSERT INTO notifications (id, user_id, type, message, link_url, is_read, created_at)"
            " SELECT gen_random_uuid(), {user}, ({types})[1 + i % 7], 'item ' || i, NULL,"
            " i % 2 = 0, now() - i * interval '1 second' FROM generate_series(1, {n}) AS i"
        )
        return [
            items.format(user="'heavy'", types=TYPES, n=heavy),
            items.format(user=f"'user-' || (i % {users})", types=TYPES, n=users * per_user),
            "INSERT INTO user_versions (user_id, version, unread) SELECT user_id, count(*),"
            " count(*) FILTER (WHERE NOT is_read) FROM notifications GROUP BY user_id",
        ]
    kinds = ", ".join(f"('{kind}', {index})" for index, kind in enumerate(COUNTED_TYPES))
    items = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}),"  # noqa: S608
        f" kinds(kind, k) AS (VALUES {kinds})"
        " INSERT INTO notifications (id, user_id, type, message, link_url, is_read, created_at)"
        " SELECT lower(hex(randomblob(16))), {user}, kind, 'item ' || i, NULL, i % 2 = 0,"
        " datetime('now', '-' || i || ' seconds') FROM n JOIN kinds ON k = i % 7"
    )
    return [
        items.format(user="'heavy'", n=heavy),
        items.format(user=f"'user-' || (i % {users})", n=users * per_user),
        "INSERT INTO user_versions (user_id, version, unread) SELECT user_id, count(*),"
        " sum(NOT is_read) FROM notifications GROUP BY user_id",
    ]


async def load(url: str, args: argparse.Namespace) -> int:
    await asyncio.to_thread(command.upgrade, migrations.alembic_config(url), BEFORE)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in load_statements(
                engine.dialect.name, args.users, args.per_user, args.heavy
            ):
                await connection.execute(text(statement))
            if engine.dialect.name == "postgresql":
                await connection.execute(text("ANALYZE"))
            rows = (await connection.execute(text("SELECT count(*) FROM notifications"))).scalar()
    finally:
        await engine.dispose()
    return int(rows or 0)


async def backfill_again_and_check(url: str) -> tuple[float, int]:
    """The backfill's own time on the migrated tables, and the users whose counts are off."""
    migration = importlib.import_module("campana.migrations.versions.20261203_0004_feed_states")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            started = time.monotonic()
            await connection.run_sync(lambda sync: migration._backfill_unread_by_type(sync))
            seconds = time.monotonic() - started
            wrong = await connection.run_sync(_users_counted_wrong)
    finally:
        await engine.dispose()
    return seconds, wrong


def _users_counted_wrong(connection: Connection) -> int:
    counted: dict[tuple[str, str], int] = {}
    for user, kind, count in connection.execute(
        text("SELECT user_id, type, count(*) FROM notifications WHERE NOT is_read GROUP BY 1, 2")
    ):
        counted[(user, kind)] = count
    columns = ", ".join(f"unread_{kind.lower()}" for kind in COUNTED_TYPES)
    wrong = 0
    for user, unread, unseen, *by_type in connection.execute(
        text(f"SELECT user_id, unread, unseen, {columns} FROM user_versions")  # noqa: S608
    ):
        expected = [counted.get((user, kind), 0) for kind in COUNTED_TYPES]
        if by_type != expected or unread != sum(expected) or unseen != 0:
            wrong += 1
    return wrong


async def main(args: argparse.Namespace) -> None:
    if args.database == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="campana-migration-")) / "campana.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
    else:
        await ensure_database(MIGRATION_URL, fresh=True)
        url = MIGRATION_URL.replace("postgresql://", "postgresql+asyncpg://")
    started = time.monotonic()
    rows = await load(url, args)
    print(
        f"loaded {rows:,} items of {args.users + 1:,} users at {BEFORE}"
        f" in {time.monotonic() - started:.1f} s ({args.database})"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAMPANA_")},
        "CAMPANA_DATABASE_URL": url,
    }
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "campana.cli", "migrate"], env=env, check=True)
    print(f"campana migrate: {time.monotonic() - started:.1f} s")
    seconds, wrong = await backfill_again_and_check(url)
    print(f"of which the unread backfill, run again alone: {seconds:.1f} s")
    print(f"users whose counts differ from their rows: {wrong}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument("--heavy", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args()))
