"""The one task: train a run and store its losses as it goes.

It takes the run's id, not its config: the database says what to train and
whether there is anything left to do, so a message delivered twice, or after
the run was cancelled, does no harm. Only the attempt that `start_run` numbered
may write the run, so a worker that was given up for dead cannot write it twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache
from typing import TypeVar

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from engine.tasks import linear_regression
from service.settings import get_settings
from service.storage import DatabaseUnavailable, NotFound, RunStatus, Storage
from worker.app import TRAIN_RUN, app

log = logging.getLogger(__name__)

# Losses are written at least this often, so progress shows (and the run's lease is renewed) while it trains.
FLUSH_SECONDS = 0.5
FLUSH_EPOCHS = 10_000
# How long a worker waits for a database that went away before it gives the run up to the reaper.
DATABASE_PATIENCE_SECONDS = 60.0

T = TypeVar("T")


@lru_cache
def storage() -> Storage:
    """One Storage per worker process, made after the fork so no connection is shared.

    A run's two transactions are most of its cost beyond training, so: no
    pre-ping, because every call here goes through `patiently`, which retries on
    a dead connection anyway; and commits that do not wait for the disk, because
    whatever a database crash makes it forget is redone (see `Storage`).
    """
    return Storage(get_settings().database_url, pre_ping=False, synchronous_commit=False)


def patiently(call: Callable[[], T]) -> T:
    """`call()`, retried with backoff while the database is unavailable (a restart, a dropped connection)."""
    deadline = time.monotonic() + DATABASE_PATIENCE_SECONDS
    delay = 0.1
    while True:
        try:
            return call()
        except DatabaseUnavailable as error:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class LossWriter:
    """Buffers a run's losses and writes them in batches; the last batch goes with the run's outcome.

    Tells training to stop once the run is cancelled, or taken over by a newer attempt.
    """

    def __init__(self, run_id: int, attempt: int) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.pending: list[float] = []
        self.first_epoch = 0
        self.last_flush = time.monotonic()
        self.stopped = False

    def on_epoch(self, epoch: int, loss: float) -> bool:
        self.pending.append(loss)
        if len(self.pending) >= FLUSH_EPOCHS or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            return self.flush()
        return True

    def flush(self) -> bool:
        if self.pending and not self.stopped:
            first, values = self.first_epoch, self.pending
            kept = patiently(lambda: storage().write_losses(self.run_id, first, values, attempt=self.attempt))
            self.stopped = not kept
            self.first_epoch += len(values)
            self.pending = []
        self.last_flush = time.monotonic()
        return not self.stopped

    def finish(self, status: RunStatus, **outcome: object) -> bool:
        """Writes the pending losses and the run's outcome in one transaction; False if the run is not ours any more.

        One transaction rather than a last `flush` and then `finish_run`: most runs
        are shorter than FLUSH_SECONDS, so this halves the transactions of a run
        after its start (see benchmarks/overhead_bench.py).
        """
        if self.stopped:
            return False
        first, values = self.first_epoch, self.pending
        recorded = patiently(lambda: storage().finish_run(
            self.run_id, status, attempt=self.attempt, first_epoch=first, losses=values, **outcome
        ))
        self.stopped = not recorded
        self.first_epoch += len(values)
        self.pending = []
        return recorded


@app.task(name=TRAIN_RUN, bind=True)
def train_run(self: Task, run_id: int) -> str:
    """Train run `run_id`; returns how it ended (for the worker's log)."""
    return _train(run_id, worker=f"{self.request.hostname or 'worker'} pid {os.getpid()}")


def _train(run_id: int, worker: str) -> str:
    lease = timedelta(seconds=get_settings().run_lease_seconds)
    try:
        run = patiently(lambda: storage().start_run(run_id, worker, lease=lease))
    except NotFound:
        return "unknown run"
    if run is None:
        return "nothing to do"
    writer = LossWriter(run_id, run.attempts)

    def finish(status: RunStatus, **outcome: object) -> str:
        patiently(lambda: storage().finish_run(run_id, status, attempt=run.attempts, **outcome))
        return status

    config = run.config
    try:
        result = linear_regression.train(
            config.learning_rate, config.seed, config.epochs, config.n_samples, config.n_features,
            config.data_seed, config.mode, config.optimizer, on_epoch=writer.on_epoch,
        )
        status = RunStatus.DIVERGED if result.diverged else RunStatus.SUCCEEDED
        final_loss = result.losses[-1] if result.losses else None
        recorded = writer.finish(status, final_loss=final_loss, diverged_at=result.diverged_at)
    except DatabaseUnavailable:
        raise  # gone for longer than our patience: the run stays running until the reaper takes it back
    except SoftTimeLimitExceeded:
        return finish(RunStatus.FAILED, error="the run took longer than the time limit")
    except Exception as error:  # a bug or a bad config must end the run, not loop it
        log.exception("run %s failed", run_id)
        return finish(RunStatus.FAILED, error=f"{type(error).__name__}: {error}")
    return status if recorded else "stopped: cancelled or taken over"
