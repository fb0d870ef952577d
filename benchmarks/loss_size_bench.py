"""Bytes on disk per stored loss, PostgreSQL: the losses of a sweep in `loss_chunks`, against a row per epoch.

    python -m benchmarks.loss_size_bench [--runs 1000] [--epochs 1000] [--repeats 3] [--quick]

A sweep of R runs x E epochs (a million losses by default) of the seed's task.
Figure: `pg_total_relation_size` of the table (its heap, TOAST and indexes,
with their free-space and visibility maps) after a VACUUM, over the number of
losses it holds. Each repetition empties the table (TRUNCATE) before each side:
- service: POST /sweeps to `gradsweep api`, trained by a worker of 2
  processes, each job writing its runs' losses as workers do (all its runs in
  one `Storage.record` every 0.5 s and at its end).
- a record per job: the same curves, written by `Storage.record` as a worker
  writes a job that trains within 0.5 s: one call per 100 runs, each run's
  whole curve one chunk, with its outcome.
- baseline: the layout before chunks, a row per epoch: a table (run_id bigint,
  epoch int, value double precision, primary key (run_id, epoch)), holding
  the same losses, written by one binary COPY.
Target: <= 16 bytes a loss (stretch: <= 10).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import psycopg

from benchmarks.common import (
    RUNS_PER_JOB,
    against,
    driver_dsn,
    header,
    interleaved,
    median,
    paired_ratios,
    print_repetitions,
    report,
    seed_task_runs,
    service_on_postgresql,
    sweep_body,
    wait_for_sweep,
)
from gradsweep.service.storage import LossWrite, Outcome, RunStatus

PER_EPOCH = "losses_per_epoch"
PER_EPOCH_TABLE = (f"CREATE TABLE {PER_EPOCH} (run_id bigint NOT NULL, epoch integer NOT NULL, "
                   f"value double precision NOT NULL, PRIMARY KEY (run_id, epoch))")
COPY_ROW = np.dtype([("fields", ">i2"), ("run_id_size", ">i4"), ("run_id", ">i8"), ("epoch_size", ">i4"),
                     ("epoch", ">i4"), ("value_size", ">i4"), ("value", ">f8")])


def rows_per_epoch(curves: dict[int, np.ndarray]) -> bytes:
    """PostgreSQL's binary COPY of (run id, epoch, value) for every loss: a header, fixed-size records, -1."""
    records = np.empty(sum(curve.size for curve in curves.values()), dtype=COPY_ROW)
    records["fields"], records["run_id_size"], records["epoch_size"], records["value_size"] = 3, 8, 4, 8
    records["run_id"] = np.concatenate([np.full(curve.size, run_id) for run_id, curve in curves.items()])
    records["epoch"] = np.concatenate([np.arange(curve.size) for curve in curves.values()])
    records["value"] = np.concatenate(list(curves.values()))
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + records.tobytes() + b"\xff\xff"


