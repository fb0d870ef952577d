"""Engine speed against baselines measured in the same run.

    python -m benchmarks.engine_bench [--repeats 7] [--quick]

Tensor mode is compared with a hand-written numpy gradient of the same loss, at
the seed's size (100 x 50) and at 1000 x 500; `train_batch` (100 runs at once)
with hand-written numpy gradient descent of the same 100 runs, one matrix
product per epoch for all of them; scalar mode with micrograd building the same
graph (one node per scalar operation). Each side is first checked to compute the
same curves as the other. Each figure is the median over interleaved
repetitions, so a slow moment of the machine hits both sides alike. Needs the
`bench` extra (micrograd).

The batch is timed twice more: with each repetition of each side in a fresh
process, as a worker's first batch runs, once with this environment and once
with the one `gradsweep worker` gives its processes. They differ because of
glibc's malloc: a fresh process gives the memory freed at the end of each epoch
back to the system and faults it in again at the next (in this process, freeing
earlier large arrays has raised the threshold at which it does so); the
worker's MALLOC_TOP_PAD_ keeps it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from gradsweep.engine.tasks.linear_regression import initial_parameters, make_data, stability_limit, train, train_batch
from gradsweep.service.client.cli import worker_environment

Curves = Callable[[], list[float] | list[list[float]]]


def numpy_gradient_descent(learning_rate: float, n_samples: int, n_features: int, epochs: int) -> list[float]:
    """The baseline: the MSE's gradient written out by hand in numpy."""
    X, y = make_data(n_samples, n_features)
    target = y.reshape(-1, 1)
    W, b = initial_parameters(0, n_features)
    losses = []
    for _ in range(epochs):
        residual = X @ W + b - target
        losses.append(float(np.mean(residual**2)))
        grad = (2.0 / n_samples) * residual
        W = W - learning_rate * (X.T @ grad)
        b = b - learning_rate * grad.sum()
    return losses


def numpy_batched_gradient_descent(
    learning_rates: np.ndarray, n_samples: int, n_features: int, epochs: int
) -> list[list[float]]:
    """The batched baseline: run k is column k of W (n_features x K); one product per epoch for all runs."""
    X, y = make_data(n_samples, n_features)
    target = y.reshape(-1, 1)
    W = np.hstack([initial_parameters(seed, n_features)[0] for seed in range(len(learning_rates))])
    b = np.zeros((1, len(learning_rates)))
    curves = np.empty((epochs, len(learning_rates)))
    for epoch in range(epochs):
        residual = X @ W + b - target
        curves[epoch] = np.mean(residual**2, axis=0)
        grad = (2.0 / n_samples) * residual
        W = W - learning_rates * (X.T @ grad)
        b = b - learning_rates * grad.sum(axis=0)
    return curves.T.tolist()


def micrograd_gradient_descent(learning_rate: float, n_samples: int, n_features: int, epochs: int) -> list[float]:
    """micrograd building the same graph as our scalar mode, with the same update."""
    from micrograd.engine import Value

    X, y = make_data(n_samples, n_features)
    rows, targets = X.tolist(), y.tolist()
    W0, _ = initial_parameters(0, n_features)
    w_vals, b_val = W0.ravel().tolist(), 0.0
    losses = []
    for _ in range(epochs):
        W = [Value(w) for w in w_vals]
        b = Value(b_val)
        total = None
        for row, target in zip(rows, targets):
            prediction = W[0] * row[0]
            for j in range(1, n_features):
                prediction = prediction + W[j] * row[j]
            squared_error = (prediction + b - target) ** 2
            total = squared_error if total is None else total + squared_error
        loss = total / n_samples
        loss.backward()
        losses.append(loss.data)
        w_vals = [w.data - learning_rate * w.grad for w in W]
        b_val = b.data - learning_rate * b.grad
    return losses


def seconds(run: Curves) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def compare(label: str, ours: Curves, baseline: Curves, baseline_name: str, per: int, unit: str,
            repeats: int, rtol: float) -> None:
    """Time both sides, alternating, and print the medians of seconds / per, in microseconds per `unit`."""
    np.testing.assert_allclose(ours(), baseline(), rtol=rtol)  # the same curves, or the timing means nothing
    alternate(label, lambda: seconds(ours), lambda: seconds(baseline), baseline_name, per, unit, repeats)


