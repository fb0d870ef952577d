"""`gradsweep demo`: the whole product on one machine, with nothing but the embedded defaults.

It starts the API and a worker as real processes (as a user would in two
terminals), drives them over HTTP like any client, and stops them at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from statistics import fmean

from rich.console import Console
from rich.table import Table

from gradsweep.engine.tasks.linear_regression import least_squares_loss, stability_limit
from gradsweep.service.client.database import upgrade_database
from gradsweep.service.client.http import Client
from gradsweep.service.client.local import answering, free_port
from gradsweep.service.settings import get_settings

LEARNING_RATES = [0.003, 0.01, 0.03, 0.06, 0.1]  # the last lies above the SGD stability limit (about 0.074)
SEEDS = [0, 1, 2, 3]
OPTIMIZERS = ["sgd", "momentum", "adam"]
LOG_FILE = "gradsweep-demo.log"


def run_demo(workers: int, epochs: int, output_dir: Path, console: Console) -> None:
    """Raises the client's ApiError if the API refuses something; `gradsweep demo` reports it."""
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    console.print(upgrade_database(get_settings().database_url), markup=False)
    port = free_port()
    with ExitStack() as stack, open(output_dir / LOG_FILE, "ab") as log:
        stack.callback(console.print, f"stopped the API and the worker (their log: {output_dir / LOG_FILE})")
        stack.enter_context(_process(["worker", f"--concurrency={workers}"], log))
        stack.enter_context(_process(["api", "--port", str(port)], log))
        client = Client(base_url=f"http://127.0.0.1:{port}")
        if not answering(lambda: client.http.get("/healthz")):
            raise RuntimeError(f"the API did not become healthy within 60 s; see {output_dir / LOG_FILE}")
        console.print(f"API on http://127.0.0.1:{port} (docs at /docs), {workers} worker processes; "
                      f"ready after {time.perf_counter() - started:.1f} s")

        sweep = client.post("/sweeps", json={
            "name": "demo", "learning_rates": LEARNING_RATES, "seeds": SEEDS,
            "optimizers": OPTIMIZERS, "epochs": epochs,
        }).json()
        console.print(f"sweep {sweep['id']}: {len(LEARNING_RATES)} learning rates × {len(SEEDS)} seeds × "
                      f"{len(OPTIMIZERS)} optimizers = {sweep['n_runs']} runs of {epochs} epochs")
        submitted = time.perf_counter()
        sweep = client.wait(sweep["id"], console=console)
        trained = time.perf_counter() - submitted

        for kind in ("curves", "final"):
            path = output_dir / f"demo-{kind}.png"
            path.write_bytes(client.get(f"/sweeps/{sweep['id']}/plot.png", kind=kind).content)
            console.print(f"wrote {path}")
        runs = client.runs(sweep["id"])
    console.print(_best_learning_rates(runs))
    console.print(f"{sweep['n_runs']} runs trained and stored in {trained:.1f} s; "
                  f"demo took {time.perf_counter() - started:.1f} s in all")


def _best_learning_rates(runs: list[dict]) -> Table:
    """Per optimizer, the learning rate with the lowest mean final loss over seeds that all converged."""
    finals: dict[tuple[str, float], list[float | None]] = defaultdict(list)
    for run in runs:
        finals[run["optimizer"], run["learning_rate"]].append(
            run["final_loss"] if run["status"] == "succeeded" else None)
    optimum = least_squares_loss()
    table = Table("optimizer", "best learning rate", "mean final loss", "above optimum", "diverged at lr",
                  title=f"Best learning rate per optimizer (least-squares optimum {optimum:.5f}; "
                        f"SGD stability limit 2/λmax = {stability_limit():.4f})")
    for optimizer in OPTIMIZERS:
        converged = {lr: fmean(v) for (o, lr), v in finals.items() if o == optimizer and None not in v}
        diverged = sorted(lr for (o, lr), v in finals.items() if o == optimizer and None in v)
        if not converged:
            table.add_row(optimizer, "none converged", "", "", ", ".join(f"{lr:g}" for lr in diverged))
            continue
        best = min(converged, key=converged.get)
        table.add_row(optimizer, f"{best:g}", f"{converged[best]:.5f}", f"{converged[best] / optimum - 1:+.1%}",
                      ", ".join(f"{lr:g}" for lr in diverged) or "-")
    return table


class _process:
    """A `gradsweep` subcommand as a child process, stopped (and waited for) on exit."""

    def __init__(self, args: list[str], log) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "gradsweep", *args], stdout=log, stderr=log)

    def __enter__(self) -> subprocess.Popen:
        return self.process

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
