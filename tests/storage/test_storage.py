"""The storage layer, as its callers use it; every test runs on SQLite and on PostgreSQL (see conftest.py)."""

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, timedelta

import numpy as np
import pytest
from sqlalchemy import text

from gradsweep.service.storage import (
    DatabaseUnavailable,
    Job,
    LossWrite,
    NotFound,
    Outcome,
    Run,
    RunConfig,
    RunFilter,
    RunStatus,
    SchemaOutOfDate,
    Storage,
    SweepActive,
)
from gradsweep.service.storage.engine import make_engine
from tests.support.writes import finish_run, start_run, write_losses

CONFIG = RunConfig(
    learning_rate=0.1,
    seed=2**32 - 1,  # numpy's largest seed, which needs a BIGINT
    optimizer="sgd",
    epochs=20,
    n_samples=100,
    n_features=50,
    data_seed=2**32 - 1,
    mode="tensor",
)


UNKNOWN = 2**63 - 1  # no such sweep or run; also the largest id the API accepts


def configs(n: int) -> list[RunConfig]:
    return [replace(CONFIG, learning_rate=0.01 * (i + 1), seed=i) for i in range(n)]


def ignore(jobs: list[Job]) -> None:
    """An enqueue that queues nothing, for tests that do not look at the queue."""


def fail_to_enqueue(jobs: list[Job]) -> None:
    raise ConnectionError("broker down")


class Enqueued(list):
    """An enqueue that keeps the jobs it is given."""

    def __call__(self, jobs: list[Job]) -> None:
        self.extend(jobs)

    @property
    def run_ids(self) -> list[int]:
        return [run_id for job in self for run_id in job.run_ids]


# Schema and connection


def test_check_schema_asks_for_an_upgrade_until_there_is_one(empty_storage: Storage) -> None:
    with pytest.raises(SchemaOutOfDate, match="gradsweep db upgrade"):
        empty_storage.check_schema()
    empty_storage.upgrade()
    empty_storage.check_schema()
    empty_storage.upgrade()  # already at head: nothing to do
    empty_storage.check_schema()


@pytest.mark.parametrize(
    "url", ["sqlite:////nonexistent/directory/gradsweep.sqlite", "postgresql://postgres@127.0.0.1:1/gradsweep"]
)
def test_an_unreachable_database_raises_database_unavailable(url: str) -> None:
    storage = Storage(url)
    with pytest.raises(DatabaseUnavailable):
        storage.ping()
    storage.close()


def test_a_plain_postgresql_url_uses_psycopg_3() -> None:
    assert Storage("postgresql://postgres@127.0.0.1/gradsweep").url.drivername == "postgresql+psycopg"


# Sweeps


def test_create_sweep_stores_queued_runs_with_their_configs(storage: Storage) -> None:
    enqueued = Enqueued()
    sweep, runs = storage.create_sweep("learning rates", configs(3), enqueued)

    assert (sweep.name, sweep.n_runs) == ("learning rates", 3)
    assert sweep.counts == {"queued": 3, "running": 0, "succeeded": 0, "diverged": 0, "failed": 0, "cancelled": 0,
                            "stopped_early": 0}
    assert sweep.created_at.tzinfo == UTC
    assert [run.config for run in runs] == configs(3)
    assert {(run.status, run.attempts, run.epochs_done, run.sweep_id) for run in runs} == {
        (RunStatus.QUEUED, 0, 0, sweep.id)
    }
    assert enqueued.run_ids == [run.id for run in runs]
    assert storage.get_sweep(sweep.id) == sweep
    assert storage.list_runs(sweep.id) == runs
    assert storage.get_run(runs[0].id) == runs[0]


def test_a_failing_enqueue_stores_nothing(storage: Storage) -> None:
    offered = Enqueued()

    def enqueue(jobs: list[Job]) -> None:
        offered(jobs)
        fail_to_enqueue(jobs)

    with pytest.raises(ConnectionError):
        storage.create_sweep("doomed", configs(3), enqueue)

    assert storage.list_sweeps() == []
    for run_id in offered.run_ids:
        with pytest.raises(NotFound):
            storage.get_run(run_id)


def test_list_sweeps_puts_the_newest_first_with_counts_per_status(storage: Storage) -> None:
    _, older_runs = storage.create_sweep("older", configs(2), ignore)
    newer, _ = storage.create_sweep("newer", configs(3), ignore)
    start_run(storage, older_runs[0].id, "worker-1")

    newest, oldest = storage.list_sweeps()

    assert (newest, oldest.name) == (newer, "older")
    assert (oldest.counts["queued"], oldest.counts["running"]) == (1, 1)


def test_list_sweeps_pages_by_a_cursor_of_ids(storage: Storage) -> None:
    ids = [storage.create_sweep(f"s{i}", configs(1), ignore)[0].id for i in range(5)]
    assert [sweep.id for sweep in storage.list_sweeps(limit=2)] == [ids[4], ids[3]]
    assert [sweep.id for sweep in storage.list_sweeps(limit=2, before=ids[3])] == [ids[2], ids[1]]
    assert [sweep.id for sweep in storage.list_sweeps(before=ids[1])] == [ids[0]]


