"""Update rules that turn gradients into new parameter values.

They work on plain numpy arrays, so the scalar and the tensor engine share them and differ only in how
they compute the gradients. A learning rate, and each constant, is a number, or one per column (shape (K,))
for K runs at once.
"""

from __future__ import annotations

import inspect

import numpy as np

Arrays = list[np.ndarray]


class SGD:
    """The seed's rule: W <- W - learning_rate * dL/dW."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        return [p - self.learning_rate * g for p, g in zip(params, grads)]


class Momentum:
    """Heavy-ball momentum: v <- beta * v + g; W <- W - learning_rate * v."""

    def __init__(self, learning_rate: float, beta: float = 0.9) -> None:
        self.learning_rate, self.beta = learning_rate, beta
        self.velocity: Arrays = []

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        velocity = self.velocity or [0.0] * len(grads)  # none before the first step
        self.velocity = [self.beta * v + g for v, g in zip(velocity, grads)]
        return [p - self.learning_rate * v for p, v in zip(params, self.velocity)]


class Adam:
    """Adam (Kingma & Ba, 2015) with bias-corrected first and second moments."""

    def __init__(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.learning_rate = learning_rate
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m: Arrays = []
        self.v: Arrays = []
        self.t = 0

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        zeros = [0.0] * len(grads)  # the moments before the first step
        self.t += 1
        self.m = [self.beta1 * m + (1 - self.beta1) * g for m, g in zip(self.m or zeros, grads)]
        self.v = [self.beta2 * v + (1 - self.beta2) * g * g for v, g in zip(self.v or zeros, grads)]
        m_scale, v_scale = 1.0 / (1 - self.beta1**self.t), 1.0 / (1 - self.beta2**self.t)
        return [p - self.learning_rate * (m * m_scale) / (np.sqrt(v * v_scale) + self.eps)
                for p, m, v in zip(params, self.m, self.v)]


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
# Each optimizer's own constants and their defaults, read off its signature: what a sweep may search over.
CONSTANTS: dict[str, dict[str, float]] = {
    name: {parameter.name: parameter.default for parameter in inspect.signature(rule).parameters.values()
           if parameter.name != "learning_rate"}
    for name, rule in OPTIMIZERS.items()
}


def check_constants(optimizer: str, constants: dict[str, object]) -> None:
    """Raises ValueError unless each of `constants` (a number, or one per run) is one of `optimizer`'s, in range."""
    for name, value in constants.items():
        if name not in CONSTANTS[optimizer]:
            raise ValueError(f"{optimizer} has no constant {name!r}; it has {sorted(CONSTANTS[optimizer])}")
        v = np.asarray(value, dtype=np.float64)
        if not np.all((v > 0) & np.isfinite(v) if name == "eps" else (v >= 0) & (v < 1)):
            raise ValueError(f"{name} must be {'a finite number > 0' if name == 'eps' else 'in [0, 1)'}, got {value!r}")
