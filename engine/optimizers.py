"""Update rules that turn gradients into new parameter values.

They work on plain numpy arrays, so the scalar and the tensor engine share them
and differ only in how they compute the gradients.
"""

from __future__ import annotations

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
        self.learning_rate = learning_rate
        self.beta = beta
        self.velocity: Arrays | None = None

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        if self.velocity is None:
            self.velocity = [np.zeros_like(g) for g in grads]
        self.velocity = [self.beta * v + g for v, g in zip(self.velocity, grads)]
        return [p - self.learning_rate * v for p, v in zip(params, self.velocity)]


class Adam:
    """Adam (Kingma & Ba, 2015) with bias-corrected first and second moments."""

    def __init__(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.learning_rate = learning_rate
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m: Arrays | None = None
        self.v: Arrays | None = None
        self.t = 0

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(g) for g in grads]
            self.v = [np.zeros_like(g) for g in grads]
        self.t += 1
        self.m = [self.beta1 * m + (1 - self.beta1) * g for m, g in zip(self.m, grads)]
        self.v = [self.beta2 * v + (1 - self.beta2) * g * g for v, g in zip(self.v, grads)]
        m_scale = 1.0 / (1 - self.beta1**self.t)
        v_scale = 1.0 / (1 - self.beta2**self.t)
        return [
            p - self.learning_rate * (m * m_scale) / (np.sqrt(v * v_scale) + self.eps)
            for p, m, v in zip(params, self.m, self.v)
        ]


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
