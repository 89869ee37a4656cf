"""The feed's states (seen, archived), per-type counts, and one index per state.

Items get ``is_seen`` and ``is_archived``, and ``version``: the user's version when they
were created. ``user_versions`` gets the unseen total and an unread and unseen count per
type. Existing items count as seen (a user does not find every old item "new" after the
upgrade) and none is archived, so the only counts to fill are the unread ones per type:
a batch of users at a time, each batch one grouped read of their unread items.

The two old indexes (all items, unread items) give way to five partial ones: the inbox,
and per type the inbox, its unread and unseen items, and the archived ones.

Stop every instance of the previous release before running it: an old instance would
change items without keeping the new counts.

Revision ID: 20261203_0004
Revises: 20261130_0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261203_0004"
down_revision: str | None = "20261130_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPES = (
    "GENERIC_INFO",
    "TEMPLATE_APPROVED",
    "TEMPLATE_REJECTED",
    "CAMPAIGN_SCHEDULED",
    "CAMPAIGN_SENDING",
    "CAMPAIGN_COMPLETED",
    "CAMPAIGN_ERROR",
)
BACKFILL_USERS = 1000

NEWEST_FIRST = [sa.text("created_at DESC"), sa.text("id DESC")]
# name, PostgreSQL predicate, SQLite predicate (as SQLAlchemy renders it there), by type
NEW_INDEXES = (
    ("ix_notifications_inbox", "NOT is_archived", "is_archived = 0", False),
    ("ix_notifications_inbox_type", "NOT is_archived", "is_archived = 0", True),
    (
        "ix_notifications_unread_type",
        "NOT is_read AND NOT is_archived",
        "is_read = 0 AND is_archived = 0",
        True,
    ),
    (
        "ix_notifications_unseen_type",
        "NOT is_seen AND NOT is_archived",
        "is_seen = 0 AND is_archived = 0",
        True,
    ),
    ("ix_notifications_archived_type", "is_archived", "is_archived = 1", True),
)


def _count_columns() -> list[str]:
    return [f"{state}_{kind.lower()}" for kind in TYPES for state in ("unread", "unseen")]


def upgrade() -> None:
    bind = op.get_bind()
    on_postgres = bind.dialect.name == "postgresql"
    # Existing items are seen; new ones are not (every insert names the value).
    op.add_column(
        "notifications",
        sa.Column("is_seen", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column(
        "notifications",
        sa.Column("is_archived", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "notifications",
        sa.Column("version", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    if on_postgres:
        # A fast default: PostgreSQL keeps it in the catalogue, no row is rewritten.
        op.alter_column("notifications", "is_seen", server_default=sa.false())
    op.add_column(
        "user_versions",
        sa.Column("unseen", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    for name in _count_columns():
        op.add_column(
            "user_versions",
            sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )
    op.drop_index("ix_notifications_user_unread", table_name="notifications")
    op.drop_index("ix_notifications_user_newest", table_name="notifications")
    for name, where, sqlite_where, by_type in NEW_INDEXES:
        op.create_index(
            name,
            "notifications",
            ["user_id", *([sa.text("type DESC")] if by_type else []), *NEWEST_FIRST],
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(sqlite_where),
        )
    _backfill_unread_by_type(bind)


def _backfill_unread_by_type(bind: sa.Connection) -> None:
    """Each user with unread items gets them counted per type, a batch of users at once."""
    after = ""
    columns = [f"unread_{kind.lower()}" for kind in TYPES]
    assignments = ", ".join(f"{column} = :{column}" for column in columns)
    update = sa.text(f"UPDATE user_versions SET {assignments} WHERE user_id = :user_id")  # noqa: S608
    while True:
        users = list(
            bind.execute(
                sa.text(
                    "SELECT user_id FROM user_versions WHERE unread > 0 AND user_id > :after"
                    " ORDER BY user_id LIMIT :batch"
                ),
                {"after": after, "batch": BACKFILL_USERS},
            ).scalars()
        )
        if not users:
            return
        counts: dict[str, dict[str, int]] = {user: dict.fromkeys(columns, 0) for user in users}
        rows = bind.execute(
            sa.text(
                # Every item is in the inbox yet; saying so lets the unread index serve the
                # read (no index on all items is left to do it: a scan of the table a batch).
                "SELECT user_id, type, count(*) FROM notifications"
                " WHERE user_id IN :users AND NOT is_read AND NOT is_archived"
                " GROUP BY user_id, type"
            ).bindparams(sa.bindparam("users", expanding=True)),
            {"users": users},
        )
        for user, kind, count in rows:
            counts[user][f"unread_{kind.lower()}"] = count
        bind.execute(update, [{"user_id": user, **values} for user, values in counts.items()])
        after = users[-1]


def downgrade() -> None:
    for name, *_ in NEW_INDEXES:
        op.drop_index(name, table_name="notifications")
    op.create_index("ix_notifications_user_newest", "notifications", ["user_id", *NEWEST_FIRST])
    op.create_index(
        "ix_notifications_user_unread",
        "notifications",
        ["user_id", *NEWEST_FIRST],
        postgresql_where=sa.text("NOT is_read"),
        sqlite_where=sa.text("is_read = 0"),
    )
    with op.batch_alter_table("user_versions") as batch:
        for name in ["unseen", *_count_columns()]:
            batch.drop_column(name)
    with op.batch_alter_table("notifications") as batch:
        for name in ("version", "is_archived", "is_seen"):
            batch.drop_column(name)
