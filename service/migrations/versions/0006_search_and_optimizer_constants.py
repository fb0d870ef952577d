"""Each run's optimizer constants, and each sweep's search.

A sweep may now search over momentum's beta and Adam's beta1, beta2 and eps, so a run
keeps the values it trains with: NULL where its optimizer has no such constant. Runs
stored before trained with the defaults, which they are given here. A sweep keeps the
search that chose its runs (method, parameters, run cap, search seed) as JSON, NULL
for a grid of the first form.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The defaults of engine.optimizers when this was written; a migration must not change with the code.
DEFAULTS = {"momentum": {"beta": 0.9}, "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        for name in ("beta", "beta1", "beta2", "eps"):
            runs.add_column(sa.Column(name, sa.Double(), nullable=True))
    op.add_column("sweeps", sa.Column("search", sa.JSON(), nullable=True))
    runs_table = sa.table("runs", sa.column("optimizer", sa.String), *(sa.column(name, sa.Double) for name in
                                                                        ("beta", "beta1", "beta2", "eps")))
    for optimizer, constants in DEFAULTS.items():
        op.execute(runs_table.update().where(runs_table.c.optimizer == optimizer).values(**constants))


def downgrade() -> None:
    # Not in batch mode: on SQLite that would copy the sweeps table, which the runs refer to.
    op.drop_column("sweeps", "search")
    with op.batch_alter_table("runs") as runs:
        for name in ("eps", "beta2", "beta1", "beta"):
            runs.drop_column(name)
