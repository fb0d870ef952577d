"""Big sweeps: creating and enqueuing a 10,000-run sweep through the API, and reading it back while workers run.

    python -m benchmarks.big_sweep_bench [--runs 10000] [--repeats 3] [--requests 40] [--quick]

On Redis and PostgreSQL, with `gradsweep api` as its own process.
1. POST /sweeps with 100 learning rates x 100 seeds (the largest sweep the API
   allows by default): runs stored and one message per run enqueued, all
   before the answer; timed to the end of the 201 answer (which lists every
   run). Baseline: 10,000 bare messages of the same task sent with one
   producer, as `enqueue_runs` sends them. No worker runs meanwhile; the queue
   is emptied before each side.
2. GET /sweeps/{id} on that sweep (the sweep, its counts and its 10,000 runs),
   from a second process on 127.0.0.1 that sends one request at a time with
   0.25 s between them: latency p50 and p99, first with no worker, then while
   a worker of 2 processes trains the sweep's runs (1,000 epochs each).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import httpx
import numpy as np

from benchmarks.common import (
    database,
    empty_broker,
    header,
    interleaved,
    median,
    print_repetitions,
    processes,
    report,
    service_env,
    timed,
    use_service_settings,
)
from service.storage import Storage

THINK_SECONDS = 0.25


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

    with database("postgresql") as url:
        use_service_settings(url)
        from worker.app import TRAIN_RUN, app
        from worker.queue import RETRY_POLICY

        storage = Storage(url)
        with processes(service_env(url)) as started:
            api = httpx.Client(base_url=started.api(), timeout=300)
            created: list[int] = []

            def post_sweep() -> float:
                empty_broker()
                start = time.perf_counter()
                answer = api.post("/sweeps", json=body).raise_for_status().json()
                elapsed = time.perf_counter() - start
                assert len(answer["runs"]) == side * side
                created.append(answer["id"])
                return elapsed

            def bare_messages() -> float:
                empty_broker()

                def send() -> None:
                    with app.producer_or_acquire() as producer:
                        for i in range(side * side):
                            app.send_task(TRAIN_RUN, args=[i], producer=producer, retry=True,
                                          retry_policy=RETRY_POLICY)
                return timed(send)

            times = interleaved({"bare messages": bare_messages, "POST /sweeps": post_sweep}, repeats)
            sweep_id = created[-1]  # its messages are still queued: the worker below trains its runs
            idle = from_second_process(str(api.base_url), sweep_id, max(10, requests // 2))
            started.worker(concurrency=2)
            time.sleep(3)  # the worker is up and training
            loaded = from_second_process(str(api.base_url), sweep_id, requests)
            progress = storage.get_sweep(sweep_id).counts
            api.close()
        storage.close()
        empty_broker()

    header(f"big sweep: {side * side} runs, Redis + PostgreSQL, API in its own process; {repeats} repetitions; "
           f"seconds (lower is better)")
    report("POST /sweeps, stored and enqueued", median(times["POST /sweeps"]), median(times["bare messages"]),
           f"{side * side} bare messages", "s", target="(no target)")
    print_repetitions(times, "s", 1, 2)
    header(f"GET /sweeps/{{id}} of that sweep from a second process, one request at a time, {THINK_SECONDS} s apart; "
           f"milliseconds")
    (idle_50, idle_99), (load_50, load_99) = percentiles(idle), percentiles(loaded)
    report("p50 while a worker trains it", load_50 * 1e3, idle_50 * 1e3, "p50 with no worker", "ms")
    report("p99 while a worker trains it", load_99 * 1e3, idle_99 * 1e3, "p99 with no worker", "ms")
    print(f"  {len(loaded)} requests under load, {len(idle)} idle; the worker had finished "
          f"{progress['succeeded']} runs by the end")


if __name__ == "__main__":
    main()
