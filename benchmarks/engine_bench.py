"""Engine speed against baselines measured in the same run.

    python -m benchmarks.engine_bench [--repeats 7]

Tensor mode is compared with a hand-written numpy gradient of the same loss, at
the seed's size (100 x 50) and at 1000 x 500; scalar mode with micrograd
building the same graph (one node per scalar operation). Each figure is the
median over interleaved repetitions, so a slow moment of the machine hits both
sides alike. Needs the `bench` extra (micrograd).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

from engine.tasks.linear_regression import initial_parameters, make_data, stability_limit, train


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


def per_epoch(run: Callable[[], list[float]], epochs: int) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / epochs


def compare(label: str, ours: Callable[[], list[float]], baseline: Callable[[], list[float]],
            epochs: int, repeats: int, baseline_name: str) -> None:
    np.testing.assert_allclose(ours(), baseline(), rtol=1e-9)  # the same curve, or the timing means nothing
    ours_times, base_times = [], []
    for _ in range(repeats):
        base_times.append(per_epoch(baseline, epochs))
        ours_times.append(per_epoch(ours, epochs))
    ours_t, base_t = statistics.median(ours_times), statistics.median(base_times)
    print(f"{label:<26} {ours_t * 1e6:>10.1f} µs/epoch   {baseline_name:<22} {base_t * 1e6:>10.1f} µs/epoch"
          f"   ratio {ours_t / base_t:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    for n, d, epochs in ((100, 50, 2000), (1000, 500, 500)):
        learning_rate = 0.5 * stability_limit(n, d)  # a rate that converges, at every size
        compare(f"tensor mode {n}x{d}",
                lambda: train(learning_rate, 0, epochs, n, d, mode="tensor").losses,
                lambda: numpy_gradient_descent(learning_rate, n, d, epochs),
                epochs, args.repeats, "numpy hand-written")
    learning_rate, epochs = 0.5 * stability_limit(100, 50), 5
    compare("scalar mode 100x50",
            lambda: train(learning_rate, 0, epochs, 100, 50, mode="scalar").losses,
            lambda: micrograd_gradient_descent(learning_rate, 100, 50, epochs),
            epochs, args.repeats, "micrograd same graph")
    print("(ratio = ours / baseline; tensor targets <= 2.0x and <= 1.3x; scalar target <= 0.33x, i.e. >= 3x faster)")


if __name__ == "__main__":
    main()
