"""attempts.owner: the lease owner (``host:pid:nonce`` of a driver) that claimed the attempt.

``attempts.worker`` ends up naming where the attempt ran; ``owner`` keeps which driver
claimed it. Attempts recorded before this revision keep NULL: their owner was not stored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column: an ALTER TABLE on both backends, no table copy on SQLite
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))


def downgrade() -> None:
    # SQLite: batch mode copies the table without the column (constraints and index kept)
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("owner")
