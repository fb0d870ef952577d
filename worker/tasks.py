"""The one task: train a job, a batch of runs, as one computation, and store every run's losses as it goes.

It takes the runs' ids, not their configs: the database says what to train and
whether there is anything left to do, so a message delivered twice, or after
the runs were cancelled, does no harm. Only the attempt that `start_job`
numbered may write a run, so a worker that was given up for dead cannot write
it twice. A job always computes its whole batch, in the same columns, even
when only some of its runs are left to do: that keeps every curve bit-identical
however often, and in whatever pieces, the batch is redone.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TypeVar, cast

import numpy as np
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request
from celery.signals import worker_process_init

from gradsweep.engine.optimizers import CONSTANTS
from gradsweep.engine.tasks import linear_regression
from gradsweep.engine.tasks.linear_regression import TrainResult
from gradsweep.service.domain.early_stopping import EarlyStopping
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import (
    DatabaseUnavailable, LossWrite, NotFound, Outcome, RungLoss, RunStatus, StartedJob, Storage, StorageError,
)
from gradsweep.worker.app import TRAIN_JOB, app
from gradsweep.worker.queue import HARD_LIMIT_GRACE_SECONDS, enqueue_jobs, time_limit
from gradsweep.worker.waves import propose_next_wave

log = logging.getLogger(__name__)

# Losses are written at least this often, so progress shows (and the runs' lease is renewed) while a job trains.
FLUSH_SECONDS = 0.5
# How long a worker waits for a database that went away before it gives the job up to the reaper.
DATABASE_PATIENCE_SECONDS = 60.0

T = TypeVar("T")


@worker_process_init.connect
def _yield_to_the_api(**_: object) -> None:
    """Training is batch work: where it shares a machine with the API, requests are answered first."""
    os.nice(get_settings().worker_nice)


@lru_cache
def storage() -> Storage:
    """One Storage per worker process, made after the fork so no connection is shared.

    No pre-ping, because every call here goes through `patiently`, which retries
    on a dead connection anyway; and commits that do not wait for the disk,
    because whatever a database crash makes it forget is redone (see `Storage`).
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


