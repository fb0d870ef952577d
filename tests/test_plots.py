"""The plots render to valid images for full sweeps, empty sweeps and odd inputs.

The curves are synthetic: on a quadratic loss, gradient descent shrinks the
excess loss over the optimum by a constant factor per epoch, so a geometric
decay is what a real run looks like, and a factor above one is divergence.
"""

import functools
import math
import warnings
import struct
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D

from gradsweep.service.domain.text import divergence_text, human_number
from gradsweep.service.palette import LEARNING_RATE_SCALE, learning_rate_color, optimizer_color
from gradsweep.service.plots import (
    HEADROOM, RunCurve, compare_figure, curves_figure, final_figure, plot_compare, plot_curves, plot_final, plot_run,
    run_figure,
)

OPTIMUM = 0.05
STABILITY_LIMIT = 0.2
TITLE = "Sweep 7: linear regression, 200 samples"
# Per-optimizer speed-ups of the per-epoch decay, so the groups are told apart.
SPEED = {"sgd": 2.0, "momentum": 6.0, "adam": 4.0}
KINDS = ["curves", "final", "compare"]


def converged_run(learning_rate: float, seed: int, optimizer: str, speedup: float = 1.0) -> RunCurve:
    """The excess loss shrinks by exp(-rate) per epoch; seeds differ in initial loss and,
    slightly, in rate, so the bands have width."""
    rate = SPEED[optimizer] * speedup * learning_rate * (1.0 + 0.1 * seed)
    losses = OPTIMUM + (1.0 + 0.3 * seed) * np.exp(-rate * np.arange(80))
    return RunCurve(learning_rate, seed, optimizer, losses, diverged=False)


def diverged_run(learning_rate: float, seed: int, optimizer: str, speedup: float = 1.0) -> RunCurve:
    """Above the stability limit the excess loss grows until the trainer gives up."""
    epochs = np.arange(int((30 + 5 * seed) / speedup))
    losses = OPTIMUM + (1.0 + 0.3 * seed) * np.exp(0.5 * speedup * epochs)
    return RunCurve(learning_rate, seed, optimizer, losses, diverged=True)


def make_sweep(speedup: float = 1.0) -> list[RunCurve]:
    """4 learning rates × 3 seeds × 3 optimizers, plus plain SGD beyond its stability limit."""
    runs = [
        converged_run(lr, seed, optimizer, speedup)
        for lr in (0.003, 0.01, 0.03, 0.1)
        for seed in range(3)
        for optimizer in SPEED
    ]
    return runs + [diverged_run(0.3, seed, "sgd", speedup) for seed in range(3)]


def render(kind: str, runs: list[RunCurve], fmt: str = "png") -> bytes:
    if kind == "curves":
        return plot_curves(runs, title=TITLE, optimum=OPTIMUM, fmt=fmt)
    if kind == "final":
        return plot_final(runs, title=TITLE, stability_limit=STABILITY_LIMIT, fmt=fmt)
    # A second sweep that learns twice as fast, as if its features were standardized.
    faster = make_sweep(speedup=2.0) if runs else []
    sweeps = [("raw features", runs), ("standardized", faster)]
    return plot_compare(sweeps, title=TITLE, optimum=OPTIMUM, fmt=fmt)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format requires to come first."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    _length, chunk_type, width, height = struct.unpack(">I4sII", data[8:24])
    assert chunk_type == b"IHDR"
    return width, height


def svg_root(data: bytes) -> ElementTree.Element:
    root = ElementTree.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


@functools.cache
def sweep_image(kind: str, fmt: str) -> bytes:
    """Rendered once per test session: a figure takes matplotlib about half a second."""
    return render(kind, make_sweep(), fmt)


@pytest.mark.parametrize("kind", KINDS)
def test_png_has_a_readable_size(kind: str) -> None:
    width, height = png_size(sweep_image(kind, "png"))
    assert width >= 600 and height >= 400


@pytest.mark.parametrize("kind", KINDS)
def test_svg_parses_and_carries_the_title(kind: str) -> None:
    data = sweep_image(kind, "svg")
    svg_root(data)
    assert TITLE in data.decode()


