"""The tensor engine: every primitive against central finite differences, over scalar,
vector, matrix and broadcast shapes (HIPS autograd's `check_grads`, in small)."""

import operator

import numpy as np
import pytest

from gradsweep.engine import NoGradientError, Tensor


def check_grads(f, *inputs: np.ndarray, h: float = 1e-6) -> None:
    """f maps Tensors to a Tensor; compare d sum(f) / d input with central differences."""
    tensors = [Tensor(x) for x in inputs]
    f(*tensors).sum().backward()
    for i, (tensor, x) in enumerate(zip(tensors, inputs)):
        assert tensor.grad.shape == np.shape(x), f"grad of input {i} has shape {tensor.grad.shape}"
        numerical = np.zeros(np.shape(x))
        for index in np.ndindex(np.shape(x)):
            up, down = [np.array(v, dtype=float) for v in inputs], [np.array(v, dtype=float) for v in inputs]
            up[i][index] += h
            down[i][index] -= h
            numerical[index] = (f(*map(Tensor, up)).val.sum() - f(*map(Tensor, down)).val.sum()) / (2 * h)
        np.testing.assert_allclose(tensor.grad, numerical, rtol=1e-5, atol=1e-7, err_msg=f"input {i}")


rng = np.random.default_rng(0)
SCALAR, VECTOR, MATRIX = rng.uniform(0.5, 1.5, ()), rng.uniform(0.5, 1.5, (3,)), rng.uniform(0.5, 1.5, (2, 3))
COLUMN, ROW = rng.uniform(0.5, 1.5, (2, 1)), rng.uniform(0.5, 1.5, (1, 3))
SHAPES = {"scalar": SCALAR, "vector": VECTOR, "matrix": MATRIX}
BROADCAST_PAIRS = {
    "matrix, matrix": (MATRIX, MATRIX + 1),
    "matrix, vector": (MATRIX, VECTOR),
    "vector, matrix": (VECTOR, MATRIX),
    "matrix, scalar": (MATRIX, SCALAR),
    "scalar, matrix": (SCALAR, MATRIX),
    "column, row": (COLUMN, ROW),
}

ELEMENTWISE = {
    "exp": lambda a: a.exp(),
    "log": lambda a: a.log(),
    "tanh": lambda a: a.tanh(),
    "relu": lambda a: (a - 1.0).relu(),
    "sigmoid": lambda a: a.sigmoid(),
    "neg": lambda a: -a,
    "square": lambda a: a**2,
    "power 3.5": lambda a: a**3.5,
    "reciprocal": lambda a: a**-1,
    "number - a": lambda a: 2.0 - a,
    "number / a": lambda a: 2.0 / a,
    "a / number": lambda a: a / 4.0,
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_elementwise_primitives(op, shape):
    check_grads(ELEMENTWISE[op], SHAPES[shape])


BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS)
@pytest.mark.parametrize("op", BINARY)
def test_binary_primitives_with_broadcasting(op, shapes):
    a, b = BROADCAST_PAIRS[shapes]
    check_grads(BINARY[op], a, b)


@pytest.mark.parametrize("op", BINARY)
def test_arrays_and_numbers_on_either_side(op):
    fn = BINARY[op]
    a = Tensor(MATRIX)
    for constant in (2.0, VECTOR, MATRIX + 1):
        np.testing.assert_allclose(fn(a, constant).val, fn(MATRIX, constant))
        np.testing.assert_allclose(fn(constant, a).val, fn(constant, MATRIX))
    check_grads(lambda x: fn(x, VECTOR), MATRIX)
    check_grads(lambda x: fn(VECTOR, x), MATRIX + 1)


@pytest.mark.parametrize(
    "a, b", [(MATRIX, MATRIX.T), (MATRIX, VECTOR), (VECTOR[:2], MATRIX), (VECTOR, VECTOR + 1)],
    ids=["matrix @ matrix", "matrix @ vector", "vector @ matrix", "vector @ vector"],
)
def test_matmul(a, b):
    check_grads(lambda x, y: x @ y, a, b)
    check_grads(lambda y: a @ y, b)  # an array on the left


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1), -1])
def test_sum_and_mean(axis):
    check_grads(lambda a: a.sum(axis=axis), MATRIX)
    check_grads(lambda a: a.mean(axis=axis), MATRIX)
    np.testing.assert_allclose(Tensor(MATRIX).mean(axis=axis).val, MATRIX.mean(axis=axis), rtol=1e-15)


@pytest.mark.parametrize("x, axis", [(SCALAR, None), (VECTOR, None), (VECTOR, 0), (COLUMN, 0), (ROW, 1)])
def test_sum_and_mean_of_scalars_and_vectors(x, axis):
    check_grads(lambda a: a.sum(axis=axis), x)
    check_grads(lambda a: a.mean(axis=axis), x)
    assert Tensor(x).mean(axis=axis).val == pytest.approx(np.mean(x, axis=axis), rel=1e-15)


def test_a_mean_over_rows_is_exactly_numpys():
    """train_batch's loss: each column's MSE, bit for bit what np.mean(..., axis=0) gives."""
    squares = rng.uniform(0.0, 1.0, (100, 7))
    assert np.array_equal(Tensor(squares).mean(axis=0).val, np.mean(squares, axis=0))


def test_transpose_and_reshape():
    check_grads(lambda a: a.T * ROW.T, MATRIX)
    check_grads(lambda a: a.reshape(3, 2) * np.arange(6.0).reshape(3, 2), MATRIX)
    check_grads(lambda a: a.reshape(-1), MATRIX)


def test_a_tensor_used_twice_collects_both_gradients():
    x = Tensor(VECTOR)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * VECTOR + 1)


def test_values_are_float64_and_gradients_fresh_at_each_backward():
    x = Tensor([1, 2, 3])
    assert x.val.dtype == np.float64
    loss = (x * x).sum()
    loss.backward()
    loss.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])


def test_backward_needs_a_scalar():
    with pytest.raises(ValueError, match="scalar"):
        (Tensor(VECTOR) * 2).backward()


@pytest.mark.parametrize(
    "operation, name",
    [
        (lambda t: t.max(), "max"),
        (lambda t: t.argsort(), "argsort"),
        (lambda t: t**t, "Tensor \\*\\* Tensor"),
        (lambda t: Tensor(np.ones((2, 2, 3))) @ t, "@"),
    ],
)
def test_an_operation_without_a_gradient_names_itself(operation, name):
    with pytest.raises(NoGradientError, match=name):
        operation(Tensor(VECTOR))


def test_ndarray_names_are_refused_without_a_getattr_hook():
    """A __getattr__ would make Python slow down every attribute read of every Tensor (by about half)."""
    assert not hasattr(Tensor, "__getattr__")
    for name in ("ndim", "dtype", "astype", "cumsum"):
        with pytest.raises(NoGradientError, match=name):
            getattr(Tensor(VECTOR), name)
    with pytest.raises(AttributeError, match="no_such_thing"):
        Tensor(VECTOR).no_such_thing


def test_a_deep_chain_does_not_hit_the_recursion_limit():
    x = Tensor(1.0)
    out = x
    for _ in range(100_000):
        out = out * 1.0
    out.backward()
    assert x.grad == 1.0


def test_a_tensor_is_not_silently_turned_into_an_ndarray():
    with pytest.raises(NoGradientError, match="val"):
        np.asarray(Tensor(VECTOR))
    np.testing.assert_array_equal((np.ones((2, 3)) @ Tensor(VECTOR)).val, np.ones((2, 3)) @ VECTOR)
