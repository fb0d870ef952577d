"""The seed's scalar engine: values and gradients against the seed and against finite differences."""

import math

import pytest

from engine import Variable, to_dot


def numerical_gradient(f, x: float, h: float = 1e-6) -> float:
    return (f(x + h) - f(x - h)) / (2 * h)


def test_the_seeds_example_L_equals_a_minus_b_times_b_plus_1():
    a = Variable(2.0).set_name("a")
    b = Variable(1.0).set_name("b")
    x = (a - b).set_name("x")
    y = (b + 1).set_name("y")
    L = (x * y).set_name("L")
    L.backward()
    assert (x.val, y.val, L.val) == (1.0, 2.0, 2.0)
    assert a.grad == y.val  # dL/da = dL/dx * dx/da = y * 1
    assert b.grad == -y.val + x.val  # b feeds both factors
    assert L.grad == 1.0


def test_nodes_keep_the_seeds_children_and_local_gradients():
    a, b = Variable(3.0), Variable(4.0)
    c = a * b
    assert c.children == (a, b)
    assert c.local_gradients == ((a, 4.0), (b, 3.0))


UNARY = {
    "neg": (lambda v: -v, lambda x: -x),
    "exp": (lambda v: v.exp(), math.exp),
    "log": (lambda v: v.log(), math.log),
    "sin": (lambda v: v.sin(), math.sin),
    "cos": (lambda v: v.cos(), math.cos),
    "tanh": (lambda v: v.tanh(), math.tanh),
    "relu": (lambda v: v.relu(), lambda x: max(x, 0.0)),
    "sigmoid": (lambda v: v.sigmoid(), lambda x: 1 / (1 + math.exp(-x))),
    "square": (lambda v: v**2, lambda x: x**2),
    "cube root": (lambda v: v ** (1 / 3), lambda x: x ** (1 / 3)),
    "reciprocal": (lambda v: v**-1, lambda x: 1 / x),
    "number + v": (lambda v: 2.5 + v, lambda x: 2.5 + x),
    "v - number": (lambda v: v - 2.5, lambda x: x - 2.5),
    "number - v": (lambda v: 2.5 - v, lambda x: 2.5 - x),
    "number * v": (lambda v: 2.5 * v, lambda x: 2.5 * x),
    "v / number": (lambda v: v / 2.5, lambda x: x / 2.5),
    "number / v": (lambda v: 2.5 / v, lambda x: 2.5 / x),
}


@pytest.mark.parametrize("x", [0.7, 1.9, -1.3])
@pytest.mark.parametrize("name", UNARY)
def test_unary_gradients_match_finite_differences(name, x):
    op, reference = UNARY[name]
    if name in ("log", "cube root"):
        x = abs(x)  # their domain
    v = Variable(x)
    out = op(v)
    out.backward()
    assert out.val == pytest.approx(reference(x), rel=1e-12)
    assert v.grad == pytest.approx(numerical_gradient(reference, x), rel=1e-6, abs=1e-9)


BINARY = {
    "add": (lambda a, b: a + b),
    "sub": (lambda a, b: a - b),
    "mul": (lambda a, b: a * b),
    "div": (lambda a, b: a / b),
}


@pytest.mark.parametrize("name", BINARY)
def test_binary_gradients_match_finite_differences(name):
    op = BINARY[name]
    a, b = Variable(1.3), Variable(-0.6)
    op(a, b).backward()
    assert a.grad == pytest.approx(numerical_gradient(lambda x: op(x, -0.6), 1.3), rel=1e-6)
    assert b.grad == pytest.approx(numerical_gradient(lambda x: op(1.3, x), -0.6), rel=1e-6)


def test_a_variable_used_twice_collects_both_gradients():
    x = Variable(3.0)
    (x * x + x).backward()
    assert x.grad == 2 * 3.0 + 1


def test_backward_computes_gradients_afresh_each_call():
    x = Variable(2.0)
    y = x * x
    y.backward()
    y.backward()
    assert x.grad == 4.0


def test_a_million_node_graph_does_not_hit_the_recursion_limit():
    x = Variable(1.0)
    out = x
    for _ in range(1_000_000):
        out = out + 1e-6
    out.backward()
    assert x.grad == 1.0
    assert out.val == pytest.approx(2.0)


def test_variable_to_the_power_of_a_variable_is_refused():
    with pytest.raises(TypeError, match="exponent"):
        Variable(2.0) ** Variable(3.0)


def test_to_dot_draws_the_seeds_graph_with_names_values_and_gradients():
    a = Variable(2.0).set_name("a")
    b = Variable(1.0).set_name("b")
    L = ((a - b) * (b + 1)).set_name("L")
    L.backward()
    dot = to_dot(L)
    assert dot.startswith("digraph {")
    assert "a | val 2 | grad 2" in dot
    assert "b | val 1 | grad -1" in dot
    assert "L | val 2 | grad 1" in dot
    assert dot.count("->") == sum(len(n.local_gradients) for n in _all_nodes(L))


def _all_nodes(root):
    seen, stack = [], [root]
    while stack:
        node = stack.pop()
        if all(node is not s for s in seen):
            seen.append(node)
            stack.extend(node.children)
    return seen
