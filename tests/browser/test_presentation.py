"""What a new user sees first (issue 24): charts that show the converged runs, the same colours everywhere, the
searched parameters wherever a run is named, an interactive run page, and a search's progress counted right.

Chromium on the pages, a real API and worker behind them (tests/browser/conftest.py); one service for the module.
"""

from __future__ import annotations

import io
import math
import re

import pytest

from gradsweep.service.domain.text import divergence_text, human_number
from gradsweep.service.palette import DIVERGED_COLOR, learning_rate_color, optimizer_color
from gradsweep.service.plots import HEADROOM
from tests.support.services import in_ci

if in_ci():  # there, a missing Playwright must fail the run, not skip it
    from playwright.sync_api import expect
else:
    expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

# sgd diverges at 0.1, above the stability limit (0.074): its lines climb to 1e6 times their start.
GRID = {"name": "diverging grid", "learning_rates": [0.003, 0.01, 0.03, 0.1], "seeds": [0, 1],
        "optimizers": ["sgd", "adam"], "epochs": 300}
# The README's search.yaml, smaller: momentum's beta searched, which sgd's runs do not have.
BETA = {"name": "beta search", "method": "random", "run_cap": 8, "search_seed": 4,
        "parameters": {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 5e-2},
                       "optimizer": {"values": ["sgd", "momentum"]},
                       "beta": {"distribution": "uniform", "min": 0.5, "max": 0.99}, "epochs": {"value": 60},
                       "seed": {"values": [0, 1], "repeat": True}}}
# A Bayesian search of 4 points in waves of 2, each trained for 3 seeds: 12 runs in all, 6 in its first wave.
BAYES = {"name": "bayes", "method": "bayes", "run_cap": 4, "wave_size": 2, "search_seed": 0,
         "parameters": {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 5e-2},
                        "epochs": {"value": 20}, "seed": {"values": [0, 1, 2], "repeat": True}}}
CHARTS_DRAWN = "() => performance.getEntriesByName('gradsweep:charts-drawn').length > 0"
PARALLEL_DRAWN = "() => performance.getEntriesByName('gradsweep:parallel-drawn').length > 0"
RUN_DRAWN = "() => performance.getEntriesByName('gradsweep:run-drawn').length > 0"
CURVES = '[data-chart="curves"]'
FINAL = '[data-chart="final"]'
PARALLEL = '[data-chart="parallel"]'
RUN = '[data-chart="run"]'
Y_RANGE = "c => c._fullLayout.yaxis.range"
MARKS = "c => { const t = c.data.find(t => t.name.startsWith('diverged')); return { x: t.x, y: t.y }; }"


@pytest.fixture(scope="module")
def grid(stack) -> dict:
    created = stack.http.post("/sweeps", json=GRID)
    assert created.status_code == 201, created.text
    return stack.wait_for_sweep(created.json()["id"])


