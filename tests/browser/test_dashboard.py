"""The dashboard as a user sees it: Chromium on the pages, a real API and worker behind them.

The tests run in this order and share one service: the first one sees it empty.
Set GRADSWEEP_UPDATE_DOCS=1 to also write the docs' screenshot of a sweep, docs/dashboard.png.
"""

from __future__ import annotations

import csv
import math
import re
import statistics

import httpx
import pytest

from gradsweep.service.api.dashboard.routes import format_learning_rate
from tests.support.processes import Stack, embedded_settings
from tests.support.services import in_ci
from tests.support.sweeps import all_runs

if in_ci():  # there, a missing Playwright must fail the run, not skip it
    from playwright.sync_api import expect
else:
    expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

GRID = {"name": "learning rate × optimizer", "learning_rates": [0.003, 0.01, 0.03, 0.1], "seeds": [0, 1, 2],
        "optimizers": ["sgd", "adam"], "epochs": 300}  # sgd diverges at 0.1, above the stability limit
# About a minute a run: none can finish between the page showing it running and the click on Cancel.
LONG = {"name": "long runs", "learning_rates": [0.01, 0.02, 0.03], "seeds": [0, 1], "epochs": 3_000_000}
# 10,000 runs (the most a sweep may have) of a few epochs: trained in seconds.
# Its learning rates reach past the stability limit (0.074), so that some of its runs diverge.
BIG = {"name": "ten thousand runs", "learning_rates": {"logspace": [1e-3, 1.0, 100]}, "seeds": list(range(100)),
       "epochs": 20}
# A random search over the learning rate, the optimizer and the epochs, each point trained for three seeds;
# successive halving stops most runs at a rung.
SEARCH = {"name": "random search", "method": "random", "run_cap": 8, "search_seed": 1,
          "parameters": {"learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 5e-2},
                         "optimizer": {"distribution": "choice", "values": ["sgd", "adam"]},
                         "seed": {"values": [0, 1, 2], "repeat": True}, "epochs": {"values": [30, 40]}},
          "early_stopping": {"type": "successive_halving", "min_epochs": 10, "eta": 2}}
STOPPED_EARLY_COLOR = "rgb(160, 102, 143)"  # --stopped-early, in the badges and both charts
# The run and compare pages' PNG plots, and the sweep page's charts (charts.js marks when both are painted).
PLOTS_LOADED = "() => [...document.querySelectorAll('img.plot')].every(img => img.complete && img.naturalWidth > 0)"
CHARTS_DRAWN = "() => performance.getEntriesByName('gradsweep:charts-drawn').length > 0"
PARALLEL_DRAWN = "() => performance.getEntriesByName('gradsweep:parallel-drawn').length > 0"  # once scrolled to
CURVES = '[data-chart="curves"]'
FINAL = '[data-chart="final"]'
PARALLEL = '[data-chart="parallel"]'


@pytest.fixture(scope="module")
def grid(stack: Stack) -> dict:
    """A finished 24-run sweep, with some diverged runs."""
    created = stack.http.post("/sweeps", json=GRID)
    assert created.status_code == 201, created.text
    return stack.wait_for_sweep(created.json()["id"])


def cells(page, column: str) -> list[str]:
    return page.locator(f'td[data-col="{column}"]').evaluate_all("cells => cells.map(cell => cell.dataset.value)")


def test_the_sweeps_page_follows_a_new_sweep_to_the_end_without_reloading(page, stack, screenshot):
    page.goto("/")
    expect(page.get_by_role("heading", name="No sweeps yet")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    created = stack.http.post("/sweeps", json={"name": "first <sweep> & co", "learning_rates": [0.01, 0.03],
                                               "seeds": [0, 1], "epochs": 2000})
    sweep_id = created.json()["id"]
    row = page.locator(f'tr[data-sweep-row="{sweep_id}"]')
    expect(row).to_be_visible(timeout=20_000)
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "4", timeout=120_000)
    expect(row.locator("[data-progress-label]")).to_have_text("100% · 4/4")
    assert page.evaluate("window.notReloaded"), "the page reloaded"

    expect(row.get_by_role("link")).to_have_text("first <sweep> & co")  # shown as text, never as markup
    runs = all_runs(stack.http, sweep_id)
    best = min(runs, key=lambda run: run["best_loss"])
    expect(row.locator("td").nth(3)).to_contain_text(format_learning_rate(best["learning_rate"]))
    expect(row.locator("td").nth(4)).to_have_text(f"{best['best_loss']:.3e}")
    screenshot(page, "1-sweeps")


