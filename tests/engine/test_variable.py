"""The seed's scalar engine: values and gradients against the seed and against finite differences."""

import inspect
import math

import pytest

from gradsweep.engine import Variable, to_dot


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


# The seed's two code blocks, copied as the post writes them (its `...` stands for the rest of the class).
SEED_CLASS = '''
class Variable:
    def __init__(self, val, children=(), local_gradients=()):
        self.val = val
        self.children = children
        self.local_gradients = local_gradients
        self.name = ""

    def set_name(self, name) -> None:
        self.name = name
'''

SEED_ADD = '''
class Variable:
    ...    

    def __add__(self, other: Variable) -> Variable:
        out = Variable(
                val = self.val + other.val,
                children = (self, other),
                local_gradients = (
                    (self, 1),
                    (other, 1),
                )
              ).set_name(f"{self.name} + {other.name}")
        return out
'''


def seed_add_against(cls):
    """The seed's `__add__`, compiled so that the `Variable` it names is `cls`."""
    namespace = {"Variable": cls}
    exec(SEED_ADD, namespace)
    seed_add = namespace["Variable"].__add__
    namespace["Variable"] = cls  # the name the function looks up when it runs
    return seed_add


def test_our_constructor_takes_the_seeds_arguments():
    namespace = {}
    exec(SEED_CLASS, namespace)
    seed_parameters = inspect.signature(namespace["Variable"].__init__).parameters
    our_parameters = inspect.signature(Variable.__init__).parameters
    assert [(p.name, p.default) for p in our_parameters.values()] == [
        (p.name, p.default) for p in seed_parameters.values()
    ]
    a, b = Variable(2.0), Variable(5.0)
    for cls in (namespace["Variable"], Variable):
        node = cls(7.0, (a, b), ((a, 1), (b, 1)))
        assert (node.val, node.children, node.local_gradients, node.name) == (7.0, (a, b), ((a, 1), (b, 1)), "")
        assert cls(val=3.0).children == cls(val=3.0).local_gradients == ()


def test_the_seeds_add_runs_as_written_against_our_variable():
    seed_add = seed_add_against(Variable)
    a, b = Variable(2.0).set_name("a"), Variable(1.0).set_name("b")
    out = seed_add(a, b)
    assert isinstance(out, Variable)  # our set_name returns the node, so the seed's chained call keeps it
    assert (out.val, out.name, out.children, out.local_gradients) == (3.0, "a + b", (a, b), ((a, 1), (b, 1)))
    L = (out * out).set_name("L")
    L.backward()
    assert a.grad == b.grad == 2 * out.val
    assert "a + b | val 3 | grad 6" in to_dot(L)


def test_in_the_seeds_own_class_that_chained_call_gives_none():
    """Why our set_name returns the node: the seed's returns None, so its snippet's `out` would be None."""
    namespace = {}
    exec(SEED_CLASS, namespace)
    seed_add = seed_add_against(namespace["Variable"])
    assert seed_add(namespace["Variable"](2.0), namespace["Variable"](1.0)) is None


def test_children_that_disagree_with_the_local_gradients_are_refused():
    a, b = Variable(2.0), Variable(5.0)
    with pytest.raises(ValueError, match="children"):
        Variable(7.0, children=(b, a), local_gradients=((a, 1), (b, 1)))
    with pytest.raises(ValueError, match="children"):
        Variable(7.0, children=(a,))
