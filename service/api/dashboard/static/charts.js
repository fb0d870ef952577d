// The sweep page's charts, drawn in the browser by plotly.js, so that a sweep of 10,000 runs can
// be hovered, zoomed and filtered: every run's loss curve, coloured by learning rate; every run's
// final and best loss against a swept parameter (the learning rate unless the reader picks another);
// and, when two or more parameters vary, a line per run across them (parallel coordinates). The PNGs
// of /sweeps/{id}/plot.png stay the server's summary of the first two (means over seeds, with a band).
// plotly.js is large (4.8 MB), so it is loaded only on a page that has a chart.

import { $, Unauthorized, api, constants, showProblem } from "./api.js";
import { divergenceText, humanNumber, learningRateColor, optimizerColor } from "./display.js";

const { colors, palette, status_names: STATUS_NAMES } = constants;

// The curves chart holds about this many points in all, whatever the sweep's size: each curve
// gets this share, within CURVE_POINTS, down-sampled by the server (every bucket of epochs keeps
// its lowest and highest loss, so a spike stays). At some 20 bytes a point, 300,000 points are a
// 6 MB answer, and about a second and a half to draw without a GPU; below 20 points a curve loses
// its shape, and above 400 a chart 1,000 pixels wide shows nothing more.
const POINT_BUDGET = 300_000;
const CURVE_POINTS = { fewest: 20, most: 400 };
// At most this many runs are drawn as lines until the reader asks for all: SVG makes an element of each
// line, and 10,000 of them take 1.4 s to draw and style here (plotly.js itself takes 1.9 s to start),
// where 1,000 take 0.15 s and show the same bands. Every run's mark where it diverged or stopped early
// stays, so no divergence is hidden, and the final-loss chart always has every run.
const MAX_LINES = 1000;
// The service's colours and styles, as its PNGs have them (service/palette.py, through display.js): a
// learning rate's colour on one fixed log scale and an optimizer's colour by name, the same in every sweep;
// at most MAX_BANDS bands of neighbouring learning rates per optimizer in the loss curves (so a 100-rate sweep
// still has a legend one can read and click); one line style per optimizer.
const MAX_BANDS = constants.learning_rate_bands;
const DASHES = Object.fromEntries(constants.optimizer_dashes); // in the known optimizers' order
const SPARE_DASHES = ["dashdot", "longdash", "longdashdot"];
// The loss axis spans the runs that did not diverge, with this share of its span (in decades, on a log
// axis) above and below, so that the question a sweep is run for (which rates converge, how fast, how
// close) reads at once; a diverged run, which climbs to 1e6 times its start, runs off the top edge, its ×
// pinned there where it left. "Show all losses" widens the axis to every loss (issue 24).
const MARGIN = 0.05;
// Runs that early stopping ended at a rung: muted, apart from the learning-rate colours and the red of divergence.
const STOPPED = { status: "stopped_early", name: STATUS_NAMES.stopped_early, color: colors.statuses.stopped_early };
// What the final-loss chart can be drawn against, in the selector's order. A log axis where the values
// span decades; the optimizer is a name.
const PARAMETERS = {
  learning_rate: { label: "learning rate", type: "log" },
  seed: { label: "seed" },
  epochs: { label: "epochs" },
  beta: { label: "beta (momentum)" },
  beta1: { label: "beta1 (Adam)" },
  beta2: { label: "beta2 (Adam)" },
  eps: { label: "eps (Adam)", type: "log" },
  n_samples: { label: "samples" },
  n_features: { label: "features" },
  data_seed: { label: "data seed" },
  optimizer: { label: "optimizer", type: "category" },
};
// The parameters each curve of /sweeps/{id}/losses carries; any other is read from /sweeps/{id}/runs.
const CURVE_PARAMETERS = constants.curve_parameters;
const RUNS_PAGE = constants.runs_per_request; // the most GET /sweeps/{id}/runs gives at once
const LOG_FLOOR = constants.log_floor; // a log axis cannot show an exact zero
// As the PNGs (service/plots.py HEADROOM): the fitted loss axis stops this factor above the highest initial loss
// of the runs that did not diverge, so neither a diverged run nor a converging run's swing sets the scale.
const HEADROOM = constants.headroom;
// A log axis labels its 2 and 5 ticks in full ("2e-3", "0.05", smaller) rather than as bare digits.
const LOG_LABELS = { exponentformat: "e", minorloglabels: "complete" };

// Ticks of a log axis spanning `decades`: at 1, 2 and 5 × 10^k from one decade to three (plotly would tick
// every digit, labels touching), else plotly's own choice (every digit within a decade, powers of ten over many).
const logDtick = (decades) => (decades > 1 && decades <= 3 ? "D2" : null); // null: plotly's, in a relayout too
const logTicks = (decades) => (logDtick(decades) ? { dtick: logDtick(decades) } : {});
const PLOTLY_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
// A run's point names it: id, optimizer, learning rate and seed, then any other parameter its sweep varies
// (customdata[4], as `point` makes it).
const RUN_HOVER =
  "run %{customdata[0]} · %{customdata[3]}<br>lr %{customdata[1]} · seed %{customdata[2]}%{customdata[4]}";
const NAMED = ["learning_rate", "seed", "optimizer"]; // in RUN_HOVER's first lines
const OPTIMIZER_CONSTANTS = ["beta", "beta1", "beta2", "eps"];

