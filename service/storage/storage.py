"""`Storage`: every read and write of sweeps, runs and losses, each in one transaction."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any, cast

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Table, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.storage.engine import BEGIN_IMMEDIATE, database_url, make_engine
from service.storage.errors import DatabaseUnavailable, NotFound, SchemaOutOfDate, StorageError
from service.storage.models import LossRow, RunRow, SweepRow
from service.storage.records import Run, RunConfig, RunStatus, Sweep

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

Enqueue = Callable[[list[int]], None]

_RUNS = cast(Table, RunRow.__table__)
_LOSSES = cast(Table, LossRow.__table__)
_CONFIG_FIELDS = [field.name for field in fields(RunConfig)]
# Key of the PostgreSQL advisory lock that `create_sweep` holds shared; see `_find_new_run`.
_SWEEP_CREATION_LOCK = 0x67726164


def alembic_config(url: str | URL) -> Config:
    """Alembic's configuration, built in code so that no alembic.ini has to be found at run time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config is a ConfigParser, which would read the "%" of URL escapes as interpolation.
    rendered = database_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


class Storage:
    """Sweeps, runs and loss curves in SQLite or PostgreSQL.

    Each public method is one transaction and returns frozen records, never ORM rows.
    Methods that take `enqueue` call it inside their transaction, so that runs are
    stored and queued together or not at all; `enqueue` is never called with an
    empty list.
    """

    def __init__(self, url: str | URL) -> None:
        self.url = database_url(url)
        self._engine = make_engine(self.url)
        self._sessions = sessionmaker(self._engine)
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
        with self._session() as session:
            current = set(MigrationContext.configure(session.connection()).get_current_heads())
        if current != heads:
            raise SchemaOutOfDate(
                f"the database is at revision {sorted(current) or 'none'}, gradsweep needs {sorted(heads)}: "
                "run `gradsweep db upgrade`"
            )

    def upgrade(self) -> None:
        """Migrates the database to the newest schema (what `gradsweep db upgrade` runs)."""
        with _translated_errors():
            command.upgrade(alembic_config(self.url), "head")

    def ping(self) -> None:
        """Raises DatabaseUnavailable if the database cannot be reached; for health checks."""
        with self._session() as session:
            session.execute(select(1))

    # Sweeps

    def create_sweep(self, name: str, configs: Sequence[RunConfig], enqueue: Enqueue) -> tuple[Sweep, list[Run]]:
        """Stores a sweep with one queued run per config and enqueues the runs: all of it or, if anything raises, none.

        A worker may get a run id before this commits; `start_run` waits for the commit.
        """
        if not configs:
            raise ValueError("a sweep needs at least one run")
        now = _now()
        with self._session(write=True) as session:
            if self._is_postgresql:
                session.execute(select(func.pg_advisory_xact_lock_shared(_SWEEP_CREATION_LOCK)))
            sweep = SweepRow(name=name, created_at=now)
            session.add(sweep)
            session.flush()
            # One executemany rather than one ORM object per run. Reading the runs back is
            # faster than INSERT ... RETURNING, whose long statements psycopg parses slowly;
            # ids ascend in insertion order, so they come back in the order of `configs`.
            queued = {"sweep_id": sweep.id, "status": RunStatus.QUEUED.value, "created_at": now, "queued_at": now}
            session.execute(insert(_RUNS), [{**_config_values(config), **queued} for config in configs])
            runs = _runs_of(session, sweep.id)
            created = _sweeps(session, SweepRow.id == sweep.id)[0]
            enqueue([run.id for run in runs])
            return created, runs

    def list_sweeps(self) -> list[Sweep]:
        """All sweeps, newest first."""
        with self._session() as session:
            return _sweeps(session)

    def get_sweep(self, sweep_id: int) -> Sweep:
        with self._session() as session:
            found = _sweeps(session, SweepRow.id == sweep_id)
            if not found:
                raise NotFound(f"no sweep {sweep_id}")
            return found[0]

    def cancel_sweep(self, sweep_id: int) -> int:
        """Cancels the sweep's queued and running runs; returns how many. Workers notice at their next write_losses."""
        with self._session(write=True) as session:
            _require_sweep(session, sweep_id)
            cancelled = session.scalars(
                update(RunRow)
                .where(RunRow.sweep_id == sweep_id, RunRow.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
                .values(status=RunStatus.CANCELLED.value, finished_at=_now())
                .returning(RunRow.id)
            )
            return len(cancelled.all())

    def retry_sweep(self, sweep_id: int, enqueue: Enqueue) -> list[int]:
        """Queues the sweep's failed and cancelled runs again and enqueues them; returns their ids."""
        with self._session(write=True) as session:
            _require_sweep(session, sweep_id)
            run_ids = session.scalars(
                update(RunRow)
                .where(RunRow.sweep_id == sweep_id, RunRow.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]))
                .values(status=RunStatus.QUEUED.value, finished_at=None, error=None, queued_at=_now())
                .returning(RunRow.id)
            ).all()
            run_ids = sorted(run_ids)
            if run_ids:
                enqueue(run_ids)
            return run_ids

    # Runs

    def list_runs(self, sweep_id: int) -> list[Run]:
        with self._session() as session:
            _require_sweep(session, sweep_id)
            return _runs_of(session, sweep_id)

    def get_run(self, run_id: int) -> Run:
        with self._session() as session:
            return _run(_require_run(session, run_id))

    def start_run(self, run_id: int, worker: str, *, lease: timedelta | None = None) -> Run | None:
        """Marks the run running for a new attempt, from epoch 0; None if there is nothing to do.

        Nothing to do: the run has finished, or (with `lease`) another attempt is
        running it and has written within the lease, so this message is a duplicate.
        A running run whose worker went quiet is `requeue_stale_runs`'s to take back.
        The losses of earlier attempts are deleted: a redone run writes its curve afresh.
        """
        with self._session(write=True) as session:
            run = self._find_new_run(session, run_id)
            now = _now()
            if RunStatus(run.status).is_finished or (lease is not None and _holds_lease(run, now - lease)):
                return None
            session.execute(delete(LossRow).where(LossRow.run_id == run_id))
            run.status = RunStatus.RUNNING.value
            run.attempts += 1
            run.worker = worker
            run.started_at = run.heartbeat_at = now
            run.finished_at = None
            run.epochs_done = 0
            run.final_loss = run.best_loss = run.diverged_at = run.error = None
            return _run(run)

    def requeue_stale_runs(self, lease: timedelta, max_attempts: int, enqueue: Enqueue) -> tuple[list[int], list[int]]:
        """Takes back running runs whose worker has not written within `lease`: its worker is gone.

        Each is queued again and enqueued, or, once it has had `max_attempts`
        attempts (a run that kills its worker every time), marked failed. Returns
        (requeued ids, failed ids). Several workers may call this at once: each
        stale run is taken back by one of them.
        """
        with self._session(write=True) as session:
            now = _now()
            stale = session.scalars(
                select(RunRow)
                .where(RunRow.status == RunStatus.RUNNING, RunRow.heartbeat_at < now - lease)
                .order_by(RunRow.id)
                .with_for_update(skip_locked=True)
            ).all()
            requeued, failed = [], []
            for run in stale:
                if run.attempts >= max_attempts:
                    run.status, run.finished_at = RunStatus.FAILED.value, now
                    run.error = (f"its worker stopped responding during each of {run.attempts} attempts "
                                 f"(killed, or out of memory?); not retried again")
                    failed.append(run.id)
                else:
                    run.status, run.queued_at = RunStatus.QUEUED.value, now
                    requeued.append(run.id)
            session.flush()
            if requeued:
                enqueue(requeued)
            return requeued, failed

    def requeue_unclaimed_runs(self, older_than: timedelta, enqueue: Enqueue, limit: int = 1000) -> list[int]:
        """Enqueues again runs queued for longer than `older_than`; returns their ids.

        For a caller that knows the broker's queue is empty, so that such a run's
        message is lost (a worker killed with it in hand) rather than waiting its
        turn. If the message was only late, the run now has two: the second finds
        it taken or done and does nothing.
        """
        with self._session(write=True) as session:
            now = _now()
            run_ids = session.scalars(
                update(RunRow)
                .where(RunRow.id.in_(
                    select(RunRow.id)
                    .where(RunRow.status == RunStatus.QUEUED, RunRow.queued_at < now - older_than)
                    .order_by(RunRow.id).limit(limit)
                    .scalar_subquery()
                ))
                .values(queued_at=now)
                .returning(RunRow.id)
            ).all()
            run_ids = sorted(run_ids)
            if run_ids:
                enqueue(run_ids)
            return run_ids

    def write_losses(
        self, run_id: int, first_epoch: int, values: Sequence[float], *, attempt: int | None = None
    ) -> bool:
        """Stores the losses of epochs first_epoch, first_epoch + 1, ...; False once the worker must stop.

        Writing an epoch again replaces its value, so a redelivered task never
        duplicates a curve. A cancelled run takes no more losses, and neither does
        an `attempt` (the number `start_run` gave its worker) that a newer attempt
        has taken over: one attempt at a time writes a run. The values must
        be finite: a loss that blew up is recorded as the run's `diverged_at`.
        """
        values = [float(value) for value in values]
        _check_finite(values)
        with self._session(write=True) as session:
            run = _require_run(session, run_id, for_update=True)
            if run.status == RunStatus.CANCELLED or not _owns(run, attempt):
                return False
            if values:
                insert = postgresql.insert(_LOSSES) if self._is_postgresql else sqlite.insert(_LOSSES)
                session.execute(
                    insert.on_conflict_do_update(
                        index_elements=[_LOSSES.c.run_id, _LOSSES.c.epoch], set_={"value": insert.excluded.value}
                    ),
                    [{"run_id": run_id, "epoch": first_epoch + i, "value": value} for i, value in enumerate(values)],
                )
                run.epochs_done = max(run.epochs_done, first_epoch + len(values))
                run.best_loss = min(values) if run.best_loss is None else min(run.best_loss, *values)
            run.heartbeat_at = _now()
            return True

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        final_loss: float | None = None,
        diverged_at: int | None = None,
        error: str | None = None,
        attempt: int | None = None,
    ) -> None:
        """Records how the run ended. A cancelled run stays as it is: the user's cancel wins over the worker's report.

        So a worker that finishes just after a cancel never turns the run back into
        succeeded; nor does an `attempt` that a newer attempt has taken over.
        """
        status = RunStatus(status)
        if not status.is_finished:
            raise ValueError(f"{status} is not a finished status")
        if final_loss is not None:
            _check_finite([final_loss])
        with self._session(write=True) as session:
            run = _require_run(session, run_id, for_update=True)
            if run.status == RunStatus.CANCELLED or not _owns(run, attempt):
                return
            run.status = status.value
            run.finished_at = _now()
            run.final_loss = final_loss
            run.diverged_at = diverged_at
            run.error = error

    # Losses

    def run_losses(self, run_id: int) -> np.ndarray:
        """The run's loss per epoch, as float64."""
        with self._session() as session:
            _require_run(session, run_id)
            values = session.scalars(select(LossRow.value).where(LossRow.run_id == run_id).order_by(LossRow.epoch))
            return np.array(values.all(), dtype=np.float64)

    def sweep_losses(self, sweep_id: int) -> dict[int, np.ndarray]:
        """Every run's loss curve, by run id (an empty curve for a run with no loss yet).

        One query sorted by (run, epoch), split with numpy, rather than one query per
        run: a sweep can hold a million losses.
        """
        with self._session() as session:
            _require_sweep(session, sweep_id)
            sweep_runs = select(_RUNS.c.id).where(_RUNS.c.sweep_id == sweep_id)
            curves = {run_id: np.empty(0) for run_id in session.scalars(sweep_runs.order_by(_RUNS.c.id))}
            result = session.execute(
                select(_LOSSES.c.run_id, _LOSSES.c.value)
                .where(_LOSSES.c.run_id.in_(sweep_runs))  # not a join, which SQLite would sort in a temporary table
                .order_by(_LOSSES.c.run_id, _LOSSES.c.epoch),
                execution_options={"yield_per": 10_000},
            )
            # Streamed in batches into one array of (run id, value) pairs, never a list of a
            # million rows: twice as fast on both backends. Run ids are exact in float64 (below 2**53).
            pairs = np.fromiter(chain.from_iterable(result), dtype=np.float64).reshape(-1, 2)
        run_ids, starts = np.unique(pairs[:, 0], return_index=True)
        values = np.ascontiguousarray(pairs[:, 1])
        # Split at every start: the piece before the first one is empty and dropped.
        curves.update(zip(run_ids.astype(np.int64).tolist(), np.split(values, starts)[1:], strict=True))
        return curves

    # Transactions

    @contextmanager
    def _session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed if the block returns, rolled back if it raises.

        `write` makes SQLite take its write lock at BEGIN, so the transaction cannot
        fail half-way for want of it; PostgreSQL locks rows instead.
        """
        with _translated_errors(), self._sessions.begin() as session:
            session.connection(execution_options={BEGIN_IMMEDIATE: write})
            yield session

    def _find_new_run(self, session: Session, run_id: int) -> RunRow:
        """The run, locked, waiting on PostgreSQL for sweeps still being created.

        `create_sweep` enqueues before it commits, so a worker can be handed a run
        that PostgreSQL does not show it yet. Taking the lock that every
        `create_sweep` holds shared waits for those to end. (SQLite needs no such
        step: its writers take turns, so the worker's BEGIN IMMEDIATE already waited.)
        """
        run = session.get(RunRow, run_id, with_for_update=True)
        if run is None and self._is_postgresql:
            session.execute(select(func.pg_advisory_xact_lock(_SWEEP_CREATION_LOCK)))
            run = session.get(RunRow, run_id, with_for_update=True)
        if run is None:
            raise NotFound(f"no run {run_id}")
        return run


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turns SQLAlchemy's exceptions into ours, so callers depend on the storage layer only."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc.orig)) from exc
    except DBAPIError as exc:
        raise StorageError(str(exc.orig)) from exc


def _holds_lease(run: RunRow, since: datetime) -> bool:
    return run.status == RunStatus.RUNNING and run.heartbeat_at is not None and run.heartbeat_at >= since


def _owns(run: RunRow, attempt: int | None) -> bool:
    """Whether `attempt` is the run's current attempt and still running it (None: the caller is not a worker)."""
    return attempt is None or (run.attempts == attempt and run.status == RunStatus.RUNNING)


def _now() -> datetime:
    return datetime.now(UTC)


def _check_finite(values: Sequence[float]) -> None:
    # SQLite would store NaN as NULL; keeping losses finite keeps both backends alike.
    if not np.isfinite(values).all():
        raise ValueError("losses must be finite; record a loss that blew up as the run's diverged_at")


def _require_sweep(session: Session, sweep_id: int) -> None:
    if session.get(SweepRow, sweep_id) is None:
        raise NotFound(f"no sweep {sweep_id}")


def _require_run(session: Session, run_id: int, *, for_update: bool = False) -> RunRow:
    run = session.get(RunRow, run_id, with_for_update=for_update)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


def _sweeps(session: Session, *where: Any) -> list[Sweep]:
    """Sweeps with their run counts per status, newest first, from one grouped query."""
    rows = session.execute(
        select(SweepRow.id, SweepRow.name, SweepRow.created_at, RunRow.status, func.count(RunRow.id))
        .outerjoin(RunRow, RunRow.sweep_id == SweepRow.id)
        .where(*where)
        .group_by(SweepRow.id, SweepRow.name, SweepRow.created_at, RunRow.status)
        .order_by(SweepRow.created_at.desc(), SweepRow.id.desc())
    )
    heads: dict[int, tuple[str, datetime]] = {}
    counts: dict[int, dict[str, int]] = {}
    for sweep_id, name, created_at, status, n in rows:
        heads[sweep_id] = (name, created_at)
        counts.setdefault(sweep_id, {status.value: 0 for status in RunStatus})
        if status is not None:
            counts[sweep_id][status] = n
    return [
        Sweep(id=id_, name=name, created_at=created_at, n_runs=sum(counts[id_].values()), counts=counts[id_])
        for id_, (name, created_at) in heads.items()
    ]


def _runs_of(session: Session, sweep_id: int) -> list[Run]:
    rows = session.execute(select(_RUNS).where(_RUNS.c.sweep_id == sweep_id).order_by(_RUNS.c.id))
    return [_run(row) for row in rows]


def _config_values(config: RunConfig) -> dict[str, Any]:
    # Not dataclasses.asdict: its deep copies take most of the time of a 10,000-run sweep.
    return {name: getattr(config, name) for name in _CONFIG_FIELDS}


def _run(row: Any) -> Run:
    """A record from a runs row, whether an ORM object or a Core row."""
    return Run(
        id=row.id,
        sweep_id=row.sweep_id,
        config=RunConfig(**{name: getattr(row, name) for name in _CONFIG_FIELDS}),
        status=RunStatus(row.status),
        attempts=row.attempts,
        worker=row.worker,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        epochs_done=row.epochs_done,
        final_loss=row.final_loss,
        best_loss=row.best_loss,
        diverged_at=row.diverged_at,
        error=row.error,
    )
