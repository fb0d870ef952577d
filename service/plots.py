"""Comparison plots of a sweep's loss curves, rendered to PNG or SVG bytes.

Every function builds its own ``Figure`` and never touches pyplot: the API
server renders from worker threads, and pyplot's global figure state is not
thread-safe.
"""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["HEADROOM", "KNOWN_LINESTYLES", "LOG_FLOOR", "STOPPED_EARLY_COLOR", "TAB10", "VIRIDIS", "VIRIDIS_END",
           "RunCurve", "as_text", "plot_curves", "plot_final", "plot_compare"]

FORMATS = ("png", "svg")
FIGSIZE = (9.0, 5.5)
DPI = 110

# A log axis cannot show zero or negative values. Clipping to a tiny floor,
# rather than dropping them, keeps a run that reached an exact zero loss visible,
# at the price of an axis that stretches down to the floor.
LOG_FLOOR = 1e-300

# A diverged run may climb to 1e300 before the trainer stops it; an axis showing
# all of that would flatten every converging curve against the bottom edge. So
# the loss axis of the curve plots reaches at most this factor above the highest
# loss of a run that did not diverge (or the highest initial loss).
HEADROOM = 100.0

LineStyle = str | tuple[int, tuple[int, ...]]
Group = tuple[float, str]