@pytest.fixture(scope="module")
def beta_search(stack) -> dict:
    created = stack.http.post("/sweeps", json=BETA)
    assert created.status_code == 201, created.text
    return stack.wait_for_sweep(created.json()["id"])


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def test_the_loss_axis_spans_the_converged_runs_and_one_click_widens_it_to_all(page, stack, grid, screenshot):
    curves = stack.http.get(f"/sweeps/{grid['id']}/losses").json()["runs"]
    diverged = [curve for curve in curves if curve["status"] == "diverged"]
    kept = [loss for curve in curves if curve["status"] != "diverged" for loss in curve["losses"]]
    every = [loss for curve in curves for loss in curve["losses"]]
    assert len(diverged) == 2 and max(every) > 1e4 * max(kept)
    # As the PNGs: up to HEADROOM times the highest start of a run that did not diverge, so that neither a
    # diverged run nor a converging one's swing (Adam at lr 0.1 climbs above its start) sets the scale.
    cap = min(max(kept), HEADROOM * max(curve["losses"][0] for curve in curves if curve["status"] != "diverged"))
    low, high, top = math.log10(min(kept)), math.log10(cap), math.log10(max(every))

    page.goto(f"/ui/sweeps/{grid['id']}")
    page.wait_for_function(CHARTS_DRAWN)
    chart = page.locator(CURVES)
    bottom, ceiling = chart.evaluate(Y_RANGE)
    # The converged runs fill the axis: all of them on it (up to the cap), with a margin of 5% of their span at each end.
    assert bottom < low and high < ceiling
    assert (high - low) / (ceiling - bottom) > 0.85, (bottom, ceiling, low, high)
    # Each diverged run leaves through the top edge; its × is pinned there, at the first epoch above it.
    marks = chart.evaluate(MARKS)
    for curve, x, y in zip(sorted(diverged, key=lambda c: c["run_id"]), marks["x"], marks["y"]):
        leaving = next(i for i, loss in enumerate(curve["losses"]) if loss > 10 ** ceiling)
        assert (x, y) == (leaving, pytest.approx(10 ** ceiling))
    screenshot(page, "14-loss-axis-converged", full_page=False, docs="dashboard-diverged")

    page.get_by_role("button", name="Show all losses").click()
    page.wait_for_function(f"c => ({Y_RANGE})(document.querySelector(c))[1] > {top}", arg=CURVES)
    bottom_all, ceiling_all = chart.evaluate(Y_RANGE)
    assert bottom_all <= bottom and ceiling_all > top
    # The ×s now at each diverged run's last loss, its last finite one.
    marks = chart.evaluate(MARKS)
    assert sorted(marks["y"]) == sorted(curve["losses"][-1] for curve in diverged)
    # Before issue 24 the axis ran from 0.2 decades below the lowest loss of any run to 100 times the highest start.
    starts = [curve["losses"][0] for curve in curves]
    before = (math.log10(min(every)) - 0.2, math.log10(100 * max(max(kept), *starts)))
    print(f"loss axis (log10): converged runs {low:.2f}..{high:.2f}; before {before[0]:.2f}..{before[1]:.2f} "
          f"({(high - low) / (before[1] - before[0]):.0%} of it converged); fitted {bottom:.2f}..{ceiling:.2f} "
          f"({(high - low) / (ceiling - bottom):.0%}); all {bottom_all:.2f}..{ceiling_all:.2f}")
    screenshot(page, "15-loss-axis-all", full_page=False)

    page.get_by_role("button", name="Fit the converged runs").click()
    page.wait_for_function(f"c => ({Y_RANGE})(document.querySelector(c))[1] < {top}", arg=CURVES)
    assert chart.evaluate(Y_RANGE) == pytest.approx([bottom, ceiling])

    # On a linear axis too the converged runs fill it, the ×s on its top edge.
    chart.locator(".updatemenu-button").filter(has_text="linear").click()
    page.wait_for_function("c => document.querySelector(c)._fullLayout.yaxis.type === 'linear'", arg=CURVES)
    linear_top = chart.evaluate(Y_RANGE)[1]
    assert cap < linear_top < 1.1 * cap
    assert chart.evaluate(MARKS)["y"] == pytest.approx([linear_top] * len(diverged))


def test_the_log_axes_label_their_ticks_in_full(page, grid):
    page.goto(f"/ui/sweeps/{grid['id']}")
    page.wait_for_function(CHARTS_DRAWN)
    for selector in (CURVES, FINAL):
        ticks = [text for text in page.locator(selector).locator(".ytick text").all_text_contents() if text]
        # Each tick its whole value, so they rise: not 0.01, 2, 5, 0.1 as plotly's minor labels go.
        values = [float(text.replace("\u2212", "-")) for text in ticks]
        assert len(values) >= 3 and values == sorted(values) and len(set(values)) == len(values), ticks


