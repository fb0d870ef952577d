"""Sweep throughput: sweeps through the whole service against the same trainings in plain processes that store nothing.

    python -m benchmarks.sweep_bench [--runs 200 10000] [--epochs 1000] [--repeats 5] [--quick]

Ours: `gradsweep api` and one `gradsweep worker --concurrency 2` on Redis and
PostgreSQL; POST /sweeps of 20 learning rates x N/20 seeds (N runs of the seed's
task, 1,000 epochs each), which the API batches into jobs (200 runs: 2 jobs of
100; 10,000 runs: 20 jobs of 500), timed from the request to the moment the
last run was stored (its `finished_at`). Baselines: the same runs in a pool of 2
processes started beforehand, with one BLAS thread each as the workers have,
storing nothing,
- one at a time, each run alone (`linear_regression.train`), as the service
  trained them before it batched them; only up to 1,000 runs, since 10,000
  take minutes. Target for 200 runs: <= 0.4x (stretch: <= 0.15x).
- the batched limit: `train_batch` calls of 100 runs each. Target for 200
  runs: <= 2.5x (stretch: <= 1.3x).
For 10,000 runs the target is the time itself: <= 30 s (stretch: <= 10 s).
Two more sides split the difference to the limit: the service's jobs (the
same batches as the limit's when the defaults hold) trained
by `train_batch` in the same 2 plain processes (the batches' share), and as
bare Celery tasks on the same worker that train their batch and store nothing,
from the first message sent until the last is acknowledged (Celery's share);
what the service adds to those is the API's and the storage's share.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable

from benchmarks.common import (
    WORKER_ENVIRONMENT,
    against,
    batches,
    grid,
    header,
    interleaved,
    last_stored,
    median,
    paired_ratios,
    print_repetitions,
    report,
    service_on_postgresql,
    sweep_body,
    timed,
    train_one,
    train_together,
    wait_for_sweep,
    wait_until_drained,
)

ONE_AT_A_TIME_UP_TO = 1000  # runs; more would take minutes a repetition


def the_api_jobs(body: dict) -> list[tuple[list, list, int]]:
    """`train_together`'s arguments for each job POST /sweeps makes of `body`'s runs."""
    from pydantic import TypeAdapter

    from gradsweep.service.api.schemas import SweepCreate
    from gradsweep.service.domain.batching import batch_sizes
    from gradsweep.service.settings import get_settings

    configs = [config for _, config in TypeAdapter(SweepCreate).validate_python(body).planned_runs()]
    runs = [(config.learning_rate, config.seed) for config in configs]
    jobs, first = [], 0
    for size in batch_sizes(configs, get_settings()):
        jobs += batches(runs[first:first + size], body["epochs"], size)
        first += size
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[200, 10_000], help="sweep sizes, multiples of 20")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 runs, 2 repetitions")
    args = parser.parse_args()
    sizes, repeats = ([200, 2000], 2) if args.quick else (args.runs, args.repeats)
    epochs = args.epochs

    os.environ.update(WORKER_ENVIRONMENT)  # read by the pool's processes when they start
    with multiprocessing.get_context("spawn").Pool(2) as pool, service_on_postgresql(api_timeout=600) as service:
        from benchmarks.noop_worker import TRAIN_BATCH_ONLY, app  # the Celery app reads the settings when imported
        from gradsweep.worker.app import QUEUE

        storage, broker, started, api = service.storage, service.broker, service.started, service.api
        started.worker(concurrency=2, app="benchmarks.noop_worker")

        def through_the_service(body: dict) -> float:
            """Seconds from POST /sweeps to the last run stored."""
            submitted = time.time()
            sweep_id = api.post("/sweeps", json=body).raise_for_status().json()["id"]
            return last_stored(wait_for_sweep(storage, sweep_id)) - submitted

        def as_bare_jobs(jobs: list[tuple[list, list, int]]) -> float:
            """Seconds from the first message sent to the last acknowledged."""
            start = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for job in jobs:
                    app.send_task(TRAIN_BATCH_ONLY, args=list(job), producer=producer)
            return wait_until_drained(broker, QUEUE) - start

        def sides(n_runs: int) -> dict[str, Callable[[], float]]:
            body = sweep_body("throughput", n_runs, epochs)
            runs, jobs = grid(n_runs), the_api_jobs(body)
            measured = {
                "batched limit": lambda: timed(lambda: pool.map(train_together, batches(runs, epochs),
                                                                chunksize=1)),
                "service": lambda: through_the_service(body),
                "bare Celery jobs": lambda: as_bare_jobs(jobs),
            }
            if jobs != batches(runs, epochs):
                measured["its jobs, plain"] = lambda: timed(lambda: pool.map(train_together, jobs, chunksize=1))
            if n_runs <= ONE_AT_A_TIME_UP_TO:
                one_at_a_time = [(rate, seed, epochs) for rate, seed in runs]
                measured["one at a time"] = lambda: timed(lambda: pool.map(train_one, one_at_a_time, chunksize=1))
            return measured

        # Warm: the worker is up, its processes have connected and imported the engine, and so have the pool's.
        for measure in sides(40).values():
            measure()
        for n_runs in sizes:
            times = interleaved(sides(n_runs), repeats)
            summary(n_runs, epochs, len(the_api_jobs(sweep_body("throughput", n_runs, epochs))), repeats, times)


def summary(n_runs: int, epochs: int, n_jobs: int, repeats: int, times: dict[str, list[float]]) -> None:
    header(f"sweep throughput: {n_runs:,} runs x {epochs} epochs in {n_jobs} jobs, 2 training processes, "
           f"Redis + PostgreSQL; {repeats} repetitions; seconds (lower is better)")
    ours, limit = median(times["service"]), median(times["batched limit"])
    targets = n_runs == 200
    if "one at a time" in times:
        alone = median(times["one at a time"])
        report("POST /sweeps to last run stored", ours, alone, "one at a time, 2 processes", "s",
               target=against(ours / alone, 0.4, 0.15) if targets else "")
    report("POST /sweeps to last run stored", ours, limit, "train_batch of 100, 2 processes", "s",
           target=against(ours / limit, 2.5, 1.3) if targets else "")
    # Where the time beyond the limit goes: the API's batches, Celery, then the API and the storage.
    bare, plain = median(times["bare Celery jobs"]), median(times.get("its jobs, plain", times["batched limit"]))
    if "its jobs, plain" in times:
        report("its jobs in 2 plain processes", plain, limit, "train_batch of 100, 2 processes", "s",
               target="(the batches' share)")
    report("its jobs as bare Celery tasks", bare, plain, "its jobs in 2 plain processes", "s",
           target="(Celery's share)")
    report("POST /sweeps to last run stored", ours, bare, "its jobs as bare Celery tasks", "s",
           target="(the API's and the storage's share)")
    if n_runs == 10_000:
        print(f"  {n_runs:,} runs, submitted to stored: {ours:.1f} s {against(ours, 30, 10, unit=' s')}")
    print_repetitions(times, "s", 1, 3)
    for name in ("one at a time", "batched limit"):
        if name in times:
            print(f"  ratio of each repetition, service / {name}: {paired_ratios(times['service'], times[name])}")
    print("(ratio = ours / baseline)", flush=True)


if __name__ == "__main__":
    main()