def test_the_sweep_page_shows_counts_charts_and_a_table_the_server_sorts(page, stack, grid, screenshot):
    page.goto(f"/ui/sweeps/{grid['id']}")
    for status, count in grid["counts"].items():
        expect(page.locator(f'[data-count="{status}"]')).to_have_text(str(count))
    assert grid["counts"]["diverged"] == 3
    page.wait_for_function(CHARTS_DRAWN)
    # A trace per optimizer and learning rate, and one for the diverged runs' ×; a run per null gap.
    names = page.locator(CURVES).evaluate("chart => chart.data.map(trace => trace.name)")
    assert names[:5] == ["sgd, lr 0.003", "sgd, lr 0.01", "sgd, lr 0.03", "sgd, lr 0.1", "adam, lr 0.003"]
    assert len(names) == 9 and names[-1].startswith("diverged")
    assert page.locator(CURVES).evaluate("c => c.data.flatMap(t => t.mode === 'lines' ? t.y : []).filter(y => y === null).length") == 24
    expect(page.get_by_role("link", name="Download PNG")).to_have_count(2)

    page.get_by_role("link", name="Final loss").click()
    expect(page).to_have_url(re.compile(r"\?page=1&sort=final_loss&order=asc$"))
    numbers = [float(value) for value in cells(page, "final_loss")]
    assert numbers == sorted(numbers) and len(numbers) == 24
    page.get_by_role("link", name="Final loss").click()
    expect(page).to_have_url(re.compile(r"sort=final_loss&order=desc$"))
    numbers = [float(value) for value in cells(page, "final_loss")]
    assert numbers == sorted(numbers, reverse=True)
    expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "descending")

    page.get_by_role("link", name="Learning rate").click()
    expect(page).to_have_url(re.compile(r"sort=learning_rate&order=asc$"))
    rates = page.locator("tr[data-run-id] td:nth-child(2)").evaluate_all("cells => cells.map(cell => Number(cell.title))")
    assert rates == sorted(rates)
    page.get_by_role("link", name="Final loss").click()  # best first, for the screenshots
    expect(page).to_have_url(re.compile(r"sort=final_loss&order=asc$"))
    page.reload()  # the URL says what is shown: the same order again
    expect(page.locator("th[aria-sort]")).to_have_text("Final loss")
    page.wait_for_function(CHARTS_DRAWN)
    screenshot(page, "2-sweep")
    page.set_viewport_size({"width": 1600, "height": 1000})  # wide enough for the charts side by side
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(500)  # the charts follow the new width
    screenshot(page, "2-sweep-wide", full_page=False, docs="dashboard")


def point_on_screen(page, selector: str, run_id: int, epoch: int) -> tuple[float, float]:
    """Where the chart draws run `run_id`'s loss at `epoch`, in page pixels."""
    return tuple(page.locator(selector).evaluate("""(chart, [runId, epoch]) => {
        for (const trace of chart.data) {
            const i = trace.customdata?.findIndex((run, k) => run && run[0] === runId && trace.x[k] === epoch) ?? -1;
            if (i < 0) continue;
            const { xaxis, yaxis, _size } = chart._fullLayout;
            const box = chart.getBoundingClientRect();
            return [box.left + _size.l + xaxis.c2p(trace.x[i]), box.top + _size.t + yaxis.c2p(trace.y[i])];
        }
        throw new Error(`no point of run ${runId} at epoch ${epoch}`);
    }""", [run_id, epoch]))


