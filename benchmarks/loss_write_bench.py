"""Loss writes: the storage layer's write rate against the database's own fastest bulk path, on the same table.

    python -m benchmarks.loss_write_bench [--runs 1000] [--epochs 1000] [--repeats 5] [--quick]

R runs x E epochs of losses (a numpy array per run, as `train_batch` gives
them), in jobs of 100 runs, as the API batches a sweep of 400 runs or more.
Each job's losses are written in one transaction, as a worker writes a job
that trains within FLUSH_SECONDS: a chunk (a row) per run. Ours:
`Storage.record` of the job's runs, with its attempt fencing and lease renewal
(each run's row locked and updated). Reported beside it: `Storage.write_losses`
per run, a transaction each, as a job of one run (`"batched": false`) writes.
Baselines on the same table and the same chunks, written by hand on the driver:
- PostgreSQL: a binary COPY per job, committed per job (the target's
  baseline), and one COPY of every chunk in one transaction (the limit); for
  reference, a binary COPY per job of a row per epoch into a table of the
  layout before chunks (run_id, epoch, value; primary key (run_id, epoch));
- SQLite (WAL, synchronous=NORMAL, as gradsweep sets it): an executemany of a
  plain INSERT per job, committed per job, and one executemany of every chunk.
Before every measurement each job is started again (a new attempt, as a redone
job starts) and the table emptied. Target: PostgreSQL >= 0.4x the per-job COPY's
losses/s.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable

import numpy as np
import psycopg
from sqlalchemy import make_url

from benchmarks.common import (
    RUNS_PER_JOB,
    against,
    database,
    driver_dsn,
    header,
    interleaved,
    main_per_backend,
    median,
    print_repetitions,
    report,
    seed_task_runs,
    timed,
)
from gradsweep.service.storage import LossWrite, Storage
from tests.support.writes import write_losses

Chunks = list[tuple[int, np.ndarray]]  # (run id, losses from epoch 0)

COPY_HEADER, COPY_TRAILER = b"PGCOPY\n\xff\r\n\x00" + bytes(8), b"\xff\xff"
COPY_CHUNKS = "COPY loss_chunks (run_id, first_epoch, losses) FROM STDIN (FORMAT BINARY)"
# Per chunk: 3 fields; run_id (8 bytes); first_epoch (4 bytes); the float8[]'s length, then its header
# (1 dimension, no nulls, element type 701, the dimension's size, lower bound 1) and (length 8, value) per element.
CHUNK_HEAD = struct.Struct(">hiqiiiiiiii")
ELEMENT = np.dtype([("size", ">i4"), ("value", ">f8")])
INSERT_CHUNK = "INSERT INTO loss_chunks (run_id, first_epoch, losses) VALUES (?, ?, ?)"

PER_EPOCH = "losses_per_epoch"
PER_EPOCH_TABLE = (f"CREATE TABLE {PER_EPOCH} (run_id bigint NOT NULL, epoch integer NOT NULL, "
                   f"value double precision NOT NULL, PRIMARY KEY (run_id, epoch))")
COPY_PER_EPOCH = f"COPY {PER_EPOCH} (run_id, epoch, value) FROM STDIN (FORMAT BINARY)"
PER_EPOCH_SIDE = "COPY per job, a row per epoch"
EPOCH_ROW = np.dtype([("fields", ">i2"), ("run_id_size", ">i4"), ("run_id", ">i8"), ("epoch_size", ">i4"),
                      ("epoch", ">i4"), ("value_size", ">i4"), ("value", ">f8")])


def chunk_copy(chunks: Chunks) -> bytes:
    """PostgreSQL's binary COPY of a (run id, 0, float8[]) row per chunk."""
    parts = [COPY_HEADER]
    for run_id, values in chunks:
        elements = np.empty(values.size, dtype=ELEMENT)
        elements["size"], elements["value"] = 8, values
        parts += [CHUNK_HEAD.pack(3, 8, run_id, 4, 0, 20 + elements.nbytes, 1, 0, 701, values.size, 1),
                  elements.tobytes()]
    return b"".join(parts + [COPY_TRAILER])


def epoch_copy(chunks: Chunks) -> bytes:
    """PostgreSQL's binary COPY of a (run id, epoch, value) row per loss."""
    records = np.empty(sum(values.size for _, values in chunks), dtype=EPOCH_ROW)
    records["fields"], records["run_id_size"], records["epoch_size"], records["value_size"] = 3, 8, 4, 8
    records["run_id"] = np.concatenate([np.full(values.size, run_id) for run_id, values in chunks])
    records["epoch"] = np.concatenate([np.arange(values.size) for _, values in chunks])
    records["value"] = np.concatenate([values for _, values in chunks])
    return COPY_HEADER + records.tobytes() + COPY_TRAILER


