"""Comparison plots of a sweep's loss curves, rendered to PNG or SVG bytes.

Every function builds its own ``Figure`` and never touches pyplot: the API
server renders from worker threads, and pyplot's global figure state is not
thread-safe. The ``*_figure`` functions return that Figure (for a notebook, or a
test that reads its axes); the ``plot_*`` functions encode it.

The charts show the answer by default (issue 24): a curve plot's loss axis spans
the runs that did not diverge, a diverged run leaves through its top edge, and
colours come from service/palette.py, so an optimizer or a learning rate looks the
same in every plot of every sweep and in the dashboard.
"""

from __future__ import annotations

import io
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, LogFormatter, MaxNLocator, NullFormatter
from matplotlib.transforms import ScaledTranslation, Transform, blended_transform_factory

from gradsweep.service.domain.text import divergence_text, human_number
from gradsweep.service.palette import (
    DIVERGED_COLOR, LEARNING_RATE_SCALE, LEARNING_RATE_STOPS, STOPPED_EARLY_COLOR, learning_rate_color, optimizer_color,
)

__all__ = ["HEADROOM", "KNOWN_LINESTYLES", "LOG_FLOOR", "RunCurve", "as_text", "compare_figure",
           "curves_figure", "final_figure", "plot_compare", "plot_curves", "plot_final", "plot_run", "run_figure"]

FORMATS = ("png", "svg")
FIGSIZE = (9.0, 5.5)
DPI = 110

# A log axis cannot show zero or negative values. Clipping to a tiny floor,
# rather than dropping them, keeps a run that reached an exact zero loss visible,
# at the price of an axis that stretches down to the floor.
LOG_FLOOR = 1e-300

# A diverged run climbs to a million times its start before the trainer stops it, and a
# run that did not diverge may swing to a thousand times its start on its way down (Adam
# at a high rate); an axis showing all of that squeezes every converging curve against
# the bottom edge (issue 24). So the loss axis of the curve plots stops this factor above
# the highest initial loss of the runs that did not diverge: what climbs higher runs off
# the top edge, and a diverged run's × is pinned there, where it left.
HEADROOM = 3.0

LineStyle = str | tuple[int, tuple[int, ...]]
Group = tuple[float, str]
Color = str | tuple[float, ...]

