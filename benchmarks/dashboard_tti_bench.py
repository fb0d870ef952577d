"""Time to interactive of a 10,000-run sweep's dashboard page in Chromium, against a 10-run sweep's.

    python -m benchmarks.dashboard_tti_bench [--runs 10000] [--epochs 20] [--loads 5]
                                             [--backend postgresql|sqlite] [--quick]

With `gradsweep api` and a worker of 2 processes as their own processes (on Redis, and
PostgreSQL or SQLite), two finished sweeps are stored: `--runs` runs (learning rates x
seeds, a square) and the baseline, 10 runs, both of `--epochs` epochs. Headless Chromium
(GRADSWEEP_CHROMIUM, default /usr/bin/chromium) then opens each sweep's page `--loads`
times, the two in turn, and reads, from the start of the navigation:

- DOMContentLoaded;
- the runs table's first page shown and its links working (the mark `gradsweep:table-ready`
  that dashboard.js sets);
- the first chart drawn and painted (`gradsweep:first-chart-drawn`, set by charts.js);
- both charts drawn and painted (`gradsweep:charts-drawn`).

"cold" loads each start in a new browser context, with an empty cache, as a first visit;
"warm" loads share one context that has seen the page once, as a reader coming back (the
browser then keeps plotly.js, and its compiled code, across loads). It prints the medians,
every load, and the ratio to the baseline; and the floor under both, a page that only
starts plotly.js and paints an empty chart. The target: both charts within 2 s.
"""

from __future__ import annotations

import argparse
import os
import time

import httpx

from benchmarks.common import (
    against, database, empty_broker, header, interleaved, median, processes, report, service_env, spread,
)

CHROMIUM = os.environ.get("GRADSWEEP_CHROMIUM", "/usr/bin/chromium")
# As the browser tests start it: headless, and nothing but our API to talk to.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
BASELINE_RUNS = 10
TARGET_S = 2.0
MILESTONES = {
    "DOMContentLoaded": None,
    "runs table usable": "gradsweep:table-ready",
    "first chart drawn": "gradsweep:first-chart-drawn",
    "both charts drawn": "gradsweep:charts-drawn",
}
READ_TIMES = """() => {
    const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? NaN;
    const navigation = performance.getEntriesByType("navigation")[0];
    return [navigation.domContentLoadedEventEnd, ...%s.map(mark)].map((ms) => ms / 1000);
}""" % [name for name in MILESTONES.values() if name]


def sweep(http: httpx.Client, name: str, n_runs: int, epochs: int) -> int:
    """A finished sweep of about `n_runs` runs: a square of learning rates x seeds, or rates alone when small."""
    side = round(n_runs ** 0.5)
    rates, seeds = (side, side) if side * side == n_runs else (n_runs, 1)
    body = {"name": name, "learning_rates": {"logspace": [1e-3, 5e-2, rates]}, "seeds": list(range(seeds)),
            "epochs": epochs}
    sweep_id = http.post("/sweeps", json=body).raise_for_status().json()["id"]
    deadline = time.monotonic() + 1800
    while http.get(f"/sweeps/{sweep_id}").json()["status"] != "finished":
        if time.monotonic() > deadline:
            raise TimeoutError(f"sweep {sweep_id} did not finish")
        time.sleep(0.5)
    return sweep_id


# The floor under any chart of ours: a page that loads plotly.js from the API, as the sweep
# page does, and draws one empty chart. Opened on the API's origin (its 404 page, replaced),
# so that the browser caches plotly.js for it as for the dashboard.
PLOTLY_ALONE = """<!doctype html><div id="chart"></div><script>
const script = Object.assign(document.createElement("script"), { src: %r });
script.onload = async () => {
  await Plotly.newPlot("chart", [{ x: [], y: [], type: "scatter" }], {});
  requestAnimationFrame(() => requestAnimationFrame(() => performance.mark("gradsweep:charts-drawn")));
};
document.head.append(script);
</script>"""
PLOTLY_ALONE_TIMES = """() => [performance.getEntriesByName("gradsweep:charts-drawn")[0].startTime / 1000]"""


