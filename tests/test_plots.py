"""The plots render to valid images for full sweeps, empty sweeps and odd inputs.

The curves are synthetic: on a quadratic loss, gradient descent shrinks the
excess loss over the optimum by a constant factor per epoch, so a geometric
decay is what a real run looks like, and a factor above one is divergence.
"""

import functools
import warnings
import struct
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gradsweep.service.plots import RunCurve, plot_compare, plot_curves, plot_final

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
