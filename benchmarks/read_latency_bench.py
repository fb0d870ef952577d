"""Reading a 10,000-run sweep while workers train another: latency of the summary, a page of runs and the curves.

    python -m benchmarks.read_latency_bench [--runs 10000] [--epochs 1000] [--clients 20] [--seconds 30]
                                            [--api-processes 2] [--backend postgresql|sqlite|both] [--quick]

With `gradsweep api` (GRADSWEEP_API_PROCESSES processes) and a worker of 2 processes as
their own processes, on Redis and PostgreSQL or SQLite: a sweep of 100 learning rates x
100 seeds x 1,000 epochs is trained and stored, then a second sweep of the same size and
20 times the epochs is submitted, so that the worker trains (and writes) while the first
is read. The requests:

- the sweep's summary, `GET /sweeps/{id}`;
- a page of 100 runs sorted by final loss, `GET /sweeps/{id}/runs?limit=100&sort=final_loss`;
- every curve down-sampled to 200 points, `GET /sweeps/{id}/losses?points=200`.

Two loads from other processes on 127.0.0.1 (one per kind of request), `--clients`
concurrent clients of each kind for `--seconds`:

- **dashboard pace** (what the targets are about): 20 dashboard users, each asking for the
  summary and the page every 2.5 s and for the curves every 10 s, as
  service/api/dashboard/static/dashboard.js does; the clients start spread over the first interval.
- **back to back**, one kind of request at a time: each client sends its next request as
  soon as the last is answered. That measures throughput; its latency is the queue
  (clients / throughput), whatever one request costs.

It prints p50 and p99 latencies and errors (any answer but 200) against the same request
sent by one client alone just before (the baseline). For the curves, "alone" is split in
the first request after the API started (cold: read from the database and encoded) and
the next ones (kept, see service/api/curve_cache.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import (database, empty_broker, free_port, header, processes, service_env,
                               use_service_settings)
from gradsweep.service.storage import Storage

REQUESTS = {
    "summary": "/sweeps/{id}",
    "page of 100 by final loss": "/sweeps/{id}/runs?limit=100&sort=final_loss",
    "200-point curves, every run": "/sweeps/{id}/losses?points=200",
}
# How often a dashboard user asks for each (dashboard.js: POLL_MS and PLOT_MS).
EVERY_S = {"summary": 2.5, "page of 100 by final loss": 2.5, "200-point curves, every run": 10.0}
TARGETS_MS = {"summary": 50, "page of 100 by final loss": 50, "200-point curves, every run": 500}
# Every client's headers: httpx's own (Accept-Encoding "gzip, deflate, zstd", as a browser's takes zstd too)
# unless --accept-encoding says otherwise ("identity": the curves' JSON uncompressed, as before it was kept so).
HEADERS: dict[str, str] = {}


def load(api_url: str, paths: dict[str, str], every: dict[str, float] | None, clients: int, seconds: float,
         headers: dict[str, str]) -> dict:
    """The second process: `clients` threads sending GET of `paths` for `seconds`, each path every `every` seconds
    (None: back to back, one path). Returns latencies and errors by name."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    errors = dict.fromkeys(paths, 0)
    lock = threading.Lock()
    begin = time.monotonic()
    deadline = begin + seconds

    def get(http: httpx.Client, name: str) -> None:
        start = time.perf_counter()
        try:
            ok = http.get(paths[name]).status_code == 200
        except httpx.HTTPError:
            ok = False
        elapsed = time.perf_counter() - start
        with lock:
            latencies[name].append(elapsed)
            errors[name] += not ok

    def client(number: int) -> None:
        with httpx.Client(base_url=api_url, timeout=120, headers=headers) as http:
            if every is None:
                (name,) = paths
                while time.monotonic() < deadline:
                    get(http, name)
                return
            # A schedule of (when, what): each request at its pace, the first ones spread over the clients.
            due = {name: begin + every[name] * number / clients for name in paths}
            while True:
                name = min(due, key=due.get)
                if due[name] >= deadline:
                    return
                time.sleep(max(0.0, due[name] - time.monotonic()))
                get(http, name)
                due[name] += every[name]

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "errors": errors}


def from_other_processes(api_url: str, loads: list[dict[str, str]], every: dict[str, float] | None, clients: int,
                         seconds: float) -> dict:
    """`load` of each of `loads` (paths by name) in a process of its own, all at once; their results merged.

    A process per kind of request: in one process, the clients receiving 50 MB of curves
    would hold the interpreter's lock while the summary's clients wait to read theirs.
    """
    started = [subprocess.Popen(
        [sys.executable, "-m", "benchmarks.read_latency_bench", "--load", json.dumps(
            {"api_url": api_url, "paths": paths, "every": every, "clients": clients, "seconds": seconds,
             "headers": HEADERS})],
        stdout=subprocess.PIPE, text=True) for paths in loads]
    merged: dict = {"latencies": {}, "errors": {}}
    for process in started:
        out, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"a load process failed ({process.returncode})")
        for part in merged:
            merged[part] |= json.loads(out)[part]
    return merged


