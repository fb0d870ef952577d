"""Reading a 10,000-run sweep while workers train another: latency of the summary, a page of runs and the curves.

    python -m benchmarks.read_latency_bench [--runs 10000] [--epochs 1000] [--clients 20] [--seconds 30]
                                            [--backend postgresql|sqlite|both] [--quick]

With `gradsweep api` and a worker of 2 processes as their own processes, on Redis and
PostgreSQL or SQLite: a sweep of 100 learning rates x 100 seeds x 1,000 epochs is
trained and stored, then a second sweep of the same size and 20 times the epochs is
submitted, so that the worker trains (and writes) while the first is read. A second
process on 127.0.0.1 then sends, for `--seconds` each, from `--clients` concurrent
clients, one kind of request at a time:

- the sweep's summary, `GET /sweeps/{id}`;
- a page of 100 runs sorted by final loss, `GET /sweeps/{id}/runs?limit=100&sort=final_loss`;
- every curve down-sampled to 200 points, `GET /sweeps/{id}/losses?points=200`.

It prints p50 and p99 latencies and errors (any answer but 200), against the same
request sent by one client alone just before (the baseline: what concurrency costs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from benchmarks.common import database, empty_broker, header, processes, service_env, use_service_settings
from service.storage import Storage

REQUESTS = {
    "summary": "/sweeps/{id}",
    "page of 100 by final loss": "/sweeps/{id}/runs?limit=100&sort=final_loss",
    "200-point curves, every run": "/sweeps/{id}/losses?points=200",
}
TARGETS_MS = {"summary": 50, "page of 100 by final loss": 50, "200-point curves, every run": 500}


def load(api_url: str, path: str, clients: int, seconds: float) -> dict:
    """The second process: `clients` threads sending GET `path` back to back for `seconds`."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=api_url, timeout=120) as http:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    ok = http.get(path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    errors += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "errors": errors}


def from_second_process(api_url: str, path: str, clients: int, seconds: float) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.read_latency_bench", "--load", api_url, path,
                           str(clients), str(seconds)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def wait_finished(storage: Storage, sweep_id: int, timeout: float = 1800) -> float:
    start = time.monotonic()
    while (sweep := storage.get_sweep(sweep_id)).counts["queued"] + sweep.counts["running"]:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"sweep {sweep_id} unfinished: {sweep.counts}")
        time.sleep(0.5)
    return time.monotonic() - start


def bench(backend: str, side: int, epochs: int, clients: int, seconds: float) -> None:
    header(f"{backend}: a {side * side}-run x {epochs}-epoch sweep read by {clients} clients for {seconds:g} s a request,"
           f" while a worker of 2 processes trains a sweep of {side * side} x {20 * epochs}")
    body = {"name": "read", "learning_rates": {"logspace": [1e-3, 5e-2, side]}, "seeds": list(range(side)),
            "epochs": epochs}
    empty_broker()
    with database(backend) as url, processes(service_env(url, GRADSWEEP_MIN_JOBS_PER_SWEEP="2")) as started:
        use_service_settings(url)
        storage = Storage(url)
        api_url = started.api()
        started.worker(concurrency=2)
        http = httpx.Client(base_url=api_url, timeout=300)
        sweep_id = http.post("/sweeps", json=body).raise_for_status().json()["id"]
        print(f"  stored sweep {sweep_id} trained in {wait_finished(storage, sweep_id):.1f} s", flush=True)
        busy = http.post("/sweeps", json=body | {"name": "busy", "epochs": 20 * epochs}).raise_for_status().json()
        try:
            for name, template in REQUESTS.items():
                path = template.format(id=sweep_id)
                alone = []
                for _ in range(5):
                    start = time.perf_counter()
                    http.get(path).raise_for_status()
                    alone.append(time.perf_counter() - start)
                loaded = from_second_process(api_url, path, clients, seconds)
                p50, p99 = (float(np.percentile(loaded["latencies"], q)) * 1e3 for q in (50, 99))
                base = float(np.median(alone)) * 1e3
                running = storage.get_sweep(busy["id"]).counts["running"]
                verdict = "met" if p99 <= TARGETS_MS[name] and loaded["errors"] == 0 else "NOT met"
                print(f"  {name:<30} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  {len(loaded['latencies']):>6} requests"
                      f"  {loaded['errors']} errors | one client alone: {base:8.1f} ms, p99/alone {p99 / base:5.1f}x"
                      f" | runs training meanwhile: {running} | target p99 <= {TARGETS_MS[name]} ms: {verdict}",
                      flush=True)
        finally:
            http.post(f"/sweeps/{busy['id']}/cancel")
            storage.close()


def main() -> None:
    if sys.argv[1:2] == ["--load"]:
        api_url, path, clients, seconds = sys.argv[2:6]
        print(json.dumps(load(api_url, path, int(clients), float(seconds))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="a square number: learning rates x seeds")
    parser.add_argument("--epochs", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="2,500 runs, 5 s a request")
    args = parser.parse_args()
    runs, seconds = (2_500, 5.0) if args.quick else (args.runs, args.seconds)
    side = int(round(runs ** 0.5))
    for backend in ("postgresql", "sqlite") if args.backend == "both" else (args.backend,):
        bench(backend, side, args.epochs, args.clients, seconds)


if __name__ == "__main__":
    main()