def load_plotly_alone(context, api_url: str) -> float:
    """Seconds from a navigation to plotly.js started and an empty chart painted."""
    from gradsweep.service.api.dashboard.constants import PLOTLY_URL

    page = context.new_page()
    try:
        html = PLOTLY_ALONE % PLOTLY_URL
        page.route(f"{api_url}/floor", lambda route: route.fulfill(status=200, content_type="text/html", body=html))
        page.goto(f"{api_url}/floor")
        page.wait_for_function("performance.getEntriesByName('gradsweep:charts-drawn').length > 0", timeout=120_000)
        return page.evaluate(PLOTLY_ALONE_TIMES)[0]
    finally:
        page.close()


def load(context, url: str) -> list[float]:
    """One load of `url` in `context`: the milestones' times in seconds from the navigation's start."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        page.wait_for_function("performance.getEntriesByName('gradsweep:charts-drawn').length > 0", timeout=120_000)
        if errors:
            raise RuntimeError(f"JavaScript errors on {url}: {errors}")
        return page.evaluate(READ_TIMES)
    finally:
        page.close()


def plotly_alone(browser, api_url: str, visit: str, loads: int) -> list[float]:
    """`loads` loads of the plotly.js-alone page, each in a new context ("cold") or all in one that saw it once."""
    shared = browser.new_context(viewport=VIEWPORT)
    try:
        load_plotly_alone(shared, api_url)
        times = []
        for _ in range(loads):
            if visit == "warm":
                times.append(load_plotly_alone(shared, api_url))
                continue
            context = browser.new_context(viewport=VIEWPORT)
            try:
                times.append(load_plotly_alone(context, api_url))
            finally:
                context.close()
        return times
    finally:
        shared.close()


def bench(backend: str, n_runs: int, epochs: int, loads: int) -> None:
    from playwright.sync_api import sync_playwright

    header(f"{backend}: the sweep page of {n_runs:,} runs x {epochs} epochs against {BASELINE_RUNS} runs,"
           f" {loads} loads each, in headless Chromium")
    if backend == "postgresql":
        empty_broker()
    with database(backend) as url, processes(service_env(url)) as started:
        api_url = started.api()
        started.worker(concurrency=2)
        with httpx.Client(base_url=api_url, timeout=300) as http:
            big = sweep(http, "big", n_runs, epochs)
            small = sweep(http, "baseline", BASELINE_RUNS, epochs)
        pages = {"big": f"{api_url}/ui/sweeps/{big}", "baseline": f"{api_url}/ui/sweeps/{small}"}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for visit in ("cold", "warm"):
                    warm = {name: browser.new_context(viewport=VIEWPORT) for name in pages}
                    for name, page_url in pages.items():
                        load(warm[name], page_url)  # seen once: its cache holds plotly.js from now on

                    def measure(name: str) -> list[float]:
                        if visit == "warm":
                            return load(warm[name], pages[name])
                        context = browser.new_context(viewport=VIEWPORT)
                        try:
                            return load(context, pages[name])
                        finally:
                            context.close()

                    results = interleaved({name: (lambda name=name: measure(name)) for name in pages}, loads)
                    floor = plotly_alone(browser, api_url, visit, loads)
                    for context in warm.values():
                        context.close()
                    print(f"  {visit} loads (seconds from the start of the navigation):")
                    for index, milestone in enumerate(MILESTONES):
                        ours = [times[index] for times in results["big"]]
                        base = [times[index] for times in results["baseline"]]
                        target = against(median(ours), TARGET_S, unit=" s") if milestone == "both charts drawn" else ""
                        report(f"  {milestone}", median(ours), median(base), f"{BASELINE_RUNS}-run sweep", "s",
                               target=target)
                        print(f"      every load: {n_runs:,} runs {spread(ours)}, {BASELINE_RUNS} runs {spread(base)}")
                    print(f"    the floor: plotly.js alone started and an empty chart painted {median(floor):.2f} s"
                          f" (every load {spread(floor)})")
            finally:
                browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="a square number: learning rates x seeds")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--quick", action="store_true", help="2,500 runs, 3 loads")
    args = parser.parse_args()
    runs, loads = (2_500, 3) if args.quick else (args.runs, args.loads)
    bench(args.backend, runs, args.epochs, loads)


if __name__ == "__main__":
    main()