// SVG draws a few thousand points sooner than WebGL can start (a WebGL context takes some 300 ms),
// and WebGL is faster above that, but only on a GPU: a browser without one (a VM, a headless CI)
// draws WebGL in software, where 10,000 curves of 20 points take 13 s to appear against 1.5 s as
// SVG. Its markers stay quick there (20,000 in 0.3 s against 1.9 s as SVG).
const WEBGL_FROM = 5000; // points in a chart
const softwareOnly = once(softwareWebGL);

function traceType(points, { lines }) {
  if (points < WEBGL_FROM) return "scatter";
  return lines && softwareOnly() ? "scatter" : "scattergl";
}

const pointsPerCurve = (runs) =>
  Math.min(CURVE_POINTS.most, Math.max(CURVE_POINTS.fewest, Math.floor(POINT_BUDGET / Math.max(1, runs))));

// The page's drawings: one at a time, and one more if asked for meanwhile (the runs may have moved on since
// the data of the one under way came).
const drawings = {
  current: null, // the drawing under way: a promise
  next: null, // the one asked for meanwhile, to start when that ends: a promise
  ms: 0, // how long the last drawing took, fetching included
  last: null, // { runs, lines, varying } of the last drawing: what a change of the final chart's axis redraws
};

// How long the last drawing of the charts took, fetching included.
export const lastDrawingMs = () => drawings.ms;

// Draws (or redraws, keeping zoom, scale and hidden groups) every chart of the sweep `section`; resolves
// once the charts show the runs as they were when it was called.
export function drawCharts(section) {
  if (!$("[data-charts]", section)) return Promise.resolve();
  if (drawings.current) {
    drawings.next ??= drawings.current.catch(() => {}).then(() => {
      drawings.next = null;
      return drawCharts(section);
    });
    return drawings.next;
  }
  drawings.current = drawAll(section).finally(() => {
    drawings.current = null;
  });
  return drawings.current;
}

async function drawAll(section) {
  const holder = $("[data-charts]", section);
  const started = performance.now();
  const sweepId = section.dataset.sweepId;
  const nRuns = Number(holder.dataset.nRuns);
  const lines = { optimum: numberOrNull(holder.dataset.optimum), limit: numberOrNull(holder.dataset.stabilityLimit) };
  const plotly = loadPlotly();
  // Asked for before plotly.js has started (a second or two), so the API works on it meanwhile. Each
  // curve comes with its run's final and best loss, learning rate, seed and optimizer; the other
  // parameters a search may vary (epochs, betas, data…) come from the runs' pages, when it varies them.
  const curves = api(`/sweeps/${sweepId}/losses?points=${pointsPerCurve(nRuns)}`).then(json);
  const swept = holder.dataset.parameters.split(" ");
  const configs = swept.every((name) => CURVE_PARAMETERS.includes(name)) ? null : runConfigs(sweepId);
  const runs = Promise.all([curves, configs]).then(([body, byId]) => {
    const all = body.runs.map((run) => ({ ...byId?.get(run.run_id), ...run, id: run.run_id }));
    drawings.last = { runs: all, lines, varying: varyingParameters(all, swept) };
    return drawings.last;
  });
  const draw = async (name, data, figure) => {
    const [Plotly, answer] = await Promise.all([plotly, data]);
    const chart = $(`[data-chart="${name}"]`, holder);
    await plot(Plotly, chart, figure(answer, lines, chart.layout));
    await painted();
    markOnce("gradsweep:first-chart-drawn");
  };
  try {
    await Promise.all([draw("curves", runs, (drawn, _, shown) => curvesChart(holder, drawn, shown)),
      draw("final", runs, (drawn) => finalChart(holder, drawn))]);
    markOnce("gradsweep:charts-drawn");
    await drawParallel($('[data-chart="parallel"]', holder));
  } catch (error) {
    // The banner or the token form says what went wrong with the API; a chart already drawn stays.
    if (!(error instanceof Unauthorized) && !$("[data-problem]").textContent) showProblem(`Charts: ${error.message}`);
  } finally {
    drawings.ms = performance.now() - started;
  }
}

async function plot(Plotly, chart, { data, layout }) {
  if (!chart.classList.contains("js-plotly-plot")) chart.replaceChildren(); // the "Loading…" line
  await Plotly.react(chart, data, layout, PLOTLY_CONFIG);
}

// The curves chart of the runs `drawn`, as the reader has it: every line or some, every loss or the converged.
// It says above it how many of the runs it draws as lines, with a button to draw them all.
function curvesChart(holder, drawn, shown) {
  const { allLines, allLosses } = holder.dataset;
  const figure = curvesFigure(drawn, shown, { allLines: allLines !== undefined, allLosses: allLosses !== undefined });
  const widen = $("[data-all-losses]", holder);
  widen.hidden = !figure.clipped;
  widen.textContent = "allLosses" in holder.dataset ? "Fit the converged runs" : "Show all losses";
  const note = $("[data-lines-note]", holder);
  note.hidden = figure.drawn === figure.of;
  $("[data-lines-count]", note).textContent =
    `${figure.drawn.toLocaleString("en")} of ${figure.of.toLocaleString("en")} runs drawn (one in ${Math.ceil(figure.of / MAX_LINES)}, and the best)`;
  return figure;
}