def test_the_loss_chart_names_a_run_on_hover_zooms_and_hides_a_group(page, stack, grid, screenshot):
    page.goto(f"/ui/sweeps/{grid['id']}")
    page.wait_for_function(CHARTS_DRAWN)
    chart = page.locator(CURVES)

    # Hover the last point of the run whose final loss is farthest from every other run's.
    curves = stack.http.get(f"/sweeps/{grid['id']}/losses").json()["runs"]
    finished = [curve for curve in curves if curve["status"] == "succeeded"]
    final = {curve["run_id"]: math.log10(curve["losses"][-1]) for curve in finished}
    alone = max(finished, key=lambda curve: min(abs(final[curve["run_id"]] - other)
                                                for run_id, other in final.items() if run_id != curve["run_id"]))
    page.mouse.move(*point_on_screen(page, CURVES, alone["run_id"], len(alone["losses"]) - 1))
    tooltip = chart.locator(".hoverlayer")
    expect(tooltip).to_contain_text(f"run {alone['run_id']} · {alone['optimizer']}")
    expect(tooltip).to_contain_text(f"lr {format_learning_rate(alone['learning_rate'])} · seed {alone['seed']}")
    expect(tooltip).to_contain_text(f"epoch {len(alone['losses']) - 1}")
    screenshot(page, "2-sweep-hover", full_page=False)

    # Drag across the epochs to zoom in; a double click brings the whole range back.
    full = chart.evaluate("c => c._fullLayout.xaxis.range")
    area = chart.locator(".nsewdrag").bounding_box()
    y = area["y"] + area["height"] / 2
    page.mouse.move(area["x"] + 0.2 * area["width"], y)
    page.mouse.down()
    page.mouse.move(area["x"] + 0.5 * area["width"], y + 2, steps=8)
    page.mouse.up()
    page.wait_for_function("([c, full]) => { const r = document.querySelector(c)._fullLayout.xaxis.range;"
                           " return r[0] > full[0] && r[1] < full[1]; }", arg=[CURVES, full])
    zoomed = chart.evaluate("c => c._fullLayout.xaxis.range")
    assert zoomed[1] - zoomed[0] < 0.5 * (full[1] - full[0])
    page.mouse.dblclick(area["x"] + 0.5 * area["width"], y)
    page.wait_for_function("([c, full]) => { const r = document.querySelector(c)._fullLayout.xaxis.range;"
                           " return Math.abs(r[0] - full[0]) < 1e-9 && Math.abs(r[1] - full[1]) < 1e-9; }",
                           arg=[CURVES, full])

    # A click on a legend entry hides that group, and a redraw keeps it hidden.
    chart.locator(".legend .traces").first.click()
    page.wait_for_function("c => document.querySelector(c).data[0].visible === 'legendonly'", arg=CURVES)
    assert chart.evaluate("c => c.data.slice(1).every(trace => trace.visible !== 'legendonly')")
    # The module's own drawCharts (an import of its URL is the page's instance), awaited to the end of the redraw.
    page.evaluate("""async () => { const { drawCharts } = await import("/ui/static/charts.js");
                                   await drawCharts(document.querySelector("[data-sweep-id]")); }""")
    assert chart.evaluate("c => c.data[0].visible") == "legendonly"

    # The loss axis: log, or linear.
    assert chart.evaluate("c => c._fullLayout.yaxis.type") == "log"
    chart.locator(".updatemenu-button").filter(has_text="linear").click()
    page.wait_for_function("c => document.querySelector(c)._fullLayout.yaxis.type === 'linear'", arg=CURVES)

    # The other chart names the runs too.
    final_chart = '[data-chart="final"]'
    page.locator(final_chart).scroll_into_view_if_needed()
    page.mouse.move(*point_on_screen(page, final_chart, alone["run_id"], alone["learning_rate"]))
    expect(page.locator(final_chart).locator(".hoverlayer")).to_contain_text(f"run {alone['run_id']} · {alone['optimizer']}")


@pytest.fixture(scope="module")
def search(stack: Stack) -> dict:
    """A finished random search of 24 runs, some of them stopped early."""
    created = stack.http.post("/sweeps", json=SEARCH)
    assert created.status_code == 201, created.text
    return stack.wait_for_sweep(created.json()["id"])


def final_points(page) -> list[dict]:
    """Every run the final-loss chart draws as its final loss (finished or stopped early): run id, x and y."""
    return page.locator(FINAL).evaluate("""chart => chart.data
        .filter(trace => trace.name.endsWith(': final loss') || trace.name === 'stopped early')
        .flatMap(trace => trace.x.map((x, i) => ({ id: trace.customdata[i][0], x, y: trace.y[i] })))""")