def test_runs_page_filters_sorts_with_missing_losses_last_and_counts_the_matches(storage: Storage) -> None:
    sweep, runs = storage.create_sweep("s", configs(6), ignore)  # learning rates 0.01 ... 0.06
    for run, loss in zip(runs[:3], [0.3, 0.1, 0.2], strict=True):
        attempt = start_run(storage, run.id, "worker-1").attempts
        finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=loss, attempt=attempt)

    page = storage.runs_page(sweep.id, limit=4, sort="final_loss")
    assert page.total == 6
    assert [run.final_loss for run in page.runs] == [0.1, 0.2, 0.3, None]
    down = storage.runs_page(sweep.id, limit=6, sort="final_loss", descending=True)
    assert [run.final_loss for run in down.runs] == [0.3, 0.2, 0.1, None, None, None]
    assert [run.id for run in down.runs[3:]] == [run.id for run in runs[3:]]  # ties: by id
    assert [run.id for run in storage.runs_page(sweep.id, limit=2, offset=4).runs] == [runs[4].id, runs[5].id]
    straddling = storage.runs_page(sweep.id, limit=2, offset=2, sort="final_loss").runs
    assert [(run.id, run.final_loss) for run in straddling] == [(runs[0].id, 0.3), (runs[3].id, None)]
    past = storage.runs_page(sweep.id, limit=3, offset=4, sort="best_loss").runs
    assert [run.id for run in past] == [runs[4].id, runs[5].id]

    where = RunFilter(statuses=(RunStatus.QUEUED,), min_learning_rate=0.035, max_learning_rate=0.05)
    queued = storage.runs_page(sweep.id, limit=10, sort="learning_rate", descending=True, where=where)
    assert [run.id for run in queued.runs] == [runs[4].id, runs[3].id] and queued.total == 2
    assert storage.runs_page(sweep.id, limit=10, where=RunFilter(optimizers=("adam",))).total == 0
    with pytest.raises(NotFound):
        storage.runs_page(UNKNOWN, limit=10)


def test_delete_sweep_removes_its_runs_and_losses_and_refuses_while_one_runs(storage: Storage) -> None:
    sweep, (first, second) = storage.create_sweep("doomed", configs(2), ignore)
    kept, (other,) = storage.create_sweep("kept", configs(1), ignore)
    for run in (first, other):
        attempt = start_run(storage, run.id, "worker-1").attempts
        write_losses(storage, run.id, 0, [3.0, 2.0], attempt=attempt)

    with pytest.raises(SweepActive, match="1 running"):
        storage.delete_sweep(sweep.id)
    assert len(storage.run_losses(first.id)) == 2  # nothing deleted
    storage.cancel_sweep(sweep.id)

    assert storage.delete_sweep(sweep.id) == 2
    with pytest.raises(NotFound):
        storage.get_sweep(sweep.id)
    with pytest.raises(NotFound):
        storage.get_run(second.id)
    with make_engine(storage.url).connect() as connection:
        left = connection.execute(text("SELECT count(*) FROM loss_chunks WHERE run_id = :run"), {"run": first.id})
        assert left.scalar() == 0
    assert [s.id for s in storage.list_sweeps()] == [kept.id] and len(storage.run_losses(other.id)) == 2
    with pytest.raises(NotFound):
        storage.delete_sweep(sweep.id)


def test_a_sweep_is_created_in_one_piece_even_with_10_000_runs(storage: Storage) -> None:
    enqueued = Enqueued()
    sweep, runs = storage.create_sweep("big", configs(10_000), enqueued)

    assert sweep.n_runs == len(runs) == len(set(enqueued.run_ids)) == 10_000
    assert [run.config.seed for run in runs] == list(range(10_000))
    assert enqueued.run_ids == [run.id for run in runs]


def test_cancel_sweep_cancels_queued_and_running_runs(storage: Storage) -> None:
    sweep, (done, running, queued) = storage.create_sweep("s", configs(3), ignore)
    start_run(storage, done.id, "w")
    finish_run(storage, done.id, RunStatus.SUCCEEDED, final_loss=0.5)
    start_run(storage, running.id, "w")

    assert storage.cancel_sweep(sweep.id) == 2
    statuses = [run.status for run in storage.list_runs(sweep.id)]
    assert statuses == [RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.CANCELLED]
    assert storage.get_run(queued.id).finished_at is not None
    assert storage.cancel_sweep(sweep.id) == 0


