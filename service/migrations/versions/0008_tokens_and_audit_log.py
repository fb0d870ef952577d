"""Named API tokens with roles, the audit log, and which token created each sweep.

`api_tokens` keeps each token's name, role (read or write) and the SHA-256 of its
secret, never the secret. `audit_log` records who created, cancelled, retried or
deleted a sweep and who made or revoked a token. `sweeps.created_by` names the token
that submitted the sweep; sweeps stored before have none (NULL).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Moment = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", Moment, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("revoked_at", Moment, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.CheckConstraint("role IN ('read', 'write')", name="ck_api_tokens_role"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("secret_sha256", name="uq_api_tokens_secret_sha256"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", Id, nullable=False),
        sa.Column("at", Moment, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("sweep_id", Id, nullable=True),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.add_column("sweeps", sa.Column("created_by", sa.String(64), nullable=True))


def downgrade() -> None:
    # Not in batch mode: on SQLite that would copy the sweeps table, which the runs refer to.
    op.drop_column("sweeps", "created_by")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