def test_the_final_loss_chart_is_drawn_against_the_parameter_picked(page, stack, search, screenshot):
    runs = {run["id"]: run for run in search["runs"]}
    drawn = {run_id for run_id, run in runs.items() if run["final_loss"] is not None and run["status"] != "diverged"}
    page.goto(f"/ui/sweeps/{search['id']}")
    page.wait_for_function(CHARTS_DRAWN)
    page.evaluate("window.notReloaded = true")
    picker = page.get_by_label("Final loss against")
    # The parameters that vary, the learning rate first; the epochs come from the runs' pages, not the curves.
    assert picker.locator("option").evaluate_all("options => options.map(option => option.value)") == [
        "learning_rate", "seed", "epochs", "optimizer"]
    assert page.locator(FINAL).evaluate("c => c._fullLayout.xaxis.type") == "log"

    picker.select_option("optimizer")
    page.wait_for_function("c => document.querySelector(c)._fullLayout.xaxis.type === 'category'", arg=FINAL)
    expect(page.get_by_role("heading", name="Final loss against optimizer")).to_be_visible()
    assert page.locator(FINAL).evaluate("c => c._fullLayout.xaxis.title.text") == "optimizer"
    assert page.locator(FINAL).evaluate("c => c._fullLayout.xaxis.categoryarray") == ["sgd", "adam"]
    points = final_points(page)
    assert {point["id"] for point in points} == drawn and len(points) == len(drawn)
    assert all(point["x"] == runs[point["id"]]["optimizer"] for point in points)
    ticks = page.locator(FINAL).locator(".xtick text").all_text_contents()
    assert ticks == ["sgd", "adam"]

    picker.select_option("seed")
    page.wait_for_function("c => document.querySelector(c)._fullLayout.xaxis.type === 'linear'", arg=FINAL)
    expect(page.get_by_role("heading", name="Final loss against seed")).to_be_visible()
    points = final_points(page)
    assert {point["id"] for point in points} == drawn
    assert all(point["x"] == runs[point["id"]]["seed"] and point["y"] == runs[point["id"]]["final_loss"]
               for point in points)

    # Hover still names the run: the one whose final loss is farthest from anything else drawn at its seed (the
    # other runs' final and best losses, and each optimizer's mean line, of the runs that trained every epoch).
    def gap(point: dict) -> float:
        at_x = [other for other in points if other["x"] == point["x"]]
        finished = [o for o in at_x if runs[o["id"]]["status"] == "succeeded"]
        means = [statistics.fmean(o["y"] for o in finished if runs[o["id"]]["optimizer"] == optimizer)
                 for optimizer in {runs[o["id"]]["optimizer"] for o in finished}]
        near = ([o["y"] for o in at_x if o["id"] != point["id"]] + means
                + [runs[o["id"]]["best_loss"] for o in at_x if o["id"] != point["id"]])
        return min((abs(math.log10(point["y"] / y)) for y in near if y), default=math.inf)
    alone = runs[max(points, key=gap)["id"]]
    assert gap(max(points, key=gap)) > 0.05, "no run stands apart at its seed to be pointed at"
    page.locator(FINAL).scroll_into_view_if_needed()
    page.mouse.move(*point_on_screen(page, FINAL, alone["id"], alone["seed"]))
    expect(page.locator(FINAL).locator(".hoverlayer")).to_contain_text(f"run {alone['id']} · {alone['optimizer']}")
    screenshot(page, "11-search-final-against-seed", full_page=False)

    picker.select_option("epochs")
    page.wait_for_function("c => document.querySelector(c)._fullLayout.xaxis.title.text === 'epochs'", arg=FINAL)
    assert {point["x"] for point in final_points(page)} == {runs[run_id]["epochs"] for run_id in drawn}
    assert page.evaluate("window.notReloaded"), "the page reloaded"


