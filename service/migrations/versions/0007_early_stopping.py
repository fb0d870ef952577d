"""Early stopping and Bayesian search: a run's point, the status stopped_early, the rungs' decisions, and
whether a sweep is still searching.

A search's run keeps the index of the point (the configuration but its repeated values)
it trains: Hyperband's bracket is the point's, and a Bayesian search tells each point's
mean loss. `stopped_early` joins the statuses the CHECK constraint allows. `rungs` keeps
each point's mean loss at each rung and whether its runs went on, so that a redone job replays the
decisions instead of taking new ones. Runs stored before have no point (NULL). A sweep
is `searching` while a Bayesian search has waves to propose.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("queued", "running", "succeeded", "diverged", "failed", "cancelled")


def _statuses(statuses: Sequence[str]) -> str:
    return f"status IN ({', '.join(repr(status) for status in statuses)})"


def _allow(statuses: Sequence[str]) -> None:
    """Replaces the runs' CHECK on their status, whatever its name: depending on the path a database took
    through the migrations, it is ck_runs_status or (from 0001's name run through the naming convention)
    ck_runs_ck_runs_status."""
    old = [check["name"] for check in sa.inspect(op.get_bind()).get_check_constraints("runs")
           if (check["name"] or "").endswith("_status")]
    with op.batch_alter_table("runs") as runs:
        for name in old:
            runs.drop_constraint(op.f(name), type_="check")
        runs.create_check_constraint(op.f("ck_runs_status"), _statuses(statuses))


def upgrade() -> None:
    op.add_column("runs", sa.Column("point", sa.Integer(), nullable=True))
    op.add_column("sweeps", sa.Column("searching", sa.Boolean(), server_default=sa.false(), nullable=False))
    _allow((*STATUSES, "stopped_early"))
    op.create_table(
        "rungs",
        sa.Column("sweep_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("point", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Double(), nullable=False),
        sa.Column("kept", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("sweep_id", "point", "rung", name="pk_rungs"),
    )
    op.create_index("ix_rungs_sweep_id_bracket_rung", "rungs", ["sweep_id", "bracket", "rung"])


def downgrade() -> None:
    op.drop_index("ix_rungs_sweep_id_bracket_rung", table_name="rungs")
    op.drop_table("rungs")
    # A run stopped early had trained only part of its epochs: before early stopping, it was cancelled.
    op.execute("UPDATE runs SET status = 'cancelled' WHERE status = 'stopped_early'")
    _allow(STATUSES)
    op.drop_column("sweeps", "searching")  # not in batch mode: see 0006
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("point")