def test_retry_sweep_requeues_failed_and_cancelled_runs(storage: Storage) -> None:
    sweep, (failed, cancelled, succeeded) = storage.create_sweep("s", configs(3), ignore)
    for run in (failed, succeeded):
        start_run(storage, run.id, "w")
    finish_run(storage, failed.id, RunStatus.FAILED, error="Traceback ...")
    finish_run(storage, succeeded.id, RunStatus.SUCCEEDED, final_loss=0.25)
    storage.cancel_sweep(sweep.id)  # cancels the queued run only

    enqueued = Enqueued()
    assert storage.retry_sweep(sweep.id, enqueued) == enqueued.run_ids == [failed.id, cancelled.id]
    retried = storage.get_run(failed.id)
    assert (retried.status, retried.error, retried.finished_at) == (RunStatus.QUEUED, None, None)
    assert storage.get_run(succeeded.id).status == RunStatus.SUCCEEDED


def test_retry_sweep_changes_nothing_if_enqueue_fails(storage: Storage) -> None:
    sweep, _ = storage.create_sweep("s", configs(2), ignore)
    storage.cancel_sweep(sweep.id)

    with pytest.raises(ConnectionError):
        storage.retry_sweep(sweep.id, fail_to_enqueue)
    assert storage.get_sweep(sweep.id).counts["cancelled"] == 2


# Runs


def test_start_run_begins_a_new_attempt_from_epoch_zero(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "worker-1")
    write_losses(storage, run.id, 0, [3.0, 2.0, 1.0])

    # The worker died; the task is delivered again, to another worker.
    again = start_run(storage, run.id, "worker-2")

    assert again is not None
    assert (again.status, again.attempts, again.worker) == (RunStatus.RUNNING, 2, "worker-2")
    assert (again.epochs_done, again.best_loss) == (0, None)
    assert again.started_at is not None and again.started_at.tzinfo == UTC
    assert storage.run_losses(run.id).size == 0


def test_start_run_returns_none_for_a_finished_run(storage: Storage) -> None:
    finished = [RunStatus.SUCCEEDED, RunStatus.DIVERGED, RunStatus.FAILED]
    sweep, runs = storage.create_sweep("s", configs(4), ignore)
    for run, status in zip(runs[:3], finished, strict=True):
        start_run(storage, run.id, "w")
        finish_run(storage, run.id, status)
    storage.cancel_sweep(sweep.id)  # the fourth

    for run in runs:
        assert start_run(storage, run.id, "w") is None
    assert [run.attempts for run in storage.list_runs(sweep.id)] == [1, 1, 1, 0]


def test_a_worker_handed_a_run_before_its_sweep_commits_waits_for_the_commit(storage: Storage) -> None:
    with ThreadPoolExecutor(1) as worker:
        handed: list[Future[Run | None]] = []

        def enqueue_to_an_eager_worker(jobs: list[Job]) -> None:
            handed.append(worker.submit(start_run, storage, jobs[0].run_ids[0], "eager"))
            time.sleep(0.2)  # the worker looks for the run before the sweep is committed

        _, runs = storage.create_sweep("s", configs(2), enqueue_to_an_eager_worker)
        started = handed[0].result()

    assert started is not None
    assert (started.id, started.status) == (runs[0].id, RunStatus.RUNNING)


def test_finish_run_records_how_the_run_ended(storage: Storage) -> None:
    _, (diverged, failed) = storage.create_sweep("s", configs(2), ignore)
    for run in (diverged, failed):
        start_run(storage, run.id, "w")
    finish_run(storage, diverged.id, RunStatus.DIVERGED, final_loss=1e12, diverged_at=7)
    finish_run(storage, failed.id, RunStatus.FAILED, error="MemoryError")

    run = storage.get_run(diverged.id)
    assert (run.status, run.final_loss, run.diverged_at, run.error) == (RunStatus.DIVERGED, 1e12, 7, None)
    assert run.started_at is not None and run.finished_at is not None
    assert run.finished_at >= run.started_at
    run = storage.get_run(failed.id)
    assert (run.status, run.error) == (RunStatus.FAILED, "MemoryError")


def test_a_cancel_wins_over_a_late_success(storage: Storage) -> None:
    sweep, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    storage.cancel_sweep(sweep.id)

    finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=0.1)

    assert storage.get_run(run.id).status == RunStatus.CANCELLED


