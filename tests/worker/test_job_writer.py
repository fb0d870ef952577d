"""JobWriter, the part of a job that writes: when it flushes, which runs it tells training to stop,
how rungs of early stopping end runs, and that an attempt writes only the runs it holds.

Against a real Storage on each backend (the `storage` fixture), with the writer's clock in the test's hands.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from gradsweep.engine.tasks.linear_regression import TrainResult
from gradsweep.service.domain.search import SearchSpec
from gradsweep.service.storage import LossWrite, Outcome, RunConfig, RunStatus, StartedJob, Storage
from gradsweep.worker import tasks
from gradsweep.worker.tasks import FLUSH_SECONDS, JobWriter

CONFIG = RunConfig(learning_rate=0.01, seed=0, optimizer="sgd", epochs=10, n_samples=100, n_features=50,
                   data_seed=0, mode="tensor")


class Clock:
    """The writer's `time.monotonic`, moved on by the test alone."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = FLUSH_SECONDS) -> None:
        self.now += seconds


@pytest.fixture
def clock(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The writer writes to the test's `storage`, and reads the time from the returned clock."""
    clock = Clock()
    monkeypatch.setattr(tasks, "storage", lambda: storage)
    monkeypatch.setattr(tasks, "time", SimpleNamespace(monotonic=clock, sleep=lambda _: None))
    return clock


def start(storage: Storage, n_runs: int, *, search: SearchSpec | None = None, points: list[int] | None = None,
          finished: int | None = None) -> StartedJob:
    """A batch of `n_runs` runs, one job, started by a worker; the run of slot `finished` ended before it started."""
    configs = [replace(CONFIG, seed=seed) for seed in range(n_runs)]
    _, runs = storage.create_sweep("writer", configs, lambda jobs: None, batch_sizes=[n_runs], search=search,
                                   points=points)
    if finished is not None:
        storage.record([LossWrite(runs[finished].id, 0, np.array([1.0]), None, Outcome(RunStatus.SUCCEEDED, 1.0))])
    job = storage.start_job([run.id for run in runs], "test pid 1")
    assert job is not None
    return job


def epoch_losses(epoch: int, n_runs: int) -> np.ndarray:
    """Slot k's loss at `epoch`: distinct for every run and epoch, falling, so curves can be told apart."""
    return np.array([10.0 * (k + 1) / (epoch + 1) for k in range(n_runs)])


def train(writer: JobWriter, epochs: range, n_runs: int) -> list[set[int]]:
    """What training does: `on_epoch` after each epoch; returns what it answered each time."""
    return [writer.on_epoch(epoch, epoch_losses(epoch, n_runs)) for epoch in epochs]


def results(n_runs: int, epochs: int) -> list[TrainResult]:
    return [TrainResult(np.array([epoch_losses(e, n_runs)[k] for e in range(epochs)]), False, False)
            for k in range(n_runs)]


def curve(slot: int, epochs: int, n_runs: int) -> list[float]:
    return [float(epoch_losses(e, n_runs)[slot]) for e in range(epochs)]


# ---- flush cadence ----


def test_nothing_is_written_until_flush_seconds_have_passed_then_every_epoch_since(storage, clock):
    job = start(storage, 3)
    writer = JobWriter(job)

    assert train(writer, range(4), 3) == [set()] * 4
    assert all(storage.run_losses(run.id).size == 0 for run in job.batch)

    clock.advance()
    assert writer.on_epoch(4, epoch_losses(4, 3)) == set()  # written; no run has to stop
    for slot, run in enumerate(job.batch):
        assert storage.run_losses(run.id).tolist() == curve(slot, 5, 3)
        assert storage.get_run(run.id).status == RunStatus.RUNNING


def test_the_next_write_waits_flush_seconds_from_the_last_one(storage, clock):
    job = start(storage, 2)
    writer = JobWriter(job)
    clock.advance()
    train(writer, range(2), 2)  # written at epoch 0; epoch 1 waits
    clock.advance(FLUSH_SECONDS / 2)
    train(writer, range(2, 3), 2)
    assert storage.run_losses(job.batch[0].id).size == 1
    clock.advance(FLUSH_SECONDS / 2)
    train(writer, range(3, 4), 2)
    assert storage.run_losses(job.batch[0].id).size == 4


def test_finish_writes_the_losses_not_yet_written_with_each_outcome(storage, clock):
    job = start(storage, 2)
    writer = JobWriter(job)
    clock.advance()
    train(writer, range(3), 2)  # epoch 0 written, 1 and 2 buffered
    trained = results(2, 10)
    trained[1] = TrainResult(trained[1].losses[:6], diverged=True, stopped=False)

    assert writer.finish(trained) == 2
    first, second = (storage.get_run(run.id) for run in job.batch)
    assert (first.status, first.final_loss) == (RunStatus.SUCCEEDED, curve(0, 10, 2)[-1])
    assert (second.status, second.diverged_at) == (RunStatus.DIVERGED, 6)
    assert storage.run_losses(first.id).tolist() == curve(0, 10, 2)
    assert storage.run_losses(second.id).tolist() == curve(1, 6, 2)


def test_a_flush_keeps_only_the_losses_before_a_run_stopped(storage, clock):
    """A run that diverged or was stopped has NaN in its column from then on: NaN is never written."""
    job = start(storage, 2)
    writer = JobWriter(job)
    writer.on_epoch(0, np.array([1.0, 2.0]))
    writer.on_epoch(1, np.array([0.5, np.nan]))
    clock.advance()
    writer.on_epoch(2, np.array([0.25, np.nan]))
    assert storage.run_losses(job.batch[0].id).tolist() == [1.0, 0.5, 0.25]
    assert storage.run_losses(job.batch[1].id).tolist() == [2.0]


# ---- the stop rule ----


def test_runs_this_attempt_did_not_start_stop_at_the_first_epoch_and_are_never_written(storage, clock):
    job = start(storage, 3, finished=1)
    writer = JobWriter(job)
    assert writer.on_epoch(0, epoch_losses(0, 3)) == {1}
    assert writer.on_epoch(1, epoch_losses(1, 3)) == set()

    assert writer.finish(results(3, 10)) == 2
    finished = storage.get_run(job.batch[1].id)
    assert finished.final_loss == 1.0 and storage.run_losses(finished.id).tolist() == [1.0]


def test_a_cancelled_sweep_stops_every_run_at_the_next_write_and_keeps_what_was_written(storage, clock):
    job = start(storage, 3)
    writer = JobWriter(job)
    clock.advance()
    train(writer, range(2), 3)  # epoch 0 written
    storage.cancel_sweep(job.batch[0].sweep_id)

    assert writer.on_epoch(2, epoch_losses(2, 3)) == set()  # no write yet: training goes on
    clock.advance()
    assert writer.on_epoch(3, epoch_losses(3, 3)) == {0, 1, 2}
    assert writer.finish(results(3, 10)) == 0
    for slot, run in enumerate(job.batch):
        assert storage.get_run(run.id).status == RunStatus.CANCELLED
        assert storage.run_losses(run.id).tolist() == curve(slot, 1, 3)


def test_fail_ends_the_runs_it_holds_as_failed_keeping_their_losses(storage, clock):
    job = start(storage, 3, finished=2)
    writer = JobWriter(job)
    clock.advance()
    train(writer, range(1), 3)
    writer.fail("the job took longer than its time limit")

    for run in job.batch[:2]:
        failed = storage.get_run(run.id)
        assert (failed.status, failed.error) == (RunStatus.FAILED, "the job took longer than its time limit")
        assert storage.run_losses(run.id).size == 1
    assert storage.get_run(job.batch[2].id).status == RunStatus.SUCCEEDED


# ---- rungs of early stopping ----

HALVING = SearchSpec.of_stored({  # rungs after 2, 4, 8 epochs
    "method": "grid", "parameters": {"learning_rate": {"value": 0.01}, "epochs": {"value": 10}},
    "early_stopping": {"type": "successive_halving", "min_epochs": 2, "eta": 2}})


def test_a_rung_stops_the_worse_half_at_once_with_their_losses_and_the_next_judges_the_rest(storage, clock):
    job = start(storage, 4, search=HALVING, points=[0, 1, 2, 3])
    writer = JobWriter(job)
    assert writer.rungs == {2: [(0, 0), (1, 0), (2, 0), (3, 0)], 4: [(0, 0), (1, 0), (2, 0), (3, 0)],
                            8: [(0, 0), (1, 0), (2, 0), (3, 0)]}

    assert writer.on_epoch(0, epoch_losses(0, 4)) == set()
    assert writer.on_epoch(1, epoch_losses(1, 4)) == {2, 3}  # after 2 epochs: slot k's loss grows with k
    for slot in (2, 3):
        stopped = storage.get_run(job.batch[slot].id)
        assert (stopped.status, stopped.final_loss) == (RunStatus.STOPPED_EARLY, curve(slot, 2, 4)[-1])
        assert storage.run_losses(stopped.id).tolist() == curve(slot, 2, 4)

    assert writer.on_epoch(2, epoch_losses(2, 4)) == set()
    assert writer.on_epoch(3, epoch_losses(3, 4)) == {1}  # after 4: slots 0 and 1 only
    assert writer.finish(results(4, 10)) == 1
    assert [storage.get_run(run.id).status for run in job.batch] == [
        RunStatus.SUCCEEDED, RunStatus.STOPPED_EARLY, RunStatus.STOPPED_EARLY, RunStatus.STOPPED_EARLY]
    assert storage.run_losses(job.batch[0].id).tolist() == curve(0, 10, 4)


def test_the_runs_of_a_point_are_judged_by_their_mean_and_stop_together(storage, clock):
    job = start(storage, 4, search=HALVING, points=[0, 0, 1, 1])
    writer = JobWriter(job)
    writer.on_epoch(0, np.array([1.0, 1.0, 1.0, 1.0]))
    # Point 0's runs: 0.1 and 0.9 (mean 0.5); point 1's: 0.4 and 0.8 (mean 0.6). Point 1 stops, both its runs.
    assert writer.on_epoch(1, np.array([0.1, 0.9, 0.4, 0.8])) == {2, 3}


def test_a_point_with_a_diverged_run_loses_at_its_rung(storage, clock):
    job = start(storage, 4, search=HALVING, points=[0, 0, 1, 1])
    writer = JobWriter(job)
    writer.on_epoch(0, np.array([1.0, 1.0, 1.0, 1.0]))
    # Point 0 has the best loss, but one of its runs diverged (NaN): the point counts as +inf.
    assert writer.on_epoch(1, np.array([0.01, np.nan, 0.4, 0.8])) == {0}
    assert storage.get_run(job.batch[0].id).status == RunStatus.STOPPED_EARLY


# ---- ownership ----


def test_an_attempt_taken_over_is_refused_its_writes_and_stops_every_run(storage, clock):
    job = start(storage, 2)
    old = JobWriter(job)
    clock.advance()
    train(old, range(1), 2)
    newer_job = storage.start_job([run.id for run in job.batch], "test pid 2")  # e.g. the message redelivered
    assert newer_job is not None and newer_job.started == job.started
    new = JobWriter(newer_job)

    clock.advance()
    assert old.on_epoch(1, epoch_losses(1, 2)) == {0, 1}
    assert old.owned == {}
    assert old.finish(results(2, 10)) == 0  # nothing written
    for run in job.batch:
        assert storage.run_losses(run.id).size == 0  # the new attempt starts its curves afresh

    train(new, range(3), 2)
    assert new.finish(results(2, 10)) == 2
    for slot, run in enumerate(job.batch):
        assert storage.get_run(run.id).status == RunStatus.SUCCEEDED
        assert storage.run_losses(run.id).tolist() == curve(slot, 10, 2)


def test_an_attempt_keeps_writing_the_runs_it_holds_when_another_took_some(storage, clock):
    job = start(storage, 3)
    old = JobWriter(job)
    taken = storage.start_job([job.batch[2].id], "test pid 2")  # one run handed to another attempt
    assert taken is not None and taken.started == {job.batch[2].id}

    clock.advance()
    assert old.on_epoch(0, epoch_losses(0, 3)) == {2}
    assert old.finish(results(3, 10)) == 2
    assert [storage.get_run(run.id).status for run in job.batch] == [
        RunStatus.SUCCEEDED, RunStatus.SUCCEEDED, RunStatus.RUNNING]
    assert storage.run_losses(job.batch[2].id).size == 0
