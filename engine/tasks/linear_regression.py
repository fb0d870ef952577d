"""The seed's task: fit y_hat = X W + b by full-batch gradient descent on the MSE.

X (n_samples x n_features) and y (n_samples) are drawn from Unif(0, 1); W has
shape (n_features, 1) and b is a scalar, so the seed's size has 51 parameters.
`mode` picks the engine that computes the gradients: "scalar" builds the seed's
graph of `Variable`s, one node per scalar operation; "tensor" uses `Tensor`.
Both give the same losses, to rounding.
"""

from __future__ import annotations

import functools
import gc
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from engine.optimizers import OPTIMIZERS
from engine.tensor import Tensor
from engine.variable import Variable

MODES = ("scalar", "tensor")
# A run has diverged once its loss is not finite or has grown this many times its initial value.
DIVERGENCE_FACTOR = 1e6

OnEpoch = Callable[[int, float], "bool | None"]
Params = list[np.ndarray]  # [W of shape (n_features, 1), b: a float64 scalar]


@dataclass(frozen=True)
class TrainResult:
    losses: list[float]  # losses[k]: the MSE with the parameters before update k
    diverged: bool  # stopped because the loss blew up; `losses` keeps only the finite values
    stopped: bool  # stopped early because on_epoch returned False

    @property
    def diverged_at(self) -> int | None:
        """The epoch whose loss blew up (it is not in `losses`)."""
        return len(self.losses) if self.diverged else None


def make_data(n_samples: int = 100, n_features: int = 50, data_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(data_seed)
    X = rng.uniform(0.0, 1.0, size=(n_samples, n_features))
    y = rng.uniform(0.0, 1.0, size=n_samples)
    return X, y


def initial_parameters(seed: int, n_features: int) -> Params:
    """W ~ Normal(0, 1 / n_features) from `numpy.random.default_rng(seed)`; b starts at 0.

    The 1 / n_features variance keeps the initial predictions of order one whatever
    the number of features, so one learning-rate grid fits several task sizes.
    """
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, 1.0 / math.sqrt(n_features), size=(n_features, 1))
    return [W, np.float64(0.0)]


def train(
    learning_rate: float,
    seed: int,
    epochs: int,
    n_samples: int = 100,
    n_features: int = 50,
    data_seed: int = 0,
    mode: str = "tensor",
    optimizer: str = "sgd",
    on_epoch: OnEpoch | None = None,
) -> TrainResult:
    """Train and return the loss of every epoch; `on_epoch(epoch, loss)` returning False stops early."""
    _check_arguments(learning_rate, epochs, n_samples, n_features, mode, optimizer)
    X, y = make_data(n_samples, n_features, data_seed)
    loss_and_grads = _tensor_loss_and_grads(X, y) if mode == "tensor" else _scalar_loss_and_grads(X, y)
    update = OPTIMIZERS[optimizer](learning_rate)
    params = initial_parameters(seed, n_features)
    losses: list[float] = []
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is detected below, not warned about
        for epoch in range(epochs):
            try:
                loss, grads = loss_and_grads(params)
            except OverflowError:  # Python floats raise where numpy says inf
                loss = math.inf
            if not math.isfinite(loss) or (losses and loss > DIVERGENCE_FACTOR * losses[0]):
                return TrainResult(losses, diverged=True, stopped=False)
            losses.append(loss)
            params = update.step(params, grads)
            if on_epoch is not None and on_epoch(epoch, loss) is False:
                return TrainResult(losses, diverged=False, stopped=True)
    return TrainResult(losses, diverged=False, stopped=False)


def least_squares_loss(n_samples: int = 100, n_features: int = 50, data_seed: int = 0) -> float:
    """The lowest MSE any (W, b) reaches on this data: the closed-form least-squares fit."""
    X, y = make_data(n_samples, n_features, data_seed)
    A = np.hstack([X, np.ones((n_samples, 1))])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(np.mean((A @ coef - y) ** 2))


def stability_limit(n_samples: int = 100, n_features: int = 50, data_seed: int = 0) -> float:
    """2 / lambda_max of the MSE's Hessian in (W, b): plain gradient descent diverges above it."""
    X, _ = make_data(n_samples, n_features, data_seed)
    A = np.hstack([X, np.ones((n_samples, 1))])
    hessian = 2.0 / n_samples * A.T @ A
    return float(2.0 / np.linalg.eigvalsh(hessian)[-1])


def _check_arguments(learning_rate: float, epochs: int, n_samples: int, n_features: int, mode: str, optimizer: str) -> None:
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    for name, value in (("epochs", epochs), ("n_samples", n_samples), ("n_features", n_features)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {optimizer!r}")


def _tensor_loss_and_grads(X: np.ndarray, y: np.ndarray) -> Callable[[Params], tuple[float, Params]]:
    target = y.reshape(-1, 1)
    W, b = Tensor(np.zeros((X.shape[1], 1))), Tensor(0.0)

    def loss_and_grads(params: Params) -> tuple[float, Params]:
        W.val, b.val = params
        loss = ((X @ W + b - target) ** 2).mean()
        loss.backward()
        return float(loss.val), [W.grad, b.grad]

    return loss_and_grads


def _without_cycle_collection(function: Callable) -> Callable:
    """Pause Python's cycle collector while `function` runs.

    An epoch in scalar mode makes some 10,000 Variables. They form no cycles (a
    node refers only to older nodes), so reference counting frees each epoch's
    graph; the cycle collector would only rescan it, which costs a third of the
    epoch's time.
    """

    @functools.wraps(function)
    def paused(*args: Any) -> Any:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args)
        finally:
            if was_enabled:
                gc.enable()

    return paused


def _scalar_loss_and_grads(X: np.ndarray, y: np.ndarray) -> Callable[[Params], tuple[float, Params]]:
    rows, targets = X.tolist(), y.tolist()
    n_features = X.shape[1]

    @_without_cycle_collection
    def loss_and_grads(params: Params) -> tuple[float, Params]:
        W = [Variable(w) for w in params[0].ravel().tolist()]
        b = Variable(float(params[1]))
        total = None
        for row, target in zip(rows, targets):
            prediction = W[0] * row[0]
            for j in range(1, n_features):
                prediction = prediction + W[j] * row[j]
            squared_error = (prediction + b - target) ** 2
            total = squared_error if total is None else total + squared_error
        loss = total / len(rows)
        loss.backward()
        grad_W = np.array([w.grad for w in W]).reshape(-1, 1)
        return loss.val, [grad_W, np.float64(b.grad)]

    return loss_and_grads