@contextlib.contextmanager
def floor_server(http: httpx.Client, paths: dict[str, str]) -> Iterator[str]:
    """benchmarks/floor_server.py answering each path with the bytes the API answers now (compressed as the
    API sends them to the load's clients, with the same Content-Encoding); yields its URL."""
    with tempfile.TemporaryDirectory() as folder:
        names = {}
        for number, path in enumerate(paths.values()):
            with http.stream("GET", path) as answer:
                answer.raise_for_status()
                (Path(folder) / f"answer{number}").write_bytes(b"".join(answer.iter_raw()))
            names[path] = [f"answer{number}", answer.headers.get("content-encoding")]
        (Path(folder) / "paths.json").write_text(json.dumps(names))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "benchmarks.floor_server", str(port), folder])
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(url, timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait()


def wait_finished(storage: Storage, sweep_id: int, timeout: float = 1800) -> float:
    start = time.monotonic()
    while (sweep := storage.get_sweep(sweep_id)).counts["queued"] + sweep.counts["running"]:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"sweep {sweep_id} unfinished: {sweep.counts}")
        time.sleep(0.5)
    return time.monotonic() - start


def report(name: str, latencies: list[float], errors: int, alone: str, extra: str = "") -> bool:
    """Prints one line; True if the target is met."""
    p50, p99 = (float(np.percentile(latencies, q)) * 1e3 for q in (50, 99))
    met = p99 <= TARGETS_MS[name] and errors == 0
    print(f"    {name:<28} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  {len(latencies):>5} requests  {errors} errors"
          f" | alone {alone}{extra} | target p99 <= {TARGETS_MS[name]} ms: {'met' if met else 'NOT met'}", flush=True)
    return met


def bench(backend: str, side: int, epochs: int, clients: int, seconds: float, api_processes: int) -> None:
    header(f"{backend}: a {side * side}-run x {epochs}-epoch sweep read by {clients} clients for {seconds:g} s,"
           f" {api_processes} API processes, while a worker of 2 processes trains a sweep of"
           f" {side * side} x {20 * epochs}; Accept-Encoding: {HEADERS.get('Accept-Encoding', 'httpx default')}")
    body = {"name": "read", "learning_rates": {"logspace": [1e-3, 5e-2, side]}, "seeds": list(range(side)),
            "epochs": epochs}
    empty_broker()
    with database(backend) as url, processes(service_env(url, GRADSWEEP_MIN_JOBS_PER_SWEEP="2",
                                                         GRADSWEEP_API_PROCESSES=str(api_processes))) as started:
        use_service_settings(url)
        storage = Storage(url)
        api_url = started.api()
        started.worker(concurrency=2)
        http = httpx.Client(base_url=api_url, timeout=300, headers=HEADERS)
        sweep_id = http.post("/sweeps", json=body).raise_for_status().json()["id"]
        print(f"  stored sweep {sweep_id} trained in {wait_finished(storage, sweep_id):.1f} s", flush=True)
        busy = http.post("/sweeps", json=body | {"name": "busy", "epochs": 20 * epochs}).raise_for_status().json()
        paths = {name: template.format(id=sweep_id) for name, template in REQUESTS.items()}
        try:
            alone = {}
            for name, path in paths.items():
                # One request per API process first: the first ones of the curves are cold.
                times = []
                for _ in range(api_processes + 5):
                    start = time.perf_counter()
                    http.get(path).raise_for_status()
                    times.append(time.perf_counter() - start)
                warm = f"{float(np.median(times[api_processes:])) * 1e3:.1f} ms"
                alone[name] = f"{warm} (first {times[0] * 1e3:.0f} ms)" if "curves" in name else warm
            print("  dashboard pace: each client asks for the summary and the page every 2.5 s, the curves every 10 s",
                  flush=True)
            paced = from_other_processes(api_url, [{name: path} for name, path in paths.items()], EVERY_S, clients,
                                         seconds)
            results = [report(name, paced["latencies"][name], paced["errors"][name], alone[name]) for name in paths]
            with floor_server(http, paths) as floor_url:
                print("  the floor: the same answers' bytes from memory (benchmarks/floor_server.py),"
                      " the same load, at the same time of training:", flush=True)
                floor = from_other_processes(floor_url, [{name: path} for name, path in paths.items()], EVERY_S,
                                             clients, seconds)
                for name in paths:
                    report(name, floor["latencies"][name], floor["errors"][name], "-")
            print("  back to back, one request at a time (throughput; the latency is the queue):", flush=True)
            for name, path in paths.items():
                loaded = from_other_processes(api_url, [{name: path}], None, clients, seconds)
                rate = len(loaded["latencies"][name]) / seconds
                report(name, loaded["latencies"][name], loaded["errors"][name], alone[name], f" | {rate:.1f} req/s")
            running = storage.get_sweep(busy["id"]).counts["running"]
            print(f"  runs of the other sweep training at the end: {running};"
                  f" dashboard-pace targets met: {sum(results)} of {len(results)}", flush=True)
        finally:
            http.post(f"/sweeps/{busy['id']}/cancel")
            storage.close()


def main() -> None:
    if sys.argv[1:2] == ["--load"]:
        arguments = json.loads(sys.argv[2])
        print(json.dumps(load(**arguments)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="a square number: learning rates x seeds")
    parser.add_argument("--epochs", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--accept-encoding", help="every client's Accept-Encoding (default: httpx's)")
    parser.add_argument("--quick", action="store_true", help="2,500 runs, 10 s a load")
    args = parser.parse_args()
    if args.accept_encoding:
        HEADERS["Accept-Encoding"] = args.accept_encoding
    runs, seconds = (2_500, 10.0) if args.quick else (args.runs, args.seconds)
    side = int(round(runs ** 0.5))
    for backend in ("postgresql", "sqlite") if args.backend == "both" else (args.backend,):
        bench(backend, side, args.epochs, args.clients, seconds, args.api_processes)


if __name__ == "__main__":
    main()
