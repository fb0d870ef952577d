"""The sweep domain's values, which storage hands out: frozen, so no caller mistakes them for live rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gradsweep.service.domain.search import SearchSpec


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DIVERGED = "diverged"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED_EARLY = "stopped_early"  # by early stopping, at a rung; its curve is kept

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.DIVERGED, RunStatus.FAILED, RunStatus.CANCELLED,
                               RunStatus.STOPPED_EARLY})


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
    # The optimizer's own constants (engine.optimizers.CONSTANTS), each None where the
    # optimizer has no such constant: momentum's beta; Adam's beta1, beta2 and eps.
    beta: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None

    @property
    def constants(self) -> dict[str, float]:
        """The optimizer's constants that are set, by name, as `train` takes them."""
        return {name: value for name in CONSTANT_NAMES if (value := getattr(self, name)) is not None}


CONSTANT_NAMES = ("beta", "beta1", "beta2", "eps")


@dataclass(frozen=True)
class Run:
    id: int
    sweep_id: int
    config: RunConfig
    # Fixed when the sweep is created: the run is column `batch_slot` of the `batch_size`
    # runs of batch `batch`, and every attempt computes that same batch, bit for bit.
    batch: int
    batch_slot: int
    batch_size: int
    point: int | None  # of a search: which of its points (configurations but the repeated values) this run trains
    status: RunStatus
    attempts: int
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    queued_at: datetime | None  # when it was last put on the queue
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
    searching: bool = False  # a Bayesian search with waves still to come: not finished when its runs are
    planned_runs: int = 0  # the runs it will have when done (SearchSpec.planned_runs); storage sets it, n_runs or more
    created_by: str | None = None  # the name of the token that submitted it; None before tokens had names


@dataclass(frozen=True)
class RunFilter:
    """Which of a sweep's runs a page holds: every field left None matches every run."""

    statuses: tuple[RunStatus, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    min_learning_rate: float | None = None
    max_learning_rate: float | None = None
    # Bounds on other parameters: (name, low, high), the name one of RANGED_PARAMETERS, either bound None for
    # none. A run without the parameter (sgd has no beta) matches no bound on it.
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()


# The parameters a page of runs may be sorted by besides the learning rate (a column each in the dashboard's
# runs table when the sweep varies them, issue 24), and those of them it may be filtered by, as the learning rate.
PARAMETER_SORT_KEYS = ("seed", "epochs", "beta", "beta1", "beta2", "eps", "n_samples", "n_features", "data_seed")
RANGED_PARAMETERS = ("beta", "beta1", "beta2", "eps")
# What a page of runs may be sorted by; ties are broken by id, and runs without a value come last.
RUN_SORT_KEYS = ("id", "learning_rate", "final_loss", "best_loss", *PARAMETER_SORT_KEYS)


@dataclass(frozen=True)
class SweepOverview:
    """What a sweep's summary shows: the sweep and its counts, its task (every run's), its jobs, its best run."""

    sweep: Sweep
    task: RunConfig
    n_jobs: int
    best_run: Run | None
    search: SearchSpec | None = None  # how its runs were chosen (None: a grid of the first form)

    @property
    def planned_runs(self) -> int:
        return self.sweep.planned_runs


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    total: int  # runs that match the filter, on every page


@dataclass(frozen=True)
class Job:
    """Runs of one batch to train as one computation: one message on the queue, holding their ids.

    Usually the whole batch; after a worker died on it, part of it (see `Storage.requeue_stale_runs`).
    `config` is the first run's: runs of a batch share all of it but learning rate and seed.
    `queued_at` is when its runs were put on the queue: a message that arrives after its runs
    were queued again (Celery may hand back a killed job's message late) starts none of them.
    """

    run_ids: tuple[int, ...]
    batch_size: int
    config: RunConfig
    queued_at: datetime


@dataclass(frozen=True)
class StartedJob:
    """What a worker trains: every run of the batch, in slot order, and those of them this attempt started."""

    batch: list[Run]
    started: frozenset[int]  # run ids: the only runs this attempt may write
    search: SearchSpec | None = None  # the sweep's: how its runs are chosen, and early stopping's rule


@dataclass(frozen=True)
class RungLoss:
    """A point's loss at a rung of early stopping (the mean of its runs', +inf if one diverged), in its bracket."""

    point: int
    bracket: int
    loss: float


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as its worker reports it."""

    status: RunStatus
    final_loss: float | None = None
    diverged_at: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class LossWrite:
    """Losses of one run from `first_epoch` on, from the attempt numbered `attempt` (None: no attempt check),
    and its outcome if it ended."""

    run_id: int
    first_epoch: int
    losses: np.ndarray
    attempt: int | None = None
    outcome: Outcome | None = None


class Role(StrEnum):
    """What an API token may do: `read` sees everything; `write` also submits, cancels, retries and deletes."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class ApiToken:
    """A named token; its secret is shown once, when it is made, and only its hash is kept."""

    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which sweep or token, and when: one row per change made through the API or the CLI."""

    id: int
    at: datetime
    actor: str
    action: str  # "create", "cancel", "retry" or "delete" a sweep; "create token" or "revoke token"
    sweep_id: int | None
    detail: str | None
