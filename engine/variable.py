"""The seed's scalar reverse-mode engine: one `Variable` per scalar operation.

A `Variable` keeps the seed's vocabulary: its value `val`, its `children`, and `local_gradients`, the pairs
(child, d self / d child) that backward multiplies along. Each primitive computes its value and, right
beside it, its local gradients; everything else is composed from the primitives.
"""

from __future__ import annotations

import math
from typing import Union

from gradsweep.engine.graph import creation_order, newest_first

Number = Union[int, float]
Pairs = tuple[tuple["Variable", Number], ...]  # (child, d self / d child)


class Variable:
    __slots__ = ("val", "local_gradients", "name", "grad", "_order")

    def __init__(self, val: Number, children: tuple[Variable, ...] = (), local_gradients: Pairs = ()) -> None:
        """The seed's constructor; `children`, if given, must be those of the `local_gradients` pairs."""
        if children and tuple(children) != tuple(child for child, _ in local_gradients):
            raise ValueError("children must be the first items of the local_gradients pairs, in order")
        self.val = val
        self.local_gradients = local_gradients
        self.name = ""
        self.grad = 0.0
        self._order = next(creation_order)

    @property
    def children(self) -> tuple[Variable, ...]:
        """The seed stores these beside `local_gradients`; here they are read off the pairs."""
        return tuple(child for child, _ in self.local_gradients)

    def set_name(self, name: str) -> Variable:
        """Name the node for `to_dot`; returns it so the seed's chained call works."""
        self.name = name
        return self

    def __repr__(self) -> str:
        label = f"{self.name}=" if self.name else ""
        return f"Variable({label}{self.val!r}, grad={self.grad!r})"

    # ---- primitives: value and local gradients side by side (no children given: they are the pairs' own) ----

    def __add__(self, other: Variable | Number) -> Variable:
        if not isinstance(other, Variable):
            return Variable(self.val + other, (), ((self, 1.0),))
        return Variable(self.val + other.val, (), ((self, 1.0), (other, 1.0)))

    def __mul__(self, other: Variable | Number) -> Variable:
        if not isinstance(other, Variable):
            return Variable(self.val * other, (), ((self, other),))
        return Variable(self.val * other.val, (), ((self, other.val), (other, self.val)))

    def __pow__(self, exponent: Number) -> Variable:
        if isinstance(exponent, Variable):
            raise TypeError("Variable ** Variable is not supported: the exponent must be a number")
        return Variable(self.val**exponent, (), ((self, exponent * self.val ** (exponent - 1)),))

    def exp(self) -> Variable:
        out = math.exp(self.val)
        return Variable(out, (), ((self, out),))

    def log(self) -> Variable:
        return Variable(math.log(self.val), (), ((self, 1.0 / self.val),))

    def sin(self) -> Variable:
        return Variable(math.sin(self.val), (), ((self, math.cos(self.val)),))

    def cos(self) -> Variable:
        return Variable(math.cos(self.val), (), ((self, -math.sin(self.val)),))

    def tanh(self) -> Variable:
        out = math.tanh(self.val)
        return Variable(out, (), ((self, 1.0 - out * out),))

    def relu(self) -> Variable:
        return Variable(max(self.val, 0.0), (), ((self, 1.0 if self.val > 0 else 0.0),))

    def sigmoid(self) -> Variable:
        # Written so that exp never overflows, whatever the sign of val.
        if self.val >= 0:
            out = 1.0 / (1.0 + math.exp(-self.val))
        else:
            e = math.exp(self.val)
            out = e / (1.0 + e)
        return Variable(out, (), ((self, out * (1.0 - out)),))

    # ---- composed operators ----

    def __neg__(self) -> Variable:
        return self * -1.0

    __radd__ = __add__  # addition and multiplication commute, in floating point too

    def __sub__(self, other: Variable | Number) -> Variable:
        return self + (-other)

    def __rsub__(self, other: Number) -> Variable:
        return -self + other

    __rmul__ = __mul__

    def __truediv__(self, other: Variable | Number) -> Variable:
        if isinstance(other, Variable):
            return self * other**-1
        return self * (1.0 / other)

    def __rtruediv__(self, other: Number) -> Variable:
        return self**-1 * other

    # ---- reverse mode ----

    def backward(self) -> None:
        """Set `.grad` on every variable this one depends on, to d self / d it, afresh at each call.
        No recursion, so a graph of a million nodes is fine."""
        # Order the graph: every node reachable from self, newest first.
        nodes = newest_first(self)
        for node in nodes:
            node.grad = 0.0
        self.grad = 1.0
        # Propagate: a node's grad is complete once every newer node has pushed into it.
        for node in nodes:
            grad = node.grad
            for child, local_gradient in node.local_gradients:
                child.grad += local_gradient * grad


def to_dot(out: Variable) -> str:
    """Graphviz text of the graph behind `out`, labelled with names, values and gradients."""
    lines = ["digraph {", "  rankdir=LR;", '  node [shape=record, fontname="monospace"];']
    for node in reversed(newest_first(out)):
        label = f"{node.name or '·'} | val {node.val:.4g} | grad {node.grad:.4g}"
        label = label.replace('"', '\\"').replace("{", "\\{").replace("}", "\\}")
        lines.append(f'  n{node._order} [label="{label}"];')
        for child, local_gradient in node.local_gradients:
            lines.append(f'  n{child._order} -> n{node._order} [label="{local_gradient:.4g}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
