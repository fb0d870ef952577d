"""Losses: written in chunks, one row per write, by the attempt that owns the run; read back as curves.

PostgreSQL keeps a chunk as float8[] written by binary COPY (service/storage/codec.py), SQLite
as little-endian bytes.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import groupby
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError

from gradsweep.service.domain.records import LossWrite, Run, RunStatus
from gradsweep.service.storage import codec
from gradsweep.service.storage._rows import Aggregate, _CHUNKS, _now, _require, _RUNS, _runs, _SWEEPS
from gradsweep.service.storage.errors import NotFound


class Losses(Aggregate):
    """The losses part of `Storage`."""

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
            if write.losses.ndim != 1:
                raise ValueError("losses must be a flat sequence of numbers, one per epoch")
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

    def run_with_curve(self, run_id: int) -> tuple[Run, np.ndarray]:
        """The run and its loss per epoch, as float64, read together (one transaction: the curve is the run's)."""
        with self._transaction() as connection:
            found = _runs(connection, _RUNS.c.id == run_id)
            if not found:
                raise NotFound(f"no run {run_id}")
            return found[0], self._curves(connection, _CHUNKS.c.run_id == run_id).get(run_id, np.empty(0))

    def run_losses(self, run_id: int) -> np.ndarray:
        """The run's loss per epoch, as float64."""
        return self.run_with_curve(run_id)[1]

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

    def _curves(self, connection: Connection, *where: Any) -> dict[int, np.ndarray]:
        """The curves whose chunks match `where`, by run id, each its chunks end to end."""
        return {run_id: np.concatenate([values for _, _, values in chunks])
                for run_id, chunks in groupby(self._chunks(connection, *where), key=lambda chunk: chunk[0])}

    def _chunks(self, connection: Connection, *where: Any) -> list[tuple[int, int, np.ndarray]]:
        """(run id, first epoch, losses) of the chunks that match `where`, by run and epoch."""
        # PostgreSQL sends an array's binary form, which numpy reads as it is, rather than a list of floats.
        values = func.array_send(_CHUNKS.c.losses) if self._is_postgresql else _CHUNKS.c.losses
        decode = codec.from_array_send if self._is_postgresql else codec.from_little_endian
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
                    copy.write(codec.binary_copy(chunks))
            else:
                driver.executemany(
                    "INSERT INTO loss_chunks (run_id, first_epoch, losses) VALUES (?, ?, ?)",
                    [(run_id, first, values.astype("<f8").tobytes()) for run_id, first, values in chunks],
                )


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


def _check_finite(values: Sequence[float] | np.ndarray) -> None:
    # SQLite would store NaN as NULL; keeping losses finite keeps both backends alike.
    if not np.isfinite(values).all():
        raise ValueError("losses must be finite; record a loss that blew up as the run's diverged_at")


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