# Fixed so that an optimizer looks the same in every plot of the service.
KNOWN_LINESTYLES: dict[str, LineStyle] = {"sgd": "-", "momentum": "--", "adam": ":"}
SPARE_LINESTYLES: list[LineStyle] = ["-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 3)), (0, (1, 4))]
# One per sweep compared (tab10). The colours of optimizers and learning rates are service/palette.py's.
SWEEP_COLORS = matplotlib.colormaps["tab10"].colors

# More learning rates than this get a colour bar rather than a legend entry each, which
# would not fit beside the axes.
MAX_LEGEND_RATES = 12

# A diverged run's ×: its size and stroke in points. One pinned to the top edge sits this far
# below it, so that the whole mark is inside the axes.
MARK_SIZE = 10.0
MARK_WIDTH = 2.5
PIN_OFFSET = (MARK_SIZE + MARK_WIDTH) / 2 + 1.0
# A × whose loss is within this share of the axis' height of the top edge is pinned too, not drawn across it.
PIN_SHARE = 0.03
# The margin below the lowest loss drawn, as a share of the loss axis' decades.
BOTTOM_MARGIN = 0.05

EPOCH_LABEL = "epoch"
CURVE_LOSS_LABEL = "training loss (MSE, log scale)"
DIVERGED_LABEL = "diverged: × where it stopped, or left the chart"


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays with == is elementwise, not a bool
class RunCurve:
    """One finished (or diverged) run, as the plots need it.

    ``losses[k]`` is the loss before update ``k``, so ``losses[0]`` is the
    initial loss; all values are finite, and a diverged run's curve stops at its
    last finite loss. A run that early stopping ended (status "stopped_early")
    stops where it was judged out: its last loss is real, but not where
    training all its epochs would have led.

    A long curve may come down-sampled (service/domain/downsampling.py): then ``epochs``
    gives each loss's epoch, ascending, from the first epoch to the last. The final-loss
    plot needs only each run's last loss: then ``epochs`` is that loss's epoch alone, and
    ``initial_loss`` says where the run started, if known.
    """

    learning_rate: float
    seed: int
    optimizer: str
    losses: np.ndarray
    diverged: bool
    best_loss: float | None = None
    stopped_early: bool = False
    epochs: np.ndarray | None = None  # None: losses[k] is epoch k's
    initial_loss: float | None = None  # None: losses[0] if the curve starts at epoch 0, else not known
    constants: Mapping[str, float] = field(default_factory=dict)  # the optimizer's (beta…), to name the run


def plot_curves(
    runs: Sequence[RunCurve], *, title: str, optimum: float | None = None, fmt: str = "png"
) -> bytes:
    """`curves_figure` as PNG or SVG bytes."""
    _check_format(fmt)
    return _encode(curves_figure(runs, title=title, optimum=optimum), fmt, title)


def plot_run(run: RunCurve, *, title: str, optimum: float | None = None, fmt: str = "png") -> bytes:
    """`run_figure` as PNG or SVG bytes."""
    _check_format(fmt)
    return _encode(run_figure(run, title=title, optimum=optimum), fmt, title)


def plot_final(
    runs: Sequence[RunCurve],
    *,
    title: str,
    stability_limit: float | None = None,
    fmt: str = "png",
) -> bytes:
    """`final_figure` as PNG or SVG bytes."""
    _check_format(fmt)
    return _encode(final_figure(runs, title=title, stability_limit=stability_limit), fmt, title)


def plot_compare(
    sweeps: Sequence[tuple[str, Sequence[RunCurve]]],
    *,
    title: str = "Sweep comparison",
    optimum: float | None = None,
    fmt: str = "png",
) -> bytes:
    """`compare_figure` as PNG or SVG bytes."""
    _check_format(fmt)
    return _encode(compare_figure(sweeps, title=title, optimum=optimum), fmt, title)


def curves_figure(runs: Sequence[RunCurve], *, title: str, optimum: float | None = None) -> Figure:
    """Loss against epoch: colour per learning rate (palette's fixed scale), line style per optimizer.

    Each (learning rate, optimizer) group is drawn as its mean over seeds with
    a min–max band. Seeds may stop at different epochs, so every statistic at
    epoch k is taken over the runs that reached k; the band therefore narrows
    (and the mean can jump) where a run ends. The loss axis spans the runs that
    did not diverge (see HEADROOM); a diverged run's '×' is where it stopped, or
    on the top edge where it left the chart. One run alone is `run_figure`'s.
    """
    if len(runs) == 1:
        return run_figure(runs[0], title=title, optimum=optimum)
    if not runs:
        return _no_runs(title)
    fig, ax = _new_axes(title, xlabel=EPOCH_LABEL, ylabel=CURVE_LOSS_LABEL)
    bottom, top = _loss_range(runs, optimum)
    _log_loss_axis(ax, bottom, top)
    colors = {rate: learning_rate_color(rate) for rate in sorted({run.learning_rate for run in runs})}
    styles = _optimizer_linestyles(runs)
    groups = _groups(runs)
    for (learning_rate, optimizer), members in groups.items():
        _draw_group(ax, members, colors[learning_rate], styles[optimizer], band=True)

    handles: list[Line2D | Patch] = []
    if len(colors) <= MAX_LEGEND_RATES:
        handles += [Line2D([], [], color=color, linewidth=2, label=f"lr = {human_number(lr)}")
                    for lr, color in colors.items()]
    else:
        _learning_rate_colorbar(fig, ax, list(colors))
    handles += _optimizer_handles(styles)
    averaged = any(len(members) > 1 for members in groups.values())
    if averaged:
        handles.append(Patch(color="0.5", alpha=0.3, label="min–max over seeds"))
    handles += _reference_handles(ax, runs, optimum)
    _legend_outside(ax, handles, title="mean over seeds" if averaged else None)
    return fig


def run_figure(run: RunCurve, *, title: str, optimum: float | None = None) -> Figure:
    """One run's loss against epoch, named in the legend by its learning rate, seed and optimizer.

    The loss axis spans the whole curve, so a diverged run's '×' sits at its last finite
    epoch, inside the axes, named by `divergence_text`. No best-loss mark: the curve shows it.
    """
    if not len(run.losses):
        return _no_runs(title, divergence_text(0) if run.diverged else "no losses yet")
    fig, ax = _new_axes(title, xlabel=EPOCH_LABEL, ylabel=CURVE_LOSS_LABEL)
    epochs = _epochs(run)
    (line,) = ax.plot(epochs, _positive(run.losses), color=learning_rate_color(run.learning_rate),
                      linestyle=_optimizer_linestyles([run])[run.optimizer], linewidth=1.8, label=_run_name(run))
    handles: list[Line2D | Patch] = [line]
    if run.diverged:
        handles += ax.plot(epochs[-1], _positive(run.losses[-1]), "x", color=DIVERGED_COLOR, markersize=MARK_SIZE,
                           markeredgewidth=MARK_WIDTH, zorder=3, linestyle="none",
                           label=divergence_text(int(epochs[-1]) + 1))
    elif run.stopped_early:
        ax.plot(epochs[-1], _positive(run.losses[-1]), "s", markerfacecolor="none",
                markeredgecolor=STOPPED_EARLY_COLOR, markersize=7, markeredgewidth=1.8, zorder=3)
    lowest = float(np.min(_positive(run.losses)))
    if optimum is not None:
        lowest = min(lowest, max(optimum, LOG_FLOOR))
    # Top and bottom a little beyond the curve, so that a mark at either end stays inside the axes.
    _log_loss_axis(ax, lowest, float(np.max(_positive(run.losses))), top_margin=True)
    handles += [handle for handle in _reference_handles(ax, [run], optimum) if handle.get_label() != DIVERGED_LABEL]
    _legend_outside(ax, handles)
    return fig


def final_figure(runs: Sequence[RunCurve], *, title: str, stability_limit: float | None = None) -> Figure:
    """Final and best loss against learning rate, log–log, colour per optimizer (palette's).

    A diverged run's last finite loss only says when training was stopped, so
    it is not plotted as a loss: a '×' on the top edge marks its learning rate
    instead, and an optimizer's mean line breaks at each learning rate where one
    of its runs diverged rather than joining its neighbours across it. A best
    loss is drawn as a ring, except a run's whose best is where it started (a
    diverged run's, typically), which would only repeat its start. A run stopped
    early is a square of its own colour at the loss where it stopped, also left
    out of the mean, which is of the runs that trained all their epochs.
    """
    if not runs:
        return _no_runs(title)
    fig, ax = _new_axes(title, xlabel="learning rate (log scale)", ylabel="loss (log scale)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _tidy_log_labels(ax.xaxis)
    _tidy_log_labels(ax.yaxis)
    # Room at the top for the divergence marks, so they never sit on a dot.
    ax.set_ymargin(0.12)
    handles: list[Line2D] = []
    for optimizer, style in _optimizer_linestyles(runs).items():
        handles.append(_draw_optimizer_finals(ax, [run for run in runs if run.optimizer == optimizer], style))
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
        # x in data coordinates, y on the top edge whatever the loss range, and still
        # counted when scaling the x axis.
        handles.append(_pinned_marks(ax, diverged, color=DIVERGED_COLOR, label="diverged (final loss off the chart)",
                                     gid="diverged"))
    if stability_limit is not None:
        handles.append(ax.axvline(stability_limit, color="black", linestyle=":", linewidth=1.5,
                                  label="GD stability limit 2/λmax"))
    _legend_outside(ax, handles)
    return fig


def compare_figure(
    sweeps: Sequence[tuple[str, Sequence[RunCurve]]],
    *,
    title: str = "Sweep comparison",
    optimum: float | None = None,
) -> Figure:
    """Mean curves of several sweeps on one axis, one colour per sweep.

    Every (learning rate, optimizer) group is drawn thin and faint; each
    sweep's best group (lowest mean final loss, among groups with no diverged
    seed) is drawn thick and named in the legend. Sweeps without runs are left
    out. The loss axis is limited as in ``curves_figure``.
    """
    sweeps = [(label, runs) for label, runs in sweeps if runs]
    if not sweeps:
        return _no_runs(title)
    fig, ax = _new_axes(title, xlabel=EPOCH_LABEL, ylabel=CURVE_LOSS_LABEL)
    all_runs = [run for _, runs in sweeps for run in runs]
    _log_loss_axis(ax, *_loss_range(all_runs, optimum))
    styles = _optimizer_linestyles(all_runs)
    handles: list[Line2D | Patch] = []
    for (label, runs), color in zip(sweeps, itertools.cycle(SWEEP_COLORS)):
        groups = _groups(runs)
        best = _best_group(groups)
        for (learning_rate, optimizer), members in groups.items():
            if (learning_rate, optimizer) != best:
                _draw_group(ax, members, color, styles[optimizer], band=False, linewidth=1.0, alpha=0.35)
        if best is None:
            handles.append(Line2D([], [], color=color, linewidth=2,
                                  label=f"{as_text(label)}: every group diverged"))
        else:
            learning_rate, optimizer = best
            handles.append(_draw_group(
                ax, groups[best], color, styles[optimizer], band=False, linewidth=2.8,
                label=f"{as_text(label)}: best lr = {human_number(learning_rate)} ({optimizer})",
            ))
    handles += _optimizer_handles(styles)
    handles += _reference_handles(ax, all_runs, optimum)
    _legend_outside(ax, handles, title="thick: best group; faint: the others")
    return fig


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
    ax.set_title(as_text(title), pad=14)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlabel == EPOCH_LABEL:  # whole epochs only: a short run's axis was labelled 0.5, 1.5
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    return fig, ax


def _encode(fig: Figure, fmt: str, title: str) -> bytes:
    buffer = io.BytesIO()
    # The title also goes into the file's metadata, where image viewers and search look.
    fig.savefig(buffer, format=fmt, metadata={"Title": title})
    return buffer.getvalue()


def _no_runs(title: str, message: str = "no runs yet") -> Figure:
    """An image, not an error: a sweep that has just started has nothing to plot yet."""
    fig, ax = _new_axes(title, xlabel="", ylabel="")
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=16, color="0.4")
    return fig


def _legend_outside(ax: Axes, handles: Sequence[Line2D | Patch], title: str | None = None) -> None:
    """Outside the axes: with many groups, any spot inside would cover some curve."""
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              fontsize="small", title_fontsize="small")


