"""Big sweeps: creating and enqueuing a 10,000-run sweep through the API, and reading it back while workers run.

    python -m benchmarks.big_sweep_bench [--runs 10000] [--repeats 3] [--requests 40] [--quick]

On Redis and PostgreSQL, with `gradsweep api` as its own process.
1. POST /sweeps with 100 learning rates x 100 seeds (the largest sweep the API
   allows by default), 1,000 epochs each: runs stored and one message per job
   (20 jobs of 500 runs, by default) enqueued, all before the answer; timed to the end of
   the 201 answer (the sweep's summary). Baseline, by hand on the driver and
   the broker: the same sweep and run rows written by one COPY in one
   transaction, and the same messages (the jobs' run ids) sent with one
   producer, as `enqueue_jobs` sends them, to a queue of their own that no
   worker reads. No worker runs meanwhile; the messages of the API's sweeps
   stay queued for part 2.
2. GET /sweeps/{id} on the first of those sweeps (its summary: counts, best run so
   far, the data's reference lines; its runs are paged elsewhere), from a second process on 127.0.0.1 that sends one request at
   a time with 0.25 s between them: latency p50 and p99, first with no worker,
   then while a worker of 2 processes trains the queued sweeps (the first one
   first), whose runs change as the requests read them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import psycopg

from benchmarks.common import (
    driver_dsn,
    header,
    interleaved,
    median,
    paired_ratios,
    print_repetitions,
    report,
    service_on_postgresql,
    timed,
)
from gradsweep.service.settings import get_settings

THINK_SECONDS = 0.25
BARE_QUEUE = "gradsweep.bench.bare"  # no worker reads it
RUN_COLUMNS = ("sweep_id", "learning_rate", "seed", "optimizer", "epochs", "n_samples", "n_features", "data_seed",
               "mode", "batch", "batch_slot", "batch_size", "status", "created_at", "queued_at")

# The runs per job of the API's sweeps (100 x 100 runs split by GRADSWEEP_MAX_RUNS_PER_JOB), as the API reads it.
JOB_SIZE = get_settings().max_runs_per_job


def latencies(api_url: str, sweep_id: int, requests: int) -> list[float]:
    """The second process: `requests` GETs of the sweep, one at a time; prints their latencies as JSON."""
    with httpx.Client(base_url=api_url, timeout=120) as client:
        measured = []
        for _ in range(requests):
            start = time.perf_counter()
            client.get(f"/sweeps/{sweep_id}").raise_for_status()
            measured.append(time.perf_counter() - start)
            time.sleep(THINK_SECONDS)
    return measured


def from_second_process(api_url: str, sweep_id: int, requests: int) -> list[float]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.big_sweep_bench", "--client", api_url, str(sweep_id),
                           str(requests)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def by_hand(dsn: str, body: dict) -> list[list[int]]:
    """The API's sweep and runs, written by one COPY; returns the run ids of each job, as `enqueue_jobs` sends them."""
    low, high, count = body["learning_rates"]["logspace"]
    rates = np.logspace(np.log10(low), np.log10(high), count).tolist()
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as connection:
        sweep_id = connection.execute("INSERT INTO sweeps (name, created_at) VALUES (%s, %s) RETURNING id",
                                      (body["name"], now)).fetchone()[0]
        with connection.cursor() as cursor, cursor.copy(f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN") as copy:
            for i, (rate, seed) in enumerate((rate, seed) for rate in rates for seed in body["seeds"]):
                copy.write_row((sweep_id, rate, seed, "sgd", body["epochs"], 100, 50, 0, "tensor", i // JOB_SIZE,
                                i % JOB_SIZE, JOB_SIZE, "queued", now, now))
        run_ids = [row[0] for row in connection.execute("SELECT id FROM runs WHERE sweep_id = %s ORDER BY id",
                                                        (sweep_id,))]
        # No worker will train these: cancelled, so that no worker's reaper enqueues them either.
        connection.execute("UPDATE runs SET status = 'cancelled' WHERE sweep_id = %s", (sweep_id,))
    return [run_ids[i:i + JOB_SIZE] for i in range(0, len(run_ids), JOB_SIZE)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="a square number: learning rates x seeds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="GET /sweeps/{id} requests under load")
    parser.add_argument("--quick", action="store_true", help="2,500 runs, 2 repetitions, 20 requests")
    parser.add_argument("--client", nargs=3, metavar=("API_URL", "SWEEP_ID", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(latencies(args.client[0], int(args.client[1]), int(args.client[2]))))
        return
    n_runs, repeats, requests = (2_500, 2, 20) if args.quick else (args.runs, args.repeats, args.requests)
    side = round(n_runs ** 0.5)
    body = {"name": "big", "learning_rates": {"logspace": [1e-3, 5e-2, side]}, "seeds": list(range(side)),
            "epochs": 1000}

    with service_on_postgresql(api_timeout=300) as service:
        from gradsweep.worker.app import TRAIN_JOB, app
        from gradsweep.worker.queue import RETRY_POLICY

        url, storage, broker, started, api = service.url, service.storage, service.broker, service.started, service.api
        created: list[int] = []

        def post_sweep() -> float:
            start = time.perf_counter()
            answer = api.post("/sweeps", json=body).raise_for_status().json()
            elapsed = time.perf_counter() - start
            if answer["n_runs"] != side * side:
                raise SystemExit(f"the API stored {answer['n_runs']} runs, not {side * side}")
            created.append(answer["id"])
            return elapsed

        def rows_and_messages() -> float:
            def write_and_send() -> None:
                jobs = by_hand(driver_dsn(url), body)
                with app.producer_or_acquire() as producer:
                    for run_ids in jobs:
                        app.send_task(TRAIN_JOB, args=[run_ids], queue=BARE_QUEUE, soft_time_limit=600,
                                      time_limit=630, producer=producer, retry=True, retry_policy=RETRY_POLICY)
            elapsed = timed(write_and_send)
            broker.delete(BARE_QUEUE)
            return elapsed

        times = interleaved({"by hand": rows_and_messages, "POST /sweeps": post_sweep}, repeats)
        sweep_id = created[0]  # the first the worker below trains
        idle = from_second_process(str(api.base_url), sweep_id, max(10, requests // 2))
        started.worker(concurrency=2)
        time.sleep(3)  # the worker is up and training

        def finished() -> int:
            return sum(storage.get_sweep(id_).counts["succeeded"] for id_ in created)

        finished_before = finished()
        loaded = from_second_process(str(api.base_url), sweep_id, requests)
        finished_after = finished()

    header(f"big sweep: {side * side:,} runs, Redis + PostgreSQL, API in its own process; {repeats} repetitions; "
           f"seconds (lower is better)")
    report("POST /sweeps, stored and enqueued", median(times["POST /sweeps"]), median(times["by hand"]),
           "one COPY + the jobs' messages", "s", target="(no target)")
    print_repetitions(times, "s", 1, 2)
    print(f"  ratio of each repetition: {paired_ratios(times['POST /sweeps'], times['by hand'])}")
    header(f"GET /sweeps/{{id}} of that sweep from a second process, one request at a time, {THINK_SECONDS} s apart; "
           f"milliseconds")
    (idle_50, idle_99), (load_50, load_99) = percentiles(idle), percentiles(loaded)
    report("p50 while a worker trains it", load_50 * 1e3, idle_50 * 1e3, "p50 with no worker", "ms")
    report("p99 while a worker trains it", load_99 * 1e3, idle_99 * 1e3, "p99 with no worker", "ms")
    print(f"  {len(loaded)} requests under load, {len(idle)} idle; the worker had finished {finished_before:,} of "
          f"{len(created) * side * side:,} runs when they began, {finished_after:,} when they ended")


if __name__ == "__main__":
    main()