// "Draw all": every run's line from now on, on this page.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-all-lines]");
  if (!button) return;
  const holder = button.closest("[data-charts]");
  holder.dataset.allLines = "";
  button.disabled = true;
  drawCharts(holder.closest("[data-sweep-id]"));
});

// "Show all losses": the loss axis widened to every run's losses, diverged ones too; a second click fits the
// converged runs again. Drawn again from the runs already fetched.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-all-losses]");
  if (!button || !drawings.last) return;
  const holder = button.closest("[data-charts]");
  if ("allLosses" in holder.dataset) delete holder.dataset.allLosses;
  else holder.dataset.allLosses = "";
  const chart = $('[data-chart="curves"]', holder);
  await plot(await loadPlotly(), chart, curvesChart(holder, drawings.last, chart.layout));
});

// parcoords draws only with WebGL: without a GPU it takes some 0.8 s to start, 5 s for 10,000 lines, and
// holds the page meanwhile. So it is drawn after the other charts, and only once the reader scrolls near it.
const nearby = new IntersectionObserver((entries) => {
  for (const { target } of entries.filter((entry) => entry.isIntersecting)) {
    nearby.unobserve(target);
    target.dataset.near = "";
    drawParallel(target).catch(() => {}); // the next drawing tries again
  }
}, { rootMargin: "300px" });

// The parallel-coordinates view of the last drawing's runs; its figure is hidden when it has nothing to show.
async function drawParallel(chart) {
  const figure = parallelFigure(drawings.last);
  chart.closest("figure").hidden = figure === null;
  if (figure === null) return;
  if (!("near" in chart.dataset)) return nearby.observe(chart);
  await plot(await loadPlotly(), chart, figure);
  await painted();
  markOnce("gradsweep:parallel-drawn");
}

// Another parameter picked for the final-loss chart: drawn again from the runs already fetched.
document.addEventListener("change", async (event) => {
  const holder = event.target.closest("[data-charts]");
  if (!holder || !event.target.matches("[data-final-parameter]") || !drawings.last) return;
  await plot(await loadPlotly(), $('[data-chart="final"]', holder), finalChart(holder, drawings.last));
});

// Every run of the sweep by id, as GET /sweeps/{id}/runs gives them, a page at a time (all pages but the
// first at once). Asked for once per page load: a run's parameters never change; its loss comes with its curve.
const configsOf = new Map();

function runConfigs(sweepId) {
  if (!configsOf.has(sweepId)) {
    const page = (offset) => api(`/sweeps/${sweepId}/runs?limit=${RUNS_PAGE}&offset=${offset}`).then(json);
    const all = page(0).then(async (first) => {
      const offsets = Array.from({ length: Math.ceil(first.total / RUNS_PAGE) - 1 }, (_, i) => (i + 1) * RUNS_PAGE);
      const pages = [first, ...(await Promise.all(offsets.map(page)))];
      return new Map(pages.flatMap((answer) => answer.runs).map((run) => [run.id, run]));
    });
    all.catch(() => configsOf.delete(sweepId)); // asked for again at the next drawing
    configsOf.set(sweepId, all);
  }
  return configsOf.get(sweepId);
}

// Of the parameters the sweep names, those on which its runs differ, in PARAMETERS' order.
function varyingParameters(runs, swept) {
  return Object.keys(PARAMETERS).filter((name) => swept.includes(name)
    && new Set(runs.map((run) => run[name]).filter((value) => value != null)).size > 1);
}

// plotly.js, loaded once (and again after a failure): a classic script, which sets window.Plotly.
const loadPlotly = (() => {
  let loaded = null;
  return () => {
    loaded ??= new Promise((resolve, reject) => {
      const script = Object.assign(document.createElement("script"), { src: constants.plotly_url });
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        loaded = null;
        reject(new Error("plotly.js did not load"));
      };
      document.head.append(script);
    });
    return loaded;
  };
})();

async function json(response) {
  if (!response.ok) throw new Error(`the API answered ${response.status}`);
  return response.json();
}

// ---- loss against epoch: each run a line, a trace per optimizer and learning-rate band ----

