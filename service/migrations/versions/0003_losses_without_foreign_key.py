"""Losses without a foreign key to their run: the key's check made loss writes four times slower.

PostgreSQL checks a foreign key with a trigger per inserted row: 10 ms of every
1,000-loss batch against 3 ms for the rows themselves (benchmarks/loss_write_bench.py).
Nothing is lost by dropping it: losses are written only by `Storage`, in the
transaction that has locked their run's row and checked that the writer owns
the run, and runs are never deleted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("losses") as losses:
        losses.drop_constraint("fk_losses_run_id_runs", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("losses") as losses:
        losses.create_foreign_key("fk_losses_run_id_runs", "runs", ["run_id"], ["id"])