def test_a_search_has_a_parallel_coordinates_view_of_its_runs(page, stack, search, screenshot):
    runs = [run for run in search["runs"] if run["final_loss"] is not None and run["status"] != "diverged"]
    page.goto(f"/ui/sweeps/{search['id']}")
    page.wait_for_function(CHARTS_DRAWN)
    chart = page.locator(PARALLEL)
    expect(page.get_by_role("heading", name="Runs across the varying parameters")).to_be_visible()
    assert not page.evaluate(PARALLEL_DRAWN)  # below the fold: not drawn yet
    chart.scroll_into_view_if_needed()
    page.wait_for_function(PARALLEL_DRAWN)
    trace = chart.evaluate("c => c.data[0]")
    assert trace["type"] == "parcoords"
    labels = [dimension["label"] for dimension in trace["dimensions"]]
    assert labels == ["learning rate", "seed", "epochs", "optimizer", "final loss"]
    assert chart.locator(".axis-title").all_text_contents() == labels  # as drawn
    rate, seed, epochs, optimizer, loss = trace["dimensions"]
    assert optimizer["ticktext"] == ["sgd", "adam"] and optimizer["tickvals"] == [0, 1]
    by_id = sorted(runs, key=lambda run: run["id"])  # the chart's runs come in the curves' order, by id
    assert optimizer["values"] == [["sgd", "adam"].index(run["optimizer"]) for run in by_id]
    assert seed["values"] == [run["seed"] for run in by_id]
    assert epochs["values"] == [run["epochs"] for run in by_id]
    assert rate["values"] == pytest.approx([math.log10(run["learning_rate"]) for run in by_id])
    assert loss["values"] == pytest.approx([math.log10(run["final_loss"]) for run in by_id])
    assert trace["line"]["color"] == loss["values"]  # coloured by final loss
    screenshot(page, "12-search-parallel-coordinates", full_page=False)

    # A grid that varies only the learning rate has nothing to show there.
    created = stack.http.post("/sweeps", json={"name": "one seed", "learning_rates": [0.01, 0.02], "seeds": [0],
                                               "epochs": 5})
    page.goto(f"/ui/sweeps/{stack.wait_for_sweep(created.json()['id'])['id']}")
    page.wait_for_function(CHARTS_DRAWN)
    expect(page.get_by_role("heading", name="Runs across the varying parameters")).to_be_hidden()
    expect(page.get_by_label("Final loss against")).to_be_hidden()


def test_runs_stopped_early_have_a_colour_of_their_own(page, stack, search, screenshot):
    stopped = [run for run in search["runs"] if run["status"] == "stopped_early"]
    assert stopped and search["counts"]["stopped_early"] == len(stopped)
    assert any(run["status"] == "succeeded" for run in search["runs"])
    page.goto(f"/ui/sweeps/{search['id']}")
    expect(page.locator('[data-count="stopped_early"]')).to_have_text(str(len(stopped)))
    colour = "element => getComputedStyle(element).backgroundColor"
    assert page.locator(".counts .dot.status-stopped_early").evaluate(colour) == STOPPED_EARLY_COLOR
    assert page.locator('[data-segment="stopped_early"]').evaluate(colour) == STOPPED_EARLY_COLOR
    badges = page.locator('td[data-col="status"][data-value="stopped_early"] .badge')
    expect(badges).to_have_count(len(stopped))
    expect(badges.first).to_have_text("stopped early")
    assert badges.first.evaluate(colour) == STOPPED_EARLY_COLOR
    assert page.locator('td[data-col="status"][data-value="succeeded"] .badge').first.evaluate(colour) != STOPPED_EARLY_COLOR

    page.wait_for_function(CHARTS_DRAWN)
    # The loss curves: the stopped runs' lines in a group of their own, last, with a mark where each stopped.
    curves = page.locator(CURVES).evaluate("c => c.data.map(t => ({ name: t.name, group: t.legendgroup ?? null,"
                                           " color: (t.line ?? t.marker).color, runs: t.y.filter(y => y === null).length,"
                                           " points: t.x.length, legend: t.showlegend !== false }))")
    lines, marks = [trace for trace in curves if trace["name"] == "stopped early"]
    assert lines == {"name": "stopped early", "group": "stopped early", "color": "#a0668f", "runs": len(stopped),
                     "points": lines["points"], "legend": True}
    assert marks["points"] == len(stopped) and marks["group"] == "stopped early" and not marks["legend"]
    assert sum(trace["runs"] for trace in curves) == len(search["runs"])  # every run's line once
    # The final losses: a square each, at the loss where it stopped.
    final = page.locator(FINAL).evaluate("c => c.data.find(t => t.name === 'stopped early')")
    assert final["marker"]["color"] == "#a0668f"
    assert sorted(point[0] for point in final["customdata"]) == [run["id"] for run in stopped]
    assert sorted(final["y"]) == sorted(run["final_loss"] for run in stopped)

    # A click on its legend entry hides the group in the chart: lines and marks.
    page.locator(CURVES).locator(".legend .traces").filter(has_text="stopped early").click()
    page.wait_for_function("c => document.querySelector(c).data.filter(t => t.legendgroup === 'stopped early')"
                           ".every(t => t.visible === 'legendonly')", arg=CURVES)
    screenshot(page, "13-search-stopped-early")

    stopped_run = stopped[0]
    page.goto(f"/ui/runs/{stopped_run['id']}")
    expect(page.locator("h1 .badge")).to_have_text("stopped early")
    assert page.locator("h1 .badge").evaluate(colour) == STOPPED_EARLY_COLOR


