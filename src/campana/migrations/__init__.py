"""Alembic migrations, run the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    """Apply every pending migration. Runs its own event loop: call it from sync code."""
    command.upgrade(alembic_config(database_url), "head")


def is_current(database_url: str) -> bool:
    """True when the database is at the newest migration."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()

    def current_revision(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async def read() -> str | None:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(current_revision)
        finally:
            await engine.dispose()

    return asyncio.run(read()) == head