def _run_name(run: RunCurve) -> str:
    """As the legend names one run: "lr = 0.547, seed 0, momentum (beta 0.936)"."""
    constants = ", ".join(f"{name} {human_number(value)}" for name, value in run.constants.items())
    return f"lr = {human_number(run.learning_rate)}, seed {run.seed}, {run.optimizer}" + (
        f" ({constants})" if constants else "")


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
    color: Color,
    linestyle: LineStyle,
    *,
    band: bool,
    linewidth: float = 1.8,
    alpha: float = 1.0,
    label: str | None = None,
) -> Line2D:
    """Mean curve of one group, its min–max band if asked, a '×' where each diverged run stopped
    (or left the chart: `_divergence_mark`) and a square where early stopping ended a run.

    Call it once the loss axis is limited: a diverged run's mark depends on the limits.
    """
    epochs, mean, low, high = _epoch_stats(runs)
    if band and len(runs) > 1:
        ax.fill_between(epochs, _positive(low), _positive(high), color=color, alpha=0.15, linewidth=0)
    (line,) = ax.plot(epochs, _positive(mean), color=color, linestyle=linestyle,
                      linewidth=linewidth, alpha=alpha, label=label)
    for run in runs:
        if run.diverged:
            _divergence_mark(ax, run, color)
        elif run.stopped_early:
            ax.plot(_epochs(run)[-1], _positive(run.losses[-1]), "s", markerfacecolor="none",
                    markeredgecolor=STOPPED_EARLY_COLOR, markersize=7, markeredgewidth=1.8, zorder=3)
    return line


