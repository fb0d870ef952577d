// The sweep page's two charts, drawn in the browser by plotly.js, so that a sweep of
// 10,000 runs can be hovered, zoomed and filtered: every run's loss curve, coloured by learning
// rate, and every run's final and best loss against its learning rate. The PNGs of
// /sweeps/{id}/plot.png stay the server's summary of the same (means over seeds, with a band).
// plotly.js is large (4.8 MB), so it is loaded only on a page that has a chart.
"use strict";

// The curves chart holds about this many points in all, whatever the sweep's size: each curve
// gets this share, within CURVE_POINTS, down-sampled by the server (every bucket of epochs keeps
// its lowest and highest loss, so a spike stays). At some 20 bytes a point, 300,000 points are a
// 6 MB answer, and about a second and a half to draw without a GPU; below 20 points a curve loses
// its shape, and above 400 a chart 1,000 pixels wide shows nothing more.
const POINT_BUDGET = 300_000;
const CURVE_POINTS = { fewest: 20, most: 400 };
// Learning rates are grouped into at most this many bands per optimizer: one colour, one legend
// entry and one trace each, so a 100-rate sweep still has a legend one can read and click.
const MAX_BANDS = 8;
// As in service/plots.py: viridis (without its pale end) over learning rates, tab10 over
// optimizers, one line style per optimizer, and a loss axis that stops this factor above the
// highest loss of a run that did not diverge (a diverged run climbs to 1e6 times its start).
const VIRIDIS = ["#440154", "#472c7a", "#3c508b", "#2d708e", "#228d8d", "#24aa83", "#52c569", "#9bd93c"];
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const DASHES = { sgd: "solid", momentum: "dash", adam: "dot" };
const SPARE_DASHES = ["dashdot", "longdash", "longdashdot"];
const HEADROOM = 100;
const PLOTLY_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
const RUN_HOVER = "run %{customdata[0]} · %{customdata[3]}<br>lr %{customdata[1]} · seed %{customdata[2]}";

// SVG draws a few thousand points sooner than WebGL can start (a WebGL context takes some 300 ms),
// and WebGL is faster above that, but only on a GPU: a browser without one (a VM, a headless CI)
// draws WebGL in software, where 10,000 curves of 20 points take 13 s to appear against 1.5 s as
// SVG. Its markers stay quick there (20,000 in 0.3 s against 1.9 s as SVG).
const WEBGL_FROM = 5000; // points in a chart
let softwareOnly = null;

function traceType(points, { lines }) {
  if (points < WEBGL_FROM) return "scatter";
  softwareOnly ??= softwareWebGL();
  return lines && softwareOnly ? "scatter" : "scattergl";
}

const pointsPerCurve = (runs) =>
  Math.min(CURVE_POINTS.most, Math.max(CURVE_POINTS.fewest, Math.floor(POINT_BUDGET / Math.max(1, runs))));

let plotlyLoaded = null;
let drawing = false;
let drawAgain = false; // asked for while drawing: the runs may have moved on since that draw's data came
let drawingMs = 0; // how long the last drawing took, fetching included

