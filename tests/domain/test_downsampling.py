"""Min–max down-sampling keeps every bucket's extremes, so that a spike survives any number of points."""

import numpy as np
import pytest

from gradsweep.service.domain.downsampling import min_max, min_max_each


def test_a_short_curve_is_kept_whole():
    losses = np.array([3.0, 2.0, 1.0])
    epochs, kept = min_max(losses, 200)
    assert epochs.tolist() == [0, 1, 2] and kept is losses


@pytest.mark.parametrize("n, points", [(1_000, 200), (100_000, 200), (1_001, 10), (10_007, 64), (201, 200)])
def test_at_most_points_in_epoch_order_with_every_bucket_min_and_max(n, points):
    rng = np.random.default_rng(n)
    losses = np.exp(-np.arange(n) / n) + rng.normal(0, 0.01, n)
    epochs, kept = min_max(losses, points)
    assert len(epochs) <= points and np.all(np.diff(epochs) > 0)
    assert kept.tolist() == losses[epochs].tolist()
    assert losses.min() in kept and losses.max() in kept
    size = -(-n // (points // 2))
    for start in range(0, n, size):
        bucket = losses[start:start + size]
        assert bucket.min() in kept and bucket.max() in kept


def test_a_one_epoch_spike_is_never_hidden():
    losses = np.full(100_000, 0.5)
    losses[77_777] = 1e6
    epochs, kept = min_max(losses, 100)
    assert 77_777 in epochs.tolist() and kept.max() == 1e6


def test_many_curves_at_once_are_each_what_min_max_gives_alone():
    rng = np.random.default_rng(3)
    curves = [rng.random(n) for n in (1_000, 1_000, 50, 0, 1_000, 2_345, 2_345)]
    curves[1][:] = 0.25  # a flat curve: min and max coincide in every bucket
    together = min_max_each(curves, 64)
    for curve, (epochs, kept) in zip(curves, together, strict=True):
        alone_epochs, alone_kept = min_max(curve, 64)
        assert epochs.tolist() == alone_epochs.tolist() and kept.tolist() == alone_kept.tolist()
    assert together[1][0].size == 32  # one point a bucket
