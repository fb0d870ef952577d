"""The seed's task: data, the two engines agreeing, and gradient descent behaving as theory says."""

import multiprocessing

import numpy as np
import pytest

from gradsweep.engine.tasks.linear_regression import (
    least_squares_loss,
    make_data,
    stability_limit,
    train,
)


def hessian_lambda_max(n_samples: int = 100, n_features: int = 50, data_seed: int = 0) -> float:
    """Largest eigenvalue of the MSE's Hessian in (W, b): 2/n [X 1]^T [X 1]."""
    X, _ = make_data(n_samples, n_features, data_seed)
    A = np.hstack([X, np.ones((n_samples, 1))])
    return float(np.linalg.eigvalsh(2.0 / n_samples * A.T @ A).max())


def test_data_is_uniform_float64_and_fixed_by_its_seed():
    X, y = make_data(100, 50, data_seed=3)
    assert X.shape == (100, 50) and y.shape == (100,)
    assert X.dtype == y.dtype == np.float64
    assert 0 <= X.min() and X.max() < 1 and 0 <= y.min() and y.max() < 1
    np.testing.assert_array_equal(X, make_data(100, 50, data_seed=3)[0])
    assert not np.array_equal(X, make_data(100, 50, data_seed=4)[0])


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_scalar_mode_equals_tensor_mode_on_the_seed_task(optimizer):
    scalar = train(0.02, seed=1, epochs=15, mode="scalar", optimizer=optimizer)
    tensor = train(0.02, seed=1, epochs=15, mode="tensor", optimizer=optimizer)
    assert len(scalar.losses) == len(tensor.losses) == 15
    np.testing.assert_allclose(scalar.losses, tensor.losses, rtol=1e-9)


def test_the_first_loss_is_the_loss_at_initialisation():
    from gradsweep.engine.tasks.linear_regression import initial_parameters

    X, y = make_data()
    W, b = initial_parameters(seed=5, n_features=50)
    expected = np.mean((X @ W[:, 0] + b - y) ** 2)
    assert train(0.01, seed=5, epochs=1).losses[0] == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_the_loss_falls_monotonically_below_the_stability_limit(fraction):
    learning_rate = fraction * 2.0 / hessian_lambda_max()
    result = train(learning_rate, seed=0, epochs=500)
    assert not result.diverged
    steps = np.diff(result.losses)
    assert np.all(steps <= 0), f"loss rose at epochs {np.flatnonzero(steps > 0)[:5]}"
    assert result.losses[-1] < result.losses[0]


@pytest.mark.parametrize("factor", [1.1, 2.0, 100.0])
def test_the_run_is_flagged_diverged_above_the_stability_limit(factor):
    learning_rate = factor * 2.0 / hessian_lambda_max()
    result = train(learning_rate, seed=0, epochs=5000)
    assert result.diverged and not result.stopped
    assert result.diverged_at == len(result.losses) < 5000
    assert np.all(np.isfinite(result.losses))
    assert max(result.losses) <= 1e6 * result.losses[0]


def test_the_library_stability_limit_matches_the_hessian():
    assert stability_limit() == pytest.approx(2.0 / hessian_lambda_max(), rel=1e-12)


def test_training_approaches_the_least_squares_optimum():
    optimum = least_squares_loss()
    result = train(0.9 * stability_limit(), seed=0, epochs=20000, optimizer="momentum")
    assert optimum <= result.losses[-1] < optimum * 1.01


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_same_arguments_give_identical_losses(optimizer):
    a = train(0.01, seed=7, epochs=200, optimizer=optimizer)
    b = train(0.01, seed=7, epochs=200, optimizer=optimizer)
    assert a.losses.tolist() == b.losses.tolist()  # bit for bit, not approximately


def test_different_seeds_give_different_initial_losses():
    assert train(0.01, seed=0, epochs=1).losses[0] != train(0.01, seed=1, epochs=1).losses[0]


def _losses_in_another_process(args):
    return train(*args).losses.tolist()


def test_another_process_computes_the_same_bits():
    args = (0.01, 3, 300, 100, 50, 0, "tensor", "adam")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_losses_in_another_process, (args,)) == train(*args).losses.tolist()


def test_on_epoch_sees_every_loss_and_can_stop_training():
    seen = []
    result = train(0.01, seed=0, epochs=50, on_epoch=lambda epoch, loss: seen.append((epoch, loss)))
    assert seen == list(enumerate(result.losses))
    stopped = train(0.01, seed=0, epochs=50, on_epoch=lambda epoch, loss: epoch < 9)
    assert stopped.stopped and len(stopped.losses) == 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"epochs": 0}, "epochs"),
        ({"mode": "gpu"}, "mode"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"n_features": 0}, "n_features"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    arguments = {"learning_rate": 0.01, "seed": 0, "epochs": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        train(**arguments)


@pytest.mark.parametrize("mode", ["scalar", "tensor"])
def test_an_absurd_learning_rate_diverges_cleanly_in_both_modes(mode):
    result = train(1e150, seed=0, epochs=10, mode=mode)
    assert result.diverged and len(result.losses) >= 1
    assert np.all(np.isfinite(result.losses))
