"""train_batch: K runs trained at once, each exactly as it would be alone, whatever the others do."""

import multiprocessing

import numpy as np
import pytest

from gradsweep.engine.optimizers import OPTIMIZERS
from gradsweep.engine.tasks.linear_regression import stability_limit, train, train_batch

LIMIT = stability_limit()  # plain gradient descent diverges above this learning rate
OPTIMIZER_NAMES = list(OPTIMIZERS)


def assert_curves_close(batch_losses, alone_losses):
    """Within 1e-12 relative: a matrix-matrix product may round its last bits unlike a matrix-vector one."""
    assert len(batch_losses) == len(alone_losses)
    np.testing.assert_allclose(batch_losses, alone_losses, rtol=1e-12, atol=0)


@pytest.mark.parametrize("optimizer", OPTIMIZER_NAMES)
@pytest.mark.parametrize("learning_rates, seeds", [
    ([0.02], [4]),
    ([0.001, 0.03, 0.03], [0, 0, 1]),
    ([0.005, 0.01, 0.02, 0.04, 0.06, 0.07, 0.05], [6, 5, 4, 3, 2, 1, 0]),
], ids=["K=1", "K=3", "K=7"])
def test_each_run_of_a_batch_is_the_run_trained_alone(optimizer, learning_rates, seeds):
    results = train_batch(learning_rates, seeds, epochs=150, optimizer=optimizer)
    assert len(results) == len(learning_rates)
    for result, learning_rate, seed in zip(results, learning_rates, seeds):
        alone = train(learning_rate, seed, epochs=150, optimizer=optimizer)
        assert_curves_close(result.losses, alone.losses)
        assert (result.diverged, result.stopped) == (alone.diverged, alone.stopped) == (False, False)
        assert result.losses.dtype == np.float64 and result.losses.ndim == 1


def test_diverging_runs_stop_where_they_would_alone_and_the_others_go_on():
    learning_rates = [0.5 * LIMIT, 1.1 * LIMIT, 0.9 * LIMIT, 2.0 * LIMIT, 100.0 * LIMIT, 1e150]
    seeds = [0, 1, 2, 3, 4, 5]
    results = train_batch(learning_rates, seeds, epochs=3000)
    assert [r.diverged for r in results] == [False, True, False, True, True, True]
    for result, learning_rate, seed in zip(results, learning_rates, seeds):
        alone = train(learning_rate, seed, epochs=3000)
        assert result.diverged_at == alone.diverged_at
        assert_curves_close(result.losses, alone.losses)
        assert np.all(np.isfinite(result.losses)) and not result.stopped


@pytest.mark.parametrize("optimizer", OPTIMIZER_NAMES)
def test_a_runs_curve_does_not_depend_on_what_happens_to_the_others(optimizer):
    """Runs 0 and 2 keep their bits whether their neighbours converge, diverge or are stopped at epoch 0."""
    seeds = [7, 8, 9, 10]
    calm = train_batch([0.01, 0.02, 0.03, 0.04], seeds, epochs=300, optimizer=optimizer)
    blown = train_batch([0.01, 5.0, 0.03, 1e150], seeds, epochs=300, optimizer=optimizer)
    redone = train_batch([0.01, 0.02, 0.03, 0.04], seeds, epochs=300, optimizer=optimizer,
                         on_epoch=lambda epoch, losses: [1, 3] if epoch == 0 else [])
    late = train_batch([0.01, 0.02, 0.03, 0.04], seeds, epochs=300, optimizer=optimizer,
                       on_epoch=lambda epoch, losses: {5: [1], 150: [3]}.get(epoch, []))
    if optimizer == "sgd":
        assert blown[1].diverged and blown[3].diverged
    assert [r.losses.tolist() for r in redone[1::2]] == [c.losses[:1].tolist() for c in calm[1::2]]
    for k in (0, 2):
        assert blown[k].losses.tolist() == calm[k].losses.tolist()  # bit for bit
        assert redone[k].losses.tolist() == calm[k].losses.tolist()
        assert late[k].losses.tolist() == calm[k].losses.tolist()
    assert late[1].losses.tolist() == calm[1].losses[:6].tolist() and late[3].losses.tolist() == calm[3].losses[:151].tolist()


