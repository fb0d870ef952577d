"""The values the storage layer hands out: frozen, so no caller mistakes them for live rows."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DIVERGED = "diverged"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.DIVERGED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True)
class RunConfig:
    """Everything a worker needs to train one run, so that a rerun trains the same model."""

    learning_rate: float
    seed: int
    optimizer: str
    epochs: int
    n_samples: int
    n_features: int
    data_seed: int
    mode: str


@dataclass(frozen=True)
class Run:
    id: int
    sweep_id: int
    config: RunConfig
    status: RunStatus
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    epochs_done: int
    final_loss: float | None
    best_loss: float | None
    diverged_at: int | None  # the epoch whose loss blew up
    error: str | None


@dataclass(frozen=True)
class Sweep:
    id: int
    name: str
    created_at: datetime
    n_runs: int
    counts: dict[str, int]  # runs per status; every status is a key, in RunStatus order
