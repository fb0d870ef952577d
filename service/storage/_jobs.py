"""Jobs and leases: an attempt starts a batch's runs; runs whose worker went quiet, or whose message was
lost, are taken back and queued again; a poison run is isolated by halving its job."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import delete, or_, select, update

from gradsweep.service.domain.records import RunStatus, StartedJob
from gradsweep.service.storage._rows import (
    Aggregate, _CHUNKS, Enqueue, _enqueued, _FINISHED, _job, _now, _run, _runs, _RUNS, _search,
)
from gradsweep.service.storage.errors import NotFound


class Jobs(Aggregate):
    """The jobs and leases part of `Storage`."""

    def start_job(self, run_ids: Sequence[int], worker: str, *, lease: timedelta | None = None,
                  queued_at: datetime | None = None) -> StartedJob | None:
        """Starts a new attempt, from epoch 0, of each of these runs (all of one batch) that has anything to do.

        Nothing to do: the run has finished, or (with `lease`) another attempt is
        running it and has written within the lease, so this message is a duplicate,
        or (with `queued_at`, the job's) it was queued again since, in another job.
        A running run whose worker went quiet is `requeue_stale_runs`'s to take back.
        The losses of earlier attempts are deleted: a redone run writes its curve
        afresh. Returns the whole batch, for the worker to compute it as it always
        is, and which runs were started; None if none was. Raises NotFound if none
        of the runs exists.
        """
        now = _now()
        startable = _RUNS.c.status.not_in(_FINISHED)
        if lease is not None:
            startable &= or_(_RUNS.c.status != RunStatus.RUNNING.value, _RUNS.c.heartbeat_at.is_(None),
                             _RUNS.c.heartbeat_at < now - lease)
        if queued_at is not None:
            startable &= or_(_RUNS.c.queued_at.is_(None), _RUNS.c.queued_at <= queued_at)
        start = (
            update(_RUNS)
            .where(_RUNS.c.id.in_(run_ids), startable)
            .values(status=RunStatus.RUNNING.value, attempts=_RUNS.c.attempts + 1, worker=worker, started_at=now,
                    heartbeat_at=now, finished_at=None, epochs_done=0, final_loss=None, best_loss=None,
                    diverged_at=None, error=None)
            .returning(*_RUNS.c)
        )
        with self._transaction(write=True) as connection:
            started = connection.execute(start).all()
            if not started:
                if not self._wait_for_runs(connection, run_ids):
                    raise NotFound(f"no run of {list(run_ids)}")
                started = connection.execute(start).all()  # the runs are visible now: anything to do?
            if not started:
                return None
            if len({(row.sweep_id, row.batch) for row in started}) > 1:
                raise ValueError(f"runs {list(run_ids)} are not of one batch")
            redone = [row.id for row in started if row.attempts > 1]
            if redone:
                connection.execute(delete(_CHUNKS).where(_CHUNKS.c.run_id.in_(redone)))
            if len(started) == started[0].batch_size:  # the whole batch, as it usually is
                batch = [_run(row) for row in sorted(started, key=lambda row: row.id)]
            else:
                batch = _runs(connection, _RUNS.c.sweep_id == started[0].sweep_id, _RUNS.c.batch == started[0].batch)
            return StartedJob(batch=batch, started=frozenset(row.id for row in started),
                              search=_search(connection, started[0].sweep_id))

    def requeue_stale_runs(self, lease: timedelta, max_attempts: int, enqueue: Enqueue) -> tuple[list[int], list[int]]:
        """Takes back running runs whose worker has not written within `lease`: its worker is gone.

        The runs one worker held of one batch (its job) are queued again and
        enqueued together, as long as they have had fewer than `max_attempts`
        attempts. After that the job is split in two, each half its own job, so
        that a run which kills every worker that trains it (a poison run) ends up
        alone, and only it is marked failed once it has had `max_attempts`
        attempts by itself. Returns (requeued ids, failed ids). Several workers
        may call this at once: each stale run is taken back by one of them.
        """
        now = _now()
        with self._transaction(write=True) as connection:
            stale = connection.execute(
                select(_RUNS)
                .where(_RUNS.c.status == RunStatus.RUNNING.value, _RUNS.c.heartbeat_at < now - lease)
                .order_by(_RUNS.c.sweep_id, _RUNS.c.batch, _RUNS.c.worker, _RUNS.c.batch_slot)
                .with_for_update(skip_locked=True)
            ).all()
            jobs: list[list[Any]] = []
            failed: list[Any] = []
            for _, held in groupby(stale, key=lambda row: (row.sweep_id, row.batch, row.worker)):
                held = list(held)
                if max(row.attempts for row in held) < max_attempts:
                    jobs.append(held)
                elif len(held) > 1:
                    jobs += [held[: len(held) // 2], held[len(held) // 2:]]
                else:
                    failed += held
            for row in failed:
                connection.execute(update(_RUNS).where(_RUNS.c.id == row.id).values(
                    status=RunStatus.FAILED.value, finished_at=now,
                    error=(f"its worker stopped responding during each of {row.attempts} attempts "
                           "(killed, or out of memory?); not retried again")))
            requeued = [row.id for job in jobs for row in job]
            if requeued:
                queued = {row.id: _run(row) for row in connection.execute(
                    update(_RUNS).where(_RUNS.c.id.in_(requeued))
                    .values(status=RunStatus.QUEUED.value, queued_at=now).returning(*_RUNS.c))}
                enqueue([_job([queued[row.id] for row in job]) for job in jobs])
            return sorted(requeued), sorted(row.id for row in failed)

    def requeue_unclaimed_runs(self, older_than: timedelta, enqueue: Enqueue, limit: int = 1000) -> list[int]:
        """Enqueues again runs queued for longer than `older_than`; returns their ids.

        For a caller that knows the broker's queue is empty, so that such a run's
        message is lost (a worker killed with it in hand) rather than waiting its
        turn. If the message was only late, the run now has two: the second finds
        it taken or done and does nothing.
        """
        now = _now()
        with self._transaction(write=True) as connection:
            run_ids = connection.scalars(
                update(_RUNS)
                .where(_RUNS.c.id.in_(
                    select(_RUNS.c.id)
                    .where(_RUNS.c.status == RunStatus.QUEUED.value, _RUNS.c.queued_at < now - older_than)
                    .order_by(_RUNS.c.id).limit(limit)
                    .scalar_subquery()
                ))
                .values(queued_at=now)
                .returning(_RUNS.c.id)
            ).all()
            return _enqueued(connection, run_ids, enqueue)