@pytest.mark.parametrize("kind", KINDS)
def test_empty_input_says_so_instead_of_raising(kind: str) -> None:
    assert png_size(render(kind, []))[0] >= 600
    assert "no runs yet" in render(kind, [], fmt="svg").decode()


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_format_is_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match="jpg"):
        render(kind, make_sweep(), fmt="jpg")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.filterwarnings("error")  # matplotlib warns when a log axis is given values <= 0
def test_zero_loss_and_unknown_optimizer_render_without_warnings(kind: str) -> None:
    exact_fit = np.array([1.0, 0.1, 0.0, 0.0])
    runs = [
        RunCurve(0.1, 0, "rmsprop", exact_fit, diverged=False),
        RunCurve(0.1, 1, "rmsprop", exact_fit, diverged=False, best_loss=0.0),
    ]
    svg_root(render(kind, runs, fmt="svg"))


def test_rendering_from_threads_gives_the_same_image() -> None:
    """The API server renders from worker threads; no figure state may leak between them."""
    sweep = make_sweep()
    with ThreadPoolExecutor(max_workers=2) as pool:
        images = list(pool.map(lambda kind: render(kind, sweep), ["curves", "final"]))
    assert images == [sweep_image("curves", "png"), sweep_image("final", "png")]


def test_a_hundred_learning_rates_get_a_colour_bar_and_leave_room_for_the_axes():
    runs = [converged_run(float(lr), seed, "sgd") for lr in np.logspace(-3, -1, 100) for seed in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when the legend squeezes the axes to nothing
        svg = plot_curves(runs, title="many rates", fmt="svg").decode()
    assert "learning rate (100 of them)" in svg and "lr = " not in svg


def stopped_early_run(learning_rate: float, seed: int, optimizer: str) -> RunCurve:
    """Judged out at a rung after 9 epochs: the converging curve, cut there."""
    run = converged_run(learning_rate, seed, optimizer)
    return RunCurve(learning_rate, seed, optimizer, run.losses[:10], diverged=False, stopped_early=True)


@pytest.mark.parametrize("kind", KINDS)
def test_runs_stopped_early_are_named_in_the_legend_only_when_there_are_some(kind: str) -> None:
    runs = make_sweep() + [stopped_early_run(0.001, seed, "adam") for seed in range(3)]
    assert "stopped early" in render(kind, runs, fmt="svg").decode()
    assert "stopped early" not in sweep_image(kind, "svg").decode()


def test_the_final_loss_plot_marks_each_run_stopped_early_apart_from_the_others() -> None:
    stopped = [stopped_early_run(0.001, seed, "adam") for seed in range(3)]
    root = svg_root(render("final", make_sweep() + stopped, fmt="svg"))
    marks = root.find(".//{http://www.w3.org/2000/svg}g[@id='stopped-early']")
    assert marks is not None
    assert len(marks.findall(".//{http://www.w3.org/2000/svg}use")) == len(stopped)  # a square each


# Issue 24: the charts show the answer by default, in the same colours everywhere, and say numbers as people do.
# These read the Figure that the bytes are encoded from.

FIGURES = {
    "curves": lambda runs: curves_figure(runs, title=TITLE, optimum=OPTIMUM),
    "compare": lambda runs: compare_figure([("raw features", runs), ("standardized", make_sweep(speedup=2.0))],
                                           title=TITLE, optimum=OPTIMUM),
}


def decades(low: float, high: float) -> float:
    return math.log10(high / low)


def legend_entries(ax) -> dict[str, Line2D]:
    legend = ax.get_legend()
    return {text.get_text(): handle for text, handle in zip(legend.get_texts(), legend.legend_handles)}


def marks(ax) -> list[Line2D]:
    """The axes' '×' marks (legend entries are not among the axes' lines)."""
    return [line for line in ax.lines if line.get_marker() == "x"]


def mark_positions(fig, ax) -> list[tuple[float, float, float]]:
    """Each '×' as (its x in data coordinates, then its centre in pixels), once the layout is done."""
    fig.draw_without_rendering()
    return [(float(x), *line.get_transform().transform((x, y)))
            for line in marks(ax) for x, y in zip(line.get_xdata(), line.get_ydata())]


def assert_inside(fig, ax, x_pixels: float, y_pixels: float) -> None:
    """The whole mark inside the axes: its centre at least half its size (and stroke) from every edge."""
    half = (10 + 2.5) / 2 * fig.dpi / 72
    box = ax.bbox
    assert box.x0 + half <= x_pixels <= box.x1 - half and box.y0 + half <= y_pixels <= box.y1 - half, \
        (x_pixels, y_pixels, box)


@pytest.mark.parametrize("kind", ["curves", "compare"])
def test_the_loss_axis_spans_the_runs_that_did_not_diverge(kind: str) -> None:
    runs = make_sweep()
    converged = [run for run in runs if not run.diverged]
    low, high = min(run.losses.min() for run in converged), max(run.losses.max() for run in converged)
    ax = FIGURES[kind](runs).axes[0]
    bottom, top = ax.get_ylim()
    # From just under the lowest loss to HEADROOM above the highest start: before issue 24 the diverged
    # runs' climb set the scale (0.016 to 165), and the converged runs filled 38% of it; now over 70%.
    assert bottom < low and high < top <= HEADROOM * high * 1.0001
    assert decades(low, high) / decades(bottom, top) > 0.7
    assert top < max(run.losses.max() for run in runs if run.diverged) / 1000


def test_neither_a_diverged_runs_start_nor_a_swing_of_a_run_that_converged_sets_the_scale() -> None:
    runs = make_sweep()
    top = curves_figure(runs, title=TITLE).axes[0].get_ylim()[1]
    unlucky = diverged_run(0.3, 7, "adam")
    unlucky = RunCurve(0.3, 7, "adam", unlucky.losses * 100, diverged=True)  # a start a hundred times higher
    swinging = converged_run(0.1, 1, "adam")
    swinging.losses[3:8] = 500.0  # as Adam at a high rate swings up before it settles
    assert curves_figure(runs + [unlucky, swinging], title=TITLE).axes[0].get_ylim()[1] == top


@pytest.mark.parametrize("kind", ["curves", "compare"])
def test_a_diverged_runs_mark_is_inside_the_axes_on_the_top_edge_where_it_left(kind: str) -> None:
    fig = FIGURES[kind](make_sweep())
    ax = fig.axes[0]
    top = ax.get_ylim()[1]
    diverged = [run for run in make_sweep() if run.diverged]
    # Where each diverged run's curve rises through the top edge: between its last epoch under it and the next.
    exits = [(np.flatnonzero(run.losses <= top)[-1], np.flatnonzero(run.losses > top)[0]) for run in diverged]
    positions = mark_positions(fig, ax)
    assert len(positions) >= len(diverged)
    for x, x_pixels, y_pixels in positions:
        assert_inside(fig, ax, x_pixels, y_pixels)
        assert ax.bbox.y1 - y_pixels < 10 * fig.dpi / 72  # on the top edge, just under it
        assert any(before <= x <= after for before, after in exits) or kind == "compare"
    if kind == "curves":  # not at the epoch where training stopped, far off the chart
        assert sorted(x for x, _, _ in positions) < [len(run.losses) - 1 for run in diverged]


def test_the_final_loss_plot_pins_the_divergence_marks_inside_the_axes() -> None:
    fig = final_figure(make_sweep(), title=TITLE)
    ax = fig.axes[0]
    positions = mark_positions(fig, ax)
    assert sorted(x for x, _, _ in positions) == [0.3] * 3
    for _, x_pixels, y_pixels in positions:
        assert_inside(fig, ax, x_pixels, y_pixels)
        assert ax.bbox.y1 - y_pixels < 10 * fig.dpi / 72


def mean_lines(runs: list[RunCurve]) -> dict[str, Line2D]:
    ax = final_figure(runs, title=TITLE).axes[0]
    return {line.get_label().removesuffix(": mean final loss"): line
            for line in ax.lines if line.get_label().endswith(": mean final loss")}


def test_an_optimizer_has_its_palette_colour_in_every_sweep() -> None:
    """Before issue 24 the colours went by each sweep's optimizers in order: Adam green in one sweep, blue in one
    without SGD and momentum."""
    every = mean_lines(make_sweep())
    adam_and_other = mean_lines([converged_run(lr, 0, "adam") for lr in (0.01, 0.1)]
                                + [RunCurve(0.01, 0, "rmsprop", np.array([1.0, 0.5]), diverged=False)])
    assert {name: to_hex(line.get_color()) for name, line in every.items()} == \
        {name: optimizer_color(name) for name in ("sgd", "momentum", "adam")}
    assert to_hex(adam_and_other["adam"].get_color()) == optimizer_color("adam")
    assert to_hex(adam_and_other["rmsprop"].get_color()) == optimizer_color("rmsprop")


def rate_colours(runs: list[RunCurve]) -> dict[str, str]:
    entries = legend_entries(curves_figure(runs, title=TITLE).axes[0])
    return {label: to_hex(handle.get_color()) for label, handle in entries.items() if label.startswith("lr = ")}


def test_a_learning_rate_has_one_colour_on_the_fixed_scale_whatever_rates_its_sweep_holds() -> None:
    """Before issue 24 viridis was spread over each sweep's own rates: 0.01 was dark in one sweep, yellow in another."""
    four = rate_colours(make_sweep())
    two = rate_colours([converged_run(lr, seed, "sgd") for lr in (0.01, 0.5473520283788641) for seed in range(2)])
    assert four["lr = 0.01"] == two["lr = 0.01"] == learning_rate_color(0.01)
    assert two["lr = 0.547"] == learning_rate_color(0.5473520283788641)


def test_a_hundred_learning_rates_get_a_colour_bar_on_the_fixed_log_scale_with_readable_ticks() -> None:
    runs = [converged_run(float(lr), 0, "sgd") for lr in np.logspace(-3, -1, 100)]
    fig = curves_figure(runs, title="many rates")
    bar = fig.axes[1]
    assert bar.get_xscale() == "log" and bar.get_xlim() == pytest.approx(LEARNING_RATE_SCALE)
    fig.draw_without_rendering()
    labels = [label.get_text() for label in bar.get_xticklabels()]
    assert labels == ["0.001", "0.01", "0.1", "1"]
    assert not any(label.get_text() for label in bar.get_xticklabels(minor=True))


def test_mean_lines_break_where_a_groups_runs_diverged() -> None:
    """An SGD rate where one seed of three diverged, and one where all did, between rates that converged:
    the mean line has a gap at each, rather than joining its neighbours across them (nor averaging the rest)."""
    runs = [converged_run(lr, seed, "sgd") for lr in (0.003, 0.01, 0.1) for seed in range(3)]
    runs += [converged_run(0.03, seed, "sgd") for seed in (0, 1)] + [diverged_run(0.03, 2, "sgd")]
    runs += [diverged_run(0.05, seed, "sgd") for seed in range(3)]
    line = mean_lines(runs)["sgd"]
    means = dict(zip(line.get_xdata(), line.get_ydata()))
    assert list(means) == [0.003, 0.01, 0.03, 0.05, 0.1]
    assert [math.isnan(mean) for mean in means.values()] == [False, False, True, True, False]


def rings(runs: list[RunCurve]) -> list[float]:
    """The learning rates where a best loss is ringed."""
    ax = final_figure(runs, title=TITLE).axes[0]
    return sorted(x for line in ax.lines if line.get_marker() == "o" and line.get_markerfacecolor() == "none"
                  for x in line.get_xdata())


def test_no_best_loss_ring_for_a_run_whose_best_is_where_it_started() -> None:
    runs = make_sweep()
    # Every diverged run of make_sweep only climbed: no ring above their ×s, one for each other run.
    assert rings(runs) == sorted(run.learning_rate for run in runs if not run.diverged)
    # As the API gives the plot its runs: the last loss alone, and a diverged run's start beside it.
    climbed = RunCurve(0.3, 0, "sgd", np.array([9.0]), diverged=True, best_loss=1.0, epochs=np.array([20]),
                       initial_loss=1.0)
    dipped = RunCurve(0.2, 0, "sgd", np.array([9.0]), diverged=True, best_loss=0.5, epochs=np.array([20]),
                      initial_loss=1.0)
    unknown = RunCurve(0.1, 0, "sgd", np.array([0.2]), diverged=False, best_loss=0.2, epochs=np.array([20]))
    assert rings([climbed, dipped, unknown]) == [0.1, 0.2]


def test_numbers_are_written_for_people() -> None:
    """lr = 0.547, not 5.473520283788641e-01 nor 1e-02."""
    rate = 0.5473520283788641
    runs = [converged_run(lr, seed, "momentum") for lr in (0.01, rate) for seed in range(2)]
    assert "lr = 0.547" in legend_entries(curves_figure(runs, title=TITLE).axes[0])
    assert "lr = 0.01" in legend_entries(curves_figure(runs, title=TITLE).axes[0])
    compared = legend_entries(compare_figure([("one", runs)], title=TITLE).axes[0])
    assert "one: best lr = 0.547 (momentum)" in compared
    svg = plot_curves(runs, title=TITLE, fmt="svg").decode()
    assert "e-01" not in svg and "e-02" not in svg


@pytest.mark.parametrize("kind", ["curves", "final", "run"])
def test_log_axes_label_their_ticks_as_human_numbers_or_powers_of_ten(kind: str) -> None:
    """Never a minor tick as a bare digit or 2×10^-1; a narrow axis (under a decade) labels some minor ticks."""
    narrow = [converged_run(lr, 0, "sgd") for lr in (0.001, 0.002)]  # from 1 down to about 0.7
    fig = {"curves": lambda: curves_figure(make_sweep(), title=TITLE, optimum=OPTIMUM),
           "final": lambda: final_figure(make_sweep(), title=TITLE),
           "run": lambda: run_figure(narrow[0], title=TITLE)}[kind]()
    fig.draw_without_rendering()
    axes = [fig.axes[0].yaxis] + ([fig.axes[0].xaxis] if kind == "final" else [])
    labelled = []
    for axis in axes:
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            text = tick.label1.get_text()
            if text:
                exponent = round(math.log10(tick.get_loc()))
                assert text in (human_number(tick.get_loc()), f"$\\mathdefault{{10^{{{exponent}}}}}$"), text
                labelled.append(text)
    assert len(labelled) >= 2


def test_one_runs_plot_names_the_run_and_marks_its_divergence_at_its_last_finite_epoch() -> None:
    run = diverged_run(0.547, 0, "momentum")
    run = RunCurve(run.learning_rate, 0, "momentum", run.losses, diverged=True, constants={"beta": 0.93612})
    fig = run_figure(run, title="Run 7", optimum=OPTIMUM)
    ax = fig.axes[0]
    last = len(run.losses) - 1
    entries = legend_entries(ax)
    assert ax.get_legend().get_title().get_text() == ""  # not "mean over seeds"
    assert list(entries)[:2] == ["lr = 0.547, seed 0, momentum (beta 0.936)", divergence_text(last + 1)]
    assert divergence_text(last + 1) == f"loss finite through epoch {last}; diverged at epoch {last + 1}"
    [(x, x_pixels, y_pixels)] = mark_positions(fig, ax)
    assert x == last
    short = run_figure(RunCurve(0.5, 0, "sgd", np.array([0.17, 0.7, 90.0, 1.5e4]), diverged=True), title="Run 8")
    assert all(tick == int(tick) for tick in short.axes[0].get_xticks())  # whole epochs, not 0.5, 1.5
    assert_inside(fig, ax, x_pixels, y_pixels)
    # plot_curves with one run draws the same: `gradsweep train` calls it so.
    assert plot_curves([run], title="Run 7", optimum=OPTIMUM) == plot_run(run, title="Run 7", optimum=OPTIMUM)


def test_a_run_that_diverged_at_once_says_so() -> None:
    run = RunCurve(0.5, 0, "sgd", np.array([]), diverged=True)
    assert divergence_text(0) in plot_run(run, title="Run 8", fmt="svg").decode()
