"""`Storage`: every read and write of sweeps, runs and losses, each in one transaction."""

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any, cast

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import aliased

from service.storage.access import Access, audit
from service.storage.engine import BEGIN_IMMEDIATE, database_url, make_engine
from service.storage.errors import DatabaseUnavailable, NotFound, SchemaOutOfDate, StorageError, SweepActive
from service.storage.models import LossChunkRow, RungRow, RunRow, SweepRow
from service.domain.records import (
    Job, LossWrite, Outcome, Run, RunConfig, RunFilter, RunPage, RungLoss, RunStatus, StartedJob, Sweep,
    SweepOverview,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

Enqueue = Callable[[list[Job]], None]

_SWEEPS = cast(Table, SweepRow.__table__)
_RUNS = cast(Table, RunRow.__table__)
_CHUNKS = cast(Table, LossChunkRow.__table__)
_RUNGS = cast(Table, RungRow.__table__)
_CONFIG_FIELDS = [field.name for field in fields(RunConfig)]
_FINISHED = [status.value for status in RunStatus if status.is_finished]
# Key of the PostgreSQL advisory lock that `create_sweep` holds shared; see `_wait_for_runs`.
_SWEEP_CREATION_LOCK = 0x67726164


def alembic_config(url: str | URL) -> Config:
    """Alembic's configuration, built in code so that no alembic.ini has to be found at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config is a ConfigParser, which would read the "%" of URL escapes as interpolation.
    rendered = database_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


class Storage(Access):
    """Sweeps, runs and loss curves in SQLite or PostgreSQL.

    Each public method is one transaction and returns frozen records, never rows.
    Methods that take `enqueue` call it inside their transaction, so that runs are
    stored and queued together or not at all; `enqueue` gets the runs as jobs, one
    per batch (see `Job`), and is never called with none.
    """

    def __init__(self, url: str | URL, *, pre_ping: bool = True, synchronous_commit: bool = True) -> None:
        """`pre_ping=False` saves a round trip per transaction, for callers that retry on DatabaseUnavailable.

        `synchronous_commit=False` (PostgreSQL) lets a commit return before it is on
        disk. A database crash may then forget the last commits, up to about 0.6 s
        of them; nothing else is at risk. It is for the workers, whose every write
        can be lost that way without losing a run: a forgotten start or finish
        leaves the run queued or running, which the reaper takes back; a forgotten
        batch of losses stops the attempt at its next write (see `_may_write`); and
        the redone run is bit-identical.
        """
        self.url = database_url(url)
        self._engine = make_engine(self.url, pre_ping=pre_ping, synchronous_commit=synchronous_commit)
        backend = self._engine.dialect.name
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"gradsweep stores results in SQLite or PostgreSQL, not {backend}")
        self._is_postgresql = backend == "postgresql"

    def close(self) -> None:
        """Closes the pooled connections."""
        self._engine.dispose()

    # Schema

    def check_schema(self) -> None:
        """Raises SchemaOutOfDate unless the database is at the newest revision: better than a missing column later."""
        heads = set(ScriptDirectory.from_config(alembic_config(self.url)).get_heads())
        with self._transaction() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
        if current != heads:
            raise SchemaOutOfDate(
                f"the database is at revision {sorted(current) or 'none'}, gradsweep needs {sorted(heads)}: "
                "run `gradsweep db upgrade`"
            )

    def upgrade(self, revision: str = "head") -> None:
        """Migrates the database to the newest schema (what `gradsweep db upgrade` runs), or to `revision`."""
        with _translated_errors():
            command.upgrade(alembic_config(self.url), revision)

    def ping(self) -> None:
        """Raises DatabaseUnavailable if the database cannot be reached; for health checks."""
        with self._transaction() as connection:
            connection.execute(select(1))

    # Sweeps

    def create_sweep(
        self, name: str, configs: Sequence[RunConfig], enqueue: Enqueue, *, batch_sizes: Sequence[int] | None = None,
        search: dict | None = None, points: Sequence[int] | None = None, searching: bool = False,
        created_by: str | None = None,
    ) -> tuple[Sweep, list[Run]]:
        """Stores a sweep with one queued run per config and enqueues them: all of it or, if anything raises, none.

        Consecutive configs form batches of `batch_sizes` runs (by default a batch per
        run); a batch is trained as one computation, one job on the queue. A worker
        may get a job before this commits; `start_job` waits for the commit. `search`
        is kept with the sweep: how its runs were chosen (JSON values); `points`, one
        per config, which of the search's points each run trains; `searching`, whether
        more runs are to come (`add_runs`); `created_by`, the name of the token that
        submitted it, kept with the sweep and in the audit log.
        """
        if not configs:
            raise ValueError("a sweep needs at least one run")
        batch_sizes = [1] * len(configs) if batch_sizes is None else list(batch_sizes)
        if sum(batch_sizes) != len(configs) or min(batch_sizes) < 1:
            raise ValueError(f"batch sizes {batch_sizes} do not add up to the sweep's {len(configs)} runs")
        points = [None] * len(configs) if points is None else list(points)
        if len(points) != len(configs):
            raise ValueError(f"{len(points)} points for {len(configs)} runs")
        now = _now()
        with self._transaction(write=True) as connection:
            if self._is_postgresql:
                connection.execute(select(func.pg_advisory_xact_lock_shared(_SWEEP_CREATION_LOCK)))
            sweep_id = connection.execute(
                insert(_SWEEPS).values(name=name, created_at=now, search=search, searching=searching,
                                       created_by=created_by)
                .returning(_SWEEPS.c.id)).scalar_one()
            if created_by is not None:
                audit(connection, created_by, "create", sweep_id)
            _insert_runs(connection, sweep_id, configs, points, batch_sizes, 0, now)
            runs = _runs(connection, _RUNS.c.sweep_id == sweep_id)
            enqueue(_jobs(runs))
            return _sweeps(connection, _SWEEPS.c.id == sweep_id)[0], runs

    def add_runs(self, sweep_id: int, configs: Sequence[RunConfig], points: Sequence[int], enqueue: Enqueue, *,
                 batch_sizes: Sequence[int], searching: bool) -> list[Run]:
        """Adds a wave of runs to a searching sweep and enqueues them, unless it has them already; returns them.

        A wave is its points, from the sweep's next one on: proposed twice (by two workers
        that ended its last runs at once, or again after a proposer was killed), it is
        stored once, and the second call returns []. `searching`: whether waves are to come.
        """
        if sum(batch_sizes) != len(configs) or len(points) != len(configs) or not configs:
            raise ValueError("a wave needs runs, one point and one batch slot each")
        now = _now()
        with self._transaction(write=True) as connection:
            if self._is_postgresql:  # as create_sweep: a worker handed a job before this commits waits for it
                connection.execute(select(func.pg_advisory_xact_lock_shared(_SWEEP_CREATION_LOCK)))
            is_searching = connection.scalar(
                select(_SWEEPS.c.searching).where(_SWEEPS.c.id == sweep_id).with_for_update())
            if is_searching is None:
                raise NotFound(f"no sweep {sweep_id}")
            in_sweep = _RUNS.c.sweep_id == sweep_id
            made = connection.scalar(select(func.max(_RUNS.c.point)).where(in_sweep))
            if not is_searching or min(points) != (-1 if made is None else made) + 1:
                return []
            first_batch = connection.scalar(select(func.max(_RUNS.c.batch)).where(in_sweep)) + 1
            _insert_runs(connection, sweep_id, configs, points, batch_sizes, first_batch, now)
            connection.execute(update(_SWEEPS).where(_SWEEPS.c.id == sweep_id).values(searching=searching))
            runs = _runs(connection, in_sweep, _RUNS.c.batch >= first_batch)
            enqueue(_jobs(runs))
            return runs

    def waiting_searches(self) -> list[int]:
        """Searching sweeps none of whose runs is queued or running: their next wave is due."""
        active = select(_RUNS.c.id).where(_RUNS.c.sweep_id == _SWEEPS.c.id,
                                          _RUNS.c.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
        with self._transaction() as connection:
            return list(connection.scalars(
                select(_SWEEPS.c.id).where(_SWEEPS.c.searching, ~active.exists()).order_by(_SWEEPS.c.id)))

    def list_sweeps(self, limit: int | None = None, before: int | None = None) -> list[Sweep]:
        """Sweeps newest first (by id), at most `limit` of them, only those older than sweep `before`.

        A cursor, not an offset: sweeps created while a client pages do not shift its next page.
        """
        ids = select(_SWEEPS.c.id).order_by(_SWEEPS.c.id.desc()).limit(limit)
        if before is not None:
            ids = ids.where(_SWEEPS.c.id < before)
        with self._transaction() as connection:
            return _sweeps(connection, _SWEEPS.c.id.in_(ids.scalar_subquery()))

    def sweep_overview(self, sweep_id: int) -> SweepOverview:
        """The sweep with its counts, its task, its number of jobs and its best run: a summary, in one transaction."""
        with self._transaction() as connection:
            found = _sweeps(connection, _SWEEPS.c.id == sweep_id)
            if not found:
                raise NotFound(f"no sweep {sweep_id}")
            task, n_jobs = _shape(connection, sweep_id)
            search = connection.scalar(select(_SWEEPS.c.search).where(_SWEEPS.c.id == sweep_id))
            return SweepOverview(sweep=found[0], task=task, n_jobs=n_jobs,
                                 best_run=_best_runs(connection, [sweep_id]).get(sweep_id), search=search)

    def get_sweep(self, sweep_id: int) -> Sweep:
        with self._transaction() as connection:
            found = _sweeps(connection, _SWEEPS.c.id == sweep_id)
        if not found:
            raise NotFound(f"no sweep {sweep_id}")
        return found[0]

    def cancel_sweep(self, sweep_id: int, *, actor: str | None = None) -> int:
        """Cancels the sweep's queued and running runs, and its waves to come; returns how many runs.
        Workers notice at their next write. `actor`, who asked, goes to the audit log."""
        with self._transaction(write=True) as connection:
            _require(connection, _SWEEPS, sweep_id)
            if actor is not None:
                audit(connection, actor, "cancel", sweep_id)
            connection.execute(update(_SWEEPS).where(_SWEEPS.c.id == sweep_id).values(searching=False))
            cancelled = connection.execute(
                update(_RUNS)
                .where(_RUNS.c.sweep_id == sweep_id, _RUNS.c.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
                .values(status=RunStatus.CANCELLED.value, finished_at=_now())
                .returning(_RUNS.c.id)
            )
            return len(cancelled.all())

    def retry_sweep(self, sweep_id: int, enqueue: Enqueue, *, actor: str | None = None) -> list[int]:
        """Queues the sweep's failed and cancelled runs again and enqueues them; returns their ids."""
        with self._transaction(write=True) as connection:
            _require(connection, _SWEEPS, sweep_id)
            if actor is not None:
                audit(connection, actor, "retry", sweep_id)
            run_ids = connection.scalars(
                update(_RUNS)
                .where(_RUNS.c.sweep_id == sweep_id, _RUNS.c.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]))
                .values(status=RunStatus.QUEUED.value, finished_at=None, error=None, queued_at=_now())
                .returning(_RUNS.c.id)
            ).all()
            return _enqueued(connection, run_ids, enqueue)

    def delete_sweep(self, sweep_id: int, *, actor: str | None = None) -> int:
        """Deletes the sweep, its runs and their losses; returns how many runs. Refused while a run is running.

        The runs are locked first, so that no worker starts one between the check and the
        delete (SQLite's write transaction locks the whole database). A queued run's message
        then names a run that is gone, which a worker drops.
        """
        with self._transaction(write=True) as connection:
            _require(connection, _SWEEPS, sweep_id)
            statuses = connection.scalars(
                select(_RUNS.c.status).where(_RUNS.c.sweep_id == sweep_id).with_for_update()).all()
            running = sum(status == RunStatus.RUNNING for status in statuses)
            if running:
                raise SweepActive(f"sweep {sweep_id} has {running} running runs: cancel it first")
            run_ids = select(_RUNS.c.id).where(_RUNS.c.sweep_id == sweep_id).scalar_subquery()
            connection.execute(delete(_CHUNKS).where(_CHUNKS.c.run_id.in_(run_ids)))
            connection.execute(delete(_RUNGS).where(_RUNGS.c.sweep_id == sweep_id))
            connection.execute(delete(_RUNS).where(_RUNS.c.sweep_id == sweep_id))
            connection.execute(delete(_SWEEPS).where(_SWEEPS.c.id == sweep_id))
            if actor is not None:
                audit(connection, actor, "delete", sweep_id)
            return len(statuses)

    # Runs

    def list_runs(self, sweep_id: int) -> list[Run]:
        with self._transaction() as connection:
            _require(connection, _SWEEPS, sweep_id)
            return _runs(connection, _RUNS.c.sweep_id == sweep_id)

    def runs_page(self, sweep_id: int, *, limit: int, offset: int = 0, sort: str = "id",
                  descending: bool = False, where: RunFilter = RunFilter()) -> RunPage:
        """A page of the sweep's runs that match `where`, sorted by `sort` (one of RUN_SORT_KEYS), and their total.

        An offset, not a cursor: a sweep's runs are all created with it, so the set never
        grows, and a table can jump to any page; sorted by a loss, the order may change while
        runs finish, which a client sees as a refreshed page.
        """
        conditions = [_RUNS.c.sweep_id == sweep_id]
        if where.statuses is not None:
            conditions.append(_RUNS.c.status.in_([status.value for status in where.statuses]))
        if where.optimizers is not None:
            conditions.append(_RUNS.c.optimizer.in_(where.optimizers))
        if where.min_learning_rate is not None:
            conditions.append(_RUNS.c.learning_rate >= where.min_learning_rate)
        if where.max_learning_rate is not None:
            conditions.append(_RUNS.c.learning_rate <= where.max_learning_rate)
        key = _RUNS.c[sort]
        order = [key.desc().nulls_last() if descending else key.asc().nulls_last(), _RUNS.c.id]
        with self._transaction() as connection:
            _require(connection, _SWEEPS, sweep_id)
            total = connection.scalar(select(func.count()).select_from(_RUNS).where(*conditions))
            if self._is_postgresql or descending or not key.nullable:
                rows = connection.execute(select(_RUNS).where(*conditions).order_by(*order).limit(limit)
                                          .offset(offset)).all()
            else:
                rows = _losses_first(connection, conditions, key, limit, offset)
            return RunPage(runs=[_run(row) for row in rows], total=total or 0)

    def best_runs(self, sweep_ids: Sequence[int]) -> dict[int, Run]:
        """Each sweep's run with the lowest loss so far, of those that neither diverged nor failed, by sweep id.

        One query for a whole page of sweeps, each sweep's best run found by the
        (sweep_id, best_loss, id) index rather than by ranking all its runs. A sweep with
        no such run is left out; of runs with the same loss, the first one wins.
        """
        with self._transaction() as connection:
            return _best_runs(connection, sweep_ids)

    def sweep_version(self, sweep_id: int) -> int:
        """A number that changes whenever anything about the sweep's runs or losses does: the sum of its run versions.

        Every UPDATE of a run raises its version (models.RunRow.version), and every change
        of losses comes with one, so two equal numbers mean the same runs and curves.
        """
        with self._transaction() as connection:
            _require(connection, _SWEEPS, sweep_id)
            return connection.scalar(select(func.coalesce(func.sum(_RUNS.c.version), 0))
                                     .where(_RUNS.c.sweep_id == sweep_id))

    def get_run(self, run_id: int) -> Run:
        with self._transaction() as connection:
            found = _runs(connection, _RUNS.c.id == run_id)
        if not found:
            raise NotFound(f"no run {run_id}")
        return found[0]

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
            search = connection.scalar(select(_SWEEPS.c.search).where(_SWEEPS.c.id == started[0].sweep_id))
            return StartedJob(batch=batch, started=frozenset(row.id for row in started), search=search)

    def judge_rung(self, sweep_id: int, rung: int, losses: Sequence[RungLoss],
                   keeps: Callable[[float, list[float]], bool]) -> set[int]:
        """Decides which of these points (reaching `rung` together) go on; returns those that stop.

        A point judged at this rung before (by an earlier attempt of its job, or by
        another batch of its runs) gets that decision again, so a redone job stops the
        same runs where they stopped. The others are judged by `keeps(loss, rivals)`,
        rivals being the losses there of every point of the same bracket judged before
        and of these. Judgements of a sweep take turns (the sweep's row is locked), so
        each sees all those before it.
        """
        if not losses:
            return set()
        with self._transaction(write=True) as connection:
            connection.execute(select(_SWEEPS.c.id).where(_SWEEPS.c.id == sweep_id).with_for_update())
            judged = dict(connection.execute(
                select(_RUNGS.c.point, _RUNGS.c.kept).where(
                    _RUNGS.c.sweep_id == sweep_id, _RUNGS.c.point.in_([entry.point for entry in losses]),
                    _RUNGS.c.rung == rung)).all())
            new = [entry for entry in losses if entry.point not in judged]
            for bracket, group in groupby(sorted(new, key=lambda entry: entry.bracket), lambda entry: entry.bracket):
                group = list(group)
                rivals = connection.scalars(select(_RUNGS.c.loss).where(
                    _RUNGS.c.sweep_id == sweep_id, _RUNGS.c.bracket == bracket, _RUNGS.c.rung == rung)).all()
                rivals += [entry.loss for entry in group]
                for entry in group:
                    judged[entry.point] = keeps(entry.loss, rivals)
            if new:
                connection.execute(insert(_RUNGS), [
                    {"sweep_id": sweep_id, "point": entry.point, "rung": rung, "bracket": entry.bracket,
                     "loss": entry.loss, "kept": judged[entry.point]} for entry in new])
            return {point for point, kept in judged.items() if not kept}

    def start_run(self, run_id: int, worker: str, *, lease: timedelta | None = None) -> Run | None:
        """`start_job` for one run: the run, running for its new attempt, or None if there is nothing to do."""
        job = self.start_job([run_id], worker, lease=lease)
        return None if job is None else next(run for run in job.batch if run.id == run_id)

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

    # Losses

    def record(self, writes: Sequence[LossWrite]) -> set[int]:
        """Stores each write's losses and outcome, all in one transaction; returns the ids of the runs written.

        A run is not written, and its worker must stop training it, once it is
        cancelled, or (for a write with an `attempt`) once a newer attempt has
        started it, or when the write would leave a gap in its curve: an attempt
        writes its epochs in order, so a write may begin only at an epoch the run
        already has. Workers commit asynchronously (see `Storage`): if the database
        lost a batch, the next write finds the gap, the worker stops, and the
        reaper has the run redone rather than finished with a hole in its curve.
        A cancelled run keeps its status whatever the outcome: the user's cancel wins.

        Writing an epoch again replaces its value, so a write sent twice never
        duplicates a curve. The values must be finite: a loss that blew up is
        recorded as the run's `diverged_at`. Raises NotFound for an unknown run.
        """
        for write in writes:
            _check_finite(write.losses)
            if write.outcome is not None and write.outcome.final_loss is not None:
                _check_finite([write.outcome.final_loss])
        if not writes:
            return set()
        if len({write.run_id for write in writes}) < len(writes):
            raise ValueError("one write per run and call")
        now = _now()
        with self._transaction(write=True) as connection:
            # Locking the runs first keeps a new attempt from starting (and deleting their
            # losses) until these losses are committed.
            rows = {row.id: row for row in connection.execute(
                select(_RUNS).where(_RUNS.c.id.in_({write.run_id for write in writes}))
                .order_by(_RUNS.c.id).with_for_update())}
            for write in writes:
                if write.run_id not in rows:
                    raise NotFound(f"no run {write.run_id}")
            allowed = [write for write in writes if _may_write(rows[write.run_id], write)]
            if allowed:
                connection.execute(_UPDATE_RUN, [_updated(rows[write.run_id], write, now) for write in allowed])
                appended = [w for w in allowed if w.losses.size and w.first_epoch >= rows[w.run_id].epochs_done]
                rewritten = [w for w in allowed if w.losses.size and w.first_epoch < rows[w.run_id].epochs_done]
                chunks = [(w.run_id, w.first_epoch, w.losses) for w in appended]
                for write in rewritten:
                    chunks += self._spliced(connection, write)
                self._insert_chunks(connection, chunks)
            return {write.run_id for write in allowed}

    def write_losses(
        self, run_id: int, first_epoch: int, values: Sequence[float], *, attempt: int | None = None
    ) -> bool:
        """`record` for one run's losses of epochs first_epoch, first_epoch + 1, ...; False once the writer must stop."""
        return bool(self.record([LossWrite(run_id, first_epoch, _losses(values), attempt)]))

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        final_loss: float | None = None,
        diverged_at: int | None = None,
        error: str | None = None,
        attempt: int | None = None,
        first_epoch: int = 0,
        losses: Sequence[float] = (),
    ) -> bool:
        """`record` for how one run ended, with its last `losses` from `first_epoch` on; False if not recorded."""
        outcome = Outcome(RunStatus(status), final_loss, diverged_at, error)
        if not outcome.status.is_finished:
            raise ValueError(f"{status} is not a finished status")
        return bool(self.record([LossWrite(run_id, first_epoch, _losses(losses), attempt, outcome)]))

    def run_losses(self, run_id: int) -> np.ndarray:
        """The run's loss per epoch, as float64."""
        with self._transaction() as connection:
            _require(connection, _RUNS, run_id)
            return self._curves(connection, _CHUNKS.c.run_id == run_id).get(run_id, np.empty(0))

    def sweep_losses(self, sweep_id: int) -> dict[int, np.ndarray]:
        """Every run's loss curve, by run id (an empty curve for a run with no loss yet)."""
        with self._transaction() as connection:
            _require(connection, _SWEEPS, sweep_id)
            run_ids = connection.scalars(select(_RUNS.c.id).where(_RUNS.c.sweep_id == sweep_id).order_by(_RUNS.c.id))
            curves = dict.fromkeys(run_ids, np.empty(0))
            # IN, not a join, which SQLite would sort in a temporary table.
            in_sweep = _CHUNKS.c.run_id.in_(select(_RUNS.c.id).where(_RUNS.c.sweep_id == sweep_id))
            return curves | self._curves(connection, in_sweep)

    def loss_counts(self, sweep_id: int) -> dict[int, int]:
        """Each run's number of losses stored, by run id in id order: what `curve_pages` pages a sweep by."""
        with self._transaction() as connection:
            _require(connection, _SWEEPS, sweep_id)
            return dict(connection.execute(select(_RUNS.c.id, _RUNS.c.epochs_done)
                                           .where(_RUNS.c.sweep_id == sweep_id).order_by(_RUNS.c.id)).all())

    def curve_pages(self, counts: dict[int, int], max_losses: int,
                    max_runs: int = 1000) -> Iterator[list[tuple[Run, np.ndarray]]]:
        """The runs of `counts` (from `loss_counts`) with their curves, by id, a page of runs per transaction.

        A page holds at most `max_runs` runs and `max_losses` losses together (a longer
        run comes alone), so a reader of a whole sweep holds one page at a time, however
        large the sweep (issue 22). Each page is a transaction of its own: of a sweep that
        runs meanwhile, later pages may show a later state; a run deleted meanwhile is left out.
        """
        page: list[int] = []
        size = 0
        for run_id, count in counts.items():
            if page and (size + count > max_losses or len(page) == max_runs):
                yield self._runs_with_curves(page)
                page, size = [], 0
            page.append(run_id)
            size += count
        if page:
            yield self._runs_with_curves(page)

    def _runs_with_curves(self, run_ids: Sequence[int]) -> list[tuple[Run, np.ndarray]]:
        with self._transaction() as connection:
            runs = _runs(connection, _RUNS.c.id.in_(run_ids))
            curves = self._curves(connection, _CHUNKS.c.run_id.in_(run_ids))
        return [(run, curves.get(run.id, np.empty(0))) for run in runs]

    # Chunks of losses, as each backend stores them

    def _curves(self, connection: Connection, *where: Any) -> dict[int, np.ndarray]:
        """The curves whose chunks match `where`, by run id, each its chunks end to end."""
        return {run_id: np.concatenate([values for _, _, values in chunks])
                for run_id, chunks in groupby(self._chunks(connection, *where), key=lambda chunk: chunk[0])}

    def _chunks(self, connection: Connection, *where: Any) -> list[tuple[int, int, np.ndarray]]:
        """(run id, first epoch, losses) of the chunks that match `where`, by run and epoch."""
        # PostgreSQL sends an array's binary form, which numpy reads as it is, rather than a list of floats.
        values = func.array_send(_CHUNKS.c.losses) if self._is_postgresql else _CHUNKS.c.losses
        decode = _from_array_send if self._is_postgresql else _from_little_endian
        rows = connection.execute(select(_CHUNKS.c.run_id, _CHUNKS.c.first_epoch, values)
                                  .where(*where).order_by(_CHUNKS.c.run_id, _CHUNKS.c.first_epoch))
        return [(run_id, first, decode(chunk)) for run_id, first, chunk in rows]

    def _spliced(self, connection: Connection, write: LossWrite) -> list[tuple[int, int, np.ndarray]]:
        """The run's chunks with `write` laid over them: its old chunks are deleted, and these replace them.

        Only for a write that begins before the run's end (a write sent again), so
        rarely that it may read and rewrite the whole curve.
        """
        old = self._chunks(connection, _CHUNKS.c.run_id == write.run_id)
        connection.execute(delete(_CHUNKS).where(_CHUNKS.c.run_id == write.run_id))
        pieces = [(first, values) for _, first, values in old] + [(write.first_epoch, write.losses)]
        curve = np.full(max(first + values.size for first, values in pieces), np.nan)  # NaN: no loss (losses are finite)
        for first, values in pieces:
            curve[first:first + values.size] = values
        known = np.flatnonzero(~np.isnan(curve))
        stretches = np.split(known, np.flatnonzero(np.diff(known) > 1) + 1)
        return [(write.run_id, int(epochs[0]), curve[epochs]) for epochs in stretches if epochs.size]

    def _insert_chunks(self, connection: Connection, chunks: Sequence[tuple[int, int, np.ndarray]]) -> None:
        """One COPY (PostgreSQL, in binary) or one executemany (SQLite) for all the chunks."""
        if not chunks:
            return
        with _driver_errors(connection):
            driver = connection.connection.driver_connection
            if self._is_postgresql:
                with driver.cursor() as cursor, cursor.copy(
                    "COPY loss_chunks (run_id, first_epoch, losses) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(_binary_copy(chunks))
            else:
                driver.executemany(
                    "INSERT INTO loss_chunks (run_id, first_epoch, losses) VALUES (?, ?, ?)",
                    [(run_id, first, values.astype("<f8").tobytes()) for run_id, first, values in chunks],
                )

    # Transactions

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One transaction: committed if the block returns, rolled back if it raises.

        `write` makes SQLite take its write lock at BEGIN, so the transaction cannot
        fail half-way for want of it; PostgreSQL locks rows instead.
        """
        with _translated_errors(), self._engine.connect() as connection:
            connection.execution_options(**{BEGIN_IMMEDIATE: write})
            with connection.begin():
                yield connection

    def _wait_for_runs(self, connection: Connection, run_ids: Sequence[int]) -> bool:
        """Whether any of the runs exists, waiting on PostgreSQL for sweeps still being created.

        `create_sweep` enqueues before it commits, so a worker can be handed runs
        that PostgreSQL does not show it yet. Taking the lock that every
        `create_sweep` holds shared waits for those to end. (SQLite needs no such
        step: its writers take turns, so the worker's BEGIN IMMEDIATE already waited.)
        """
        exists = select(_RUNS.c.id).where(_RUNS.c.id.in_(run_ids)).limit(1)
        if connection.execute(exists).first() is not None:
            return True
        if self._is_postgresql:
            connection.execute(select(func.pg_advisory_xact_lock(_SWEEP_CREATION_LOCK)))
            return connection.execute(exists).first() is not None
        return False


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turns SQLAlchemy's exceptions into ours, so callers depend on the storage layer only."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc.orig)) from exc
    except DBAPIError as exc:
        raise StorageError(str(exc.orig)) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _may_write(run: Any, write: LossWrite) -> bool:
    """Whether `write` may change the run: see `Storage.record`."""
    if write.attempt is None:
        return run.status != RunStatus.CANCELLED.value
    return run.attempts == write.attempt and run.status == RunStatus.RUNNING.value and run.epochs_done >= write.first_epoch


# Every write of a run sets these columns, to values `_updated` works out from the locked row.
_RUN_PROGRESS = ("heartbeat_at", "epochs_done", "best_loss", "status", "finished_at", "final_loss", "diverged_at",
                 "error")
_UPDATE_RUN = update(_RUNS).where(_RUNS.c.id == bindparam("run")).values(
    {name: bindparam(f"new_{name}") for name in _RUN_PROGRESS})


def _updated(run: Any, write: LossWrite, now: datetime) -> dict[str, Any]:
    """The parameters of `_UPDATE_RUN` for a run (its locked row) after `write`."""
    losses = write.losses
    changes = {"heartbeat_at": now,
               "epochs_done": max(run.epochs_done, write.first_epoch + losses.size) if losses.size else run.epochs_done,
               "best_loss": run.best_loss, "status": run.status, "finished_at": run.finished_at,
               "final_loss": run.final_loss, "diverged_at": run.diverged_at, "error": run.error}
    if losses.size:
        best = float(losses.min())
        changes["best_loss"] = best if run.best_loss is None else min(run.best_loss, best)
    if write.outcome is not None:
        outcome = write.outcome
        changes |= {"status": outcome.status.value, "finished_at": now, "final_loss": outcome.final_loss,
                    "diverged_at": outcome.diverged_at, "error": outcome.error}
    return {"run": run.id} | {f"new_{name}": value for name, value in changes.items()}


def _losses(values: Sequence[float]) -> np.ndarray:
    losses = np.asarray(values, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError("losses must be a flat sequence of numbers, one per epoch")
    return losses


def _check_finite(values: Sequence[float] | np.ndarray) -> None:
    # SQLite would store NaN as NULL; keeping losses finite keeps both backends alike.
    if not np.isfinite(values).all():
        raise ValueError("losses must be finite; record a loss that blew up as the run's diverged_at")


def _require(connection: Connection, table: Table, id_: int) -> None:
    if connection.execute(select(table.c.id).where(table.c.id == id_)).first() is None:
        raise NotFound(f"no {'sweep' if table is _SWEEPS else 'run'} {id_}")


@contextmanager
def _driver_errors(connection: Connection) -> Iterator[None]:
    """Turns the driver's exceptions, where we call it directly, into SQLAlchemy's, for `_translated_errors`."""
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as error:
        if connection.dialect.is_disconnect(error, connection.connection.dbapi_connection, None):
            connection.invalidate(error)
        raise DBAPIError.instance(None, None, error, dbapi.Error, dialect=connection.dialect) from error


# PostgreSQL's binary formats. A COPY: a header, then per row the number of fields and, for
# each field, its length and its big-endian value; then -1. A float8[] (what array_send
# gives, and what COPY takes as the field's value): dimensions, a null flag, the element
# type's oid (701), each dimension's size and lower bound, then each element's length and value.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, length of the header extension
_COPY_TRAILER = b"\xff\xff"
_CHUNK_HEAD = struct.Struct(">hiqiiiiiiii")  # fields, run_id, first_epoch, the array's size and header
_FLOAT8_OID = 701
_ELEMENT = np.dtype([("size", ">i4"), ("value", ">f8")])
_ARRAY_HEADER_BYTES = 20  # a one-dimensional array's header


def _binary_copy(chunks: Iterable[tuple[int, int, np.ndarray]]) -> bytes:
    parts = [_COPY_HEADER]
    for run_id, first_epoch, values in chunks:
        elements = np.empty(values.size, dtype=_ELEMENT)
        elements["size"], elements["value"] = 8, values
        parts.append(_CHUNK_HEAD.pack(3, 8, run_id, 4, first_epoch, _ARRAY_HEADER_BYTES + elements.nbytes,
                                      1, 0, _FLOAT8_OID, values.size, 1))
        parts.append(elements.tobytes())
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _from_array_send(array: bytes) -> np.ndarray:
    """A float8[]'s values from its binary form (an empty array has no dimension, so no elements)."""
    if len(array) <= _ARRAY_HEADER_BYTES:
        return np.empty(0)
    return np.frombuffer(array, dtype=_ELEMENT, offset=_ARRAY_HEADER_BYTES)["value"].astype(np.float64)


def _from_little_endian(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f8").astype(np.float64)


def _jobs(runs: Sequence[Run]) -> list[Job]:
    """One job per batch for these runs, in the order of their first run."""
    by_batch: dict[tuple[int, int], list[Run]] = {}
    for run in runs:
        by_batch.setdefault((run.sweep_id, run.batch), []).append(run)
    return [_job(batch) for batch in by_batch.values()]


def _job(runs: Sequence[Run]) -> Job:
    """The job of these runs of one batch, just queued together."""
    return Job(run_ids=tuple(sorted(run.id for run in runs)), batch_size=runs[0].batch_size, config=runs[0].config,
               queued_at=max(run.queued_at for run in runs))


def _enqueued(connection: Connection, run_ids: Sequence[int], enqueue: Enqueue) -> list[int]:
    """The ids, sorted, after enqueueing them as jobs (`enqueue` is never called with none)."""
    if run_ids:
        enqueue(_jobs(_runs(connection, _RUNS.c.id.in_(run_ids))))
    return sorted(run_ids)


def _sweeps(connection: Connection, *where: Any) -> list[Sweep]:
    """Sweeps with their run counts per status, newest (highest id) first, from one grouped query."""
    rows = connection.execute(
        select(_SWEEPS.c.id, _SWEEPS.c.name, _SWEEPS.c.created_at, _SWEEPS.c.searching, _SWEEPS.c.created_by,
               _RUNS.c.status, func.count(_RUNS.c.id))
        .outerjoin(_RUNS, _RUNS.c.sweep_id == _SWEEPS.c.id)
        .where(*where)
        .group_by(_SWEEPS.c.id, _SWEEPS.c.name, _SWEEPS.c.created_at, _SWEEPS.c.searching, _SWEEPS.c.created_by,
                  _RUNS.c.status)
        .order_by(_SWEEPS.c.id.desc())
    )
    heads: dict[int, tuple[str, datetime, bool, str | None]] = {}
    counts: dict[int, dict[str, int]] = {}
    for sweep_id, name, created_at, searching, created_by, status, n in rows:
        heads[sweep_id] = (name, created_at, searching, created_by)
        counts.setdefault(sweep_id, {status.value: 0 for status in RunStatus})
        if status is not None:
            counts[sweep_id][status] = n
    return [
        Sweep(id=id_, name=name, created_at=created_at, n_runs=sum(counts[id_].values()), counts=counts[id_],
              searching=searching, created_by=created_by)
        for id_, (name, created_at, searching, created_by) in heads.items()
    ]


def _losses_first(connection: Connection, conditions: list[Any], key: Any, limit: int, offset: int) -> list[Any]:
    """Rows ordered by `key` then id, those without a `key` last, from the (sweep_id, key, id) index.

    SQLite keeps NULLs first in an index, so `NULLS LAST` would sort all the sweep's runs
    for every page; instead the runs with a value come off the index, then the others by id.
    """
    with_value = connection.scalar(select(func.count()).select_from(_RUNS).where(*conditions, key.is_not(None)))
    rows: list[Any] = []
    if offset < with_value:
        rows = connection.execute(select(_RUNS).where(*conditions, key.is_not(None)).order_by(key, _RUNS.c.id)
                                  .limit(limit).offset(offset)).all()
    if len(rows) < limit:
        rows += connection.execute(select(_RUNS).where(*conditions, key.is_(None)).order_by(_RUNS.c.id)
                                   .limit(limit - len(rows)).offset(max(0, offset - with_value))).all()
    return rows


def _shape(connection: Connection, sweep_id: int) -> tuple[RunConfig, int]:
    """The config of the sweep's first run (its task is every run's) and how many batches its runs make."""
    first = connection.execute(select(_RUNS).where(_RUNS.c.sweep_id == sweep_id).order_by(_RUNS.c.id).limit(1)
                               ).one_or_none()
    if first is None:
        raise NotFound(f"no sweep {sweep_id}")
    # A sweep's batches are numbered 0, 1, ... (a run migrated by 0004 is a batch numbered by its
    # id: those count their id span), so the (sweep_id, batch) index counts them at its two ends:
    # one query each, as SQLite reads only a lone min() or max() off an index.
    in_sweep = _RUNS.c.sweep_id == sweep_id
    low = connection.scalar(select(func.min(_RUNS.c.batch)).where(in_sweep))
    high = connection.scalar(select(func.max(_RUNS.c.batch)).where(in_sweep))
    return _run(first).config, high - low + 1


def _best_run_ids() -> Any:
    """The id of each sweep's best run (see `Storage.best_runs`) of sweeps `:sweep_ids`, built once."""
    best = aliased(_RUNS)
    best_id = (select(best.c.id)
               .where(best.c.sweep_id == _SWEEPS.c.id, best.c.best_loss.is_not(None),
                      best.c.status.not_in([RunStatus.DIVERGED.value, RunStatus.FAILED.value]))
               .order_by(best.c.best_loss, best.c.id).limit(1).scalar_subquery())
    ids = select(best_id).where(_SWEEPS.c.id.in_(bindparam("sweep_ids", expanding=True))).scalar_subquery()
    return select(_RUNS).where(_RUNS.c.id.in_(ids))


_BEST_RUNS = _best_run_ids()


def _best_runs(connection: Connection, sweep_ids: Sequence[int]) -> dict[int, Run]:
    """See `Storage.best_runs`."""
    if not sweep_ids:
        return {}
    return {run.sweep_id: run for run in map(_run, connection.execute(_BEST_RUNS, {"sweep_ids": list(sweep_ids)}))}


def _runs(connection: Connection, *where: Any) -> list[Run]:
    """The runs that match `where`, by id (so a batch's runs come in slot order: they were inserted so)."""
    rows = connection.execute(select(_RUNS).where(*where).order_by(_RUNS.c.id))
    return [_run(row) for row in rows]


def _insert_runs(connection: Connection, sweep_id: int, configs: Sequence[RunConfig], points: Sequence[int | None],
                 batch_sizes: Sequence[int], first_batch: int, now: datetime) -> None:
    """Queued runs of the sweep, consecutive configs in batches of `batch_sizes` numbered from `first_batch`.

    One executemany; ids ascend in insertion order, so the runs come back in the order of `configs`.
    """
    layout = [(first_batch + batch, slot, size) for batch, size in enumerate(batch_sizes) for slot in range(size)]
    queued = {"sweep_id": sweep_id, "status": RunStatus.QUEUED.value, "created_at": now, "queued_at": now}
    connection.execute(insert(_RUNS), [
        {**_config_values(config), **queued, "batch": batch, "batch_slot": slot, "batch_size": size, "point": point}
        for config, (batch, slot, size), point in zip(configs, layout, points, strict=True)])


def _config_values(config: RunConfig) -> dict[str, Any]:
    # Not dataclasses.asdict: its deep copies take most of the time of a 10,000-run sweep.
    return {name: getattr(config, name) for name in _CONFIG_FIELDS}


def _run(row: Any) -> Run:
    """A record from a runs row."""
    return Run(
        id=row.id,
        sweep_id=row.sweep_id,
        config=RunConfig(**{name: getattr(row, name) for name in _CONFIG_FIELDS}),
        batch=row.batch,
        batch_slot=row.batch_slot,
        batch_size=row.batch_size,
        point=row.point,
        status=RunStatus(row.status),
        attempts=row.attempts,
        worker=row.worker,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        queued_at=row.queued_at,
        epochs_done=row.epochs_done,
        final_loss=row.final_loss,
        best_loss=row.best_loss,
        diverged_at=row.diverged_at,
        error=row.error,
    )