def test_the_cancel_and_retry_buttons_act_on_the_runs_and_the_page_follows(page, stack, screenshot):
    sweep_id = stack.http.post("/sweeps", json=LONG).json()["id"]
    page.goto(f"/ui/sweeps/{sweep_id}")
    statuses = page.locator('td[data-col="status"]')
    expect(statuses.filter(has_text="running").first).to_be_visible(timeout=60_000)  # the page updates itself
    expect(page.get_by_role("button", name="Delete…")).to_be_disabled()  # while runs are running

    page.get_by_role("button", name="Cancel active runs").click()
    expect(statuses).to_have_text(["cancelled"] * 6)
    expect(page.locator('[data-count="cancelled"]')).to_have_text("6")
    expect(page.get_by_role("button", name="Cancel active runs")).to_be_disabled()
    assert {run["status"] for run in all_runs(stack.http, sweep_id)} == {"cancelled"}
    page.wait_for_function(CHARTS_DRAWN)
    screenshot(page, "3-sweep-cancelled")

    page.get_by_role("button", name="Retry failed and cancelled").click()
    expect(page.locator('[data-count="cancelled"]')).to_have_text("0")
    expect(page.locator("[data-sweep-status]")).not_to_have_text("finished")
    page.get_by_role("button", name="Cancel active runs").click()  # and leave the workers free
    expect(statuses).to_have_text(["cancelled"] * 6)

    # Deleted, after a confirmation, once no run is running.
    delete = page.get_by_role("button", name="Delete…")
    expect(delete).to_be_enabled()
    page.once("dialog", lambda dialog: dialog.dismiss())
    delete.click()
    assert stack.http.get(f"/sweeps/{sweep_id}").status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    expect(page).to_have_url(re.compile(r"/$"))
    assert stack.http.get(f"/sweeps/{sweep_id}").status_code == 404


def test_a_run_page_shows_its_config_its_curve_and_a_csv(page, stack, grid, screenshot, tmp_path):
    run = grid["runs"][0]
    page.goto(f"/ui/sweeps/{grid['id']}")
    page.get_by_role("link", name=str(run["id"]), exact=True).click()
    expect(page.get_by_role("heading", name=f"Run {run['id']}")).to_be_visible()
    learning_rate = page.locator('dd[data-param="learning_rate"]')  # as people write it; in full on hover
    expect(learning_rate).to_have_text(format_learning_rate(run["learning_rate"]))
    expect(learning_rate).to_have_attribute("title", repr(run["learning_rate"]))
    page.wait_for_function("() => performance.getEntriesByName('gradsweep:run-drawn').length > 0")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    path = tmp_path / "run.csv"
    download.value.save_as(path)
    with path.open() as file:
        losses = [float(row["loss"]) for row in csv.DictReader(file)]
    assert losses == stack.http.get(f"/runs/{run['id']}").json()["losses"]
    screenshot(page, "4-run")


def test_the_compare_page_plots_the_sweeps_ticked(page, stack, grid, screenshot):
    page.goto("/ui/compare")
    expect(page.get_by_text("Tick the sweeps to compare")).to_be_visible()
    ids = [sweep["id"] for sweep in stack.http.get("/sweeps").json() if sweep["name"] != LONG["name"]][:2]
    for sweep_id in ids:
        page.locator(f'input[name="sweep"][value="{sweep_id}"]').check()
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(f"{stack.url}/ui/compare?sweep={ids[0]}&sweep={ids[1]}")
    page.wait_for_function(PLOTS_LOADED)
    assert page.locator("img.plot").get_attribute("src").startswith(f"/compare/plot.png?sweeps={ids[0]},{ids[1]}")
    screenshot(page, "5-compare")


