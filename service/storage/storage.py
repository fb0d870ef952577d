"""`Storage`: every read and write of sweeps, runs and losses, each in one transaction."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import chain, repeat
from pathlib import Path
from typing import Any, cast

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    URL,
    Connection,
    Double,
    Integer,
    Select,
    String,
    Table,
    Text,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.storage.engine import BEGIN_IMMEDIATE, database_url, make_engine
from service.storage.errors import DatabaseUnavailable, NotFound, SchemaOutOfDate, StorageError
from service.storage.models import LossRow, RunRow, SweepRow, UTCDateTime
from service.storage.records import Run, RunConfig, RunStatus, Sweep

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

Enqueue = Callable[[list[int]], None]

_SWEEPS = cast(Table, SweepRow.__table__)
_RUNS = cast(Table, RunRow.__table__)
_LOSSES = cast(Table, LossRow.__table__)
_CONFIG_FIELDS = [field.name for field in fields(RunConfig)]
_FINISHED = [status.value for status in RunStatus if status.is_finished]
# Key of the PostgreSQL advisory lock that `create_sweep` holds shared; see `_wait_for_run`.
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

    def __init__(self, url: str | URL, *, pre_ping: bool = True, synchronous_commit: bool = True) -> None:
        """`pre_ping=False` saves a round trip per transaction, for callers that retry on DatabaseUnavailable.

        `synchronous_commit=False` (PostgreSQL) lets a commit return before it is on
        disk, which saved PostgreSQL 0.7 ms of CPU a commit on our 2-core test VM
        (see benchmarks/overhead_bench.py). A database crash may then forget the last
        commits, up to about 0.6 s of them; nothing else is at risk. It is for the
        workers, whose every write can be lost that way without losing a run: a
        forgotten start or finish leaves the run queued or running, which the
        reaper takes back; a forgotten batch of losses stops the attempt at its next
        write (see `_owned_run_update`); and the redone run is bit-identical.
        """
        self.url = database_url(url)
        self._engine = make_engine(self.url, pre_ping=pre_ping, synchronous_commit=synchronous_commit)
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
            _require_sweep(session.connection(), sweep_id)
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
            _require_sweep(session.connection(), sweep_id)
            run_ids = session.scalars(
                update(RunRow)
                .where(RunRow.sweep_id == sweep_id, RunRow.status.in_([RunStatus.FAILED, RunStatus.CANCELLED]))
                .values(status=RunStatus.QUEUED.value, finished_at=None, error=None, queued_at=_now())
                .returning(RunRow.id)
            ).all()
            return _enqueued(run_ids, enqueue)

    # Runs

    def list_runs(self, sweep_id: int) -> list[Run]:
        with self._session() as session:
            _require_sweep(session.connection(), sweep_id)
            return _runs_of(session, sweep_id)

    def best_runs(self, sweep_ids: Sequence[int]) -> dict[int, Run]:
        """Each sweep's run with the lowest loss so far, of those that neither diverged nor failed, by sweep id.

        One query for a whole page of sweeps. A sweep with no such run is left
        out; of runs with the same loss, the first one wins.
        """
        ranked = (
            select(_RUNS, func.row_number().over(partition_by=_RUNS.c.sweep_id,
                                                 order_by=(_RUNS.c.best_loss, _RUNS.c.id)).label("rank"))
            .where(_RUNS.c.sweep_id.in_(sweep_ids), _RUNS.c.best_loss.is_not(None),
                   _RUNS.c.status.not_in([RunStatus.DIVERGED.value, RunStatus.FAILED.value]))
            .subquery()
        )
        with self._transaction() as connection:
            return {row.sweep_id: _run(row) for row in connection.execute(select(ranked).where(ranked.c.rank == 1))}

    def get_run(self, run_id: int) -> Run:
        with self._transaction() as connection:
            row = connection.execute(select(_RUNS).where(_RUNS.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run(row)

    def start_run(self, run_id: int, worker: str, *, lease: timedelta | None = None) -> Run | None:
        """Marks the run running for a new attempt, from epoch 0; None if there is nothing to do.

        Nothing to do: the run has finished, or (with `lease`) another attempt is
        running it and has written within the lease, so this message is a duplicate.
        A running run whose worker went quiet is `requeue_stale_runs`'s to take back.
        The losses of earlier attempts are deleted: a redone run writes its curve afresh.
        """
        now = _now()
        with_lease = lease is not None
        params = {"run_id": run_id, "worker_name": worker, "now": now}
        if with_lease:
            params["lease_since"] = now - lease
        if self._is_postgresql:  # a first attempt, the common case, has no losses to delete: one statement
            with self._transaction(autocommit=True) as connection:
                first = connection.execute(_start_statement(with_lease=with_lease, first=True), params).first()
            if first is not None:
                return _run(first)
        start = _start_statement(with_lease=with_lease)
        with self._transaction(write=True) as connection:
            started = connection.execute(start, params).first()
            if started is None and not self._wait_for_run(connection, run_id):
                raise NotFound(f"no run {run_id}")
            if started is None:
                started = connection.execute(start, params).first()  # the run is visible now: anything to do?
            if started is None:
                return None
            if started.attempts > 1:  # a first attempt has no earlier attempt's losses: a statement saved per run
                connection.execute(_DELETE_RUN_LOSSES, {"run_id": run_id})
            return _run(started)

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
            return _enqueued(requeued, enqueue), failed

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
            return _enqueued(run_ids, enqueue)

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
        losses = _losses(values)
        with self._transaction(write=True, autocommit=self._one_statement(losses)) as connection:
            return self._write_owned_run(connection, run_id, attempt, first_epoch, losses)

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
        """Records how the run ended; False if not. A cancelled run stays as it is: the user's cancel wins.

        So a worker that finishes just after a cancel never turns the run back into
        succeeded; nor does an `attempt` that a newer attempt has taken over.
        `losses`, if any, are the run's last ones, from `first_epoch` on, stored as
        `write_losses` would, in the same transaction: a short run costs its worker
        one transaction fewer.
        """
        status = RunStatus(status)
        if not status.is_finished:
            raise ValueError(f"{status} is not a finished status")
        if final_loss is not None:
            _check_finite([final_loss])
        outcome = {"new_status": status.value, "final": final_loss, "diverged": diverged_at, "error_text": error}
        losses = _losses(losses)
        with self._transaction(write=True, autocommit=self._one_statement(losses)) as connection:
            return self._write_owned_run(connection, run_id, attempt, first_epoch, losses, outcome)

    # Losses

    def run_losses(self, run_id: int) -> np.ndarray:
        """The run's loss per epoch, as float64."""
        with self._transaction() as connection:
            _require_run(connection, run_id)
            values = connection.scalars(
                select(_LOSSES.c.value).where(_LOSSES.c.run_id == run_id).order_by(_LOSSES.c.epoch)
            )
            return np.array(values.all(), dtype=np.float64)

    def sweep_losses(self, sweep_id: int) -> dict[int, np.ndarray]:
        """Every run's loss curve, by run id (an empty curve for a run with no loss yet).

        A sweep can hold a million losses, so none of them becomes a SQLAlchemy row
        (see benchmarks/curve_read_bench.py). PostgreSQL sends each run's curve as
        one bytea of big-endian doubles, which numpy reads as it is; SQLite's
        (run id, loss) tuples, sorted by run and epoch, stream into one array
        that numpy splits.
        """
        with self._transaction() as connection:
            _require_sweep(connection, sweep_id)
            if self._is_postgresql:
                rows = connection.exec_driver_sql(_SWEEP_CURVES_POSTGRESQL, {"sweep_id": sweep_id})
                return {run_id: _doubles(curve) for run_id, curve in rows}
            run_ids = connection.scalars(select(_RUNS.c.id).where(_RUNS.c.sweep_id == sweep_id).order_by(_RUNS.c.id))
            curves = {run_id: np.empty(0) for run_id in run_ids}
            with _driver_errors(connection):
                cursor = connection.connection.driver_connection.execute(_SWEEP_LOSSES_SQLITE, (sweep_id,))
                # Run ids are exact in float64 (below 2**53).
                pairs = np.fromiter(chain.from_iterable(cursor), dtype=np.float64).reshape(-1, 2)
        loss_run_ids, values = pairs[:, 0].astype(np.int64), np.ascontiguousarray(pairs[:, 1])
        starts = np.flatnonzero(np.diff(loss_run_ids, prepend=-1))  # where the run changes
        if starts.size:
            curves.update(zip(loss_run_ids[starts].tolist(), np.split(values, starts[1:]), strict=True))
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

    @contextmanager
    def _transaction(self, *, write: bool = False, autocommit: bool = False) -> Iterator[Connection]:
        """As `_session`, on a bare connection: for the statements that workers send for every run.

        `autocommit` (PostgreSQL) commits each statement by itself: for a write that
        is one statement, one round trip where BEGIN, the statement and COMMIT take
        three, a third of a 1-epoch run's time in the database.
        """
        with _translated_errors(), self._engine.connect() as connection:
            if autocommit:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")
                return
            connection.execution_options(**{BEGIN_IMMEDIATE: write})
            with connection.begin():
                yield connection

    def _one_statement(self, losses: np.ndarray) -> bool:
        """Whether `_write_owned_run` writes these losses in one statement (then read-only ones)."""
        return self._is_postgresql and losses.size <= _FEW_LOSSES

    def _write_owned_run(self, connection: Connection, run_id: int, attempt: int | None, first_epoch: int,
                         losses: np.ndarray, outcome: dict[str, Any] | None = None) -> bool:
        """Stores `losses` and updates the run's row; False, and nothing written, if the writer may not write the run.

        The row gets the heartbeat, the progress and, if given, `outcome` (see
        `_owned_run_update`). It is updated first: that locks it, so that no new
        attempt starts (and deletes this run's losses) until these losses are
        committed. Raises NotFound for an unknown run.
        """
        params = {"run_id": run_id, "attempt": attempt, "first": first_epoch, **_progress(first_epoch, losses),
                  **(outcome or {})}
        shape = {"by_attempt": attempt is not None, "outcome": outcome is not None}
        few_to_postgresql = self._is_postgresql and 0 < losses.size <= _FEW_LOSSES
        if few_to_postgresql:  # one statement, not three: see _owned_run_update_with_few_losses
            statement = _owned_run_update_with_few_losses(**shape)
            params |= {"first": first_epoch, "values": losses.tolist()}
        else:
            statement = _owned_run_update(progress=losses.size > 0, **shape)
        owned = connection.execute(statement, params).first() is not None
        if not owned:
            _require_run(connection, run_id)
        elif losses.size and not few_to_postgresql:
            self._replace_losses(connection, run_id, first_epoch, losses)
        return owned

    def _replace_losses(self, connection: Connection, run_id: int, first_epoch: int, losses: np.ndarray) -> None:
        """Writes one row per epoch, replacing the rows of those epochs if there are any.

        PostgreSQL: DELETE the epochs' range, then COPY the rows in binary, three
        times as fast as INSERT ... ON CONFLICT for a batch of a thousand (the
        caller's lock on the run keeps the two steps from interleaving with another
        writer). SQLite: one executemany of the upsert straight through the driver.
        See benchmarks/loss_write_bench.py.
        """
        end = first_epoch + losses.size
        with _driver_errors(connection):
            driver = connection.connection.driver_connection
            if self._is_postgresql:
                connection.execute(_DELETE_EPOCHS, {"run_id": run_id, "first": first_epoch, "end": end})
                with driver.cursor() as cursor, cursor.copy(
                    "COPY losses (run_id, epoch, value) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(_binary_copy_rows(run_id, first_epoch, losses))
            else:
                driver.executemany(
                    "INSERT INTO losses (run_id, epoch, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (run_id, epoch) DO UPDATE SET value = excluded.value",
                    zip(repeat(run_id), range(first_epoch, end), losses.tolist()),
                )

    def _wait_for_run(self, connection: Connection, run_id: int) -> bool:
        """Whether the run exists, waiting on PostgreSQL for sweeps still being created.

        `create_sweep` enqueues before it commits, so a worker can be handed a run
        that PostgreSQL does not show it yet. Taking the lock that every
        `create_sweep` holds shared waits for those to end. (SQLite needs no such
        step: its writers take turns, so the worker's BEGIN IMMEDIATE already waited.)
        """
        if _exists(connection, _RUNS, run_id):
            return True
        if self._is_postgresql:
            connection.execute(select(func.pg_advisory_xact_lock(_SWEEP_CREATION_LOCK)))
            return _exists(connection, _RUNS, run_id)
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


# The statements a worker sends for every run, built once: building a statement
# in SQLAlchemy takes longer than PostgreSQL takes to run it (0.8 ms against 0.4).
_DELETE_RUN_LOSSES = delete(_LOSSES).where(_LOSSES.c.run_id == bindparam("run_id"))
_DELETE_EPOCHS = delete(_LOSSES).where(
    _LOSSES.c.run_id == bindparam("run_id"), _LOSSES.c.epoch >= bindparam("first"), _LOSSES.c.epoch < bindparam("end")
)
# Up to this many losses, PostgreSQL gets them with the run's update, in one statement, rather than by a COPY.
_FEW_LOSSES = 16


@cache
def _start_statement(*, with_lease: bool, first: bool = False) -> Update:
    """Checks, locks and starts the run in one UPDATE: one round trip, where an ORM object takes two.

    Parameters: run_id, worker_name, now, and with a lease lease_since (a running
    run that has written since then is another attempt's). `first` starts only a
    run that no attempt has started yet.
    """
    # Not `not_in(_FINISHED)`: its expanding parameter is rendered anew at every execution, a fifth of the call.
    startable = and_(*(_RUNS.c.status != status for status in _FINISHED))
    if first:
        startable &= _RUNS.c.attempts == 0
    if with_lease:
        startable &= or_(_RUNS.c.status != RunStatus.RUNNING.value, _RUNS.c.heartbeat_at.is_(None),
                         _RUNS.c.heartbeat_at < bindparam("lease_since", type_=UTCDateTime()))
    now = bindparam("now", type_=UTCDateTime())
    return (
        update(_RUNS)
        .where(_RUNS.c.id == bindparam("run_id"), startable)
        .values(status=RunStatus.RUNNING.value, attempts=_RUNS.c.attempts + 1, worker=bindparam("worker_name"),
                started_at=now, heartbeat_at=now, finished_at=None, epochs_done=0, final_loss=None, best_loss=None,
                diverged_at=None, error=None)
        .returning(*_RUNS.c)
    )


@cache
def _owned_run_update(*, by_attempt: bool, progress: bool, outcome: bool) -> Update:
    """Updates a run that the writer may still write: not cancelled, and (by_attempt) still its running attempt.

    Parameters: run_id, now (the heartbeat), attempt and first (the first epoch of
    this write) if by_attempt; with progress, end (the epoch after the last one
    written) and best (their lowest loss); with outcome, new_status, final,
    diverged and error_text. Returns the run's id, or no row if it may not be written.

    An attempt writes its epochs in order, so it may write only from an epoch the
    run already has: if the database lost a batch (workers commit asynchronously,
    see `Storage`), the next write finds the gap, the worker stops, and the
    reaper has the run redone rather than finished with a hole in its curve.
    """
    if by_attempt:
        may_write = and_(_RUNS.c.attempts == bindparam("attempt"), _RUNS.c.status == RunStatus.RUNNING.value,
                         _RUNS.c.epochs_done >= bindparam("first", type_=Integer()))
    else:
        may_write = _RUNS.c.status != RunStatus.CANCELLED.value
    now = bindparam("now", type_=UTCDateTime())
    changes: dict[str, Any] = {"heartbeat_at": now}
    if progress:
        end, best = bindparam("end", type_=Integer()), bindparam("best", type_=Double())
        changes["epochs_done"] = case((_RUNS.c.epochs_done < end, end), else_=_RUNS.c.epochs_done)
        changes["best_loss"] = case((or_(_RUNS.c.best_loss.is_(None), _RUNS.c.best_loss > best), best),
                                    else_=_RUNS.c.best_loss)
    if outcome:
        changes |= {"status": bindparam("new_status", type_=String()), "finished_at": now,
                    "final_loss": bindparam("final", type_=Double()),
                    "diverged_at": bindparam("diverged", type_=Integer()),
                    "error": bindparam("error_text", type_=Text())}
    return (
        update(_RUNS).where(_RUNS.c.id == bindparam("run_id"), may_write).values(changes).returning(_RUNS.c.id)
    )


@cache
def _owned_run_update_with_few_losses(*, by_attempt: bool, outcome: bool) -> Select:
    """PostgreSQL: `_owned_run_update` (with progress) and the upsert of the losses it allows, in one statement.

    For the batch of a short run, a statement and a round trip fewer than an UPDATE,
    a DELETE and a COPY (see benchmarks/overhead_bench.py). An upsert, not a DELETE:
    if the UPDATE waited for another writer's lock, the rows that writer committed
    meanwhile are not in this statement's snapshot, but ON CONFLICT still finds
    them. Extra parameters: first (the first epoch) and values (the losses).
    """
    run = _owned_run_update(by_attempt=by_attempt, progress=True, outcome=outcome).cte("run")
    batch = (func.unnest(bindparam("values", type_=postgresql.ARRAY(Double())))
             .table_valued("value", with_ordinality="i").render_derived())
    rows = select(run.c.id, bindparam("first", type_=Integer()) + batch.c.i - 1, batch.c.value)
    upsert = postgresql.insert(_LOSSES).from_select(["run_id", "epoch", "value"], rows.join_from(run, batch, true()))
    upsert = upsert.on_conflict_do_update(index_elements=[_LOSSES.c.run_id, _LOSSES.c.epoch],
                                          set_={"value": upsert.excluded.value})
    return select(run.c.id).add_cte(upsert.cte("written"))


def _losses(values: Sequence[float]) -> np.ndarray:
    losses = np.asarray(values, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError("losses must be a flat sequence of numbers, one per epoch")
    _check_finite(losses)
    return losses


def _progress(first_epoch: int, losses: np.ndarray) -> dict[str, Any]:
    """The parameters of `_owned_run_update` that record `losses`: a heartbeat, and the run's progress if any."""
    if not losses.size:
        return {"now": _now()}
    return {"now": _now(), "end": first_epoch + losses.size, "best": float(losses.min())}


def _check_finite(values: Sequence[float]) -> None:
    # SQLite would store NaN as NULL; keeping losses finite keeps both backends alike.
    if not np.isfinite(values).all():
        raise ValueError("losses must be finite; record a loss that blew up as the run's diverged_at")


def _exists(connection: Connection, table: Table, id_: int) -> bool:
    return connection.execute(select(table.c.id).where(table.c.id == id_)).first() is not None


def _require_sweep(connection: Connection, sweep_id: int) -> None:
    if not _exists(connection, _SWEEPS, sweep_id):
        raise NotFound(f"no sweep {sweep_id}")


def _require_run(connection: Connection, run_id: int) -> None:
    if not _exists(connection, _RUNS, run_id):
        raise NotFound(f"no run {run_id}")


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


# PostgreSQL's binary COPY format: a header, then per row the number of fields and,
# for each field, its length and its big-endian value; then -1. Our loss rows have
# fixed-size fields (bigint, integer, double precision), so a row is one numpy record.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, length of the header extension
_COPY_TRAILER = b"\xff\xff"
_LOSS_ROW = np.dtype([("fields", ">i2"), ("run_id_size", ">i4"), ("run_id", ">i8"), ("epoch_size", ">i4"),
                      ("epoch", ">i4"), ("value_size", ">i4"), ("value", ">f8")])


def _binary_copy_rows(run_id: int, first_epoch: int, losses: np.ndarray) -> bytes:
    rows = np.empty(losses.size, dtype=_LOSS_ROW)
    rows["fields"], rows["run_id_size"], rows["epoch_size"], rows["value_size"] = 3, 8, 4, 8
    rows["run_id"] = run_id
    rows["epoch"] = np.arange(first_epoch, first_epoch + losses.size)
    rows["value"] = losses
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


# Each run's curve in one row, as its losses' binary form (float8send: 8 big-endian bytes) end to end.
_SWEEP_CURVES_POSTGRESQL = (
    "SELECT r.id, (SELECT string_agg(float8send(l.value), ''::bytea ORDER BY l.epoch) FROM losses l"
    " WHERE l.run_id = r.id) FROM runs r WHERE r.sweep_id = %(sweep_id)s ORDER BY r.id"
)
_SWEEP_LOSSES_SQLITE = (
    "SELECT run_id, value FROM losses WHERE run_id IN (SELECT id FROM runs WHERE sweep_id = ?)"
    " ORDER BY run_id, epoch"  # IN, not a join, which SQLite would sort in a temporary table
)


def _doubles(big_endian: bytes | None) -> np.ndarray:
    return np.empty(0) if big_endian is None else np.frombuffer(big_endian, dtype=">f8").astype(np.float64)


def _enqueued(run_ids: Sequence[int], enqueue: Enqueue) -> list[int]:
    """The ids, sorted, after enqueueing them (`enqueue` is never called with none)."""
    run_ids = sorted(run_ids)
    if run_ids:
        enqueue(run_ids)
    return run_ids


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