// `runs` as GET /sweeps/{id}/losses gives their curves (with the parameters read from the runs' pages); a
// point's epoch is its index in the run's losses (0: the loss before the first update), as in the PNG. In a
// trace the runs follow one another, separated by null, and each point carries its run, for the hover to name.
// `allLosses`: the loss axis spans every loss, not only those of the runs that did not diverge.
function curvesFigure({ runs: curves, lines: { optimum }, varying }, shown, { allLines, allLosses }) {
  const bandOf = learningRateBands(curves.map((curve) => curve.learning_rate));
  const dashes = optimizerStyles(curves.map((curve) => curve.optimizer), DASHES, SPARE_DASHES);
  const named = pointOf(varying);
  const traces = new Map();
  const stops = []; // the diverged runs: { epochs, losses, run }, marked where they leave the axis
  const halts = { x: [], y: [], customdata: [] }; // where early stopping ended a run
  const kept = new Extent(HEADROOM); // the losses of the runs that did not diverge, up to HEADROOM × their starts
  const every = new Extent(Infinity); // and of all
  const sorted = curves.filter((curve) => curve.losses.length > 0).sort(byGroup(dashes));
  const drawn = new Set(allLines ? sorted : evenlyChosen(sorted, MAX_LINES));
  for (const curve of sorted) { // every run: its marks (where it diverged or stopped) and the axis; the drawn: a line
    const { losses } = curve;
    const stopped = curve.status === STOPPED.status;
    const diverged = curve.status === "diverged";
    const run = named(curve);
    const epochs = curve.sampled_epochs ?? losses.map((_, i) => i);
    every.add(losses);
    if (!diverged) kept.add(losses);
    if (drawn.has(curve)) {
      const band = bandOf.get(curve.learning_rate);
      const key = stopped ? STOPPED.name : `${curve.optimizer}, ${band.label}`;
      if (!traces.has(key)) {
        const style = stopped ? { legendgroup: STOPPED.name, line: { color: STOPPED.color, width: 1 } }
          : { line: { color: band.color, dash: dashes[curve.optimizer], width: 1 } };
        traces.set(key, { mode: "lines", name: key, runs: 0, x: [], y: [], customdata: [], ...style,
          hovertemplate: `${RUN_HOVER}<br>epoch %{x} · loss %{y:.3e}<extra></extra>` });
      }
      const trace = traces.get(key);
      for (let i = 0; i < losses.length; i++) {
        trace.x.push(epochs[i]);
        trace.y.push(losses[i]);
        trace.customdata.push(run);
      }
      trace.x.push(null);
      trace.y.push(null);
      trace.customdata.push(null);
      trace.runs += 1;
    }
    if (diverged) stops.push({ epochs, losses, run: [...run, divergenceText(curve.diverged_at)] });
    if (stopped) {
      halts.x.push(epochs.at(-1));
      halts.y.push(losses.at(-1));
      halts.customdata.push(run);
    }
  }
  const type = traceType([...traces.values()].reduce((sum, trace) => sum + trace.x.length, 0), { lines: true });
  // Thousands of lines in one colour make a solid band; fainter lines show where most runs go.
  const data = [...traces.values()].map(({ runs, ...trace }) =>
    ({ ...trace, type, opacity: Math.max(0.2, Math.min(1, 10 / Math.sqrt(runs))) }));
  if (halts.x.length) { // in the legend group of the stopped runs' lines: hidden with them
    data.push({ type: traceType(halts.x.length, { lines: false }), mode: "markers", name: STOPPED.name,
      legendgroup: STOPPED.name, showlegend: false, ...halts, marker: { symbol: "square", size: 6, color: STOPPED.color },
      hovertemplate: `${RUN_HOVER}<br>stopped early after epoch %{x}<extra></extra>` });
  }
  // What the loss axis spans, on each scale; and where each diverged run's × goes on it.
  const spanned = allLosses || kept.empty ? every : kept;
  const view = (scale) => {
    const range = spanned.range(scale);
    const top = scale === "log" ? 10 ** range[1] : range[1];
    return { range, marks: leavingPoints(stops, top) };
  };
  const scale = shown?.yaxis?.type ?? "log";
  const marks = stops.length ? data.length : null; // the index of the ×s' trace
  if (stops.length) {
    const { x, y } = view(scale).marks;
    data.push({ type: traceType(stops.length, { lines: false }), mode: "markers", cliponaxis: false,
      name: "diverged: × where it leaves the chart", x, y, customdata: stops.map((stop) => stop.run),
      marker: { symbol: "x", size: 9, color: palette.diverged },
      hovertemplate: `${RUN_HOVER}<br>%{customdata[5]}<extra></extra>` });
  }
  // A scale button also moves the ×s, to where the lines leave that axis.
  const scaleButton = (label) => {
    const { range, marks: moved } = view(label);
    const axis = { "yaxis.type": label, "yaxis.range": range, "yaxis.autorange": false,
      "yaxis.dtick": label === "log" ? logDtick(range[1] - range[0]) : null };
    const args = marks === null ? [{}, axis, []] : [{ x: [moved.x], y: [moved.y] }, axis, [marks]];
    return { label, method: "update", args };
  };
  return {
    data,
    drawn: drawn.size,
    of: sorted.length,
    clipped: stops.length > 0 && every.high > kept.high, // whether "Show all losses" shows more
    layout: {
      uirevision: "sweep", // a redraw keeps what the reader zoomed, scaled or hid
      margin: { l: 70, r: 10, t: 40, b: 50 },
      hovermode: "closest",
      xaxis: { title: { text: "epoch" }, zeroline: false },
      // Its own uirevision: "Show all losses" (and back) sets the range again, over a zoom of the other span.
      yaxis: { title: { text: "training loss (MSE)" }, type: scale, ...LOG_LABELS, range: view(scale).range,
        autorange: false, uirevision: allLosses ? "all" : "converged",
        ...(scale === "log" ? logTicks(view(scale).range[1] - view(scale).range[0]) : {}) },
      shapes: optimum === null ? [] : [horizontalLine(optimum, "least-squares optimum")],
      updatemenus: [{ type: "buttons", direction: "right", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom",
        pad: { t: 0, b: 0 }, active: scale === "log" ? 0 : 1, buttons: [scaleButton("log"), scaleButton("linear")] }],
    },
  };
}

// The lowest positive and highest finite losses seen (at most `headroom` times the highest first loss), and the
// loss axis's range over them on either scale.
class Extent {
  low = Infinity;
  seen = -Infinity;
  start = -Infinity;