def test_on_epoch_gets_a_fresh_array_of_this_epochs_losses_with_nan_for_runs_that_recorded_none():
    seen = []

    def on_epoch(epoch, losses):
        seen.append((epoch, losses))  # kept without a copy: the array must not change later
        return [2] if epoch == 3 else []

    results = train_batch([0.01, 2.0, 0.02], [0, 1, 2], epochs=40, on_epoch=on_epoch)
    assert results[1].diverged and results[2].stopped and len(results[2].losses) == 4
    assert [epoch for epoch, _ in seen] == list(range(40))
    for epoch, losses in seen:
        assert losses.dtype == np.float64 and losses.shape == (3,)
        for k, result in enumerate(results):
            recorded = epoch < len(result.losses)
            assert (losses[k] == result.losses[epoch]) if recorded else np.isnan(losses[k])
    assert len({id(losses) for _, losses in seen}) == len(seen)


def test_on_epoch_naming_every_run_stops_them_all_and_keeps_this_epochs_losses():
    calls = []
    results = train_batch([0.01, 0.02], [0, 1], epochs=50,
                          on_epoch=lambda epoch, losses: calls.append(epoch) or ({0, 1} if epoch == 9 else set()))
    assert calls == list(range(10))
    assert all(r.stopped and not r.diverged and len(r.losses) == 10 for r in results)


def test_the_loop_ends_once_no_run_is_live():
    calls = []
    results = train_batch([0.01, 0.02, 0.03], [0, 1, 2], epochs=10_000,
                          on_epoch=lambda epoch, losses: calls.append(epoch) or ([0, 2] if epoch == 0 else [1]))
    assert calls == [0, 1]
    assert [len(r.losses) for r in results] == [1, 2, 1] and all(r.stopped for r in results)

    calls = []
    results = train_batch([1e150, 1e150], [0, 1], epochs=10_000,
                          on_epoch=lambda epoch, losses: calls.append(epoch) or set())
    assert calls == [0]  # both blow up at epoch 1, before its update: no run is left to report on
    assert [r.diverged_at for r in results] == [1, 1]


def test_results_keep_their_meaning_stopped_runs_are_not_diverged():
    results = train_batch([0.01, 0.02, 3.0], [0, 1, 2], epochs=20,
                          on_epoch=lambda epoch, losses: (0, 2) if epoch == 4 else ())
    assert (results[0].stopped, results[0].diverged, len(results[0].losses)) == (True, False, 5)
    assert (results[1].stopped, results[1].diverged, len(results[1].losses)) == (False, False, 20)
    assert results[2].diverged and not results[2].stopped and results[2].diverged_at == len(results[2].losses) < 5


def _batch_in_another_process(args):
    return [r.losses.tolist() for r in train_batch(*args)]


def test_another_process_computes_the_same_bits():
    args = ([0.01, 0.05, 3.0], [3, 4, 5], 200, 100, 50, 0, "adam")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_batch_in_another_process, (args,)) == _batch_in_another_process(args)


@pytest.mark.parametrize("optimizer", OPTIMIZER_NAMES)
def test_the_optimizers_take_one_learning_rate_per_column(optimizer):
    rng = np.random.default_rng(0)
    rates = np.array([0.1, 0.01, 0.5])
    params, grads = [rng.normal(size=(4, 3)), rng.normal(size=(1, 3))], [rng.normal(size=(4, 3)), rng.normal(size=(1, 3))]
    vector = OPTIMIZERS[optimizer](rates)
    scalars = [OPTIMIZERS[optimizer](rate) for rate in rates]
    for _ in range(3):
        stepped = vector.step(params, grads)
        for k, scalar in enumerate(scalars):
            alone = scalar.step([p[:, k:k + 1] for p in params], [g[:, k:k + 1] for g in grads])
            for column, expected in zip(stepped, alone):
                np.testing.assert_array_equal(column[:, k:k + 1], expected)
        params = stepped


