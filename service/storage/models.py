"""The tables, one class each. These rows never leave the storage layer."""

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    JSON,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gradsweep.service.domain.records import RunStatus


# 64-bit ids on PostgreSQL, where runs may outgrow 2**31; SQLite's rowid is 64-bit already, but only if
# the key is declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    # Named constraints, so that Alembic's batch mode can find them again on SQLite.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and reads it back time-zone aware: SQLite keeps no time zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SweepRow(Base):
    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    search: Mapped[dict | None] = mapped_column(JSON)  # the search that chose its runs (migration 0006)
    # A Bayesian search whose waves are not all proposed yet: it goes on when its runs end (migration 0007).
    searching: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_by: Mapped[str | None] = mapped_column(String(64))  # the token's name (migration 0008)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "sweep_id", "status"),  # also serves lookups by sweep_id alone
        Index(None, "status", "heartbeat_at"),  # finds running runs whose worker went quiet
        Index(None, "status", "queued_at"),  # finds queued runs whose message was lost
        Index(None, "sweep_id", "batch"),  # a job reads its whole batch
        Index(None, "sweep_id", "best_loss", "id"),  # a sweep's best run, without ranking them all
        Index(None, "sweep_id", "final_loss", "id"),  # a page of runs by final loss, without sorting them all
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in RunStatus)})", name="status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(Id, ForeignKey("sweeps.id"))

    learning_rate: Mapped[float] = mapped_column(Double)
    seed: Mapped[int] = mapped_column(BigInteger)  # numpy seeds reach 2**32 - 1
    optimizer: Mapped[str] = mapped_column(String(32))
    epochs: Mapped[int] = mapped_column(Integer)
    n_samples: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    data_seed: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[str] = mapped_column(String(32))
    # The optimizer's constants; NULL where it has no such constant (migration 0006).
    beta: Mapped[float | None] = mapped_column(Double)
    beta1: Mapped[float | None] = mapped_column(Double)
    beta2: Mapped[float | None] = mapped_column(Double)
    eps: Mapped[float | None] = mapped_column(Double)
    # Which batch of its sweep the run trains in, its column there, and the batch's number of runs.
    batch: Mapped[int] = mapped_column(BigInteger, server_default="0")
    batch_slot: Mapped[int] = mapped_column(Integer, server_default="0")
    batch_size: Mapped[int] = mapped_column(Integer, server_default="1")
    point: Mapped[int | None] = mapped_column(Integer)  # of a search, which point (migration 0007)

    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when last put on the queue
    epochs_done: Mapped[int] = mapped_column(Integer, server_default="0")
    final_loss: Mapped[float | None] = mapped_column(Double)
    best_loss: Mapped[float | None] = mapped_column(Double)
    diverged_at: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # Raised by every UPDATE of the row: a sweep's sum of versions names one state of its runs
    # and losses, whatever the workers' clocks say (migration 0005).
    version: Mapped[int] = mapped_column(BigInteger, server_default="0", onupdate=text("version + 1"))


# float64 values: an array on PostgreSQL (a view unnests it, see migration 0004), little-endian bytes on SQLite.
Float64Array = LargeBinary().with_variant(postgresql.ARRAY(Double()), "postgresql")


class LossChunkRow(Base):
    """Losses of epochs first_epoch, first_epoch + 1, ... of a run, as one row: what one write stored.

    A row per write, not per epoch: a row per epoch cost PostgreSQL more than training
    the run (migration 0004). Chunks of a run never overlap; rewriting an epoch replaces
    its value. `run_id` is not a foreign key (migration 0003: checking it cost more than
    writing the rows): losses are written only by `Storage`, under their run's row lock,
    and a sweep's deletion deletes its runs' chunks first, in the same transaction
    (`Storage.delete_sweep`, which locks the runs and refuses while one is running).
    """

    __tablename__ = "loss_chunks"

    run_id: Mapped[int] = mapped_column(Id, primary_key=True)
    first_epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    losses: Mapped[bytes] = mapped_column(Float64Array)


class RungRow(Base):
    """A point's mean loss at a rung of early stopping, and whether its runs went on: decided once, replayed.

    Keyed by point and rung, so that an attempt that reaches a rung again (its job was
    redone after a crash) reads the decision made the first time instead of making
    another one against more rivals, and so that a point's runs share one (migration 0007).
    """

    __tablename__ = "rungs"
    __table_args__ = (Index(None, "sweep_id", "bracket", "rung"),)  # a rung's rivals

    sweep_id: Mapped[int] = mapped_column(Id, primary_key=True)
    point: Mapped[int] = mapped_column(Integer, primary_key=True)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)  # after this many epochs
    bracket: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Double)  # +inf for a point whose run diverged
    kept: Mapped[bool] = mapped_column(Boolean)


class ApiTokenRow(Base):
    """A named API token with its role. Only the SHA-256 of its secret is kept: the secret is 256 random
    bits, so a fast hash is as safe as a slow one, and a request is checked with one indexed lookup
    (migration 0008)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('read', 'write')", name="role"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(8))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntryRow(Base):
    """Who created, cancelled, retried or deleted a sweep, or made or revoked a token (migration 0008).

    `sweep_id` is not a foreign key: the entry of a deletion outlives its sweep.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    sweep_id: Mapped[int | None] = mapped_column(Id)
    detail: Mapped[str | None] = mapped_column(String(200))