  constructor(headroom) {
    this.headroom = headroom;
  }

  get high() {
    return this.headroom === Infinity ? this.seen : Math.min(this.seen, this.headroom * this.start);
  }

  get empty() {
    return this.seen === -Infinity;
  }

  add(losses) {
    if (losses.length && losses[0] > this.start) this.start = losses[0];
    for (const loss of losses) {
      if (loss > 0 && loss < this.low) this.low = loss;
      if (loss > this.seen && Number.isFinite(loss)) this.seen = loss;
    }
  }

  // Log: in decades, MARGIN of the span (at least a twentieth of a decade) beyond each end; linear: from 0.
  range(scale) {
    if (this.empty) return scale === "log" ? [-1, 1] : [0, 1];
    if (scale === "linear") return [0, (1 + MARGIN) * Math.max(this.high, LOG_FLOOR)];
    const [low, high] = [Math.log10(Math.max(this.low, LOG_FLOOR)), Math.log10(Math.max(this.high, LOG_FLOOR))];
    const margin = Math.max(MARGIN * (high - low), 0.05);
    return [low - margin, high + margin];
  }
}

// Where each diverged run leaves an axis that stops at `top`: its first point above it, pinned to the top edge;
// a run that stays below has its × at its last loss, the last finite one before it diverged.
function leavingPoints(stops, top) {
  const x = [];
  const y = [];
  for (const { epochs, losses } of stops) {
    const i = losses.findIndex((loss) => loss > top);
    x.push(epochs.at(i));
    y.push(i < 0 ? losses.at(-1) : top);
  }
  return { x, y };
}

// A run's customdata, as RUN_HOVER reads it: id, learning rate, seed and optimizer, then a line of the other
// parameters of `varying`, "" when there are none ("beta 0.936 · epochs 40"; "beta none" for sgd).
function pointOf(varying = []) {
  const others = varying.filter((name) => !NAMED.includes(name));
  return (run) => {
    const more = others.map((name) => `${PARAMETERS[name].short ?? name} ${valueText(run[name])}`).join(" · ");
    return [run.run_id ?? run.id, humanNumber(run.learning_rate), run.seed, run.optimizer, more && `<br>${more}`];
  };
}

// A parameter's value as the tables and hovers show it: a number for people, a name, or "none".
const valueText = (value) => (value == null ? "none" : typeof value === "number" ? humanNumber(value) : value);

// At most `most` of the `sorted` curves, in their order: every k-th (so each optimizer and learning rate keeps
// its share of seeds) and the sweep's best run, the one a reader looks for first (as the summary's best_run:
// the lowest best loss of a run that neither diverged nor failed, the lowest id of equals).
function evenlyChosen(sorted, most) {
  if (sorted.length <= most) return sorted;
  const step = Math.ceil(sorted.length / most);
  const candidates = sorted.filter((curve) => curve.best_loss !== null && !["diverged", "failed"].includes(curve.status));
  const better = (a, b) => (b.best_loss < a.best_loss || (b.best_loss === a.best_loss && b.run_id < a.run_id) ? b : a);
  const best = candidates.reduce(better, candidates[0]);
  return sorted.filter((curve, i) => i % step === 0 || curve === best);
}

// Sorted learning rates cut into at most MAX_BANDS runs of neighbours: rate → { label, color }. A band of one
// rate has that rate's own colour, as in the PNG; a wider band, the colour of its middle (on the log scale).
function learningRateBands(rates) {
  const distinct = [...new Set(rates)].sort((a, b) => a - b);
  const count = Math.min(MAX_BANDS, distinct.length);
  const bands = Array.from({ length: count }, (_, band) => {
    const members = distinct.filter((_, i) => Math.floor((i * count) / distinct.length) === band);
    const [low, high] = [humanNumber(members[0]), humanNumber(members.at(-1))];
    const color = learningRateColor(Math.sqrt(members[0] * members.at(-1)));
    return { label: low === high ? `lr ${low}` : `lr ${low}–${high}`, color };
  });
  return new Map(distinct.map((rate, i) => [rate, bands[Math.floor((i * count) / distinct.length)]]));
}

// Known optimizers first, in a fixed order, then the others by name: optimizer → style.
function optimizerStyles(names, known, spare) {
  const present = new Set(names);
  const styles = Object.fromEntries(Object.entries(known).filter(([name]) => present.has(name)));
  [...present].filter((name) => !(name in styles)).sort()
    .forEach((name, i) => { styles[name] = spare[i % spare.length]; });
  return styles;
}

// The runs that stopped early last, in a group of their own; the others by optimizer, learning rate and seed.
function byGroup(styles) {
  const order = Object.keys(styles);
  const stopped = (curve) => Number(curve.status === STOPPED.status);
  return (a, b) => stopped(a) - stopped(b) || order.indexOf(a.optimizer) - order.indexOf(b.optimizer)
    || a.learning_rate - b.learning_rate || a.seed - b.seed;
}

// ---- final and best loss against a swept parameter: a point per run ----

