"""A run's writes one at a time, as tests and benchmarks make them: what a worker's `JobWriter` does in
batches through `Storage.start_job` and `Storage.record`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import numpy as np

from gradsweep.service.domain.records import LossWrite, Outcome, Run, RunStatus
from gradsweep.service.storage import Storage


def start_run(storage: Storage, run_id: int, worker: str, *, lease: timedelta | None = None) -> Run | None:
    """`start_job` for one run: the run, running for its new attempt, or None if there is nothing to do."""
    job = storage.start_job([run_id], worker, lease=lease)
    return None if job is None else next(run for run in job.batch if run.id == run_id)


def write_losses(storage: Storage, run_id: int, first_epoch: int, values: Sequence[float], *,
                 attempt: int | None = None) -> bool:
    """`record` for one run's losses of epochs first_epoch, first_epoch + 1, ...; False once the writer must stop."""
    return bool(storage.record([LossWrite(run_id, first_epoch, np.asarray(values, dtype=np.float64), attempt)]))


def finish_run(storage: Storage, run_id: int, status: RunStatus, *, final_loss: float | None = None,
               diverged_at: int | None = None, error: str | None = None, attempt: int | None = None,
               first_epoch: int = 0, losses: Sequence[float] = ()) -> bool:
    """`record` for how one run ended, with its last `losses` from `first_epoch` on; False if not recorded."""
    outcome = Outcome(RunStatus(status), final_loss, diverged_at, error)
    if not outcome.status.is_finished:
        raise ValueError(f"{status} is not a finished status")
    return bool(storage.record([LossWrite(run_id, first_epoch, np.asarray(losses, dtype=np.float64), attempt,
                                          outcome)]))
