"""attempts.note: what an attempt says of its own run that is not an error (a train cell
that resumed from a saved state, a saved state it discarded and why).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column: an ALTER TABLE on both backends, no table copy on SQLite
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("note")