// The final-loss chart against the parameter picked above it. Its selector lists the parameters that
// vary, and keeps the reader's pick while the runs go on; the chart's title names it.
function finalChart(holder, { runs, lines, varying }) {
  const select = $("[data-final-parameter]", holder);
  const names = varying.length ? varying : ["learning_rate"];
  if ([...select.options].map((option) => option.value).join() !== names.join()) {
    const picked = select.value;
    select.replaceChildren(...names.map((name) => new Option(PARAMETERS[name].label, name)));
    select.value = names.includes(picked) ? picked : names[0];
  }
  select.closest("label").hidden = names.length < 2;
  $("[data-final-title]", holder).textContent = PARAMETERS[select.value].label;
  return finalFigure(runs, lines, select.value, varying);
}

// As the PNG: a diverged run's last loss only says when it was stopped, so it is a × on the top
// edge (on a second, hidden y axis from 0 to 1) rather than a loss; its best loss is real, ringed if it is
// below its start. A run that early stopping ended has a real loss where it stopped: a point of its own
// colour, kept out of the means, which are of the runs that trained all their epochs and break where a run
// diverged. Runs without the parameter (sgd has no beta) are left out.
function finalFigure(runs, { optimum, limit }, name = "learning_rate", varying = []) {
  const { label, type = "linear" } = PARAMETERS[name];
  const shown = runs.filter((run) => run[name] != null);
  const styles = optimizerStyles(shown.map((run) => run.optimizer), DASHES, SPARE_DASHES);
  const point = pointOf(varying);
  const x = (some) => some.map((run) => run[name]);
  const pointType = traceType(2 * shown.length, { lines: false });
  const data = [];
  for (const optimizer of Object.keys(styles)) {
    const color = optimizerColor(optimizer);
    const mine = shown.filter((run) => run.optimizer === optimizer);
    const finished = mine.filter((run) => run.final_loss !== null && run.status !== "diverged"
      && run.status !== STOPPED.status);
    // A best loss equal to the final one would be a ring around its dot: 10,000 more markers to draw (0.45 s
    // here) that say nothing, so a ring marks only a run that was lower before its end (it bounced or diverged
    // after going down); a diverged run whose best is its start has none.
    const best = mine.filter((run) => run.best_loss !== null && run.best_loss !== run.final_loss
      && !(run.best_loss >= run.losses?.[0]));
    const group = { legendgroup: optimizer, hoverlabel: { bgcolor: color } };
    data.push({ ...group, type: pointType, mode: "markers", name: `${optimizer}: final loss`,
      x: x(finished), y: finished.map((run) => run.final_loss),
      customdata: finished.map(point), marker: { color, size: 6, opacity: 0.8 },
      hovertemplate: `${RUN_HOVER}<br>final loss %{y:.3e}<extra></extra>` });
    data.push({ ...group, type: pointType, mode: "markers", name: `${optimizer}: best loss, if lower`,
      x: x(best), y: best.map((run) => run.best_loss), customdata: best.map(point),
      marker: { color, size: 8, symbol: "circle-open" },
      hovertemplate: `${RUN_HOVER}<br>best loss %{y:.3e}<extra></extra>` });
    if (type === "category") continue; // one optimizer, one place: its points say it all
    const [values, means] = meanFinalLoss(mine, name);
    data.push({ ...group, type: "scatter", mode: "lines", name: `${optimizer}: mean final loss`, x: values, y: means,
      text: values.map(valueText), line: { color, dash: styles[optimizer], width: 1.6 }, connectgaps: false,
      hovertemplate: `${label} %{text} · mean final loss %{y:.3e}<extra></extra>` });
  }
  const stopped = shown.filter((run) => run.status === STOPPED.status && run.final_loss !== null);
  if (stopped.length) {
    data.push({ type: pointType, mode: "markers", name: STOPPED.name, legendgroup: STOPPED.name,
      x: x(stopped), y: stopped.map((run) => run.final_loss), customdata: stopped.map(point),
      text: stopped.map(lastEpoch), marker: { symbol: "square", size: 7, color: STOPPED.color, opacity: 0.85 },
      hovertemplate: `${RUN_HOVER}<br>stopped early after epoch %{text}, loss %{y:.3e}<extra></extra>` });
  }
  const diverged = shown.filter((run) => run.status === "diverged");
  if (diverged.length) {
    data.push({ type: pointType, mode: "markers", name: "diverged (final loss off the chart)", yaxis: "y2",
      x: x(diverged), y: diverged.map(() => 0.97), customdata: diverged.map(point),
      text: diverged.map((run) => (run.diverged_at == null ? "diverged" : divergenceText(run.diverged_at))),
      marker: { symbol: "x", size: 10, color: palette.diverged },
      hovertemplate: `${RUN_HOVER}<br>%{text}<extra></extra>` });
  }
  const shapes = [];
  if (optimum !== null) shapes.push(horizontalLine(optimum, "least-squares optimum"));
  if (limit !== null && name === "learning_rate") {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: limit, x1: limit, y0: 0, y1: 1, showlegend: true,
      name: "GD stability limit 2/λmax", line: { color: "#000", dash: "dot", width: 1.5 } });
  }
  const ticks = type === "linear" ? fewValues(x(shown)) : undefined;
  const decades = (values) => Math.log10(Math.max(...values) / Math.min(...values));
  const losses = data.filter((trace) => !trace.yaxis).flatMap((trace) => trace.y).filter((loss) => loss > 0); // drawn
  return {
    data,
    layout: {
      uirevision: "sweep",
      margin: { l: 70, r: 10, t: 40, b: 50 },
      hovermode: "closest",
      // Its own uirevision: a zoom into one parameter's values means nothing on another's.
      xaxis: { title: { text: label }, type, zeroline: false, uirevision: name,
        ...(type === "log" ? { ...LOG_LABELS, ...logTicks(decades(x(shown))) } : {}),
        tickvals: ticks, ticktext: ticks?.map((tick) => humanNumber(tick)),
        ...(type === "category" ? { categoryorder: "array", categoryarray: Object.keys(styles) } : {}) },
      yaxis: { title: { text: "loss" }, type: "log", ...LOG_LABELS, ...logTicks(decades(losses)) },
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
      shapes,
    },
  };
}

