"""What the reaper needs to find runs that nobody is working on.

An index for running runs whose worker stopped heartbeating, and `queued_at`, when
a run was last put on the queue, for queued runs whose message was lost.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE runs SET queued_at = created_at WHERE status = 'queued'")
    op.create_index("ix_runs_status_heartbeat_at", "runs", ["status", "heartbeat_at"])
    op.create_index("ix_runs_status_queued_at", "runs", ["status", "queued_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_status_queued_at", table_name="runs")
    op.drop_index("ix_runs_status_heartbeat_at", table_name="runs")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("queued_at")