def _divergence_mark(ax: Axes, run: RunCurve, color: Color) -> None:
    """A '×' at the diverged run's last loss, or pinned to the top edge at the epoch where its curve left the
    chart (the last time it crossed the top edge), when its last loss is above the axis or close under its edge."""
    bottom, top = np.log10(ax.get_ylim())
    epochs, losses = _epochs(run), _positive(run.losses)
    if np.log10(losses[-1]) < top - PIN_SHARE * (top - bottom):
        ax.plot(epochs[-1], losses[-1], "x", color=color, markersize=MARK_SIZE, markeredgewidth=MARK_WIDTH, zorder=3)
    else:
        _pinned_marks(ax, [_exit_epoch(epochs, losses, 10**top)], color=color)


def _exit_epoch(epochs: np.ndarray, losses: np.ndarray, top: float) -> float:
    """The epoch at which the curve last rose through `top`, interpolated on the log scale (its first
    epoch if it never was below)."""
    below = np.flatnonzero(losses <= top)
    if not len(below):
        return float(epochs[0])
    k = below[-1]
    if k == len(losses) - 1:
        return float(epochs[k])
    share = math.log(top / losses[k]) / math.log(losses[k + 1] / losses[k])
    return float(epochs[k] + share * (epochs[k + 1] - epochs[k]))