// The mean final loss of the runs that trained all their epochs at each value of parameter `name`, in order;
// null (a break in the line) at a value where a run diverged, so that no line joins across it.
function meanFinalLoss(runs, name) {
  const sums = new Map();
  for (const run of runs) {
    const diverged = run.status === "diverged";
    if (!diverged && (run.final_loss === null || run.status === STOPPED.status)) continue;
    const [sum, count] = sums.get(run[name]) ?? [0, 0];
    sums.set(run[name], diverged ? [NaN, count] : [sum + run.final_loss, count + 1]);
  }
  const values = [...sums.keys()].sort((a, b) => a - b);
  const mean = ([sum, count]) => (Number.isNaN(sum) || count === 0 ? null : sum / count);
  return [values, values.map((value) => mean(sums.get(value)))];
}

// Few distinct numbers (seeds 0, 1, 2) are each a tick, so that no axis shows a seed 0.5; more are left to plotly.
function fewValues(values) {
  const distinct = [...new Set(values)].sort((a, b) => a - b);
  return distinct.length <= 12 ? distinct : undefined;
}

// The epoch of a curve's last loss (down-sampled or not), which for a finished run is its epochs done.
const lastEpoch = (curve) => curve.sampled_epochs?.at(-1) ?? curve.losses.length - 1;

// ---- the runs across every varying parameter: a line per run (parallel coordinates) ----

// Drawn when two or more parameters vary: an axis for each, and the final loss last, which also colours the
// lines. Left out: runs without a final loss and diverged runs (their last loss only says when they were
// stopped). A run without one of the parameters (sgd has no beta) is drawn at "none", below that axis's values.
// Runs stopped early are in, at the loss where they stopped. parcoords has no log axis, so a log one is drawn as
// log10 with ticks at 1, 2, 5 × 10^k; every tick is a number for people (0.936, not 0.93612345678).
function parallelFigure({ runs, varying }) {
  if (varying.length < 2) return null;
  const shown = runs.filter((run) => run.final_loss !== null && run.status !== "diverged");
  if (shown.length === 0) return null;
  const axis = (name) => {
    const { label, type } = PARAMETERS[name];
    const values = shown.map((run) => run[name]);
    if (type === "category") return optimizerAxis(label, values);
    return withNone(type === "log" ? logAxis(label, values) : linearAxis(label, values), values);
  };
  const loss = logAxis("final loss", shown.map((run) => run.final_loss));
  return {
    data: [{ type: "parcoords", dimensions: [...varying.map(axis), loss],
      line: { color: loss.values, colorscale: "Viridis", showscale: true,
        colorbar: { title: { text: "final loss" }, tickvals: loss.tickvals, ticktext: loss.ticktext } } }],
    layout: { uirevision: "sweep", margin: { l: 70, r: 40, t: 60, b: 30 } },
  };
}

// Each optimizer at a whole number, in the other charts' order, with its name for a tick.
function optimizerAxis(label, values) {
  const names = Object.keys(optimizerStyles(values, DASHES, SPARE_DASHES));
  return { label, values: values.map((value) => names.indexOf(value)), tickvals: names.map((_, i) => i), ticktext: names };
}

// An axis's runs without the parameter (`values` null there) at a "none" tick, a tenth of the axis below the rest.
function withNone(axis, values) {
  if (!values.includes(null) && !values.includes(undefined)) return axis;
  const known = axis.values.filter((value) => value !== null);
  if (known.length === 0) return { ...axis, values: axis.values.map(() => 0), tickvals: [0], ticktext: ["none"] };
  const [low, high] = [Math.min(...known), Math.max(...known)];
  const none = low - Math.max(0.1 * (high - low), 0.1 * Math.abs(low) || 0.1);
  return { ...axis, values: axis.values.map((value) => value ?? none), tickvals: [none, ...axis.tickvals],
    ticktext: ["none", ...axis.ticktext] };
}

// Values on a linear axis (null where a run has none), ticked at each of a few distinct ones, else at round steps.
function linearAxis(label, values) {
  const known = values.filter((value) => value != null);
  const tickvals = fewValues(known) ?? roundSteps(Math.min(...known), Math.max(...known));
  const ticktext = tickvals.map((tick) => humanNumber(tick));
  return { label, values: values.map((value) => value ?? null), tickvals, ticktext };
}

// About five round ticks (1, 2 or 5 × 10^k apart) from `low` to `high`.
function roundSteps(low, high) {
  if (!(high > low)) return [low];
  const raw = (high - low) / 5;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw);
  const ticks = [];
  for (let tick = Math.ceil(low / step) * step; tick <= high + step * 1e-9; tick += step) {
    ticks.push(Number(tick.toPrecision(12)));
  }
  return ticks;
}

