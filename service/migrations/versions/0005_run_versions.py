"""A version per run, raised by every change to its row, and indexes for a sweep's best run and runs by final loss.

The sum of a sweep's run versions changes whenever anything about its runs does (a
loss written, a run started, finished, cancelled or queued again), and only then, so
it names one state of the sweep's runs and their losses: the API keeps each sweep's
encoded curves under it (service/api/curve_cache.py), whatever clock the workers
keep. The indexes find a sweep's best run without ranking all its runs, and a page of
its runs by final loss without sorting them all (on PostgreSQL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("version", sa.BigInteger(), server_default="0", nullable=False))
    op.create_index("ix_runs_sweep_id_best_loss_id", "runs", ["sweep_id", "best_loss", "id"])
    op.create_index("ix_runs_sweep_id_final_loss_id", "runs", ["sweep_id", "final_loss", "id"])


def downgrade() -> None:
    op.drop_index("ix_runs_sweep_id_final_loss_id", table_name="runs")
    op.drop_index("ix_runs_sweep_id_best_loss_id", table_name="runs")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("version")