@pytest.mark.parametrize("optimizer, constants", [
    ("momentum", {"beta": [0.0, 0.5, 0.9, 0.99]}),
    # Constants as people set them. With little averaging (beta1 0, beta2 0.99) Adam's steps are
    # about the gradient's sign, which a last-bit difference of the matrix product can flip:
    # such a run matched its batched curve only within 3e-10.
    ("adam", {"beta1": [0.8, 0.9, 0.95, 0.85], "beta2": [0.99, 0.999, 0.9999, 0.995], "eps": [1e-8, 1e-3, 1e-6, 0.1]}),
    ("adam", {"eps": [1e-8, 1e-3, 1e-6, 0.1]}),
])
def test_each_run_of_a_batch_trains_with_its_own_optimizer_constants(optimizer, constants):
    learning_rates, seeds = [0.01, 0.02, 0.005, 0.03], [0, 1, 2, 3]
    results = train_batch(learning_rates, seeds, epochs=120, optimizer=optimizer, constants=constants)
    for k, (result, learning_rate, seed) in enumerate(zip(results, learning_rates, seeds)):
        own = {name: values[k] for name, values in constants.items()}
        assert_curves_close(result.losses, train(learning_rate, seed, epochs=120, optimizer=optimizer,
                                                 constants=own).losses)
        assert result.losses.tolist() != train(learning_rate, seed, epochs=120, optimizer=optimizer).losses.tolist()  # they matter


def test_defaults_are_the_constants_not_given():
    from gradsweep.engine.optimizers import CONSTANTS

    for optimizer, defaults in CONSTANTS.items():
        assert train(0.01, 0, 50, optimizer=optimizer, constants=defaults).losses.tolist() == \
            train(0.01, 0, 50, optimizer=optimizer).losses.tolist()


@pytest.mark.parametrize("optimizer, constants, message", [
    ("sgd", {"beta": 0.9}, "sgd has no constant 'beta'"),
    ("momentum", {"beta": 1.0}, r"beta must be in \[0, 1\)"),
    ("adam", {"beta2": -0.1}, r"beta2 must be in \[0, 1\)"),
    ("adam", {"eps": 0.0}, "eps must be a finite number > 0"),
    ("adam", {"eps": float("nan")}, "eps must be a finite number > 0"),
])
def test_bad_constants_are_refused_by_name(optimizer, constants, message):
    with pytest.raises(ValueError, match=message):
        train(0.01, 0, 10, optimizer=optimizer, constants=constants)
    with pytest.raises(ValueError, match=message):
        train_batch([0.01], [0], 10, optimizer=optimizer, constants={k: [v] for k, v in constants.items()})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rates": []}, "learning_rates"),
        ({"seeds": [0]}, "seeds"),
        ({"learning_rates": [0.01, 0.0]}, r"learning_rates\[1\]"),
        ({"learning_rates": [float("inf"), 0.01]}, r"learning_rates\[0\]"),
        ({"epochs": 0}, "epochs"),
        ({"n_samples": 0}, "n_samples"),
        ({"optimizer": "lbfgs"}, "optimizer"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, message):
    arguments = {"learning_rates": [0.01, 0.02], "seeds": [0, 1], "epochs": 10} | kwargs
    with pytest.raises(ValueError, match=message):
        train_batch(**arguments)


@pytest.mark.parametrize("reply", [[3], [-1], ["0"], 2, [True], None, True, False, "0"])
def test_on_epoch_must_name_runs_by_their_index(reply):
    with pytest.raises(ValueError, match="on_epoch"):
        train_batch([0.01, 0.02, 0.03], [0, 1, 2], epochs=5, on_epoch=lambda epoch, losses: reply)