class JobWriter:
    """Buffers a job's losses and writes them, for all its runs in one transaction, every FLUSH_SECONDS.

    The last write carries the runs' outcomes. Tells training which runs to stop:
    at once those this attempt did not start (another attempt has them, or they
    are done), later those that were cancelled or taken over by a newer attempt,
    and, under early stopping, those judged out at a rung.
    """

    def __init__(self, job: StartedJob) -> None:
        self.run_ids = [run.id for run in job.batch]
        # Batch slot -> attempt number, for the runs this attempt may still write.
        self.owned = {slot: run.attempts for slot, run in enumerate(job.batch) if run.id in job.started}
        self.written = [0] * len(job.batch)  # epochs stored, per slot
        self.rows: list[np.ndarray] = []  # each epoch's losses since the last write
        self.last_write = time.monotonic()
        self.sweep_id = job.batch[0].sweep_id
        self.early_stopping = None if job.search is None else job.search.early_stopping
        self.points = [slot if run.point is None else run.point for slot, run in enumerate(job.batch)]
        self.rungs = self._rungs(job)  # epochs -> the slots judged after that many, with their bracket

    def _rungs(self, job: StartedJob) -> dict[int, list[tuple[int, int]]]:
        rungs: dict[int, list[tuple[int, int]]] = {}
        if self.early_stopping is None:
            return rungs
        for slot, run in enumerate(job.batch):
            bracket = self.early_stopping.bracket(self.points[slot], run.config.epochs)
            for rung in self.early_stopping.rungs(bracket, run.config.epochs):
                rungs.setdefault(rung, []).append((slot, bracket))
        return rungs

    def not_started(self) -> set[int]:
        return set(range(len(self.run_ids))) - self.owned.keys()

    def on_epoch(self, epoch: int, losses: np.ndarray) -> set[int]:
        """What `train_batch` calls after each epoch; returns the slots to stop (empty: go on)."""
        self.rows.append(losses)
        stop = self.not_started() if epoch == 0 else set()
        if epoch + 1 in self.rungs:
            stop |= self.judge(epoch + 1, losses)
        if time.monotonic() - self.last_write >= FLUSH_SECONDS:
            stop |= self.flush()
        return stop

    def judge(self, rung: int, losses: np.ndarray) -> set[int]:
        """The slots that early stopping ends at this rung (after `rung` epochs), of the runs still training.

        A point is judged by the mean loss of its runs (its seeds): they go on or stop
        together; one that diverged makes the point +inf. Those it ends are recorded as
        stopped at once, with their losses, rather than when the job ends: the user sees
        them stopped, and a redone job has less to redo.
        """
        members: dict[int, list[int]] = {}  # point -> its slots this attempt still trains or saw diverge
        brackets: dict[int, int] = {}
        for slot, bracket in self.rungs[rung]:
            if slot in self.owned:
                members.setdefault(self.points[slot], []).append(slot)
                brackets[self.points[slot]] = bracket
        judged = [RungLoss(point, brackets[point], _mean_or_inf(losses[of_point]))
                  for point, of_point in members.items() if not np.isnan(losses[of_point]).all()]
        keeps = cast(EarlyStopping, self.early_stopping).keeps  # set: the job has rungs
        stopped = patiently(lambda: storage().judge_rung(self.sweep_id, rung, judged, keeps))
        slots = {slot for point in stopped for slot in members.get(point, ()) if not np.isnan(losses[slot])}
        if not slots:
            return set()
        return slots | self.flush({slot: Outcome(RunStatus.STOPPED_EARLY, float(losses[slot])) for slot in slots})

    def flush(self, outcomes: dict[int, Outcome] | None = None) -> set[int]:
        """Writes the losses since the last write, and `outcomes` (by slot); returns the slots that must stop."""
        block = np.array(self.rows).reshape(len(self.rows), len(self.run_ids))
        self.rows = []
        # A run that stopped (diverged, or was stopped) has NaN from then on.
        return self._write({slot: block[:, slot][~np.isnan(block[:, slot])] for slot in self.owned}, outcomes or {})

    def finish(self, results: list[TrainResult]) -> int:
        """Writes each run's losses not yet written, with its outcome; returns how many runs it recorded."""
        self.rows = []  # in `results` too
        losses, outcomes = {}, {}
        for slot in self.owned:
            result = results[slot]
            losses[slot] = result.losses[self.written[slot]:]
            status = RunStatus.DIVERGED if result.diverged else RunStatus.SUCCEEDED
            outcomes[slot] = Outcome(status, float(result.losses[-1]) if result.losses.size else None, result.diverged_at)
        return len(outcomes) - len(self._write(losses, outcomes))  # less those cancelled or taken over meanwhile

    def fail(self, error: str) -> None:
        """Marks every run this attempt still holds failed with `error`, keeping the losses already written."""
        self._write({slot: np.empty(0) for slot in self.owned}, dict.fromkeys(self.owned, Outcome(
            RunStatus.FAILED, error=error)))

    def _write(self, losses: dict[int, np.ndarray], outcomes: dict[int, Outcome]) -> set[int]:
        writes = [LossWrite(self.run_ids[slot], self.written[slot], values, self.owned[slot], outcomes.get(slot))
                  for slot, values in losses.items()]
        kept = patiently(lambda: storage().record(writes))
        self.last_write = time.monotonic()
        for slot, values in losses.items():
            self.written[slot] += values.size
        lost = {slot for slot in self.owned if self.run_ids[slot] not in kept}
        for slot in lost | outcomes.keys():  # lost, or ended
            self.owned.pop(slot, None)
        return lost


def _mean_or_inf(losses: np.ndarray) -> float:
    """A point's loss at a rung: its runs' mean, or +inf if one of them diverged (NaN: it has no loss there)."""
    return math.inf if np.isnan(losses).any() else float(losses.mean())