def _pinned_marks(ax: Axes, xs: Sequence[float], *, color: Color, label: str | None = None,
                  gid: str | None = None) -> Line2D:
    """'×' marks at `xs` (data) on the top edge of the axes, just below it, so each is whole and inside."""
    (marks,) = ax.plot(xs, [1.0] * len(xs), "x", color=color, markersize=MARK_SIZE, markeredgewidth=MARK_WIDTH,
                       linestyle="none", zorder=3, transform=_top_edge(ax), label=label, gid=gid)
    # Matplotlib does not see through the moved transform to the data: count the marks when scaling x.
    ax.update_datalim([(x, 1.0) for x in xs], updatey=False)
    ax.autoscale_view(scaley=False)
    return marks


def _top_edge(ax: Axes) -> Transform:
    """x in data coordinates, y in the axes' (1 is the top edge), moved PIN_OFFSET points down."""
    down = ScaledTranslation(0, -PIN_OFFSET / 72, ax.figure.dpi_scale_trans)
    return blended_transform_factory(ax.transData, ax.transAxes) + down


def _loss_range(runs: Sequence[RunCurve], optimum: float | None) -> tuple[float, float]:
    """The lowest loss drawn (or the optimum, if lower), and HEADROOM times the highest initial loss of
    the runs that did not diverge (of every run, if all did): a diverged run's start may be a seed's
    unlucky one, and nothing it does afterwards should set the scale either."""
    kept = [run for run in runs if not run.diverged] or runs
    top = float(_positive(HEADROOM * max(run.losses[0] for run in kept)))
    lowest = min(float(np.min(_positive(run.losses))) for run in runs)
    if optimum is not None:
        lowest = min(lowest, float(_positive(optimum)))
    return min(lowest, top / HEADROOM), top


def _log_loss_axis(ax: Axes, lowest: float, highest: float, *, top_margin: bool = False) -> None:
    """A log loss axis from a margin below `lowest` to `highest` (or a margin above it), with tidy labels.

    Set before the curves are drawn, so that autoscaling never widens it to a diverged run's climb.
    """
    ax.set_yscale("log")
    decades = max(math.log10(highest / lowest), 0.5)  # a flat curve still gets some room
    margin = 10 ** (BOTTOM_MARGIN * decades)
    ax.set_ylim(max(lowest / margin, LOG_FLOOR / 10), highest * margin if top_margin else highest)
    ax.set_autoscaley_on(False)
    _tidy_log_labels(ax.yaxis)


