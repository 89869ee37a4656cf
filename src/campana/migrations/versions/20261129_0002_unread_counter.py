"""Keep each user's unread count in user_versions, beside its version.

The badge becomes one primary-key read instead of a count over the user's unread items,
which grew with them and ran on every create, read and opening socket. Existing users
get their counts from their items; a user with items but no version row gets one.

Stop every instance of the previous release before running it: an old instance would
keep changing items without keeping the counter.

Revision ID: 20261129_0002
Revises: 20261128_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261129_0002"
down_revision: str | None = "20261128_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USER_VERSIONS_FILLFACTOR = 50


def upgrade() -> None:
    op.add_column(
        "user_versions",
        sa.Column("unread", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.execute(
        "INSERT INTO user_versions (user_id, version, unread)"
        " SELECT DISTINCT user_id, 0, 0 FROM notifications WHERE NOT EXISTS"
        " (SELECT 1 FROM user_versions WHERE user_versions.user_id = notifications.user_id)"
    )
    # Only users with unread items change; a partial index finds their items.
    op.execute(
        "UPDATE user_versions SET unread = (SELECT count(*) FROM notifications"
        " WHERE notifications.user_id = user_versions.user_id AND NOT notifications.is_read)"
        " WHERE EXISTS (SELECT 1 FROM notifications WHERE notifications.user_id ="
        " user_versions.user_id AND NOT notifications.is_read)"
    )
    if op.get_bind().dialect.name == "postgresql":
        # Every change rewrites its user's row: with room left in each page, PostgreSQL
        # updates it in place (a HOT update) instead of adding index entries each time.
        op.execute(f"ALTER TABLE user_versions SET (fillfactor = {USER_VERSIONS_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE user_versions RESET (fillfactor)")
    with op.batch_alter_table("user_versions") as batch:
        batch.drop_column("unread")
