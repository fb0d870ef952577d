"""The one task: train a run and store its losses as it goes.

It takes the run's id, not its config: the database says what to train and
whether there is anything left to do, so a message delivered twice, or after
the run was cancelled, does no harm.
"""

from __future__ import annotations

import functools
import logging
import time
from functools import lru_cache

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from engine.tasks import linear_regression
from service.settings import get_settings
from service.storage import DatabaseUnavailable, NotFound, RunStatus, Storage
from worker.app import TRAIN_RUN, app

log = logging.getLogger(__name__)

# Losses are written at least this often, so progress shows while a run trains.
FLUSH_SECONDS = 0.5
FLUSH_EPOCHS = 10_000


@lru_cache
def storage() -> Storage:
    """One Storage per worker process, made after the fork so no connection is shared."""
    return Storage(get_settings().database_url)


class LossWriter:
    """Buffers a run's losses and writes them in batches.

    Tells training to stop once the run is cancelled, or taken over by a newer attempt.
    """

    def __init__(self, run_id: int, attempt: int) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.pending: list[float] = []
        self.first_epoch = 0
        self.last_flush = time.monotonic()
        self.cancelled = False

    def on_epoch(self, epoch: int, loss: float) -> bool:
        self.pending.append(loss)
        if len(self.pending) >= FLUSH_EPOCHS or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            return self.flush()
        return True

    def flush(self) -> bool:
        if self.pending and not self.cancelled:
            self.cancelled = not storage().write_losses(
                self.run_id, self.first_epoch, self.pending, attempt=self.attempt)
            self.first_epoch += len(self.pending)
            self.pending = []
        self.last_flush = time.monotonic()
        return not self.cancelled


@app.task(name=TRAIN_RUN, bind=True, max_retries=5)
def train_run(self: Task, run_id: int) -> str:
    """Train run `run_id`; returns how it ended (for the worker's log)."""
    try:
        return _train(run_id, worker=self.request.hostname or "unknown")
    except DatabaseUnavailable as error:
        # The database went away: try the whole run again later, from epoch 0.
        log.warning("run %s: database unavailable (%s); retrying", run_id, error)
        raise self.retry(exc=error, countdown=min(2 ** self.request.retries, 30))


def _train(run_id: int, worker: str) -> str:
    try:
        run = storage().start_run(run_id, worker)
    except NotFound:
        return "unknown run"
    if run is None:
        return "nothing to do"
    writer = LossWriter(run_id, run.attempts)
    finish = functools.partial(storage().finish_run, run_id, attempt=run.attempts)
    config = run.config
    try:
        result = linear_regression.train(
            config.learning_rate, config.seed, config.epochs, config.n_samples, config.n_features,
            config.data_seed, config.mode, config.optimizer, on_epoch=writer.on_epoch,
        )
        writer.flush()
    except DatabaseUnavailable:
        raise
    except SoftTimeLimitExceeded:
        finish(RunStatus.FAILED, error="the run took longer than the time limit")
        return RunStatus.FAILED
    except Exception as error:  # a bug or bad config must end the run, not loop it
        log.exception("run %s failed", run_id)
        finish(RunStatus.FAILED, error=f"{type(error).__name__}: {error}")
        return RunStatus.FAILED
    if writer.cancelled:
        return RunStatus.CANCELLED
    status = RunStatus.DIVERGED if result.diverged else RunStatus.SUCCEEDED
    final_loss = result.losses[-1] if result.losses else None
    finish(status, final_loss=final_loss, diverged_at=result.diverged_at)
    return status
