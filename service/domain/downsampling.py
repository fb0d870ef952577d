"""Long curves in few points, without hiding a spike: each bucket of epochs keeps its lowest and its highest loss.

W&B's "full fidelity" line plots do the same; averaging or taking every k-th epoch would
smooth a divergence away. A curve of up to `points` epochs is kept whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def min_max(losses: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, losses) of at most `points` points of the curve, in epoch order.

    The epochs are cut into at most points // 2 buckets of equal length (the last may be shorter),
    and each bucket gives the epochs of its minimum and its maximum (one, if they are the same).
    """
    return min_max_each([losses], points)[0]


def min_max_each(curves: Sequence[np.ndarray], points: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`min_max` of every curve, computed for all curves of one length at once.

    A sweep's curves mostly have one length, so 10,000 of them cost a few numpy calls
    rather than 10,000 rounds of them.
    """
    sampled: list[tuple[np.ndarray, np.ndarray]] = [(np.arange(len(curve)), curve) for curve in curves]
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, curve in enumerate(curves):
        if len(curve) > points:
            by_length[len(curve)].append(index)
    for n, indices in by_length.items():
        stacked = np.stack([curves[i] for i in indices])
        size = -(-n // (points // 2))  # ceil
        buckets = -(-n // size)  # every bucket full but the last, which the padding below completes
        # Padded with the last loss: a padded epoch found as an extreme stands for the last epoch.
        grid = np.pad(stacked, ((0, 0), (0, buckets * size - n)), mode="edge").reshape(len(indices), buckets, size)
        offsets = np.arange(buckets) * size
        lows = np.minimum(offsets + grid.argmin(axis=2), n - 1)
        highs = np.minimum(offsets + grid.argmax(axis=2), n - 1)
        epochs = np.sort(np.concatenate([lows, highs], axis=1), axis=1)
        values = np.take_along_axis(stacked, epochs, axis=1)
        keep = np.ones(epochs.shape, dtype=bool)
        keep[:, 1:] = epochs[:, 1:] != epochs[:, :-1]  # one point where min and max coincide
        for row, index in enumerate(indices):
            sampled[index] = (epochs[row][keep[row]], values[row][keep[row]])
    return sampled