def test_each_optimizer_and_learning_rate_has_one_colour_in_every_sweep_and_in_the_png(
    page, stack, grid, beta_search, screenshot
):
    from PIL import Image

    seen: dict[str, set[str]] = {}
    for sweep in (grid, beta_search):
        page.goto(f"/ui/sweeps/{sweep['id']}")
        page.wait_for_function(CHARTS_DRAWN)
        finals = page.locator(FINAL).evaluate("c => c.data.filter(t => t.name.endsWith(': final loss'))"
                                              ".map(t => [t.name.split(':')[0], t.marker.color])")
        for optimizer, color in finals:
            assert color == optimizer_color(optimizer), optimizer
            seen.setdefault(optimizer, set()).add(color)
        # A band of one learning rate has that rate's colour on the palette's fixed scale, whatever the sweep.
        rates = {run["id"]: run["learning_rate"] for run in sweep["runs"]}
        bands = page.locator(CURVES).evaluate("c => c.data.filter(t => t.mode === 'lines' && t.name.includes('lr '))"
                                              ".map(t => [t.name, t.line.color, t.customdata[0][0]])")
        assert bands
        for name, color, run_id in bands:
            if "–" not in name:
                assert color == learning_rate_color(rates[run_id]), name
        marks = page.locator(CURVES).evaluate("c => c.data.filter(t => t.name.startsWith('diverged'))"
                                              ".map(t => t.marker.color)")
        assert set(marks) <= {DIVERGED_COLOR}
        # The PNG of the same sweep draws each optimizer's final losses in that very colour.
        png = Image.open(io.BytesIO(stack.http.get(f"/sweeps/{sweep['id']}/plot.png?kind=final").content))
        pixels = {color for _, color in png.convert("RGB").getcolors(maxcolors=1 << 24)}
        for optimizer, _ in finals:
            assert hex_to_rgb(optimizer_color(optimizer)) in pixels, f"{optimizer} not in the PNG's colours"
    assert seen["sgd"] == {optimizer_color("sgd")}  # sgd is in both sweeps: one colour
    assert len({color for colors in seen.values() for color in colors}) == len(seen)


def test_a_searchs_runs_table_has_its_parameters_sorted_and_filtered_and_its_hovers_name_them(
    page, stack, beta_search, screenshot
):
    runs = beta_search["runs"]
    with_beta = sorted((run for run in runs if run["beta"] is not None), key=lambda run: (run["beta"], run["id"]))
    assert 0 < len(with_beta) < len(runs)
    page.goto(f"/ui/sweeps/{beta_search['id']}")
    cells = page.locator('td[data-col="beta"]')
    expect(cells).to_have_count(len(runs))

    page.locator('th[data-sort-key="beta"] a').click()
    expect(page).to_have_url(re.compile(r"\?page=1&sort=beta&order=asc$"))
    expect(page.locator("th[aria-sort]")).to_have_text("beta")
    values = cells.evaluate_all("cells => cells.map(cell => cell.dataset.value)")
    assert [float(value) for value in values[:len(with_beta)]] == [run["beta"] for run in with_beta]
    assert values[len(with_beta):] == [""] * (len(runs) - len(with_beta))  # sgd's, "none", last
    assert cells.all_text_contents()[:len(with_beta)] == [human_number(run["beta"]) for run in with_beta]
    assert set(cells.all_text_contents()[len(with_beta):]) == {"none"}

    middle = with_beta[len(with_beta) // 2]["beta"]
    page.get_by_label("beta from").fill(str(middle))
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"min_beta={re.escape(str(middle))}"))
    expected = [run for run in with_beta if run["beta"] >= middle]
    expect(cells).to_have_count(len(expected))
    assert [float(value) for value in cells.evaluate_all("cs => cs.map(c => c.dataset.value)")] == [
        run["beta"] for run in expected]
    screenshot(page, "16-search-table-by-beta", docs="dashboard-search")
    page.get_by_role("link", name="Clear").click()
    expect(cells).to_have_count(len(runs))

    # Each point names the run's beta (or none), as people write numbers.
    page.wait_for_function(CHARTS_DRAWN)
    named = page.locator(CURVES).evaluate("c => Object.fromEntries(c.data.filter(t => t.mode === 'lines')"
                                          ".flatMap(t => t.customdata.filter(d => d).map(d => [d[0], d[4]])))")
    for run in runs:
        assert named[str(run["id"])] == f"<br>beta {human_number(run['beta']) if run['beta'] is not None else 'none'}"

    # The parallel coordinates keep sgd's runs, at "none" on the beta axis, with ticks people read.
    shown = [run for run in runs if run["final_loss"] is not None and run["status"] != "diverged"]
    page.locator(PARALLEL).scroll_into_view_if_needed()
    page.wait_for_function(PARALLEL_DRAWN)
    dimensions = page.locator(PARALLEL).evaluate("c => c.data[0].dimensions")
    beta = next(dimension for dimension in dimensions if dimension["label"] == "beta (momentum)")
    assert len(beta["values"]) == len(shown)
    none = beta["tickvals"][beta["ticktext"].index("none")]
    assert sum(value == none for value in beta["values"]) == sum(run["beta"] is None for run in shown)
    assert all(len(text) <= 5 for text in beta["ticktext"]), beta["ticktext"]
    screenshot(page, "17-search-parallel-with-none", full_page=False)