// Draws (or redraws, keeping zoom, scale and hidden groups) both charts of the sweep `section`.
async function drawCharts(section) {
  const holder = $("[data-charts]", section);
  if (!holder) return;
  if (drawing) {
    drawAgain = true;
    return;
  }
  drawing = true;
  const started = performance.now();
  const sweepId = section.dataset.sweepId;
  const nRuns = Number(holder.dataset.nRuns);
  const lines = { optimum: numberOrNull(holder.dataset.optimum), limit: numberOrNull(holder.dataset.stabilityLimit) };
  const plotly = loadPlotly(holder.dataset.plotly);
  // Asked for before plotly.js has started (a second or two), so the API works on it meanwhile. Each
  // curve comes with its run's final and best loss: the final-loss chart needs nothing else.
  const curves = api(`/sweeps/${sweepId}/losses?points=${pointsPerCurve(nRuns)}`).then(json);
  const runs = curves.then((body) => body.runs.map((run) => ({ ...run, id: run.run_id })));
  const draw = async (name, data, figure) => {
    const [Plotly, answer] = await Promise.all([plotly, data]);
    const chart = $(`[data-chart="${name}"]`, holder);
    if (!chart.classList.contains("js-plotly-plot")) chart.replaceChildren(); // the "Loading…" line
    const { data: traces, layout } = figure(answer, lines, chart.layout);
    await Plotly.react(chart, traces, layout, PLOTLY_CONFIG);
    await painted();
    markOnce("gradsweep:first-chart-drawn");
  };
  try {
    await Promise.all([draw("curves", curves, curvesFigure), draw("final", runs, finalFigure)]);
    markOnce("gradsweep:charts-drawn");
  } catch (error) {
    // The banner or the token form says what went wrong with the API; a chart already drawn stays.
    if (!(error instanceof Unauthorized) && !$("[data-problem]").textContent) showProblem(`Charts: ${error.message}`);
  } finally {
    drawing = false;
    drawingMs = performance.now() - started;
    if (drawAgain) {
      drawAgain = false;
      drawCharts(section);
    }
  }
}

function loadPlotly(src) {
  plotlyLoaded ??= new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src });
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => {
      plotlyLoaded = null;
      reject(new Error("plotly.js did not load"));
    };
    document.head.append(script);
  });
  return plotlyLoaded;
}

async function json(response) {
  if (!response.ok) throw new Error(`the API answered ${response.status}`);
  return response.json();
}

// ---- loss against epoch: each run a line, a trace per optimizer and learning-rate band ----

