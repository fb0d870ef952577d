"""The service's colours, named once, so that a run looks the same in every view of every sweep.

An optimizer has one colour by name (sgd blue, momentum orange, adam green, as tab10
orders them), never by its place in a sweep. A learning rate has one colour on one fixed
log scale, LEARNING_RATE_SCALE, whatever other rates its sweep holds: 0.01 is the same
teal in a sweep of three rates and in a sweep of a hundred. The PNG and SVG plots
(`service/plots.py`) read these functions; the dashboard gets the same tables once per
page (`service/api/dashboard/constants.py`) and its scripts pick from them alike (`api.js`).
"""

from __future__ import annotations

import math

import matplotlib
from matplotlib.colors import to_hex

__all__ = ["DIVERGED_COLOR", "LEARNING_RATE_SCALE", "LEARNING_RATE_STOPS", "OPTIMIZER_COLORS", "SPARE_COLORS",
           "STOPPED_EARLY_COLOR", "learning_rate_color", "learning_rate_position", "optimizer_color"]

_TAB10 = [to_hex(color) for color in matplotlib.colormaps["tab10"].colors]
OPTIMIZER_COLORS: dict[str, str] = {"sgd": _TAB10[0], "momentum": _TAB10[1], "adam": _TAB10[2]}
DIVERGED_COLOR = _TAB10[3]  # tab10's red: where a diverged run left the chart
# Any other optimizer takes one of these by the sum of its name's UTF-8 bytes: stable across views.
SPARE_COLORS: list[str] = [_TAB10[i] for i in (4, 5, 6, 8, 9)]
# Runs that early stopping ended: muted, apart from the learning rates' viridis, the optimizers' colours
# and the red of divergence.
STOPPED_EARLY_COLOR = "#a0668f"

# Learning rates from 0.001 to 1 span viridis up to 0.85 (its pale yellow end vanishes on white);
# rates outside take the end colours. Three decades, where this task's rates live (its stability
# limit is near 0.07 for 100×50; Adam's useful rates reach 0.5): over five, a sweep of 0.003–0.1
# was all one teal. Sampled into stops so the browser picks exactly these colours.
LEARNING_RATE_SCALE = (1e-3, 1.0)
VIRIDIS_END = 0.85
LEARNING_RATE_STOPS: list[str] = [to_hex(matplotlib.colormaps["viridis"](VIRIDIS_END * k / 63)) for k in range(64)]


def optimizer_color(name: str) -> str:
    """The optimizer's colour: fixed for the known ones, by a hash of the name for any other."""
    return OPTIMIZER_COLORS.get(name) or SPARE_COLORS[sum(name.encode()) % len(SPARE_COLORS)]  # as api.js


def learning_rate_position(learning_rate: float) -> float:
    """Where the rate sits on LEARNING_RATE_SCALE, from 0 to 1 (log scale; clamped outside it)."""
    low, high = (math.log10(bound) for bound in LEARNING_RATE_SCALE)
    return min(max((math.log10(learning_rate) - low) / (high - low), 0.0), 1.0)


def learning_rate_color(learning_rate: float) -> str:
    """The rate's colour: the stop nearest its position on the fixed scale."""
    return LEARNING_RATE_STOPS[round(learning_rate_position(learning_rate) * (len(LEARNING_RATE_STOPS) - 1))]
