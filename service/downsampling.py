"""Long curves in few points, without hiding a spike: each bucket of epochs keeps its lowest and its highest loss.

W&B's "full fidelity" line plots do the same; averaging or taking every k-th epoch would
smooth a divergence away. A curve of up to `points` epochs is kept whole.
"""

from __future__ import annotations

import numpy as np


def min_max(losses: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, losses) of at most `points` points of the curve, in epoch order.

    The epochs are cut into at most points // 2 buckets of equal length (the last may be shorter),
    and each bucket gives the epochs of its minimum and its maximum (one, if they are the same).
    """
    n = len(losses)
    if n <= points:
        return np.arange(n), losses
    size = -(-n // (points // 2))  # ceil
    buckets = -(-n // size)  # every bucket full but the last, which the padding below completes
    # Padded with the last loss: a padded epoch found as an extreme stands for the last epoch.
    grid = np.pad(losses, (0, buckets * size - n), mode="edge").reshape(buckets, size)
    offsets = np.arange(buckets) * size
    lows = np.minimum(offsets + grid.argmin(axis=1), n - 1)
    highs = np.minimum(offsets + grid.argmax(axis=1), n - 1)
    epochs = np.sort(np.concatenate([lows, highs]))
    epochs = epochs[np.concatenate([[True], epochs[1:] != epochs[:-1]])]  # one point where min and max coincide
    return epochs, losses[epochs]