// `curves` as GET /sweeps/{id}/losses gives them; a point's epoch is its index in the run's losses
// (0: the loss before the first update), as in the PNG. In a trace the runs follow one another,
// separated by null, and each point carries its run, for the hover to name.
function curvesFigure({ runs: curves }, { optimum }, shown) {
  const bandOf = learningRateBands(curves.map((curve) => curve.learning_rate));
  const dashes = optimizerStyles(curves.map((curve) => curve.optimizer), DASHES, SPARE_DASHES);
  const traces = new Map();
  const stops = { x: [], y: [], customdata: [] };
  let [lowest, highest, top] = [Infinity, 0, 0];
  for (const curve of [...curves].sort(byGroup(dashes))) {
    const { losses } = curve;
    if (losses.length === 0) continue;
    const band = bandOf.get(curve.learning_rate);
    const key = `${curve.optimizer} ${band.label}`;
    if (!traces.has(key)) {
      traces.set(key, { mode: "lines", name: `${curve.optimizer}, ${band.label}`, runs: 0,
        x: [], y: [], customdata: [], line: { color: band.color, dash: dashes[curve.optimizer], width: 1 },
        hovertemplate: `${RUN_HOVER}<br>epoch %{x} · loss %{y:.3e}<extra></extra>` });
    }
    const trace = traces.get(key);
    const run = [curve.run_id, formatLearningRate(curve.learning_rate), curve.seed, curve.optimizer];
    const epochs = curve.sampled_epochs ?? losses.map((_, i) => i);
    for (let i = 0; i < losses.length; i++) {
      trace.x.push(epochs[i]);
      trace.y.push(losses[i]);
      trace.customdata.push(run);
      if (losses[i] > 0) lowest = Math.min(lowest, losses[i]);
      top = Math.max(top, losses[i]);
    }
    trace.x.push(null);
    trace.y.push(null);
    trace.customdata.push(null);
    trace.runs += 1;
    const diverged = curve.status === "diverged";
    highest = Math.max(highest, diverged ? losses[0] : Math.max(...losses));
    if (diverged) {
      stops.x.push(epochs.at(-1));
      stops.y.push(losses.at(-1));
      stops.customdata.push(run);
    }
  }
  const type = traceType([...traces.values()].reduce((sum, trace) => sum + trace.x.length, 0), { lines: true });
  // Thousands of lines in one colour make a solid band; fainter lines show where most runs go.
  const data = [...traces.values()].map(({ runs, ...trace }) =>
    ({ ...trace, type, opacity: Math.max(0.2, Math.min(1, 10 / Math.sqrt(runs))) }));
  const ceiling = HEADROOM * highest;
  if (stops.x.length) {
    data.push({ type: traceType(stops.x.length, { lines: false }), mode: "markers",
      name: "diverged: × where training stopped", x: stops.x,
      y: stops.y.map((loss) => Math.min(loss, ceiling)), customdata: stops.customdata,
      marker: { symbol: "x", size: 9, color: "#d62728" },
      hovertemplate: `${RUN_HOVER}<br>diverged after epoch %{x}<extra></extra>` });
  }
  // An explicit range only when a diverged run would otherwise flatten the others against the bottom.
  const range = (scale) => {
    if (top <= ceiling || !Number.isFinite(lowest)) return { "yaxis.autorange": true, "yaxis.range": null };
    return { "yaxis.range": scale === "log" ? [Math.log10(lowest) - 0.2, Math.log10(ceiling)] : [0, ceiling] };
  };
  const scale = shown?.yaxis?.type ?? "log";
  const { "yaxis.range": yRange, "yaxis.autorange": autorange } = range(scale);
  const scaleButton = (label) => ({ label, method: "relayout", args: [{ "yaxis.type": label, ...range(label) }] });
  return {
    data,
    layout: {
      uirevision: "sweep", // a redraw keeps what the reader zoomed, scaled or hid
      margin: { l: 70, r: 10, t: 40, b: 50 },
      hovermode: "closest",
      xaxis: { title: { text: "epoch" }, zeroline: false },
      yaxis: { title: { text: "training loss (MSE)" }, type: scale, exponentformat: "e",
        ...(yRange ? { range: yRange } : { autorange }) },
      shapes: optimum === null ? [] : [horizontalLine(optimum, "least-squares optimum")],
      updatemenus: [{ type: "buttons", direction: "right", x: 0, xanchor: "left", y: 1.02, yanchor: "bottom",
        pad: { t: 0, b: 0 }, active: scale === "log" ? 0 : 1, buttons: [scaleButton("log"), scaleButton("linear")] }],
    },
  };
}