def alternate(label: str, ours: Callable[[], float], baseline: Callable[[], float], baseline_name: str,
              per: int, unit: str, repeats: int) -> None:
    ours_times, base_times = [], []
    for _ in range(repeats):
        base_times.append(baseline() / per)
        ours_times.append(ours() / per)
    ours_t, base_t = statistics.median(ours_times), statistics.median(base_times)
    print(f"{label:<34} {ours_t * 1e6:>9.2f} µs/{unit:<10} {baseline_name:<28} {base_t * 1e6:>9.2f} µs/{unit:<10}"
          f" ratio {ours_t / base_t:5.2f}x")


def batch_sides(runs: int, epochs: int) -> tuple[Curves, Curves]:
    """train_batch and the batched numpy baseline, on the same `runs` learning rates (seeds 0 .. runs - 1)."""
    learning_rates = np.linspace(0.05, 0.95, runs) * stability_limit(100, 50)  # all converge
    return (lambda: [result.losses for result in train_batch(learning_rates, range(runs), epochs)],
            lambda: numpy_batched_gradient_descent(learning_rates, 100, 50, epochs))


def in_fresh_process(side: str, runs: int, epochs: int, env: dict[str, str] | None = None) -> Callable[[], float]:
    """One side of the batch comparison, run in a new Python process; the seconds its training took there."""
    command = [sys.executable, "-m", "benchmarks.engine_bench", "--fresh-process", side, str(runs), str(epochs)]
    return lambda: float(subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repetitions: a smoke test")
    parser.add_argument("--fresh-process", nargs=3, metavar=("SIDE", "RUNS", "EPOCHS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fresh_process:  # we are one side of the fresh-process comparison: time it and say how long it took
        side, runs, epochs = args.fresh_process
        ours, baseline = batch_sides(int(runs), int(epochs))
        print(seconds(ours if side == "ours" else baseline))
        return
    repeats, scale = (3, 10) if args.quick else (args.repeats, 1)

    for n, d, epochs in ((100, 50, 2000 // scale), (1000, 500, 500 // scale)):
        learning_rate = 0.5 * stability_limit(n, d)  # a rate that converges, at every size
        compare(f"tensor mode {n}x{d}",
                lambda: train(learning_rate, 0, epochs, n, d, mode="tensor").losses,
                lambda: numpy_gradient_descent(learning_rate, n, d, epochs),
                "numpy hand-written", epochs, "epoch", repeats, rtol=1e-12)

    runs, epochs = 100, 1000 // scale
    compare(f"train_batch {runs} runs 100x50", *batch_sides(runs, epochs),
            "numpy batched hand-written", epochs * runs, "run-epoch", repeats, rtol=1e-12)
    alternate("... each in a fresh process", in_fresh_process("ours", runs, epochs),
              in_fresh_process("numpy", runs, epochs), "numpy batched, fresh process", epochs * runs, "run-epoch",
              repeats)
    worker = worker_environment(os.environ)
    alternate("... fresh, as a worker's process", in_fresh_process("ours", runs, epochs, worker),
              in_fresh_process("numpy", runs, epochs, worker), "numpy batched, the same", epochs * runs, "run-epoch",
              repeats)

    learning_rate, epochs = 0.5 * stability_limit(100, 50), 5 // min(scale, 5)
    compare("scalar mode 100x50",
            lambda: train(learning_rate, 0, epochs, 100, 50, mode="scalar").losses,
            lambda: micrograd_gradient_descent(learning_rate, 100, 50, epochs),
            "micrograd same graph", epochs, "epoch", repeats, rtol=1e-9)
    print("(ratio = ours / baseline; targets: tensor 100x50 <= 1.5x, 1000x500 <= 1.3x, train_batch <= 1.5x,"
          " scalar <= 0.33x, i.e. >= 3x faster)")


if __name__ == "__main__":
    main()