// Values on a log axis (null where a run has none), as their log10.
function logAxis(label, values) {
  const logs = values.map((value) => (value == null ? null : Math.log10(Math.max(value, LOG_FLOOR))));
  const known = logs.filter((value) => value !== null);
  const [low, high] = [Math.min(...known), Math.max(...known)];
  const steps = high - low > 3 ? [1] : [1, 2, 5]; // more than three decades: the powers of ten are enough
  const ticks = [];
  for (let power = Math.floor(low); power <= Math.ceil(high); power++) {
    ticks.push(...steps.map((step) => power + Math.log10(step)).filter((tick) => tick >= low && tick <= high));
  }
  const tickvals = ticks.length >= 2 ? ticks : [low, high];
  return { label, values: logs, tickvals, ticktext: tickvals.map((tick) => humanNumber(10 ** tick)) };
}

function horizontalLine(y, name) {
  return { type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: y, y1: y, showlegend: true, name,
    line: { color: "#000", dash: "dash", width: 1.2 } };
}

// ---- a run's own curve, on its page ----

// The run page's chart: the run's loss against epoch, named by its own legend entry, hovered as the sweep's
// are; its best loss ringed where it is below its start; a diverged run's × on the top edge at the epoch whose
// loss blew up, one after its curve's last, said as every view says it ("loss finite through epoch 3;
// diverged at epoch 4"). Drawn again, keeping the reader's zoom, each time it is called.
export async function drawRunChart(figure) {
  const runId = figure.dataset.runId;
  const [Plotly, run] = await Promise.all([loadPlotly(), api(`/runs/${runId}?points=2000`).then(json)]);
  const chart = $('[data-chart="run"]', figure);
  await plot(Plotly, chart, runFigure(run, numberOrNull(figure.dataset.optimum)));
  await painted();
  markOnce("gradsweep:run-drawn");
}

function runFigure(run, optimum) {
  const epochs = run.sampled_epochs ?? run.losses.map((_, i) => i);
  const color = optimizerColor(run.optimizer);
  const more = pointOf(OPTIMIZER_CONSTANTS.filter((name) => run[name] != null))(run); // its hover: id, lr, seed…, beta
  const customdata = epochs.map(() => more);
  const name = `run ${run.id}: lr ${humanNumber(run.learning_rate)}, ${run.optimizer}`; // its own legend entry
  const data = [{ type: "scatter", mode: "lines", name,
    x: epochs, y: run.losses, customdata, line: { color, width: 1.6 },
    hovertemplate: `${RUN_HOVER}<br>epoch %{x} · loss %{y:.3e}<extra></extra>` }];
  const bestAt = run.losses.indexOf(Math.min(...run.losses));
  if (run.best_loss !== null && run.losses.length > 1 && run.best_loss < run.losses[0] && bestAt > 0) {
    data.push({ type: "scatter", mode: "markers", name: "best loss", x: [epochs[bestAt]], y: [run.losses[bestAt]],
      customdata: [more], marker: { color, size: 10, symbol: "circle-open" },
      hovertemplate: `${RUN_HOVER}<br>best loss %{y:.3e} at epoch %{x}<extra></extra>` });
  }
  if (run.status === "diverged" && run.diverged_at !== null) {
    data.push({ type: "scatter", mode: "markers", name: divergenceText(run.diverged_at), yaxis: "y2", cliponaxis: false,
      x: [run.diverged_at], y: [1], customdata: [[...more, divergenceText(run.diverged_at)]],
      marker: { symbol: "x", size: 11, color: palette.diverged },
      hovertemplate: `${RUN_HOVER}<br>%{customdata[5]}<extra></extra>` });
  }
  const last = Math.max(epochs.at(-1) ?? 0, run.diverged_at ?? 0, 1);
  return {
    data,
    layout: {
      uirevision: `run ${run.id}`,
      margin: { l: 70, r: 10, t: 30, b: 50 },
      hovermode: "closest",
      showlegend: true,
      legend: { x: 1, xanchor: "right", y: 1, bgcolor: "rgba(255,255,255,0.8)" },
      xaxis: { title: { text: "epoch" }, zeroline: false, range: [0, last * 1.02] },
      yaxis: { title: { text: "training loss (MSE)" }, type: "log", ...LOG_LABELS },
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
      shapes: optimum === null ? [] : [horizontalLine(optimum, "least-squares optimum")],
    },
  };
}

// ---- small helpers ----

// `make()`, called the first time only.
function once(make) {
  let made;
  let done = false;
  return () => {
    if (!done) [made, done] = [make(), true];
    return made;
  };
}

function softwareWebGL() {
  const gl = document.createElement("canvas").getContext("webgl");
  if (!gl) return true;
  const info = gl.getExtension("WEBGL_debug_renderer_info");
  const renderer = info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : "";
  gl.getExtension("WEBGL_lose_context")?.loseContext(); // browsers keep only a few contexts alive
  return /swiftshader|llvmpipe|softpipe|software/i.test(renderer);
}

function numberOrNull(text) {
  return text === undefined || text === "" ? null : Number(text);
}

// Resolves once the browser has painted what was just drawn (requestAnimationFrame runs before a paint).
const painted = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));

// For the benchmark (benchmarks/dashboard_tti_bench.py): when the page first reached each state.
function markOnce(name) {
  if (performance.getEntriesByName(name).length === 0) performance.mark(name);
}