def test_a_10000_run_sweep_has_its_runs_table_paged_and_sorted_by_the_server(page, stack, screenshot):
    created = stack.http.post("/sweeps", json=BIG)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    stack.wait_for_sweep(sweep_id, timeout=180)
    page.goto(f"/ui/sweeps/{sweep_id}")
    # Generous: while the page loads, the API also serves the charts their 10,000 curves and runs.
    patient = {"timeout": 30_000}
    rows = page.locator("tr[data-run-id]")
    expect(rows).to_have_count(100)
    expect(page.get_by_label("page number")).to_have_value("1")
    expect(page.locator("[data-page-count]")).to_have_text("of 100")

    page.get_by_role("link", name="Last »").click()
    expect(page).to_have_url(re.compile(r"\?page=100&sort=id&order=asc$"), **patient)
    last = stack.http.get(f"/sweeps/{sweep_id}/runs", params={"limit": 100, "offset": 9900}).json()["runs"]
    expect(rows).to_have_count(100)
    assert rows.evaluate_all("rows => rows.map(row => Number(row.dataset.runId))") == [run["id"] for run in last]
    expect(page.get_by_role("link", name="Next →")).to_have_count(0)

    page.get_by_role("link", name="Final loss").click()  # the whole sweep's order, from page 1
    expect(page).to_have_url(re.compile(r"\?page=1&sort=final_loss&order=asc$"), **patient)
    best = stack.http.get(f"/sweeps/{sweep_id}/runs", params={"sort": "final_loss", "limit": 1}).json()["runs"][0]
    expect(rows.first).to_have_attribute("data-run-id", str(best["id"]))

    page.get_by_label("page number").fill("50")
    page.get_by_label("page number").press("Enter")
    expect(page).to_have_url(re.compile(r"\?sort=final_loss&order=asc&page=50$"), **patient)
    fiftieth = stack.http.get(f"/sweeps/{sweep_id}/runs",
                              params={"sort": "final_loss", "limit": 1, "offset": 4900}).json()["runs"][0]
    expect(rows.first).to_have_attribute("data-run-id", str(fiftieth["id"]))

    # The curves chart draws one run in ten and the best (a null after each line), and says so; every run on asking.
    page.wait_for_function(CHARTS_DRAWN, timeout=60_000)
    lines = "c => c.data.flatMap(t => t.mode === 'lines' ? t.customdata : []).filter(run => run === null).length"
    drawn_ids = ("c => [...new Set(c.data.flatMap(t => t.mode === 'lines' ? t.customdata : [])"
                 ".filter(run => run !== null).map(run => run[0]))]")
    best_id = stack.http.get(f"/sweeps/{sweep_id}").json()["best_run"]["id"]
    assert page.locator(CURVES).evaluate(lines) in (1_000, 1_001)
    assert best_id in page.locator(CURVES).evaluate(drawn_ids)
    # Every diverged run has its × where training stopped, drawn as a line or not.
    diverged = stack.http.get(f"/sweeps/{sweep_id}").json()["counts"]["diverged"]
    assert diverged > 0 and page.locator(CURVES).evaluate(
        "c => c.data.find(t => t.name.startsWith('diverged')).x.length") == diverged
    expect(page.locator("[data-lines-count]")).to_have_text(
        re.compile(r"^1,00[01] of 10,000 runs drawn \(one in 10, and the best\)$"))
    page.get_by_role("button", name="Draw all").click()
    page.wait_for_function(f"c => ({lines})(document.querySelector(c)) === 10000", arg=CURVES, timeout=60_000)
    expect(page.locator("[data-lines-note]")).to_be_hidden()
    screenshot(page, "10-big-sweep")


def test_an_unknown_id_gets_a_404_page(page, stack, screenshot):
    for path in ("/ui/sweeps/987654", "/ui/runs/987654"):
        response = page.goto(path)
        assert response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    screenshot(page, "6-not-found")


