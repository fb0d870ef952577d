"""The seed's task: fit y_hat = X W + b by full-batch gradient descent on the MSE.

X (n_samples x n_features) and y (n_samples) are drawn from Unif(0, 1); W has shape (n_features, 1) and
b is a scalar, so the seed's size has 51 parameters. `mode` picks the engine that computes the gradients:
"scalar" builds the seed's graph of `Variable`s, one node per scalar operation; "tensor" uses `Tensor`.
Both give the same losses, to rounding. `train_batch` trains K runs at once, a column of W and b each.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradsweep.engine.optimizers import OPTIMIZERS, check_constants
from gradsweep.engine.tensor import Tensor
from gradsweep.engine.variable import Variable

MODES = ("scalar", "tensor")
# A run has diverged once its loss is not finite or has grown this many times its initial value.
DIVERGENCE_FACTOR = 1e6

OnEpoch = Callable[[int, float], "bool | None"]
OnBatchEpoch = Callable[[int, np.ndarray], "Collection[int]"]
Params = list[np.ndarray]  # [W, b]: (n_features, 1) and a scalar for one run; (n_features, K) and (1, K) for K
LossAndGrads = Callable[[Params], tuple[Any, Params]]  # the loss (one per run in a batch) and the gradients


@dataclass(frozen=True, eq=False)
class TrainResult:
    losses: np.ndarray  # float64, as storage takes it; losses[k]: the MSE with the parameters before update k
    diverged: bool  # stopped because the loss blew up; `losses` keeps only the finite values
    stopped: bool  # stopped early by on_epoch

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

    The 1 / n_features variance keeps the initial predictions of order one whatever the number of
    features, so one learning-rate grid fits several task sizes.
    """
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, 1.0 / math.sqrt(n_features), size=(n_features, 1))
    return [W, np.float64(0.0)]


def train(learning_rate: float, seed: int, epochs: int, n_samples: int = 100, n_features: int = 50,
          data_seed: int = 0, mode: str = "tensor", optimizer: str = "sgd",
          on_epoch: OnEpoch | None = None, constants: Mapping[str, float] | None = None) -> TrainResult:
    """Train and return the loss of every epoch; `on_epoch(epoch, loss)` returning False stops early.
    `constants`: some of the optimizer's (engine.optimizers.CONSTANTS), the others at their defaults."""
    constants = dict(constants or {})
    _check_arguments({"learning_rate": learning_rate}, epochs, n_samples, n_features, mode, optimizer, constants)
    X, y = make_data(n_samples, n_features, data_seed)
    loss_and_grads = _tensor_loss_and_grads(X, y) if mode == "tensor" else _scalar_loss_and_grads(X, y)
    update, params = OPTIMIZERS[optimizer](learning_rate, **constants), initial_parameters(seed, n_features)
    losses: list[float] = []
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is detected below, not warned about
        for epoch in range(epochs):
            loss, grads = loss_and_grads(params)
            if not math.isfinite(loss) or (losses and loss > DIVERGENCE_FACTOR * losses[0]):
                return TrainResult(np.array(losses), diverged=True, stopped=False)
            losses.append(loss)
            params = update.step(params, grads)
            if on_epoch is not None and on_epoch(epoch, loss) is False:
                return TrainResult(np.array(losses), diverged=False, stopped=True)
    return TrainResult(np.array(losses), diverged=False, stopped=False)


def train_batch(learning_rates: Sequence[float], seeds: Sequence[int], epochs: int, n_samples: int = 100,
                n_features: int = 50, data_seed: int = 0, optimizer: str = "sgd",
                on_epoch: OnBatchEpoch | None = None,
                constants: Mapping[str, Sequence[float]] | None = None) -> list[TrainResult]:
    """Train K runs at once in tensor mode; run k is `train(learning_rates[k], seeds[k], ...)`, to rounding.

    `constants[name][k]` is run k's value of the optimizer's constant `name`.

    `on_epoch(epoch, losses)` is called after each epoch's update while a run is live, with
    a new array of this epoch's K losses, NaN for each run that recorded none. It returns
    the indices of the runs to stop: empty to go on.
    """
    if len(learning_rates) < 1:
        raise ValueError(f"learning_rates must hold at least one learning rate, got {learning_rates!r}")
    if len(seeds) != len(learning_rates):
        raise ValueError(f"seeds must hold one seed per learning rate: {len(seeds)} for {len(learning_rates)}")
    rates = {f"learning_rates[{k}]": rate for k, rate in enumerate(learning_rates)}
    columns = {name: np.array(values, dtype=np.float64) for name, values in (constants or {}).items()}
    if any(values.shape != (len(seeds),) for values in columns.values()):
        raise ValueError(f"constants must hold one value per run: {constants!r} for {len(seeds)} runs")
    _check_arguments(rates, epochs, n_samples, n_features, "tensor", optimizer, columns)
    X, y = make_data(n_samples, n_features, data_seed)
    update = OPTIMIZERS[optimizer](np.array(learning_rates, dtype=np.float64), **columns)  # a value per column
    params = [np.hstack([initial_parameters(seed, n_features)[0] for seed in seeds]), np.zeros((1, len(seeds)))]
    return _train_columns(_tensor_loss_and_grads(X, y, batch=True), params, update, epochs, on_epoch)


