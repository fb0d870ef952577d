"""The vectorised twin of `Variable`: the same reverse-mode design over numpy float64 arrays.

Where a `Variable` keeps pairs (child, local gradient), a `Tensor` keeps pairs (child, VJP): its
vector-Jacobian product, a function from the gradient of the output to the gradient of that child. Each
primitive states its value and its VJPs side by side; broadcasting is undone in one place, `unbroadcast`.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np

from gradsweep.engine.graph import creation_order, newest_first

ArrayLike = Union["Tensor", np.ndarray, float, int]
VJP = Callable[[np.ndarray], np.ndarray]
Axis = Union[int, tuple[int, ...], None]


class NoGradientError(TypeError):
    """An operation was applied to a Tensor that has no gradient defined for it."""


class Tensor:
    __slots__ = ("val", "grad", "local_gradients", "_order")

    def __init__(self, val: Any) -> None:
        """A leaf to differentiate against (a parameter); its value is copied to float64. A value of
        shape () is held as a numpy float64 scalar, which numpy computes with faster than a 0-d array."""
        val = np.array(val, dtype=np.float64)
        self.val = val[()] if val.ndim == 0 else val
        self.grad: np.ndarray | None = None
        self.local_gradients: tuple[tuple[Tensor, VJP], ...] = ()
        self._order = next(creation_order)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.val.shape

    @property
    def children(self) -> tuple[Tensor, ...]:
        return tuple(child for child, _ in self.local_gradients)

    def __repr__(self) -> str:
        return f"Tensor({self.val!r})"

    # ---- elementwise primitives ----

    def __add__(self, other: ArrayLike) -> Tensor:
        return _result(self.val + _val(other), self, _identity, other, _identity)

    def __sub__(self, other: ArrayLike) -> Tensor:
        return _result(self.val - _val(other), self, _identity, other, np.negative)

    def __mul__(self, other: ArrayLike) -> Tensor:
        a, b = self.val, _val(other)
        return _result(a * b, self, lambda g: g * b, other, lambda g: g * a)

    def __pow__(self, exponent: float) -> Tensor:
        if isinstance(exponent, Tensor):
            raise NoGradientError("no gradient defined for Tensor ** Tensor: the exponent must be a number")
        a = self.val
        if exponent == 2:  # the square of every MSE: a * a is exact and faster than a ** 2
            return _result(a * a, self, lambda g: g * 2.0 * a)
        return _result(a**exponent, self, lambda g: g * exponent * a ** (exponent - 1))

    def exp(self) -> Tensor:
        out = np.exp(self.val)
        return _result(out, self, lambda g: g * out)

    def log(self) -> Tensor:
        a = self.val
        return _result(np.log(a), self, lambda g: g / a)

    def tanh(self) -> Tensor:
        out = np.tanh(self.val)
        return _result(out, self, lambda g: g * (1.0 - out * out))

    def relu(self) -> Tensor:
        positive = self.val > 0
        return _result(np.where(positive, self.val, 0.0), self, lambda g: g * positive)

    def sigmoid(self) -> Tensor:
        # 0.5 * (1 + tanh(x / 2)) equals 1 / (1 + exp(-x)) and never overflows.
        out = 0.5 * (1.0 + np.tanh(0.5 * self.val))
        return _result(out, self, lambda g: g * out * (1.0 - out))

    # ---- linear algebra and shape primitives ----

    def __matmul__(self, other: ArrayLike) -> Tensor:
        return _matmul(self, other)

    def __rmatmul__(self, other: ArrayLike) -> Tensor:
        return _matmul(other, self)

    @property
    def T(self) -> Tensor:
        return _result(self.val.T, self, lambda g: g.T)

    def reshape(self, *shape: Any) -> Tensor:
        old = self.shape
        return _result(self.val.reshape(*shape), self, lambda g: g.reshape(old))

    def sum(self, axis: Axis = None) -> Tensor:
        total, spread = _sum(self.val, axis)
        return _result(total, self, spread)

    def mean(self, axis: Axis = None) -> Tensor:
        # sum / n is what numpy's mean computes, without its slow Python wrapper.
        total, spread = _sum(self.val, axis)
        n = self.val.size // total.size
        return _result(total / n, self, lambda g: spread(g / n))

    # ---- composed operators ----

    def __neg__(self) -> Tensor:
        return self * -1.0

    __radd__ = __add__  # addition and multiplication commute, in floating point too

    def __rsub__(self, other: ArrayLike) -> Tensor:
        return -self + other

    __rmul__ = __mul__

    def __truediv__(self, other: ArrayLike) -> Tensor:
        if isinstance(other, Tensor):
            return self * other**-1
        return self * (1.0 / np.asarray(other, dtype=np.float64))

    def __rtruediv__(self, other: ArrayLike) -> Tensor:
        return self**-1 * other

    # `ndarray + Tensor` must come to our reflected operators, not make numpy loop over the Tensor as an object.
    __array_ufunc__ = None

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NoGradientError("no gradient defined for turning a Tensor into an ndarray; use its .val")

    # ---- reverse mode ----

    def backward(self) -> None:
        """Set `.grad` on every tensor this scalar depends on; afresh at each call."""
        if self.val.size != 1:
            raise ValueError(f"backward() needs a scalar output, got shape {self.val.shape}")
        # Order the graph: every node reachable from self, newest first.
        nodes = newest_first(self)
        for node in nodes:
            node.grad = None
        self.grad = np.ones(self.val.shape) if self.val.shape else np.float64(1.0)
        # Propagate, each gradient reduced to its child's shape on the way in.
        for node in nodes:
            grad = node.grad
            for child, vjp in node.local_gradients:
                child_grad = vjp(grad)
                if child_grad.shape != child.val.shape:
                    child_grad = unbroadcast(child_grad, child.val.shape)
                child.grad = child_grad if child.grad is None else child.grad + child_grad


def _refuse(name: str) -> property:
    def refuse(self: Tensor) -> Any:
        raise NoGradientError(f"no gradient defined for {name!r} on a Tensor; use Tensor's own operations")
    return property(refuse)


# Name the ndarray operations we have no gradient for, rather than raise a bare AttributeError: as
# properties, since a __getattr__ would make every attribute read of every Tensor several times slower.
for _name in {name for name in dir(np.ndarray) if not name.startswith("_")} - set(dir(Tensor)):
    setattr(Tensor, _name, _refuse(_name))


def _identity(g: np.ndarray) -> np.ndarray:
    return g


def _val(x: ArrayLike) -> Any:
    return x.val if isinstance(x, Tensor) else x


def _result(val: Any, a: Any, a_vjp: VJP, b: Any = None, b_vjp: VJP | None = None) -> Tensor:
    """A new node from its value and each operand's VJP. Operands that are not Tensors are constants."""
    out = Tensor.__new__(Tensor)
    out.val, out.grad, out._order = val, None, next(creation_order)
    if isinstance(b, Tensor):
        out.local_gradients = ((a, a_vjp), (b, b_vjp)) if isinstance(a, Tensor) else ((b, b_vjp),)
    else:
        out.local_gradients = ((a, a_vjp),) if isinstance(a, Tensor) else ()
    return out