def test_a_run_page_draws_its_curve_its_divergence_and_names_it_on_hover(page, stack, grid, screenshot):
    run = next(run for run in grid["runs"] if run["status"] == "diverged")
    page.goto(f"/ui/runs/{run['id']}")
    expect(page.locator("[data-divergence]")).to_have_text(divergence_text(run["diverged_at"]))
    expect(page.locator('dd[data-param="learning_rate"]')).to_have_text(human_number(run["learning_rate"]))
    page.wait_for_function(RUN_DRAWN)
    chart = page.locator(RUN)
    traces = chart.evaluate("c => c.data.map(t => ({ name: t.name, x: t.x }))")
    names = [trace["name"] for trace in traces]
    assert names[0] == f"run {run['id']}: lr {human_number(run['learning_rate'])}, {run['optimizer']}"
    assert "best loss" not in names  # its best is its start: no ring
    curve, mark = traces[0], traces[-1]
    assert curve["x"][-1] == run["diverged_at"] - 1  # the last finite loss
    assert mark == {"name": divergence_text(run["diverged_at"]), "x": [run["diverged_at"]]}
    assert chart.evaluate("c => c._fullLayout.xaxis.range[1]") >= run["diverged_at"]
    expect(chart.locator(".legend")).not_to_contain_text("mean over seeds")

    # Hovering the curve names the run, its epoch and its loss.
    box = chart.locator(".nsewdrag").bounding_box()
    point = chart.evaluate("""c => { const { xaxis, yaxis, _size } = c._fullLayout; const b = c.getBoundingClientRect();
        const t = c.data[0]; const i = Math.floor(t.x.length / 2);
        return [b.left + _size.l + xaxis.c2p(t.x[i]), b.top + _size.t + yaxis.c2p(t.y[i]), t.x[i]]; }""")
    assert box is not None
    page.mouse.move(point[0], point[1])
    tooltip = chart.locator(".hoverlayer")
    expect(tooltip).to_contain_text(f"run {run['id']} · {run['optimizer']}")
    expect(tooltip).to_contain_text(f"epoch {point[2]}")
    screenshot(page, "18-run-diverged", full_page=False, docs="dashboard-run")

    converged = next(other for other in grid["runs"] if other["status"] == "succeeded")
    page.goto(f"/ui/runs/{converged['id']}")
    page.wait_for_function(RUN_DRAWN)
    names = page.locator(RUN).evaluate("c => c.data.map(t => t.name)")
    assert "best loss" in names and not any(name.startswith("loss finite") for name in names)
    expect(page.locator("[data-divergence]")).to_have_count(0)


def test_the_python_and_javascript_numbers_agree(page, stack, grid):
    values = [0.5473520283788641, 0.936123456789, 0.001, 0.000999, 5.4735e-05, 12300, 99999.4, 100000, 1e6,
              -0.0123456, 1, 0.1, 2.5, 1e-300, 123.456, 0.07400000001, 3e-7]
    page.goto(f"/ui/sweeps/{grid['id']}")
    answers = page.evaluate("""async (values) => {
        const { humanNumber, divergenceText } = await import("/ui/static/display.js");
        return { numbers: values.map((value) => humanNumber(value)), divergences: [0, 1, 4].map(divergenceText) };
    }""", values)
    assert answers["numbers"] == [human_number(value) for value in values]
    assert answers["divergences"] == [divergence_text(epoch) for epoch in (0, 1, 4)]


def test_a_bayesian_searchs_progress_counts_its_run_cap_times_its_repeats_from_the_start(page, stack):
    created = stack.http.post("/sweeps", json=BAYES)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    page.goto(f"/ui/sweeps/{sweep_id}")
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuemax", "12")  # 4 points × 3 seeds, though its first wave has 6 runs
    expect(page.locator("[data-progress-label]")).to_have_text(re.compile(r"/12$"))
    stack.wait_for_sweep(sweep_id)
    expect(page.locator("[data-progress-label]")).to_have_text("100% · 12/12", timeout=30_000)