def test_finish_run_refuses_an_unfinished_status(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    with pytest.raises(ValueError):
        finish_run(storage, run.id, RunStatus.RUNNING)


# Losses


def test_writing_the_same_epochs_twice_keeps_one_loss_each_the_last(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")

    assert write_losses(storage, run.id, 0, [1.0, 2.0, 3.0])
    assert write_losses(storage, run.id, 1, [20.0, 30.0, 4.0])

    assert storage.run_losses(run.id).tolist() == [1.0, 20.0, 30.0, 4.0]
    run = storage.get_run(run.id)
    assert (run.epochs_done, run.best_loss) == (4, 1.0)
    assert run.started_at is not None and run.heartbeat_at is not None
    assert run.heartbeat_at >= run.started_at


def test_write_losses_tells_the_worker_to_stop_once_cancelled(storage: Storage) -> None:
    sweep, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    write_losses(storage, run.id, 0, [1.0])
    storage.cancel_sweep(sweep.id)

    assert write_losses(storage, run.id, 1, [0.5]) is False
    assert storage.run_losses(run.id).tolist() == [1.0]


def test_losses_must_be_finite(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    with pytest.raises(ValueError, match="diverged_at"):
        write_losses(storage, run.id, 0, [1.0, float("nan")])


def test_floats_come_back_bit_for_bit(storage: Storage) -> None:
    values = np.array([0.1 + 0.2, 1e-300, 5e-324, 1.7976931348623157e308, np.random.default_rng(0).random()])
    _, (run,) = storage.create_sweep("s", [replace(CONFIG, learning_rate=float(values[0]))], ignore)
    start_run(storage, run.id, "w")
    write_losses(storage, run.id, 0, values.tolist())
    finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=float(values[4]))

    for read in (storage.run_losses(run.id), storage.sweep_losses(run.sweep_id)[run.id]):
        assert read.dtype == np.float64
        assert read.view(np.uint64).tolist() == values.view(np.uint64).tolist()
    run = storage.get_run(run.id)
    assert (run.config.learning_rate, run.final_loss, run.best_loss) == (values[0], values[4], 5e-324)


def test_sweep_losses_gives_every_run_its_curve_in_epoch_order(storage: Storage) -> None:
    sweep, (a, b, silent) = storage.create_sweep("s", configs(3), ignore)
    _, (other,) = storage.create_sweep("another sweep", configs(1), ignore)
    for run in (a, b, other):
        start_run(storage, run.id, "w")
    write_losses(storage, a.id, 2, [0.3, 0.2])
    write_losses(storage, a.id, 0, [0.5, 0.4])
    write_losses(storage, b.id, 0, [9.0])
    write_losses(storage, other.id, 0, [7.0])

    curves = storage.sweep_losses(sweep.id)

    assert {run_id: curve.tolist() for run_id, curve in curves.items()} == {
        a.id: [0.5, 0.4, 0.3, 0.2],
        b.id: [9.0],
        silent.id: [],
    }


# Errors


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda storage: storage.get_sweep(UNKNOWN), id="get_sweep"),
        pytest.param(lambda storage: storage.list_runs(UNKNOWN), id="list_runs"),
        pytest.param(lambda storage: storage.cancel_sweep(UNKNOWN), id="cancel_sweep"),
        pytest.param(lambda storage: storage.retry_sweep(UNKNOWN, ignore), id="retry_sweep"),
        pytest.param(lambda storage: storage.sweep_losses(UNKNOWN), id="sweep_losses"),
        pytest.param(lambda storage: storage.get_run(UNKNOWN), id="get_run"),
        pytest.param(lambda storage: start_run(storage, UNKNOWN, "w"), id="start_run"),
        pytest.param(lambda storage: write_losses(storage, UNKNOWN, 0, [1.0]), id="write_losses"),
        pytest.param(lambda storage: finish_run(storage, UNKNOWN, RunStatus.FAILED), id="finish_run"),
        pytest.param(lambda storage: storage.run_losses(UNKNOWN), id="run_losses"),
    ],
)
def test_unknown_ids_raise_not_found(storage: Storage, call: Callable[[Storage], object]) -> None:
    with pytest.raises(NotFound):
        call(storage)


def test_only_the_newest_attempt_writes_a_run(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    first = start_run(storage, run.id, "slow-worker")
    assert write_losses(storage, run.id, 0, [3.0, 2.0], attempt=first.attempts)

    # The task is delivered again while the first worker still trains (or is cancelled and retried).
    second = start_run(storage, run.id, "fast-worker")
    assert write_losses(storage, run.id, 0, [3.0], attempt=second.attempts)

    assert write_losses(storage, run.id, 2, [1.0], attempt=first.attempts) is False  # told to stop
    finish_run(storage, run.id, RunStatus.FAILED, error="late", attempt=first.attempts)  # ignored
    assert storage.get_run(run.id).status == RunStatus.RUNNING
    assert storage.run_losses(run.id).tolist() == [3.0]

    finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=3.0, attempt=second.attempts)
    assert storage.get_run(run.id).status == RunStatus.SUCCEEDED