class _HumanLogLabels(LogFormatter):
    """Log-axis tick labels people read: human numbers (0.05, 1, 300) while the axis lies within their
    range, else powers of ten as 10^k; minor ticks are labelled only on an axis under a decade or so
    (matplotlib's rule), never as bare digits."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        low, high = sorted((vmin, vmax))
        exponent = math.log10(x)
        if (1e-3 <= low and high < 1e5) or abs(exponent - round(exponent)) > 1e-9:
            return human_number(x)
        return f"$\\mathdefault{{10^{{{round(exponent)}}}}}$"


def _tidy_log_labels(axis: Axis) -> None:
    axis.set_major_formatter(_HumanLogLabels())
    axis.set_minor_formatter(_HumanLogLabels(labelOnlyBase=False))


def _reference_handles(ax: Axes, runs: Iterable[RunCurve], optimum: float | None) -> list[Line2D]:
    """Draws the optimum line if given; returns legend entries for it and for the marks of how runs ended."""
    handles = []
    if optimum is not None:
        handles.append(ax.axhline(max(optimum, LOG_FLOOR), color="black", linestyle="--",
                                  linewidth=1.2, label="least-squares optimum"))
    if any(run.diverged for run in runs):
        handles.append(Line2D([], [], marker="x", color="0.2", markersize=8, markeredgewidth=2,
                              linestyle="none", label=DIVERGED_LABEL))
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


def _learning_rate_colorbar(fig: Figure, ax: Axes, rates: Sequence[float]) -> None:
    """The fixed scale of learning rates (palette's), with a decade per tick and a short mark at each
    of the sweep's rates; arrows at an end when some rate lies beyond it and takes its end colour."""
    low, high = LEARNING_RATE_SCALE
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (min(rates) < low, max(rates) > high)]
    scale = ScalarMappable(LogNorm(low, high), ListedColormap(LEARNING_RATE_STOPS))
    bar = fig.colorbar(scale, ax=ax, location="bottom", aspect=60, shrink=0.7, extend=extend)
    decades = [10.0 ** k for k in range(round(math.log10(low)), round(math.log10(high)) + 1)]
    bar.set_ticks(decades, labels=[human_number(rate) for rate in decades])
    bar.ax.xaxis.set_minor_locator(FixedLocator([min(max(rate, low), high) for rate in rates]))
    bar.ax.xaxis.set_minor_formatter(NullFormatter())
    bar.set_label(f"learning rate ({len(rates)} of them)", fontsize="small")
    bar.ax.tick_params(labelsize="small")


def _draw_optimizer_finals(ax: Axes, runs: Sequence[RunCurve], style: LineStyle) -> Line2D:
    """One optimizer's final losses (dots), best losses (rings) and mean line; returns the line."""
    color = optimizer_color(runs[0].optimizer)
    finished = [run for run in runs if not run.diverged and not run.stopped_early]
    ax.plot([run.learning_rate for run in finished], _positive([run.losses[-1] for run in finished]),
            "o", color=color, markersize=6, alpha=0.8)
    ringed = [run for run in runs if not _best_is_start(run)]
    ax.plot([run.learning_rate for run in ringed], _positive([_best_loss(run) for run in ringed]),
            "o", markerfacecolor="none", markeredgecolor=color, markersize=8)
    groups = _groups(runs)
    means = [np.nan if any(run.diverged for run in members)
             else _mean_final([run for run in members if not run.stopped_early])
             for members in groups.values()]
    (line,) = ax.plot([learning_rate for learning_rate, _ in groups], _positive(means), color=color,
                      linestyle=style, linewidth=1.6, label=f"{runs[0].optimizer}: mean final loss")
    return line


def _mean_final(runs: Sequence[RunCurve]) -> float:
    """NaN when there is no run, so a line through these means breaks instead of bridging the gap."""
    return float(np.mean([run.losses[-1] for run in runs])) if runs else np.nan


def _best_loss(run: RunCurve) -> float:
    return run.best_loss if run.best_loss is not None else float(np.min(run.losses))


def _initial_loss(run: RunCurve) -> float | None:
    if run.initial_loss is not None:
        return run.initial_loss
    return float(run.losses[0]) if len(run.losses) and _epochs(run)[0] == 0 else None


def _best_is_start(run: RunCurve) -> bool:
    """Whether the run never got below its initial loss, as known: then its best says nothing new."""
    initial = _initial_loss(run)
    return initial is not None and _best_loss(run) >= initial


def _positive(values: float | Sequence[float] | np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR)