def postgresql_baselines(dsn: str, jobs: list[Chunks]) -> dict[str, Callable[[], None]]:
    def copy_per_job(sql: str = COPY_CHUNKS, encode: Callable[[Chunks], bytes] = chunk_copy) -> None:
        with psycopg.connect(dsn) as connection:
            for job in jobs:
                with connection.cursor() as cursor, cursor.copy(sql) as copy:
                    copy.write(encode(job))
                connection.commit()

    def one_copy() -> None:
        with psycopg.connect(dsn) as connection:
            with connection.cursor() as cursor, cursor.copy(COPY_CHUNKS) as copy:
                copy.write(chunk_copy([chunk for job in jobs for chunk in job]))
            connection.commit()

    return {"COPY per job": copy_per_job, "one COPY of all chunks": one_copy,
            PER_EPOCH_SIDE: lambda: copy_per_job(COPY_PER_EPOCH, epoch_copy)}


def sqlite_connection(url: str) -> sqlite3.Connection:
    connection = sqlite3.connect(make_url(url).database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def sqlite_baselines(url: str, jobs: list[Chunks]) -> dict[str, Callable[[], None]]:
    def rows(job: Chunks) -> list[tuple[int, int, bytes]]:
        return [(run_id, 0, values.astype("<f8").tobytes()) for run_id, values in job]

    def executemany_per_job() -> None:
        connection = sqlite_connection(url)
        for job in jobs:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(INSERT_CHUNK, rows(job))
            connection.execute("COMMIT")
        connection.close()

    def one_executemany() -> None:
        connection = sqlite_connection(url)
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(INSERT_CHUNK, [row for job in jobs for row in rows(job)])
        connection.execute("COMMIT")
        connection.close()

    return {"executemany per job": executemany_per_job, "one executemany of all": one_executemany}


def empty_tables(backend: str, url: str) -> None:
    if backend == "postgresql":
        with psycopg.connect(driver_dsn(url), autocommit=True) as connection:
            connection.execute(f"TRUNCATE loss_chunks, {PER_EPOCH}")
    else:
        connection = sqlite_connection(url)
        connection.execute("DELETE FROM loss_chunks")
        connection.close()


def bench(backend: str, n_runs: int, epochs: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    with database(backend) as url:
        if backend == "postgresql":
            with psycopg.connect(driver_dsn(url), autocommit=True) as connection:
                connection.execute(PER_EPOCH_TABLE)
        storage = Storage(url)
        starts = range(0, n_runs, RUNS_PER_JOB)
        _, runs = storage.create_sweep("writes", seed_task_runs(n_runs, epochs), lambda jobs: None,
                                       batch_sizes=[min(RUNS_PER_JOB, n_runs - first) for first in starts])
        jobs = [[(run.id, rng.random(epochs)) for run in runs[first:first + RUNS_PER_JOB]] for first in starts]
        attempts: dict[int, int] = {}

        def record_per_job() -> None:
            for job in jobs:
                written = storage.record([LossWrite(run_id, 0, values, attempts[run_id]) for run_id, values in job])
                assert len(written) == len(job)

        def write_losses_per_run() -> None:
            for job in jobs:
                for run_id, values in job:
                    assert write_losses(storage, run_id, 0, values, attempt=attempts[run_id])

        if backend == "postgresql":
            baselines = postgresql_baselines(driver_dsn(url), jobs)
        else:
            baselines = sqlite_baselines(url, jobs)
        sides = {"Storage.record per job": record_per_job, "Storage.write_losses per run": write_losses_per_run,
                 **baselines}

        def measured(name: str, write: Callable[[], None]) -> Callable[[], float]:
            def measure() -> float:
                for job in jobs:  # a new attempt, from epoch 0
                    started = storage.start_job([run_id for run_id, _ in job], "bench")
                    attempts.update((run.id, run.attempts) for run in started.batch)
                empty_tables(backend, url)
                rate = n_runs * epochs / 1e6 / timed(write)  # million losses a second
                last_run, last_curve = jobs[-1][-1]
                if name != PER_EPOCH_SIDE and not np.array_equal(storage.run_losses(last_run), last_curve):
                    raise SystemExit(f"{name} did not store the same values")
                return rate
            return measure

        rates = interleaved({name: measured(name, write) for name, write in sides.items()}, repeats)
        storage.close()

    header(f"{backend}: {n_runs} runs x {epochs} epochs, a transaction per job of {RUNS_PER_JOB} runs; "
           f"{repeats} repetitions; million losses/s (higher is better)")
    ours = median(rates["Storage.record per job"])
    first, limit, *others = baselines
    report("Storage.record per job", ours, median(rates[first]), first, "M/s",
           target=against(ours / median(rates[first]), 0.4, higher=True) if backend == "postgresql" else "")
    report("Storage.record per job", ours, median(rates[limit]), limit, "M/s", target="(the limit)")
    for name in others:
        report("Storage.record per job", ours, median(rates[name]), name, "M/s", target="(the old layout)")
    alone = median(rates["Storage.write_losses per run"])
    report("Storage.write_losses per run", alone, median(rates[first]), first, "M/s", target="(reported)")
    print_repetitions(rates, "million losses/s", 1, 2)


def main() -> None:
    main_per_backend(__doc__, bench, "(ratio = storage / baseline, in losses/s)")


if __name__ == "__main__":
    main()
