"""Loss writes: the storage layer's write rate against the database's own fastest bulk path, on the same rows.

    python -m benchmarks.loss_write_bench [--runs 1000] [--epochs 1000] [--repeats 3] [--quick]

R runs x E epochs of losses (Python lists of floats, as the worker buffers them),
one batch per run, each committed on its own, as a worker writes a run that
trains in under FLUSH_SECONDS. Ours: `Storage.write_losses(run, 0, values,
attempt=...)`, with its fencing and lease renewal. Baselines on the same table,
written by hand on the driver:
- PostgreSQL: a binary COPY per run, committed per run (the target's baseline),
  and one COPY of all rows in one transaction (the limit);
- SQLite (WAL, synchronous=NORMAL, as gradsweep sets it): an executemany of a
  plain INSERT per run, committed per run, and one executemany of all rows.
The table is emptied before every measurement. Target: PostgreSQL >= 0.4x the
per-run COPY's rows/s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from itertools import repeat

import numpy as np
import psycopg
from sqlalchemy import make_url

from benchmarks.common import (
    database,
    header,
    interleaved,
    main_per_backend,
    median,
    print_repetitions,
    report,
    seed_task_runs,
    timed,
)
from service.storage import Storage

COPY_ROW = np.dtype([("fields", ">i2"), ("run_id_size", ">i4"), ("run_id", ">i8"), ("epoch_size", ">i4"),
                     ("epoch", ">i4"), ("value_size", ">i4"), ("value", ">f8")])
COPY_SQL = "COPY losses (run_id, epoch, value) FROM STDIN (FORMAT BINARY)"
INSERT_SQL = "INSERT INTO losses (run_id, epoch, value) VALUES (?, ?, ?)"


def copy_block(rows: list[tuple[int, list[float]]]) -> bytes:
    """PostgreSQL's binary COPY of (run id, epoch, value) for every run's values: a header, fixed-size records, -1."""
    n = sum(len(values) for _, values in rows)
    records = np.empty(n, dtype=COPY_ROW)
    records["fields"], records["run_id_size"], records["epoch_size"], records["value_size"] = 3, 8, 4, 8
    records["run_id"] = np.concatenate([np.full(len(values), run_id) for run_id, values in rows])
    records["epoch"] = np.concatenate([np.arange(len(values)) for _, values in rows])
    records["value"] = np.concatenate([values for _, values in rows])
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + records.tobytes() + b"\xff\xff"


def postgresql_baselines(url: str, curves: dict[int, list[float]]) -> dict[str, Callable[[], None]]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def copy_per_run() -> None:
        with psycopg.connect(dsn) as connection:
            for run_id, values in curves.items():
                with connection.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
                    copy.write(copy_block([(run_id, values)]))
                connection.commit()

    def one_copy() -> None:
        with psycopg.connect(dsn) as connection:
            with connection.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
                copy.write(copy_block(list(curves.items())))
            connection.commit()

    return {"COPY per run": copy_per_run, "one COPY of all rows": one_copy}


def sqlite_connection(url: str) -> sqlite3.Connection:
    connection = sqlite3.connect(make_url(url).database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def sqlite_baselines(url: str, curves: dict[int, list[float]]) -> dict[str, Callable[[], None]]:
    def executemany_per_run() -> None:
        connection = sqlite_connection(url)
        for run_id, values in curves.items():
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(INSERT_SQL, zip(repeat(run_id), range(len(values)), values))
            connection.execute("COMMIT")
        connection.close()

    def one_executemany() -> None:
        connection = sqlite_connection(url)
        connection.execute("BEGIN IMMEDIATE")
        for run_id, values in curves.items():
            connection.executemany(INSERT_SQL, zip(repeat(run_id), range(len(values)), values))
        connection.execute("COMMIT")
        connection.close()

    return {"executemany per run": executemany_per_run, "one executemany of all": one_executemany}


def empty_losses(backend: str, url: str) -> None:
    if backend == "postgresql":
        with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as connection:
            connection.execute("TRUNCATE losses")
    else:
        connection = sqlite_connection(url)
        connection.execute("DELETE FROM losses")
        connection.close()


def bench(backend: str, n_runs: int, epochs: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    with database(backend) as url:
        storage = Storage(url)
        _, runs = storage.create_sweep("writes", seed_task_runs(n_runs, epochs),
                                       lambda run_ids: None)
        attempts = {run.id: storage.start_run(run.id, "bench").attempts for run in runs}
        curves = {run.id: rng.random(epochs).tolist() for run in runs}

        def ours() -> None:
            for run_id, values in curves.items():
                assert storage.write_losses(run_id, 0, values, attempt=attempts[run_id])

        baselines = postgresql_baselines(url, curves) if backend == "postgresql" else sqlite_baselines(url, curves)
        sides = {"storage": ours, **baselines}

        def measured(write: Callable[[], None]) -> Callable[[], float]:
            def measure() -> float:
                empty_losses(backend, url)
                return n_runs * epochs / timed(write)
            return measure

        rates = interleaved({name: measured(write) for name, write in sides.items()}, repeats)
        check = storage.run_losses(runs[-1].id)
        storage.close()
    assert check.tolist() == curves[runs[-1].id], "the last side did not store the same values"

    header(f"{backend}: {n_runs} runs x {epochs} epochs, one batch and one commit per run; {repeats} repetitions; "
           f"rows/s (higher is better)")
    ours_rate = median(rates["storage"])
    for i, name in enumerate(baselines):
        target = ("(target >= 0.4x)" if backend == "postgresql" else "") if i == 0 else "(the limit: one transaction)"
        report("Storage.write_losses", ours_rate, median(rates[name]), name, "rows/s", target=target)
    print_repetitions(rates, "thousand rows/s", 1e-3, 0)


def main() -> None:
    main_per_backend(__doc__, bench, "(ratio = storage / baseline, in rows/s)")


if __name__ == "__main__":
    main()
