"""Initial schema: studies, cells, attempts, metrics, artifacts, cell_artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("spec_yaml", sa.Text, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("advgrid_version", sa.String(32), nullable=False),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("depends_on", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires_at", Time),
        sa.Column("heartbeat_at", Time),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time),
        sa.Column("duration_s", sa.Float),
        sa.Column("worker", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.UniqueConstraint("study_id", "key", name="uq_cells_study_key"),
    )
    op.create_index("ix_cells_study_state", "cells", ["study_id", "state"])
    op.create_index("ix_cells_lease_token", "cells", ["lease_token"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("ended_at", Time),
        sa.Column("outcome", sa.String(16)),
        sa.Column("worker", sa.String(255)),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("cell_id", "n", name="uq_attempts_cell_n"),
    )
    op.create_index("ix_attempts_cell_id", "attempts", ["cell_id"])
    op.create_table(
        "metrics",
        sa.Column(
            "cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("meta_json", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "cell_artifacts",
        sa.Column(
            "cell_id", sa.Integer, sa.ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), sa.ForeignKey("artifacts.digest"), nullable=False),
    )
    op.create_index("ix_cell_artifacts_digest", "cell_artifacts", ["digest"])


def downgrade() -> None:
    for table in ("cell_artifacts", "artifacts", "metrics", "attempts", "cells", "studies"):
        op.drop_table(table)