def test_with_a_token_the_pages_ask_for_it_once_and_say_when_the_api_is_gone(
    open_page, stack, grid, screenshot, tmp_path
):
    guarded = Stack({**embedded_settings(stack.workdir), "GRADSWEEP_API_TOKEN": "s3cret"}, tmp_path)
    try:
        guarded.start_api()
        assert httpx.get(f"{guarded.url}/sweeps").status_code == 401
        page = open_page(guarded.url)
        page.goto("/")
        expect(page.get_by_role("heading", name="This API needs a token")).to_be_visible()
        assert GRID["name"] not in page.content()  # the shell holds no data
        screenshot(page, "7-token-prompt")

        page.get_by_label("API token").fill("wrong")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_text("The API refused that token")).to_be_visible()
        page.get_by_label("API token").fill("s3cret")
        page.get_by_role("button", name="Continue").click()
        page.get_by_role("link", name=GRID["name"]).click()

        # A new page, the token kept: the content and the charts' data (fetched with the header) come without asking.
        expect(page.locator('[data-count="succeeded"]')).to_have_text(str(grid["counts"]["succeeded"]))
        page.wait_for_function(CHARTS_DRAWN)
        assert page.locator(CURVES).evaluate("c => c.data.length") == 9
        page.get_by_role("link", name="Best loss").click()  # the table's pages come with the header too
        expect(page.locator("th[aria-sort]")).to_have_text("Best loss")
        assert httpx.get(f"{guarded.url}/ui/vendor/plotly.min.js").status_code == 200  # open: it holds no data
        screenshot(page, "8-sweep-with-token")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download CSV").click()
        download.value.save_as(tmp_path / "sweep.csv")
        assert (tmp_path / "sweep.csv").read_text() == stack.http.get(f"/sweeps/{grid['id']}/losses?format=csv").text

        page.locator("header nav").get_by_role("link", name="Sweeps").click()
        expect(page.get_by_role("link", name=GRID["name"])).to_be_visible()
        api = guarded.processes[0]
        api.terminate()
        api.wait(timeout=20)
        expect(page.locator("[data-problem]")).to_contain_text("Cannot reach the gradsweep API", timeout=20_000)
        screenshot(page, "9-api-unreachable", full_page=False)
    finally:
        guarded.stop()


def test_a_write_token_makes_a_read_token_in_the_dashboard_which_sees_no_buttons_and_is_revoked(
    open_page, stack, grid, screenshot, tmp_path
):
    guarded = Stack(embedded_settings(stack.workdir, GRADSWEEP_API_TOKEN="writer-s3cret"), tmp_path)
    try:
        guarded.start_api()
        page = open_page(guarded.url)
        page.goto("/")
        page.get_by_label("API token").fill("writer-s3cret")
        page.get_by_role("button", name="Continue").click()
        page.get_by_role("link", name="API tokens").click()
        page.get_by_label("Name").fill("viewer")
        page.get_by_label("Role").select_option("read")
        page.get_by_role("button", name="Create").click()
        secret = page.locator("[data-token-secret-value]")
        expect(secret).to_have_text(re.compile(r"^gsk_"))
        viewer_secret = secret.text_content()
        expect(page.locator('tr[data-token-name="viewer"]')).to_contain_text("read")
        screenshot(page, "10-tokens")

        # The viewer's dashboard: every sweep and its CSV, but no button that would be refused.
        page.get_by_role("button", name="Forget token").click()
        page.get_by_label("API token").fill(viewer_secret)
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("heading", name="A write token is needed")).to_be_visible()  # still on /ui/tokens
        page.get_by_role("link", name="Back to the sweeps").click()
        page.get_by_role("link", name=GRID["name"]).click()
        expect(page.locator('[data-count="succeeded"]')).to_have_text(str(grid["counts"]["succeeded"]))
        expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
        for name in ("Cancel active runs", "Retry failed and cancelled", "Delete…"):
            expect(page.get_by_role("button", name=name)).to_have_count(0)
        expect(page.get_by_role("link", name="API tokens")).to_have_count(0)

        # Revoked by the writer (through the API), the viewer is asked for a token again.
        assert guarded.http.delete("/tokens/viewer").status_code == 200
        page.reload()
        expect(page.get_by_text("The API refused that token")).to_be_visible()
    finally:
        guarded.stop()


def test_past_50_sweeps_the_sweeps_page_has_pages(page, stack):
    total = len(stack.http.get("/sweeps").json())
    for number in range(51 - total):
        stack.http.post("/sweeps", json={"name": f"tiny {number}", "learning_rates": [0.01], "seeds": [0], "epochs": 1})
    page.goto("/")
    expect(page.locator("tr[data-sweep-row]")).to_have_count(50)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    page.get_by_role("link", name="Older →").click()
    expect(page.locator("tr[data-sweep-row]")).to_have_count(1)
    expect(page.get_by_role("link", name="first <sweep> & co")).to_be_visible()  # the oldest
