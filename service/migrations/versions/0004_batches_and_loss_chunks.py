"""Batches of runs, and losses stored a chunk per write instead of a row per epoch.

Runs get the batch they train in (`batch`, `batch_slot`, `batch_size`); an existing
run becomes a batch of its own. Losses move from `losses` (run_id, epoch, value)
to `loss_chunks` (run_id, first_epoch, losses): a float8[] on PostgreSQL, float64
bytes on SQLite. Every value is kept: each run's consecutive epochs become one
chunk. On PostgreSQL a view named `losses` gives the old (run_id, epoch, value)
rows back, for queries written against it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Iterator, Sequence
from itertools import groupby

import numpy as np
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOSSES_VIEW = """
CREATE VIEW losses AS
SELECT c.run_id, c.first_epoch + u.i - 1 AS epoch, u.value
FROM loss_chunks c CROSS JOIN LATERAL unnest(c.losses) WITH ORDINALITY AS u(value, i)
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("batch", sa.BigInteger(), server_default="0", nullable=False))
        runs.add_column(sa.Column("batch_slot", sa.Integer(), server_default="0", nullable=False))
        runs.add_column(sa.Column("batch_size", sa.Integer(), server_default="1", nullable=False))
    op.execute("UPDATE runs SET batch = id")  # each existing run a batch of its own
    op.create_index("ix_runs_sweep_id_batch", "runs", ["sweep_id", "batch"])

    array = postgresql.ARRAY(sa.Double()) if postgres else sa.LargeBinary()
    chunks = op.create_table(
        "loss_chunks",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("first_epoch", sa.Integer(), nullable=False),
        sa.Column("losses", array, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "first_epoch", name="pk_loss_chunks"),
    )
    rows = op.get_bind().execute(sa.text("SELECT run_id, epoch, value FROM losses ORDER BY run_id, epoch"))
    encode = (lambda values: values.tolist()) if postgres else (lambda values: values.astype("<f8").tobytes())
    batch = []
    for run_id, first_epoch, values in _consecutive_runs(rows):
        batch.append({"run_id": run_id, "first_epoch": first_epoch, "losses": encode(values)})
        if len(batch) == 1000:
            op.bulk_insert(chunks, batch)
            batch = []
    if batch:
        op.bulk_insert(chunks, batch)
    op.drop_table("losses")
    if postgres:
        op.execute(LOSSES_VIEW)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP VIEW losses")
    losses = op.create_table(
        "losses",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "epoch", name="pk_losses"),
    )
    for run_id, first_epoch, values in op.get_bind().execute(
        sa.text("SELECT run_id, first_epoch, losses FROM loss_chunks ORDER BY run_id, first_epoch")
    ).all():
        values = np.asarray(values, dtype=np.float64) if postgres else np.frombuffer(values, dtype="<f8")
        op.bulk_insert(losses, [{"run_id": run_id, "epoch": first_epoch + i, "value": value}
                                for i, value in enumerate(values.tolist())])
    op.drop_table("loss_chunks")
    op.drop_index("ix_runs_sweep_id_batch", table_name="runs")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("batch_size")
        runs.drop_column("batch_slot")
        runs.drop_column("batch")


def _consecutive_runs(rows: sa.CursorResult) -> Iterator[tuple[int, int, np.ndarray]]:
    """(run_id, first epoch, values) for each stretch of consecutive epochs of a run, from rows sorted by run and epoch."""
    for run_id, run_rows in groupby(rows, key=lambda row: row[0]):
        # Within a stretch, epoch - position is constant.
        for _, stretch in groupby(enumerate(run_rows), key=lambda item: item[1][1] - item[0]):
            stretch = [row for _, row in stretch]
            yield run_id, stretch[0][1], np.array([row[2] for row in stretch], dtype=np.float64)