def _matmul(a: ArrayLike, b: ArrayLike) -> Tensor:
    x = a.val if isinstance(a, Tensor) else np.asarray(a)
    y = b.val if isinstance(b, Tensor) else np.asarray(b)
    dims = (x.ndim, y.ndim)
    if dims == (2, 2):
        return _result(x @ y, a, lambda g: g @ y.T, b, lambda g: x.T @ g)
    if dims == (2, 1):
        return _result(x @ y, a, lambda g: np.outer(g, y), b, lambda g: x.T @ g)
    if dims == (1, 2):
        return _result(x @ y, a, lambda g: y @ g, b, lambda g: np.outer(x, g))
    if dims == (1, 1):
        return _result(x @ y, a, lambda g: g * y, b, lambda g: g * x)
    raise NoGradientError(f"no gradient defined for @ on arrays of {x.ndim} and {y.ndim} dimensions")


def _sum(a: Any, axis: Axis) -> tuple[Any, VJP]:
    """`a` summed over `axis`, and the VJP of that sum: g copied back along the summed axes."""
    if axis is None:  # np.add.reduce is ndarray.sum without its Python wrapper
        return np.add.reduce(a, None), lambda g: _filled(a.shape, g)
    kept = np.add.reduce(a, axis, keepdims=True)  # the summed axes kept, of length 1
    return kept.squeeze(axis)[()], lambda g: _filled(a.shape, g.reshape(kept.shape))  # [()]: 0-d to float64


def _filled(shape: tuple[int, ...], value: Any) -> np.ndarray:
    """A new array of `shape` holding `value`, broadcast: np.full without its Python overhead."""
    out = np.empty(shape)
    out[...] = value
    return out


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting (the one place that does)."""
    if grad.shape == shape:
        return grad
    if not shape:
        return np.add.reduce(grad, None)
    extra = grad.ndim - len(shape)  # leading axes that broadcasting added
    stretched = tuple(extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1)
    summed = np.add.reduce(grad, tuple(range(extra)) + stretched, keepdims=True)
    if summed.shape[extra:] != shape:
        raise RuntimeError(f"gradient of shape {grad.shape} does not fit a tensor of shape {shape}")
    return summed.reshape(shape)
