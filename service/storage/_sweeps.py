"""Sweeps and their runs: created whole, read as summaries and pages, cancelled, retried and deleted."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import aliased

from gradsweep.service.domain.planning import SweepPlan
from gradsweep.service.domain.records import Run, RunConfig, RunFilter, RunPage, RunStatus, Sweep, SweepOverview
from gradsweep.service.domain.search import SearchSpec
from gradsweep.service.storage._rows import (
    Aggregate, _CHUNKS, Enqueue, _enqueued, _insert_runs, _jobs, _now, _require, _run, _RUNGS, _runs, _RUNS, _search,
    _SWEEP_CREATION_LOCK, _SWEEPS,
)
from gradsweep.service.storage.access import audit
from gradsweep.service.storage.errors import NotFound, SweepActive


class Sweeps(Aggregate):
    """The sweeps and runs part of `Storage`."""

    def create_sweep(
        self, name: str, configs: Sequence[RunConfig], enqueue: Enqueue, *, batch_sizes: Sequence[int] | None = None,
        search: SearchSpec | None = None, points: Sequence[int] | None = None, searching: bool = False,
        created_by: str | None = None,
    ) -> tuple[Sweep, list[Run]]:
        """Stores a sweep with one queued run per config and enqueues them: all of it or, if anything raises, none.

        Consecutive configs form batches of `batch_sizes` runs (by default a batch per
        run); a batch is trained as one computation, one job on the queue. A worker
        may get a job before this commits; `start_job` waits for the commit. `search`
        is kept with the sweep: how its runs were chosen; `points`, one
        per config, which of the search's points each run trains; `searching`, whether
        more runs are to come (`add_runs`); `created_by`, the name of the token that
        submitted it, kept with the sweep and in the audit log.
        """
        with self._transaction(write=True) as connection:
            sweep_id = self._insert_sweep(connection, name, configs, enqueue, batch_sizes, search, points, searching,
                                          created_by)
            return _sweeps(connection, _SWEEPS.c.id == sweep_id)[0], _runs(connection, _RUNS.c.sweep_id == sweep_id)

    def create_planned_sweep(self, plan: SweepPlan, enqueue: Enqueue, *, created_by: str | None = None) -> SweepOverview:
        """`create_sweep` of a plan (service/domain/planning.py); returns the new sweep's summary, read in the same
        transaction, so that the API answers from what it stored."""
        with self._transaction(write=True) as connection:
            sweep_id = self._insert_sweep(connection, plan.name, plan.configs, enqueue, plan.batch_sizes, plan.search,
                                          plan.points, plan.searching, created_by)
            return _overview(connection, sweep_id)

    def _insert_sweep(self, connection: Connection, name: str, configs: Sequence[RunConfig], enqueue: Enqueue,
                      batch_sizes: Sequence[int] | None, search: SearchSpec | None, points: Sequence[int] | None,
                      searching: bool, created_by: str | None) -> int:
        if not configs:
            raise ValueError("a sweep needs at least one run")
        batch_sizes = [1] * len(configs) if batch_sizes is None else list(batch_sizes)
        if sum(batch_sizes) != len(configs) or min(batch_sizes) < 1:
            raise ValueError(f"batch sizes {batch_sizes} do not add up to the sweep's {len(configs)} runs")
        points = [None] * len(configs) if points is None else list(points)
        if len(points) != len(configs):
            raise ValueError(f"{len(points)} points for {len(configs)} runs")
        now = _now()
        if self._is_postgresql:
            connection.execute(select(func.pg_advisory_xact_lock_shared(_SWEEP_CREATION_LOCK)))
        sweep_id = connection.execute(
            insert(_SWEEPS).values(name=name, created_at=now, searching=searching,
                                   search=None if search is None else search.stored(), created_by=created_by)
            .returning(_SWEEPS.c.id)).scalar_one()
        if created_by is not None:
            audit(connection, created_by, "create", sweep_id)
        _insert_runs(connection, sweep_id, configs, points, batch_sizes, 0, now)
        enqueue(_jobs(_runs(connection, _RUNS.c.sweep_id == sweep_id)))
        return sweep_id

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
            return _overview(connection, sweep_id)

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
        """Queues the sweep's failed and cancelled runs again and enqueues them; returns their ids.

        A Bayesian search cancelled before its last wave searches again: its next wave is
        proposed when the runs queued again end (or at once by a reaper, if none was).
        """
        with self._transaction(write=True) as connection:
            _require(connection, _SWEEPS, sweep_id)
            if actor is not None:
                audit(connection, actor, "retry", sweep_id)
            search = _search(connection, sweep_id)
            if search is not None and search.method == "bayes":
                points = connection.scalar(select(func.max(_RUNS.c.point)).where(_RUNS.c.sweep_id == sweep_id))
                searching = search.searching_after(0 if points is None else points + 1)
                connection.execute(update(_SWEEPS).where(_SWEEPS.c.id == sweep_id).values(searching=searching))
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
        for name, low, high in where.ranges:
            if low is not None:
                conditions.append(_RUNS.c[name] >= low)
            if high is not None:
                conditions.append(_RUNS.c[name] <= high)
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


def _overview(connection: Connection, sweep_id: int) -> SweepOverview:
    found = _sweeps(connection, _SWEEPS.c.id == sweep_id)
    if not found:
        raise NotFound(f"no sweep {sweep_id}")
    task, n_jobs = _shape(connection, sweep_id)
    return SweepOverview(sweep=found[0], task=task, n_jobs=n_jobs,
                         best_run=_best_runs(connection, [sweep_id]).get(sweep_id), search=_search(connection, sweep_id))


def _sweeps(connection: Connection, *where: Any) -> list[Sweep]:
    """Sweeps with their run counts per status, newest (highest id) first, from one grouped query; and of the
    searches still proposing waves, how many runs they plan (from their stored search, in the same transaction)."""
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
    searching_ids = [id_ for id_, (_, _, searching, _) in heads.items() if searching]
    searches: dict[int, Any] = dict(connection.execute(
        select(_SWEEPS.c.id, _SWEEPS.c.search).where(_SWEEPS.c.id.in_(searching_ids))).all()) if searching_ids else {}
    return [
        Sweep(id=id_, name=name, created_at=created_at, n_runs=(n_runs := sum(counts[id_].values())), counts=counts[id_],
              searching=searching, created_by=created_by,
              planned_runs=SearchSpec.of_stored(searches[id_]).planned_runs(n_runs, searching) if id_ in searches
              else n_runs)
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
