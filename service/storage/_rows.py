"""What every aggregate of `Storage` shares: the tables, the rows read back as records, and `Aggregate`,
the base that names what each aggregate uses of the `Storage` it is part of."""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, select

from gradsweep.service.domain.records import Job, Run, RunConfig, RunStatus
from gradsweep.service.domain.search import SearchSpec
from gradsweep.service.storage.errors import NotFound
from gradsweep.service.storage.models import LossChunkRow, RungRow, RunRow, SweepRow

Enqueue = Callable[[list[Job]], None]

_SWEEPS = cast(Table, SweepRow.__table__)


_RUNS = cast(Table, RunRow.__table__)


_CHUNKS = cast(Table, LossChunkRow.__table__)


_RUNGS = cast(Table, RungRow.__table__)


_CONFIG_FIELDS = [field.name for field in fields(RunConfig)]


_FINISHED = [status.value for status in RunStatus if status.is_finished]


# Key of the PostgreSQL advisory lock that `create_sweep` holds shared; see `_wait_for_runs`.
_SWEEP_CREATION_LOCK = 0x67726164


class Aggregate:
    """A part of `Storage` (sweeps, jobs, losses, rungs, access): each public method is one transaction of
    `Storage._transaction`, on SQLite or PostgreSQL (`_is_postgresql`)."""

    _is_postgresql: bool

    def _transaction(self, *, write: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _wait_for_runs(self, connection: Connection, run_ids: Sequence[int]) -> bool:
        raise NotImplementedError


def _now() -> datetime:
    return datetime.now(UTC)


def _require(connection: Connection, table: Table, id_: int) -> None:
    if connection.execute(select(table.c.id).where(table.c.id == id_)).first() is None:
        raise NotFound(f"no {'sweep' if table is _SWEEPS else 'run'} {id_}")


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


def _search(connection: Connection, sweep_id: int) -> SearchSpec | None:
    """The sweep's search, read back typed (None: a grid of the first form)."""
    stored = connection.scalar(select(_SWEEPS.c.search).where(_SWEEPS.c.id == sweep_id))
    return None if stored is None else SearchSpec.of_stored(stored)
