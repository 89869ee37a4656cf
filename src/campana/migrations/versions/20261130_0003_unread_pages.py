"""Order the unread items' index newest first, so an unread-only page is one range scan.

``ix_notifications_user_unread`` held the user only: read-all found its rows, but a page
of unread items (``GET /api/v1/notifications/?is_read=false``) had to sort them. With
the list's order in the index, the page reads ``limit`` entries and stops, and read-all
uses it as before (the user is still its first column).

Revision ID: 20261130_0003
Revises: 20261129_0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_0003"
down_revision: str | None = "20261129_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEWEST_FIRST: list[str | sa.TextClause] = [
    "user_id",
    sa.text("created_at DESC"),
    sa.text("id DESC"),
]


def _unread_index(columns: list[str | sa.TextClause]) -> None:
    op.create_index(
        "ix_notifications_user_unread",
        "notifications",
        columns,
        postgresql_where=sa.text("NOT is_read"),
        sqlite_where=sa.text("is_read = 0"),  # as SQLAlchemy renders `not_(is_read)` there
    )


def upgrade() -> None:
    op.drop_index("ix_notifications_user_unread", table_name="notifications")
    _unread_index(NEWEST_FIRST)


def downgrade() -> None:
    op.drop_index("ix_notifications_user_unread", table_name="notifications")
    _unread_index(["user_id"])