// Sorted learning rates cut into at most MAX_BANDS runs of neighbours: rate → { label, color }.
function learningRateBands(rates) {
  const distinct = [...new Set(rates)].sort((a, b) => a - b);
  const count = Math.min(MAX_BANDS, distinct.length);
  const bands = Array.from({ length: count }, (_, band) => {
    const members = distinct.filter((_, i) => Math.floor((i * count) / distinct.length) === band);
    const [low, high] = [formatLearningRate(members[0]), formatLearningRate(members.at(-1))];
    const color = VIRIDIS[count === 1 ? 3 : Math.round((band * (VIRIDIS.length - 1)) / (count - 1))];
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

function byGroup(styles) {
  const order = Object.keys(styles);
  return (a, b) => order.indexOf(a.optimizer) - order.indexOf(b.optimizer)
    || a.learning_rate - b.learning_rate || a.seed - b.seed;
}

// ---- final and best loss against learning rate: a point per run ----

// As the PNG: a diverged run's last loss only says when it was stopped, so it is a × on the top
// edge (on a second, hidden y axis from 0 to 1) rather than a loss; its best loss is real.
function finalFigure(runs, { optimum, limit }) {
  const colors = optimizerStyles(runs.map((run) => run.optimizer), {}, TAB10);
  const styles = optimizerStyles(runs.map((run) => run.optimizer), DASHES, SPARE_DASHES);
  const point = (run) => [run.id, formatLearningRate(run.learning_rate), run.seed, run.optimizer];
  const type = traceType(2 * runs.length, { lines: false });
  const data = [];
  for (const optimizer of Object.keys(styles)) {
    const color = colors[optimizer];
    const mine = runs.filter((run) => run.optimizer === optimizer);
    const finished = mine.filter((run) => run.final_loss !== null && run.status !== "diverged");
    const best = mine.filter((run) => run.best_loss !== null);
    const group = { legendgroup: optimizer, hoverlabel: { bgcolor: color } };
    data.push({ ...group, type, mode: "markers", name: `${optimizer}: final loss`,
      x: finished.map((run) => run.learning_rate), y: finished.map((run) => run.final_loss),
      customdata: finished.map(point), marker: { color, size: 6, opacity: 0.8 },
      hovertemplate: `${RUN_HOVER}<br>final loss %{y:.3e}<extra></extra>` });
    data.push({ ...group, type, mode: "markers", name: `${optimizer}: best loss`,
      x: best.map((run) => run.learning_rate), y: best.map((run) => run.best_loss), customdata: best.map(point),
      marker: { color, size: 8, symbol: "circle-open" },
      hovertemplate: `${RUN_HOVER}<br>best loss %{y:.3e}<extra></extra>` });
    const [rates, means] = meanByRate(finished);
    data.push({ ...group, type: "scatter", mode: "lines", name: `${optimizer}: mean final loss`, x: rates, y: means,
      line: { color, dash: styles[optimizer], width: 1.6 }, hovertemplate: "lr %{x:.4~g} · mean final loss %{y:.3e}<extra></extra>" });
  }
  const diverged = runs.filter((run) => run.status === "diverged");
  if (diverged.length) {
    data.push({ type, mode: "markers", name: "diverged (final loss off the chart)", yaxis: "y2",
      x: diverged.map((run) => run.learning_rate), y: diverged.map(() => 0.97), customdata: diverged.map(point),
      text: diverged.map((run) => run.diverged_at ?? "?"), marker: { symbol: "x", size: 10, color: "#d62728" },
      hovertemplate: `${RUN_HOVER}<br>diverged after epoch %{text}<extra></extra>` });
  }
  const shapes = [];
  if (optimum !== null) shapes.push(horizontalLine(optimum, "least-squares optimum"));
  if (limit !== null) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: limit, x1: limit, y0: 0, y1: 1, showlegend: true,
      name: "GD stability limit 2/λmax", line: { color: "#000", dash: "dot", width: 1.5 } });
  }
  return {
    data,
    layout: {
      uirevision: "sweep",
      margin: { l: 70, r: 10, t: 40, b: 50 },
      hovermode: "closest",
      xaxis: { title: { text: "learning rate" }, type: "log", exponentformat: "e" },
      yaxis: { title: { text: "loss" }, type: "log", exponentformat: "e" },
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
      shapes,
    },
  };
}

// The mean final loss of each learning rate, in order.
function meanByRate(runs) {
  const sums = new Map();
  for (const run of runs) {
    const [sum, count] = sums.get(run.learning_rate) ?? [0, 0];
    sums.set(run.learning_rate, [sum + run.final_loss, count + 1]);
  }
  const rates = [...sums.keys()].sort((a, b) => a - b);
  return [rates, rates.map((rate) => sums.get(rate)[0] / sums.get(rate)[1])];
}

function horizontalLine(y, name) {
  return { type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: y, y1: y, showlegend: true, name,
    line: { color: "#000", dash: "dash", width: 1.2 } };
}

// ---- small helpers ----

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

// As the server's format_learning_rate (Python's "{:.4g}"): 0.001, 0.01334, 1e-05.
function formatLearningRate(value) {
  const [mantissa, exponent] = value.toExponential(3).split("e");
  if (Number(exponent) < -4 || Number(exponent) >= 4) {
    return `${mantissa.replace(/\.?0+$/, "")}e${exponent.replace(/^([+-])(\d)$/, "$10$2")}`;
  }
  return String(Number(value.toPrecision(4)));
}