class JobRequest(Request):
    """A job's message as this worker runs it: never with less time than the job needs.

    The sender sizes the job's limits into its message (worker.queue.time_limit), and
    Celery takes those. But a message may carry lower limits (one sent by hand, or by an
    older sender) or none, and then the worker's --soft-time-limit and --time-limit, or
    Celery's task_time_limit, apply: any of them may be shorter than the job takes, and
    would fail runs that were training well. So the worker sizes the job itself, from
    its runs in the database, and takes the longer of the two.
    """

    _given: tuple[float | None, float | None] = (None, None)
    _needed: tuple[float, float] | None = None

    @property
    def time_limits(self) -> tuple[float | None, float | None]:
        """(hard, soft), as Celery reads them just before it hands the job to a pool process."""
        if self._needed is None:
            soft = _time_needed(self.args[0] if self.args else [])
            if soft is None:
                return self._given
            self._needed = (soft + HARD_LIMIT_GRACE_SECONDS, soft)
        given = (self._given[0] or self.task.time_limit, self._given[1] or self.task.soft_time_limit)
        return (max(given[0] or 0, self._needed[0]), max(given[1] or 0, self._needed[1]))

    @time_limits.setter
    def time_limits(self, limits: tuple[float | None, float | None]) -> None:
        self._given = tuple(limits)


def _time_needed(run_ids: list[int]) -> float | None:
    """The soft time limit the job of these runs needs; None if it cannot be known (the task then finds out why).

    Runs in the worker's main process, which forks pool processes: the connection is closed before it returns.
    """
    if not run_ids:
        return None
    reader = Storage(get_settings().database_url)
    try:
        run = reader.get_run(run_ids[0])
    except (StorageError, TypeError):
        return None
    finally:
        reader.close()
    return time_limit(run.config, run.batch_size)


@app.task(name=TRAIN_JOB, bind=True, Request=JobRequest)
def train_job(self: Task, run_ids: list[int], queued_at: str | None = None) -> str:
    """Train the runs `run_ids` (of one batch) queued at `queued_at`; returns how it ended (for the worker's log)."""
    queued = None if queued_at is None else datetime.fromisoformat(queued_at)
    return _train(run_ids, queued, worker=f"{self.request.hostname or 'worker'} pid {os.getpid()}")


def _train(run_ids: list[int], queued_at: datetime | None, worker: str) -> str:
    lease = timedelta(seconds=get_settings().run_lease_seconds)
    try:
        job = patiently(lambda: storage().start_job(run_ids, worker, lease=lease, queued_at=queued_at))
    except NotFound:
        return "unknown runs"
    if job is None:
        return "nothing to do"
    writer = JobWriter(job)
    try:
        recorded = writer.finish(_trained(job, writer))
        _search_on(job)
    except DatabaseUnavailable:
        raise  # gone for longer than our patience: the runs stay running until the reaper takes them back
    except SoftTimeLimitExceeded:
        writer.fail("the job took longer than its time limit")
        return "failed: time limit"
    except Exception as error:  # a bug or a bad config must end the runs, not loop them
        log.exception("job of runs %s failed", run_ids)
        writer.fail(f"{type(error).__name__}: {error}")
        return f"failed: {type(error).__name__}"
    return f"{recorded} of {len(job.batch)} runs recorded"


def _search_on(job: StartedJob) -> None:
    """A Bayesian search's next wave, if this job ended its wave. On any error the reaper proposes it instead."""
    if job.search is None or job.search.method != "bayes":
        return
    try:
        patiently(lambda: propose_next_wave(storage(), job.batch[0].sweep_id, enqueue_jobs))
    except Exception:
        log.exception("could not propose the next wave of sweep %s; the reaper will", job.batch[0].sweep_id)


def _trained(job: StartedJob, writer: JobWriter) -> list[TrainResult]:
    """Trains the whole batch. A batch of one is trained by `train`, as `gradsweep train` does, bit for bit."""
    config = job.batch[0].config
    shared = (config.epochs, config.n_samples, config.n_features, config.data_seed)
    if len(job.batch) == 1:
        def on_epoch(epoch: int, loss: float) -> bool:
            return not writer.on_epoch(epoch, np.array([loss]))

        return [linear_regression.train(config.learning_rate, config.seed, *shared, mode=config.mode,
                                        optimizer=config.optimizer, on_epoch=on_epoch, constants=config.constants)]
    if config.mode != "tensor":
        raise ValueError(f"a batch of {len(job.batch)} runs must train in tensor mode, not {config.mode}")
    return linear_regression.train_batch(
        [run.config.learning_rate for run in job.batch], [run.config.seed for run in job.batch], *shared,
        optimizer=config.optimizer, on_epoch=writer.on_epoch,
        constants={name: [run.config.constants.get(name, default) for run in job.batch]
                   for name, default in CONSTANTS[config.optimizer].items()})