def test_an_attempt_that_finds_a_gap_in_its_curve_is_told_to_stop(storage: Storage) -> None:
    # As after a database crash that forgot the batch of epochs 2-3, which the worker saw committed.
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    started = start_run(storage, run.id, "w")
    assert write_losses(storage, run.id, 0, [4.0, 3.0], attempt=started.attempts)

    assert write_losses(storage, run.id, 4, [1.0], attempt=started.attempts) is False
    assert finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=0.5, attempt=started.attempts,
                              first_epoch=5, losses=[0.5]) is False
    assert finish_run(storage, run.id, RunStatus.SUCCEEDED, attempt=started.attempts, first_epoch=6) is False

    stopped = storage.get_run(run.id)  # left running, for the reaper to take back once its lease ends
    assert (stopped.status, stopped.epochs_done) == (RunStatus.RUNNING, 2)
    assert storage.run_losses(run.id).tolist() == [4.0, 3.0]
    # A batch written again after a commit whose answer was lost starts before the end: that is no gap.
    assert write_losses(storage, run.id, 0, [4.0, 3.0, 2.0], attempt=started.attempts)
    assert finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=1.0, attempt=started.attempts,
                              first_epoch=3, losses=[1.0])
    assert storage.run_losses(run.id).tolist() == [4.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize("synchronous_commit", ["on", "off"])
def test_only_engines_made_for_workers_commit_without_waiting_for_the_disk(postgres_schema, synchronous_commit):
    engine = make_engine(postgres_schema, synchronous_commit=synchronous_commit == "on")
    with engine.connect() as connection:
        assert connection.execute(text("SHOW synchronous_commit")).scalar() == synchronous_commit
        assert connection.execute(text("SHOW search_path")).scalar().startswith("test_")  # the URL's options stay
    engine.dispose()


def test_postgresql_ends_the_session_of_a_client_the_network_lost_within_seconds(postgres_schema):
    """A worker cut off inside a write transaction holds its runs' rows until PostgreSQL ends its session;
    the reaper skips locked rows, so that must take seconds, not the kernel's two hours of keepalive."""
    engine = make_engine(postgres_schema)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT inet_server_addr() IS NOT NULL")).scalar()  # over TCP, where they apply
        shown = {name: connection.execute(text(f"SHOW {name}")).scalar()
                 for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout")}
    engine.dispose()
    assert shown == {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "5",
                     "tcp_user_timeout": "10000"}  # milliseconds


def test_a_duplicate_message_does_not_restart_a_run_whose_worker_is_alive(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "alive", lease=timedelta(seconds=30))

    assert start_run(storage, run.id, "duplicate", lease=timedelta(seconds=30)) is None
    assert storage.get_run(run.id).attempts == 1


def test_runs_whose_worker_went_quiet_are_requeued_then_failed_after_max_attempts(storage: Storage) -> None:
    _, (quiet, poison, busy) = storage.create_sweep("s", configs(3), ignore)
    for _ in range(3):
        start_run(storage, poison.id, "dies every time")  # three attempts already
    start_run(storage, quiet.id, "vanished")
    time.sleep(0.6)
    start_run(storage, busy.id, "alive")

    enqueued = Enqueued()
    requeued, failed = storage.requeue_stale_runs(timedelta(seconds=0.5), 3, enqueued)

    assert requeued == enqueued.run_ids == [quiet.id] and failed == [poison.id]
    assert storage.get_run(quiet.id).status == RunStatus.QUEUED
    assert storage.get_run(busy.id).status == RunStatus.RUNNING
    failed_run = storage.get_run(poison.id)
    assert failed_run.status == RunStatus.FAILED and "3 attempts" in failed_run.error
    # The requeued run starts again as attempt 2; its old worker, if it wakes up, is fenced out.
    assert start_run(storage, quiet.id, "new", lease=timedelta(seconds=30)).attempts == 2
    assert write_losses(storage, quiet.id, 0, [1.0], attempt=1) is False


def test_runs_queued_for_too_long_are_enqueued_again(storage: Storage) -> None:
    _, (waiting, started) = storage.create_sweep("old", configs(2), ignore)
    start_run(storage, started.id, "w")  # running runs are requeue_stale_runs' business
    time.sleep(0.6)
    _, (fresh,) = storage.create_sweep("new", configs(1), ignore)

    enqueued = Enqueued()
    again = storage.requeue_unclaimed_runs(timedelta(seconds=0.5), enqueued)

    assert again == enqueued.run_ids == [waiting.id]
    assert storage.requeue_unclaimed_runs(timedelta(seconds=0.5), enqueued) == []  # its clock restarted
    assert storage.get_run(waiting.id).status == RunStatus.QUEUED


# Losses: the fast paths (binary COPY on PostgreSQL, the driver's executemany on SQLite)


def test_a_sweep_with_no_loss_yet_has_an_empty_curve_per_run(storage: Storage) -> None:
    sweep, runs = storage.create_sweep("s", configs(2), ignore)

    assert {run_id: curve.tolist() for run_id, curve in storage.sweep_losses(sweep.id).items()} == {
        run.id: [] for run in runs
    }


def test_rewriting_part_of_a_long_curve_replaces_exactly_those_epochs(storage: Storage) -> None:
    _, (run, neighbour) = storage.create_sweep("s", configs(2), ignore)
    for started in (run, neighbour):
        start_run(storage, started.id, "w")
    first = np.random.default_rng(1).random(5_000)
    write_losses(storage, run.id, 0, first, attempt=1)  # a numpy array is a sequence of floats too
    write_losses(storage, neighbour.id, 0, [9.0] * 10, attempt=1)

    write_losses(storage, run.id, 4_000, [0.5] * 1_500, attempt=1)  # overlaps the end and goes past it

    expected = np.concatenate([first[:4_000], [0.5] * 1_500])
    assert storage.run_losses(run.id).tolist() == expected.tolist()
    assert storage.run_losses(neighbour.id).tolist() == [9.0] * 10
    assert storage.sweep_losses(run.sweep_id)[run.id].tolist() == expected.tolist()
    assert storage.get_run(run.id).epochs_done == 5_500


def test_write_losses_with_no_values_only_renews_the_lease(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    started = start_run(storage, run.id, "w")
    write_losses(storage, run.id, 0, [2.0, 1.0], attempt=1)
    time.sleep(0.01)

    assert write_losses(storage, run.id, 2, [], attempt=1)

    renewed = storage.get_run(run.id)
    assert (renewed.epochs_done, renewed.best_loss) == (2, 1.0)
    assert renewed.heartbeat_at > started.heartbeat_at


def test_losses_must_be_a_flat_sequence(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    with pytest.raises(ValueError, match="flat"):
        write_losses(storage, run.id, 0, [[1.0, 2.0]])


@pytest.mark.parametrize("batch", [3, 1_000])  # PostgreSQL writes a few losses and many in different ways
def test_a_new_attempt_waits_for_a_batch_being_written_and_then_deletes_it(storage: Storage, batch: int) -> None:
    """The old attempt's batch and the new attempt's start never interleave: no loss of attempt 1 survives."""
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "old")
    with ThreadPoolExecutor(4) as pool:
        writes = [pool.submit(write_losses, storage, run.id, batch * i, [1.0] * batch, attempt=1) for i in range(3)]
        restarted = pool.submit(start_run, storage, run.id, "new")
        [write.result() for write in writes]
        assert restarted.result().attempts == 2

    assert storage.run_losses(run.id).size == 0  # a batch either committed before the restart, or was refused
    assert write_losses(storage, run.id, 0, [0.5], attempt=1) is False
    assert write_losses(storage, run.id, 0, [0.5], attempt=2)
    assert storage.run_losses(run.id).tolist() == [0.5]


def test_finish_run_can_store_the_last_losses_with_the_outcome(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    attempt = start_run(storage, run.id, "w").attempts
    write_losses(storage, run.id, 0, [4.0, 3.0], attempt=attempt)

    assert finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=1.0, attempt=attempt,
                              first_epoch=2, losses=[2.0, 1.0])

    finished = storage.get_run(run.id)
    assert (finished.status, finished.final_loss, finished.epochs_done, finished.best_loss) == (
        RunStatus.SUCCEEDED, 1.0, 4, 1.0)
    assert storage.run_losses(run.id).tolist() == [4.0, 3.0, 2.0, 1.0]


def test_finish_run_stores_no_last_losses_for_a_cancelled_run_or_a_stale_attempt(storage: Storage) -> None:
    sweep, (cancelled, taken_over) = storage.create_sweep("s", configs(2), ignore)
    for run in (cancelled, taken_over):
        start_run(storage, run.id, "w")
    start_run(storage, taken_over.id, "newer")
    storage.cancel_sweep(sweep.id)

    for run in (cancelled, taken_over):
        assert finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=1.0, attempt=1, losses=[1.0]) is False
        assert storage.get_run(run.id).status == RunStatus.CANCELLED
        assert storage.run_losses(run.id).size == 0


def test_a_long_batch_comes_back_bit_for_bit_too(storage: Storage) -> None:
    """Long batches take another path on PostgreSQL (binary COPY) than a few losses do."""
    values = np.random.default_rng(2).random(1_000) * 10.0 ** np.arange(-300, 300, 0.6)
    values[:4] = [0.1 + 0.2, 5e-324, 1.7976931348623157e308, 0.0]
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    write_losses(storage, run.id, 0, values.tolist())

    for read in (storage.run_losses(run.id), storage.sweep_losses(run.sweep_id)[run.id]):
        assert read.view(np.uint64).tolist() == values.view(np.uint64).tolist()
    assert storage.get_run(run.id).best_loss == 0.0


def test_best_runs_picks_each_sweeps_lowest_loss_among_runs_that_neither_diverged_nor_failed(storage: Storage) -> None:
    sweep, (diverged, failed, good, better) = storage.create_sweep("s", configs(4), ignore)
    other, (unstarted,) = storage.create_sweep("other", configs(1), ignore)
    for run, loss in ((diverged, 0.1), (failed, 0.2), (good, 0.5), (better, 0.4)):
        start_run(storage, run.id, "w")
        write_losses(storage, run.id, 0, [1.0, loss], attempt=1)
    finish_run(storage, diverged.id, RunStatus.DIVERGED, diverged_at=2, attempt=1)
    finish_run(storage, failed.id, RunStatus.FAILED, error="boom", attempt=1)

    best = storage.best_runs([sweep.id, other.id])

    assert best.keys() == {sweep.id}  # the other sweep has no loss yet
    assert (best[sweep.id].id, best[sweep.id].best_loss) == (better.id, 0.4)
    assert storage.best_runs([]) == {}


# Batches: runs trained as one computation, one job per batch


def test_a_sweep_stores_its_batches_and_enqueues_a_job_per_batch(storage: Storage) -> None:
    enqueued = Enqueued()
    _, runs = storage.create_sweep("batched", configs(5), enqueued, batch_sizes=[3, 2])

    assert [(run.batch, run.batch_slot, run.batch_size) for run in runs] == [
        (0, 0, 3), (0, 1, 3), (0, 2, 3), (1, 0, 2), (1, 1, 2)]
    assert [(job.run_ids, job.batch_size) for job in enqueued] == [
        (tuple(run.id for run in runs[:3]), 3), (tuple(run.id for run in runs[3:]), 2)]
    with pytest.raises(ValueError, match="add up"):
        storage.create_sweep("bad", configs(5), ignore, batch_sizes=[3, 3])


def test_start_job_starts_what_is_left_of_a_batch_and_returns_all_of_it(storage: Storage) -> None:
    sweep, runs = storage.create_sweep("s", configs(4), ignore, batch_sizes=[4])
    start_run(storage, runs[0].id, "w")
    finish_run(storage, runs[0].id, RunStatus.SUCCEEDED, final_loss=1.0)

    job = storage.start_job([run.id for run in runs[:3]], "worker", lease=timedelta(seconds=30))

    assert [run.id for run in job.batch] == [run.id for run in runs]  # the whole batch, in slot order
    assert job.started == {runs[1].id, runs[2].id}  # not the finished run, nor the one not asked for
    assert [run.status for run in job.batch] == [RunStatus.SUCCEEDED, RunStatus.RUNNING, RunStatus.RUNNING,
                                                 RunStatus.QUEUED]
    assert storage.start_job([runs[1].id, runs[2].id], "duplicate", lease=timedelta(seconds=30)) is None
    _, other = storage.create_sweep("other", configs(1), ignore)
    with pytest.raises(ValueError, match="one batch"):
        storage.start_job([runs[3].id, other[0].id], "w")


def test_record_writes_a_whole_job_in_one_call_and_refuses_runs_no_longer_its_own(storage: Storage) -> None:
    sweep, (a, b, c) = storage.create_sweep("s", configs(3), ignore, batch_sizes=[3])
    job = storage.start_job([a.id, b.id, c.id], "w")
    start_run(storage, c.id, "newer")  # c is taken over by a newer attempt

    kept = storage.record([
        LossWrite(a.id, 0, np.array([3.0, 2.0]), attempt=1, outcome=Outcome(RunStatus.SUCCEEDED, final_loss=2.0)),
        LossWrite(b.id, 0, np.array([5.0]), attempt=1, outcome=Outcome(RunStatus.DIVERGED, 5.0, diverged_at=1)),
        LossWrite(c.id, 0, np.array([9.0]), attempt=1),
    ])

    assert kept == {a.id, b.id} and job.started == {a.id, b.id, c.id}
    curves = storage.sweep_losses(sweep.id)
    assert (curves[a.id].tolist(), curves[b.id].tolist(), curves[c.id].tolist()) == ([3.0, 2.0], [5.0], [])
    assert [(run.status, run.final_loss, run.diverged_at) for run in storage.list_runs(sweep.id)] == [
        (RunStatus.SUCCEEDED, 2.0, None), (RunStatus.DIVERGED, 5.0, 1), (RunStatus.RUNNING, None, None)]


def test_a_job_whose_worker_died_is_requeued_whole_then_split_until_the_poison_run_is_alone(storage: Storage) -> None:
    _, runs = storage.create_sweep("s", configs(4), ignore, batch_sizes=[4])
    ids = [run.id for run in runs]
    poison = ids[1]
    lease = timedelta(seconds=0.05)
    jobs_seen: list[list[tuple[int, ...]]] = []
    to_start = [tuple(ids)]
    while to_start:
        for run_ids in to_start:  # every job that holds the poison run dies with its worker
            storage.start_job(run_ids, f"worker for {run_ids}")
            if poison not in run_ids:
                for run_id in run_ids:
                    finish_run(storage, run_id, RunStatus.SUCCEEDED, final_loss=1.0)
        time.sleep(0.1)
        enqueued = Enqueued()
        storage.requeue_stale_runs(lease, 2, enqueued)
        to_start = [job.run_ids for job in enqueued]
        jobs_seen.append(sorted(to_start))

    assert jobs_seen == [[tuple(ids)], [tuple(ids[:2]), tuple(ids[2:])], [(ids[0],), (ids[1],)], []]
    statuses = {run.id: (run.status, run.attempts) for run in storage.list_runs(runs[0].sweep_id)}
    assert statuses == {ids[0]: (RunStatus.SUCCEEDED, 4), poison: (RunStatus.FAILED, 4),
                        ids[2]: (RunStatus.SUCCEEDED, 3), ids[3]: (RunStatus.SUCCEEDED, 3)}


def test_a_retry_enqueues_the_batch_again_as_one_job(storage: Storage) -> None:
    sweep, runs = storage.create_sweep("s", configs(4), ignore, batch_sizes=[2, 2])
    storage.cancel_sweep(sweep.id)

    enqueued = Enqueued()
    storage.retry_sweep(sweep.id, enqueued)

    assert [job.run_ids for job in enqueued] == [(runs[0].id, runs[1].id), (runs[2].id, runs[3].id)]


def test_losses_are_stored_a_chunk_per_write(storage: Storage) -> None:
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    for first in range(0, 3000, 1000):
        write_losses(storage, run.id, first, np.arange(first, first + 1000, dtype=np.float64), attempt=1)

    engine = make_engine(storage.url)
    with engine.connect() as connection:
        chunks = connection.execute(text("SELECT run_id, first_epoch FROM loss_chunks ORDER BY first_epoch")).all()
    engine.dispose()
    assert chunks == [(run.id, 0), (run.id, 1000), (run.id, 2000)]
    assert storage.run_losses(run.id).tolist() == list(range(3000))


def test_postgresql_keeps_a_losses_view_of_one_row_per_epoch(postgres_schema) -> None:
    storage = Storage(postgres_schema)
    storage.upgrade()
    _, (run,) = storage.create_sweep("s", configs(1), ignore)
    start_run(storage, run.id, "w")
    write_losses(storage, run.id, 0, [3.0, 2.0], attempt=1)
    write_losses(storage, run.id, 2, [1.0], attempt=1)
    engine = make_engine(postgres_schema)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT run_id, epoch, value FROM losses ORDER BY epoch")).all()
    engine.dispose()
    storage.close()
    assert rows == [(run.id, 0, 3.0), (run.id, 1, 2.0), (run.id, 2, 1.0)]


def test_a_message_older_than_its_runs_last_queueing_starts_nothing(storage: Storage) -> None:
    enqueued = Enqueued()
    _, runs = storage.create_sweep("s", configs(4), enqueued, batch_sizes=[4])
    (first,) = enqueued
    storage.start_job(first.run_ids, "dies", queued_at=first.queued_at)
    time.sleep(0.1)
    split = Enqueued()
    storage.requeue_stale_runs(timedelta(seconds=0.05), 1, split)  # split in two halves

    # Celery hands the killed job's message back late: it must not start the halves' runs as one job again.
    assert storage.start_job(first.run_ids, "late", queued_at=first.queued_at) is None
    halves = [storage.start_job(job.run_ids, "new", queued_at=job.queued_at) for job in split]
    assert [sorted(job.started) for job in halves] == [[runs[0].id, runs[1].id], [runs[2].id, runs[3].id]]
    assert {job.queued_at for job in split} == {storage.get_run(runs[0].id).queued_at}
    assert split[0].queued_at > first.queued_at


def test_a_sweeps_version_changes_with_every_change_to_its_runs_and_only_then(storage: Storage) -> None:
    sweep, (first, second) = storage.create_sweep("s", configs(2), ignore)
    other, (elsewhere,) = storage.create_sweep("other", configs(1), ignore)
    seen = [storage.sweep_version(sweep.id)]

    def changed() -> bool:
        seen.append(storage.sweep_version(sweep.id))
        return seen[-1] != seen[-2]

    start_run(storage, first.id, "w")
    assert changed()
    write_losses(storage, first.id, 0, [3.0, 2.0])
    assert changed()
    finish_run(storage, first.id, RunStatus.FAILED, error="boom")
    assert changed()
    storage.list_runs(sweep.id), storage.sweep_losses(sweep.id), storage.get_sweep(sweep.id)
    start_run(storage, elsewhere.id, "w")  # another sweep's run
    assert not changed()
    storage.cancel_sweep(sweep.id)  # cancels the second run
    assert changed()
    storage.retry_sweep(sweep.id, ignore)
    assert changed()
    start_run(storage, second.id, "w")
    finish_run(storage, second.id, RunStatus.SUCCEEDED, final_loss=0.5, losses=[0.5])
    assert changed()
    assert len(set(seen)) == len(seen) - 1  # never back to an earlier state's number
    with pytest.raises(NotFound):
        storage.sweep_version(10**9)


def test_a_sweeps_overview_has_its_counts_task_jobs_and_best_run(storage: Storage) -> None:
    sweep, runs = storage.create_sweep("s", configs(7), ignore, batch_sizes=[3, 3, 1])
    empty = storage.sweep_overview(sweep.id)
    assert (empty.sweep.counts["queued"], empty.task, empty.n_jobs, empty.best_run) == (7, configs(7)[0], 3, None)
    for run, loss in zip(runs[:3], (0.5, 0.25, 0.75), strict=True):
        start_run(storage, run.id, "w")
        finish_run(storage, run.id, RunStatus.SUCCEEDED, final_loss=loss, losses=[loss])
    overview = storage.sweep_overview(sweep.id)
    assert overview.best_run.id == runs[1].id and overview.sweep.counts["succeeded"] == 3
    with pytest.raises(NotFound):
        storage.sweep_overview(10**9)