class Table:
    """One table's size on disk, by hand on the driver."""

    def __init__(self, dsn: str, name: str, count: str) -> None:
        self.dsn, self.name, self.count = dsn, name, count  # count: SQL for the number of losses it holds

    def empty(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(f"TRUNCATE {self.name}")

    def parts(self) -> dict[str, int]:
        """Bytes of the heap, TOAST (with its index) and indexes, after a VACUUM; and the losses held."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(f"VACUUM {self.name}")
            heap, toast, indexes, total = connection.execute(
                "SELECT pg_relation_size(oid, 'main') + pg_relation_size(oid, 'fsm') + pg_relation_size(oid, 'vm'), "
                "coalesce(pg_total_relation_size(nullif(reltoastrelid, 0)), 0), pg_indexes_size(oid), "
                "pg_total_relation_size(oid) FROM pg_class WHERE oid = %s::regclass", (self.name,)).fetchone()
            losses = connection.execute(self.count).fetchone()[0]
            rows = connection.execute(f"SELECT count(*) FROM {self.name}").fetchone()[0]
        return {"heap": heap, "toast": toast, "indexes": indexes, "total": total, "losses": losses, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="a multiple of 20")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 runs, 2 repetitions")
    args = parser.parse_args()
    n_runs, repeats = (200, 2) if args.quick else (args.runs, args.repeats)
    epochs = args.epochs

    with service_on_postgresql(api_timeout=300) as service:
        storage, started, api = service.storage, service.started, service.api
        dsn = driver_dsn(service.url)
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(PER_EPOCH_TABLE)
        chunks = Table(dsn, "loss_chunks", "SELECT coalesce(sum(cardinality(losses)), 0) FROM loss_chunks")
        per_epoch = Table(dsn, PER_EPOCH, f"SELECT count(*) FROM {PER_EPOCH}")
        parts: dict[str, list[dict[str, int]]] = {"service": [], "a record per job": [], "a row per epoch": []}
        curves: dict[int, np.ndarray] = {}
        started.worker(concurrency=2)

        def through_the_service() -> None:
            sweep_id = api.post("/sweeps", json=sweep_body("size", n_runs, epochs)).raise_for_status().json()["id"]
            wait_for_sweep(storage, sweep_id)
            curves.clear()
            curves.update(storage.sweep_losses(sweep_id))

        def a_record_per_job() -> None:
            """The service's last curves again, one `record` call per job of RUNS_PER_JOB runs."""
            starts = range(0, n_runs, RUNS_PER_JOB)
            _, runs = storage.create_sweep("size", seed_task_runs(n_runs, epochs), lambda jobs: None,
                                           batch_sizes=[min(RUNS_PER_JOB, n_runs - first) for first in starts])
            values = list(curves.values())
            for first in starts:
                job = storage.start_job([run.id for run in runs[first:first + RUNS_PER_JOB]], "bench")
                storage.record([
                    LossWrite(run.id, 0, curve, run.attempts, Outcome(RunStatus.SUCCEEDED, float(curve[-1])))
                    for run, curve in zip(job.batch, values[first:first + RUNS_PER_JOB], strict=True)])

        def a_row_per_epoch() -> None:
            with psycopg.connect(dsn) as connection, connection.cursor() as cursor, cursor.copy(
                    f"COPY {PER_EPOCH} (run_id, epoch, value) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(rows_per_epoch(curves))

        def measured(side: str, table: Table, store: Callable[[], None]) -> Callable[[], float]:
            def measure() -> float:
                table.empty()
                store()
                parts[side].append(table.parts())
                return parts[side][-1]["total"] / parts[side][-1]["losses"]
            return measure

        sizes = interleaved({
            "service": measured("service", chunks, through_the_service),
            "a record per job": measured("a record per job", chunks, a_record_per_job),
            "a row per epoch": measured("a row per epoch", per_epoch, a_row_per_epoch),
        }, repeats)

    expected = n_runs * epochs
    for side, measured_parts in parts.items():
        if any(part["losses"] != expected for part in measured_parts):
            raise SystemExit(f"{side}: {[part['losses'] for part in measured_parts]} losses stored, not {expected}")
    header(f"bytes on disk per loss, PostgreSQL: a {n_runs} x {epochs} sweep ({expected:,} losses), table + TOAST + "
           f"indexes after VACUUM; {repeats} repetitions (lower is better)")
    base = median(sizes["a row per epoch"])
    for side in ("service", "a record per job"):
        ours = median(sizes[side])
        report(f"loss_chunks, {side}", ours, base, "a row per epoch (before chunks)", "bytes",
               target=against(ours, 16, 10, unit=" bytes"))
    print_repetitions(sizes, "bytes a loss", 1, 2)
    print(f"  ratio of each repetition, service / a row per epoch: "
          f"{paired_ratios(sizes['service'], sizes['a row per epoch'])}")
    for side, measured_parts in parts.items():
        last = measured_parts[-1]
        print(f"  {side}, last repetition: " + ", ".join(
            f"{name} {last[name] / expected:.2f}" for name in ("heap", "toast", "indexes"))
            + f" bytes a loss; {last['rows']:,} rows")
    print("(ratio = ours / a row per epoch)")


if __name__ == "__main__":
    main()