# Fixed so that an optimizer looks the same in every plot of the service.
KNOWN_LINESTYLES: dict[str, LineStyle] = {"sgd": "-", "momentum": "--", "adam": ":"}
SPARE_LINESTYLES: list[LineStyle] = ["-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 3)), (0, (1, 4))]
# The service's colours, here once: the dashboard sends them to the browser's charts and styles.
TAB10 = matplotlib.colormaps["tab10"].colors  # one per optimizer, or per sweep compared
VIRIDIS = matplotlib.colormaps["viridis"]  # over the sorted learning rates, so neighbouring rates look alike
VIRIDIS_END = 0.85  # where the learning rates' viridis stops: its pale yellow end vanishes on a white background
# Runs that early stopping ended: muted, apart from the learning rates' viridis, tab10's first
# optimizers and the red of divergence.
STOPPED_EARLY_COLOR = "#a0668f"

# More learning rates than this get a colour bar rather than a legend entry each, which
# would not fit beside the axes.
MAX_LEGEND_RATES = 12

EPOCH_LABEL = "epoch"
CURVE_LOSS_LABEL = "training loss (MSE, log scale)"


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is elementwise, not a bool
class RunCurve:
    """One finished (or diverged) run, as the plots need it.

    ``losses[k]`` is the loss before update ``k``, so ``losses[0]`` is the
    initial loss; all values are finite, and a diverged run's curve stops at its
    last finite loss. A run that early stopping ended (status "stopped_early")
    stops where it was judged out: its last loss is real, but not where
    training all its epochs would have led.

    A long curve may come down-sampled (service/domain/downsampling.py): then ``epochs``
    gives each loss's epoch, ascending, from the first epoch to the last.
    """

    learning_rate: float
    seed: int
    optimizer: str
    losses: np.ndarray
    diverged: bool
    best_loss: float | None = None
    stopped_early: bool = False
    epochs: np.ndarray | None = None  # None: losses[k] is epoch k's


def plot_curves(
    runs: Sequence[RunCurve], *, title: str, optimum: float | None = None, fmt: str = "png"
) -> bytes:
    """Loss against epoch: colour per learning rate, line style per optimizer.

    Each (learning rate, optimizer) group is drawn as its mean over seeds with
    a min–max band. Seeds may stop at different epochs, so every statistic at
    epoch k is taken over the runs that reached k; the band therefore narrows
    (and the mean can jump) where a run ends, which is where its '×' sits if
    it diverged. A '×' above the axis limit (see HEADROOM) is drawn on the top
    edge.
    """
    _check_format(fmt)
    if not runs:
        return _no_runs(title, fmt)
    fig, ax = _new_axes(title, xlabel=EPOCH_LABEL, ylabel=CURVE_LOSS_LABEL)
    ax.set_yscale("log")
    ceiling = _loss_ceiling(runs)
    colors = _learning_rate_colors(run.learning_rate for run in runs)
    styles = _optimizer_linestyles(runs)
    groups = _groups(runs)
    for (learning_rate, optimizer), members in groups.items():
        _draw_group(ax, members, colors[learning_rate], styles[optimizer], ceiling, band=True)
    _limit_loss_axis(ax, ceiling)

    handles: list[Line2D | Patch] = []
    if len(colors) <= MAX_LEGEND_RATES:
        handles += [Line2D([], [], color=color, linewidth=2, label=f"lr = {_format_lr(lr)}")
                    for lr, color in colors.items()]
    else:
        _learning_rate_colorbar(fig, ax, colors)
    handles += _optimizer_handles(styles)
    if any(len(members) > 1 for members in groups.values()):
        handles.append(Patch(color="0.5", alpha=0.3, label="min–max over seeds"))
    handles += _reference_handles(ax, runs, optimum)
    _legend_outside(ax, handles, title="mean over seeds")
    return _encode(fig, fmt, title)


def plot_final(
    runs: Sequence[RunCurve],
    *,
    title: str,
    stability_limit: float | None = None,
    fmt: str = "png",
) -> bytes:
    """Final and best loss against learning rate, log–log, colour per optimizer.

    A diverged run's last finite loss only says when training was stopped, so
    it is not plotted as a loss: a red '×' on the top edge marks its learning
    rate instead, and the mean line (over seeds that finished) leaves it out.
    Its best loss is real and is still drawn. A run stopped early is a square
    of its own colour at the loss where it stopped, also left out of the mean,
    which is of the runs that trained all their epochs.
    """
    _check_format(fmt)
    if not runs:
        return _no_runs(title, fmt)
    fig, ax = _new_axes(title, xlabel="learning rate (log scale)", ylabel="loss (log scale)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Room at the top for the divergence marks, so they never sit on a dot.
    ax.set_ymargin(0.12)
    styles = _optimizer_linestyles(runs)
    handles: list[Line2D] = []
    for (optimizer, style), color in zip(styles.items(), itertools.cycle(TAB10)):
        mine = [run for run in runs if run.optimizer == optimizer]
        finished = [run for run in mine if not run.diverged and not run.stopped_early]
        ax.plot(
            [run.learning_rate for run in finished],
            _positive([run.losses[-1] for run in finished]),
            "o", color=color, markersize=6, alpha=0.8,
        )
        ax.plot(
            [run.learning_rate for run in mine],
            _positive([_best_loss(run) for run in mine]),
            "o", markerfacecolor="none", markeredgecolor=color, markersize=8,
        )
        learning_rates = sorted({run.learning_rate for run in mine})
        means = [_mean_final([run for run in finished if run.learning_rate == lr]) for lr in learning_rates]
        (line,) = ax.plot(
            learning_rates, _positive(means), color=color, linestyle=style, linewidth=1.6,
            label=f"{optimizer}: mean final loss",
        )
        handles.append(line)

    handles += [
        Line2D([], [], marker="o", color="0.3", linestyle="none", label="final loss (one per run)"),
        Line2D([], [], marker="o", color="0.3", markerfacecolor="none", linestyle="none",
               label="best loss (one per run)"),
    ]
    stopped = [run for run in runs if run.stopped_early]
    if stopped:
        handles += ax.plot(
            [run.learning_rate for run in stopped], _positive([run.losses[-1] for run in stopped]),
            "s", color=STOPPED_EARLY_COLOR, markersize=6, alpha=0.85, linestyle="none",
            label="stopped early (loss where it stopped)", gid="stopped-early",  # its id in an SVG
        )
    diverged = [run.learning_rate for run in runs if run.diverged]
    if diverged:
        # x in data coordinates, y in axes coordinates: pinned to the top edge
        # whatever the loss range, and still counted when scaling the x axis.
        handles += ax.plot(
            diverged, [1.0] * len(diverged), "x", color="red", markersize=10,
            markeredgewidth=2.5, transform=ax.get_xaxis_transform(), clip_on=False,
            label="diverged (final loss off the chart)",
        )
    if stability_limit is not None:
        handles.append(ax.axvline(stability_limit, color="black", linestyle=":", linewidth=1.5,
                                  label="GD stability limit 2/λmax"))
    _legend_outside(ax, handles)
    return _encode(fig, fmt, title)


def plot_compare(
    sweeps: Sequence[tuple[str, Sequence[RunCurve]]],
    *,
    title: str = "Sweep comparison",
    optimum: float | None = None,
    fmt: str = "png",
) -> bytes:
    """Mean curves of several sweeps on one axis, one colour per sweep.

    Every (learning rate, optimizer) group is drawn thin and faint; each
    sweep's best group (lowest mean final loss, among groups with no diverged
    seed) is drawn thick and named in the legend. Sweeps without runs are left
    out. The loss axis is limited as in ``plot_curves``.
    """
    _check_format(fmt)
    sweeps = [(label, runs) for label, runs in sweeps if runs]
    if not sweeps:
        return _no_runs(title, fmt)
    fig, ax = _new_axes(title, xlabel=EPOCH_LABEL, ylabel=CURVE_LOSS_LABEL)
    ax.set_yscale("log")
    all_runs = [run for _, runs in sweeps for run in runs]
    ceiling = _loss_ceiling(all_runs)
    styles = _optimizer_linestyles(all_runs)
    handles: list[Line2D | Patch] = []
    for (label, runs), color in zip(sweeps, itertools.cycle(TAB10)):
        groups = _groups(runs)
        best = _best_group(groups)
        for (learning_rate, optimizer), members in groups.items():
            if (learning_rate, optimizer) != best:
                _draw_group(ax, members, color, styles[optimizer], ceiling,
                            band=False, linewidth=1.0, alpha=0.35)
        if best is None:
            handles.append(Line2D([], [], color=color, linewidth=2,
                                  label=f"{as_text(label)}: every group diverged"))
        else:
            learning_rate, optimizer = best
            handles.append(_draw_group(
                ax, groups[best], color, styles[optimizer], ceiling, band=False, linewidth=2.8,
                label=f"{as_text(label)}: best lr = {_format_lr(learning_rate)} ({optimizer})",
            ))
    _limit_loss_axis(ax, ceiling)
    handles += _optimizer_handles(styles)
    handles += _reference_handles(ax, all_runs, optimum)
    _legend_outside(ax, handles, title="thick: best group; faint: the others")
    return _encode(fig, fmt, title)


def as_text(text: str) -> str:
    """`text` as matplotlib draws it character for character.

    Matplotlib reads whatever lies between two `$` as a formula: a sweep named
    "lr $5 vs $10" lost its dollars, and one named "$\\frac{a}{b$" failed to render.
    An escaped `\\$` is drawn as a plain `$`.
    """
    return text.replace("$", r"\$")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unsupported image format {fmt!r}; expected one of {FORMATS}")


def _new_axes(title: str, *, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    # Constrained layout, unlike tight_layout, makes room for a legend placed outside the axes.
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    # Padded so that a divergence mark on the top edge does not run into the title.
    ax.set_title(as_text(title), pad=14)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _encode(fig: Figure, fmt: str, title: str) -> bytes:
    buffer = io.BytesIO()
    # The title also goes into the file's metadata, where image viewers and search look.
    fig.savefig(buffer, format=fmt, metadata={"Title": title})
    return buffer.getvalue()


def _no_runs(title: str, fmt: str) -> bytes:
    """An image, not an error: a sweep that has just started has nothing to plot yet."""
    fig, ax = _new_axes(title, xlabel="", ylabel="")
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center",
            fontsize=16, color="0.4")
    return _encode(fig, fmt, title)


def _legend_outside(ax: Axes, handles: Sequence[Line2D | Patch], title: str | None = None) -> None:
    """Outside the axes: with many groups, any spot inside would cover some curve."""
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              fontsize="small", title_fontsize="small")


def _groups(runs: Iterable[RunCurve]) -> dict[Group, list[RunCurve]]:
    """Runs by (learning rate, optimizer), in that order, so drawing and legends are stable."""
    groups: dict[Group, list[RunCurve]] = defaultdict(list)
    for run in sorted(runs, key=lambda run: (run.learning_rate, run.optimizer, run.seed)):
        groups[(run.learning_rate, run.optimizer)].append(run)
    return dict(groups)


def _best_group(groups: dict[Group, list[RunCurve]]) -> Group | None:
    """A group with a diverged seed is never best: its last finite loss is not where it was heading."""
    final_means = {
        key: _mean_final(members)
        for key, members in groups.items()
        if not any(run.diverged for run in members)
    }
    return min(final_means, key=final_means.__getitem__, default=None)


def _epoch_stats(runs: Sequence[RunCurve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, and mean, min and max at each over the curves that reached it.

    The epochs are every curve's; a down-sampled curve is interpolated at the epochs it
    lacks, so that seeds sampled at different epochs still line up (a whole curve has them all).
    """
    epochs = np.unique(np.concatenate([_epochs(run) for run in runs]))
    padded = np.full((len(runs), len(epochs)), np.nan)
    for row, run in zip(padded, runs):
        own = _epochs(run)
        reached = epochs <= own[-1]
        row[reached] = np.interp(epochs[reached], own, run.losses)
    return epochs, np.nanmean(padded, axis=0), np.nanmin(padded, axis=0), np.nanmax(padded, axis=0)


def _epochs(run: RunCurve) -> np.ndarray:
    return np.arange(len(run.losses)) if run.epochs is None else run.epochs


def _draw_group(
    ax: Axes,
    runs: Sequence[RunCurve],
    color: tuple[float, ...],
    linestyle: LineStyle,
    ceiling: float,
    *,
    band: bool,
    linewidth: float = 1.8,
    alpha: float = 1.0,
    label: str | None = None,
) -> Line2D:
    """Mean curve of one group, its min–max band if asked, a '×' where each diverged run stopped
    and a square where early stopping ended a run.

    The '×' is not clipped, so one held down to the ceiling stays whole on the top edge.
    """
    epochs, mean, low, high = _epoch_stats(runs)
    if band and len(runs) > 1:
        ax.fill_between(epochs, _positive(low), _positive(high), color=color, alpha=0.15, linewidth=0)
    (line,) = ax.plot(epochs, _positive(mean), color=color, linestyle=linestyle,
                      linewidth=linewidth, alpha=alpha, label=label)
    for run in runs:
        if run.diverged:
            ax.plot(_epochs(run)[-1], _positive(min(run.losses[-1], ceiling)), "x", color=color,
                    markersize=10, markeredgewidth=2.5, zorder=3, clip_on=False)
        elif run.stopped_early:
            ax.plot(_epochs(run)[-1], _positive(run.losses[-1]), "s", markerfacecolor="none",
                    markeredgecolor=STOPPED_EARLY_COLOR, markersize=7, markeredgewidth=1.8, zorder=3)
    return line


def _loss_ceiling(runs: Iterable[RunCurve]) -> float:
    highest = max(run.losses[0] if run.diverged else np.max(run.losses) for run in runs)
    return float(_positive(HEADROOM * highest))


def _limit_loss_axis(ax: Axes, ceiling: float) -> None:
    """Called after drawing, because reading the limits fixes the autoscaled bottom."""
    if ax.get_ylim()[1] > ceiling:
        ax.set_ylim(top=ceiling)


def _reference_handles(ax: Axes, runs: Iterable[RunCurve], optimum: float | None) -> list[Line2D]:
    """Draws the optimum line if given; returns legend entries for it and for the marks of how runs ended."""
    handles = []
    if optimum is not None:
        handles.append(ax.axhline(max(optimum, LOG_FLOOR), color="black", linestyle="--",
                                  linewidth=1.2, label="least-squares optimum"))
    if any(run.diverged for run in runs):
        handles.append(Line2D([], [], marker="x", color="0.2", markersize=8, markeredgewidth=2,
                              linestyle="none", label="diverged: × where training stopped"))
    if any(run.stopped_early for run in runs):
        handles.append(Line2D([], [], marker="s", markerfacecolor="none", markeredgecolor=STOPPED_EARLY_COLOR,
                              markersize=7, markeredgewidth=1.8, linestyle="none",
                              label="stopped early: □ where it stopped"))
    return handles


def _optimizer_handles(styles: dict[str, LineStyle]) -> list[Line2D]:
    return [Line2D([], [], color="0.5", linestyle=style, linewidth=1.8, label=name)
            for name, style in styles.items()]


def _optimizer_linestyles(runs: Iterable[RunCurve]) -> dict[str, LineStyle]:
    """Known optimizers first, in a fixed order; any other gets a spare style, by name."""
    names = {run.optimizer for run in runs}
    styles = {name: style for name, style in KNOWN_LINESTYLES.items() if name in names}
    spare = itertools.cycle(SPARE_LINESTYLES)
    styles.update((name, next(spare)) for name in sorted(names - styles.keys()))
    return styles


def _learning_rate_colors(learning_rates: Iterable[float]) -> dict[float, tuple[float, ...]]:
    """Viridis over the sorted rates, up to VIRIDIS_END."""
    rates = sorted(set(learning_rates))
    positions = np.linspace(0.0, VIRIDIS_END, len(rates)) if len(rates) > 1 else [0.45]
    return {rate: VIRIDIS(position) for rate, position in zip(rates, positions)}


def _learning_rate_colorbar(fig: Figure, ax: Axes, colors: dict[float, tuple[float, ...]]) -> None:
    """A bar of the learning rates' colours, in their order, with a few of them named."""
    rates = sorted(colors)
    bar = fig.colorbar(ScalarMappable(Normalize(0, len(rates)), ListedColormap([colors[rate] for rate in rates])),
                       ax=ax, location="bottom", aspect=60, shrink=0.7)
    ticks = np.unique(np.linspace(0, len(rates) - 1, 6).round().astype(int))
    bar.set_ticks(ticks + 0.5, labels=[f"{rates[i]:.3g}" for i in ticks])
    bar.set_label(f"learning rate ({len(rates)} of them)", fontsize="small")
    bar.ax.tick_params(labelsize="small")


def _mean_final(runs: Sequence[RunCurve]) -> float:
    """NaN when there is no run, so a line through these means breaks instead of bridging the gap."""
    return float(np.mean([run.losses[-1] for run in runs])) if runs else np.nan


def _best_loss(run: RunCurve) -> float:
    return run.best_loss if run.best_loss is not None else float(np.min(run.losses))


def _format_lr(learning_rate: float) -> str:
    """The shortest scientific form that still tells rates apart: '1e-02', '1.5e-03'."""
    return np.format_float_scientific(learning_rate, trim="-", exp_digits=2)


def _positive(values: float | Sequence[float] | np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR)