def _train_columns(loss_and_grads: LossAndGrads, params: Params, update: Any, epochs: int,
                   on_epoch: OnBatchEpoch | None) -> list[TrainResult]:
    """train_batch's loop: `train`'s, with one run per column of the parameters.

    A run that diverges or is stopped is frozen where it is, never taken out of the batch, so that every
    other column computes exactly what it would have without it.
    """
    n_runs = params[0].shape[1]
    curves = np.empty((epochs, n_runs))  # curves[epoch, k]: run k's loss at that epoch
    lengths = np.full(n_runs, epochs)  # how many losses each run keeps
    live, diverged, stopped = np.ones(n_runs, dtype=bool), np.zeros(n_runs, dtype=bool), np.zeros(n_runs, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is detected below, not warned about
        for epoch in range(epochs):
            losses, grads = loss_and_grads(params)
            curves[epoch] = losses
            if epoch == 0:  # capped, so that inf is over the limit even if the first loss is huge
                limits = np.minimum(DIVERGENCE_FACTOR * losses, np.finfo(np.float64).max)
            fine = losses <= limits  # False where the loss is not finite or has blown up
            if not fine.all():
                blown = live & ~fine
                lengths[blown], diverged[blown], live[blown] = epoch, True, False
                if not live.any():
                    break
            frozen = not live.all()  # np.where below only once a run has ended
            stepped = update.step(params, grads)
            params = [np.where(live, new, old) for new, old in zip(stepped, params)] if frozen else stepped
            if on_epoch is not None:
                stop = _runs_to_stop(on_epoch(epoch, np.where(live, losses, np.nan) if frozen else losses), live)
                if stop is not None:
                    lengths[stop], stopped[stop], live[stop] = epoch + 1, True, False
                    if not live.any():
                        break
    return [TrainResult(np.ascontiguousarray(curves[:length, k]), diverged=bool(diverged[k]), stopped=bool(stopped[k]))
            for k, length in enumerate(lengths)]


def _runs_to_stop(reply: Any, live: np.ndarray) -> np.ndarray | None:
    """on_epoch's reply (the indices of the runs to stop) as a mask of the live runs it stops; None for none."""
    if not isinstance(reply, Collection) or isinstance(reply, str):
        raise ValueError(f"on_epoch must return a collection of run indices (empty: go on), got {reply!r}")
    if not reply:
        return None
    if not all((type(k) is int or isinstance(k, np.integer)) and 0 <= k < len(live) for k in reply):
        raise ValueError(f"on_epoch must return indices in range({len(live)}), got {reply!r}")
    return np.isin(np.arange(len(live)), list(reply)) & live


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


def _check_arguments(rates: dict[str, float], epochs: int, n_samples: int, n_features: int, mode: str, optimizer: str,
                     constants: Mapping[str, object]):
    for name, value in rates.items():  # each learning rate, by the name the caller gave it
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    for name, value in (("epochs", epochs), ("n_samples", n_samples), ("n_features", n_features)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {optimizer!r}")
    check_constants(optimizer, dict(constants))


def _tensor_loss_and_grads(X: np.ndarray, y: np.ndarray, batch: bool = False) -> LossAndGrads:
    """The MSE and its gradients through `Tensor`: of one run, or of each column of a batch."""
    target = y.reshape(-1, 1)
    W, b = Tensor(0.0), Tensor(0.0)  # leaves whose values are set to each epoch's parameters

    def loss_and_grads(params: Params) -> tuple[Any, Params]:
        W.val, b.val = params
        squared_errors = (X @ W + b - target) ** 2
        if not batch:
            loss = squared_errors.mean()
            loss.backward()
            return float(loss.val), [W.grad, b.grad]
        losses = squared_errors.mean(axis=0)  # each column's MSE
        losses.sum().backward()  # the columns share no parameter: each gets its own loss's gradient
        return losses.val, [W.grad, b.grad]

    return loss_and_grads


def _scalar_loss_and_grads(X: np.ndarray, y: np.ndarray) -> LossAndGrads:
    rows, targets = X.tolist(), y.tolist()
    n_features = X.shape[1]

    def loss_and_grads(params: Params) -> tuple[float, Params]:
        W = [Variable(w) for w in params[0].ravel().tolist()]
        b = Variable(float(params[1]))
        # An epoch makes some 10,000 Variables. They form no cycles (a node refers only to older nodes), so
        # reference counting frees each epoch's graph; the cycle collector would only rescan it, at a third
        # of the epoch's time.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            total = None
            for row, target in zip(rows, targets):
                prediction = W[0] * row[0]
                for j in range(1, n_features):
                    prediction = prediction + W[j] * row[j]
                squared_error = (prediction + b - target) ** 2
                total = squared_error if total is None else total + squared_error
            loss = total / len(rows)
            loss.backward()
        except OverflowError:  # Python floats raise where numpy says inf
            return math.inf, []
        finally:
            if was_enabled:
                gc.enable()
        return loss.val, [np.array([w.grad for w in W]).reshape(-1, 1), np.float64(b.grad)]

    return loss_and_grads
