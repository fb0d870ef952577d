// The dashboard's only script. The server renders every page; this file asks for the API
// token when the API needs one, keeps pages up to date, sorts tables, and runs the buttons.
"use strict";

const TOKEN_KEY = "gradsweep.token";
const FRAGMENT_HEADER = "X-Gradsweep-Fragment";
const POLL_MS = 2500;
const PLOT_MS = 10_000; // a sweep's plots are redrawn at most this often while it runs: each is a matplotlib render

class Unauthorized extends Error {}

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
const storedToken = () => sessionStorage.getItem(TOKEN_KEY);

// ---- the API, with the token and visible errors ----

async function api(path, options = {}) {
  const token = storedToken();
  const headers = { ...options.headers, ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    showProblem("Cannot reach the gradsweep API. Is it running?");
    throw error;
  }
  if (response.status === 401) {
    askForToken(token ? "The API refused that token. Enter it again." : "");
    throw new Unauthorized();
  }
  if (response.status >= 500) {
    const detail = await response.json().then((body) => body.detail, () => response.statusText);
    showProblem(`The API answered ${response.status}: ${detail}`);
    throw new Error(detail);
  }
  showProblem(null);
  return response;
}

function showProblem(message) {
  const banner = $("[data-problem]");
  banner.textContent = message ?? "";
  banner.hidden = !message;
}

// This URL again, with the token, as the server's rendering of the page's content alone.
async function fetchPage() {
  const response = await api(location.pathname + location.search, { headers: { [FRAGMENT_HEADER]: "1" } });
  return new DOMParser().parseFromString(await response.text(), "text/html");
}

// ---- the token (only asked for when the API needs one) ----

function askForToken(error) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling();
  const form = $("[data-token-form]");
  $("[data-token-error]").textContent = error;
  $("[data-token-error]").hidden = !error;
  form.hidden = false;
  $("#content").hidden = true;
  $("[data-forget-token]").hidden = true;
  form.elements.token.focus();
}

async function loadContent() {
  try {
    const page = await fetchPage();
    document.title = page.title;
    $("#content").replaceChildren(...page.body.childNodes);
    $("#content").hidden = false;
    start();
  } catch (error) {
    if (!(error instanceof Unauthorized)) setTimeout(loadContent, POLL_MS);
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target.closest("[data-token-form]");
  if (!form) return;
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, form.elements.token.value.trim());
  form.reset();
  form.hidden = true;
  loadContent();
});

// ---- keeping a page up to date ----

let timer = null;

function stopPolling() {
  clearTimeout(timer);
}

// Runs `step` every POLL_MS for as long as it returns true, and through failures (the banner says why).
function poll(step) {
  stopPolling();
  timer = setTimeout(async () => {
    let again = true;
    try {
      again = await step();
    } catch (error) {
      if (error instanceof Unauthorized) return;
    }
    if (again) poll(step);
  }, POLL_MS);
}

// Sweeps and run pages: put in the fresh rendering of every [data-live] part.
async function refreshLiveParts() {
  const page = await fetchPage();
  for (const fresh of $$("[data-live]", page)) document.getElementById(fresh.id)?.replaceWith(fresh);
  $$("img[data-plot]").forEach((img) => loadPlot(img, true));
  return $("[data-refresh]", page) !== null;
}

// The sweep page: from the JSON API, so that the table keeps its rows and its order.
async function refreshSweep(section) {
  const response = await api(`/sweeps/${section.dataset.sweepId}`);
  if (!response.ok) return false;
  const sweep = await response.json();
  // Every run when the counts have changed (a run started or ended), else only the running ones.
  const counts = JSON.stringify(sweep.counts);
  const runs = await sweepRuns(section.dataset.sweepId, counts === section.dataset.counts ? "&status=running" : "");
  if (runs === null) return false;
  section.dataset.counts = counts;
  $("[data-sweep-status]", section).textContent = sweep.status;
  for (const [status, count] of Object.entries(sweep.counts)) {
    const counter = $(`[data-count="${status}"]`, section);
    if (counter) counter.textContent = count;
  }
  setProgress($("[data-progress]", section), sweep.counts, sweep.n_runs);
  for (const button of $$("button[data-action]", section)) {
    button.disabled = !button.dataset.when.split(" ").some((status) => sweep.counts[status] > 0);
  }
  for (const button of $$("button[data-delete]", section)) button.disabled = sweep.counts.running > 0;
  const rows = new Map($$("tr[data-run-id]", section).map((row) => [Number(row.dataset.runId), row]));
  for (const run of runs) if (rows.has(run.id)) updateRow(rows.get(run.id), run);
  resort($("table[data-sortable]", section));

  // Ask for the plots again only when a curve has grown or a run has ended, and once more at the end.
  const active = sweep.status !== "finished";
  const signature = counts + runs.map((run) => `${run.id}:${run.epochs_done}`).join();
  const due = !active || Date.now() - Number(section.dataset.plottedAt ?? 0) >= PLOT_MS;
  if (signature !== section.dataset.signature && due) {
    section.dataset.signature = signature;
    section.dataset.plottedAt = Date.now();
    $$("img[data-plot]", section).forEach((img) => loadPlot(img, true));
  }
  return active;
}

// The sweep's runs (that match `filter`, a query string), from GET /sweeps/{id}/runs a page at a time;
// null if a page failed.
async function sweepRuns(sweepId, filter = "") {
  const runs = [];
  for (;;) {
    const response = await api(`/sweeps/${sweepId}/runs?limit=1000&offset=${runs.length}${filter}`);
    if (!response.ok) return null;
    const page = await response.json();
    runs.push(...page.runs);
    if (page.runs.length === 0 || runs.length >= page.total) return runs;
  }
}

function setProgress(progress, counts, total) {
  const done = total - counts.queued - counts.running;
  for (const segment of $$("[data-segment]", progress)) {
    segment.style.width = `${(100 * counts[segment.dataset.segment]) / total}%`;
  }
  $("[role=progressbar]", progress).setAttribute("aria-valuenow", done);
  $("[data-progress-label]", progress).textContent = `${Math.floor((100 * done) / total)}% · ${done}/${total}`;
}

function updateRow(row, run) {
  const set = (column, text, value = text) => {
    const cell = $(`[data-col="${column}"]`, row);
    cell.textContent = text;
    if (cell.hasAttribute("data-value")) cell.dataset.value = value ?? "";
    return cell;
  };
  const badge = document.createElement("span");
  badge.className = `badge status-${run.status}`;
  badge.textContent = run.status;
  set("status", "", run.status).append(badge);
  set("epochs_done", String(run.epochs_done));
  set("final_loss", formatLoss(run.final_loss), run.final_loss);
  set("best_loss", formatLoss(run.best_loss), run.best_loss);
  set("worker", run.worker ?? "—", run.worker);
}

// As the server's format_loss: 1.234e-05.
function formatLoss(value) {
  if (value === null || value === undefined) return "—";
  return value.toExponential(3).replace(/e([+-])(\d)$/, "e$10$2");
}

// ---- plot images ----

// Without a token an image is just its URL; with one it is fetched with the header, as a blob.
// `fresh` adds a query that no cache has seen, so the server draws the plot again.
async function loadPlot(img, fresh = false) {
  let url = img.dataset.plot;
  if (fresh) url += `${url.includes("?") ? "&" : "?"}t=${Date.now()}`;
  if (!storedToken()) {
    if (fresh || !img.getAttribute("src")) img.src = url;
    return;
  }
  try {
    const response = await api(url);
    if (!response.ok) return;
    const old = img.src;
    img.src = URL.createObjectURL(await response.blob());
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  } catch (error) {
    // The banner or the token form already says what went wrong; the old image stays.
  }
}

// ---- sortable tables ----

function sortTable(table, column, direction) {
  const header = table.tHead.rows[0].cells[column];
  const numeric = header.dataset.type === "number";
  const key = (row) => {
    const cell = row.cells[column];
    const text = cell.dataset.value ?? cell.textContent.trim();
    return numeric ? (text === "" ? NaN : Number(text)) : text;
  };
  const sign = direction === "ascending" ? 1 : -1;
  const rows = [...table.tBodies[0].rows].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    if (!numeric) return sign * x.localeCompare(y, undefined, { numeric: true });
    if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y); // blanks last, either way
    return sign * (x - y);
  });
  table.tBodies[0].append(...rows);
  for (const cell of table.tHead.rows[0].cells) cell.removeAttribute("aria-sort");
  header.setAttribute("aria-sort", direction);
}

function resort(table) {
  const header = table && $("th[aria-sort]", table);
  if (header) sortTable(table, header.cellIndex, header.getAttribute("aria-sort"));
}

// ---- clicks: sorting, the sweep's buttons, downloads that need the token ----

document.addEventListener("click", async (event) => {
  const sorter = event.target.closest("table[data-sortable] th button");
  if (sorter) {
    const header = sorter.closest("th");
    const direction = header.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    sortTable(header.closest("table"), header.cellIndex, direction);
    return;
  }

  const action = event.target.closest("button[data-action]");
  if (action) {
    const section = action.closest("[data-sweep-id]");
    action.disabled = true;
    try {
      await api(action.dataset.action, { method: "POST" });
      if (await refreshSweep(section)) poll(() => refreshSweep(section));
    } catch (error) {
      action.disabled = false;
    }
    return;
  }

  const remove = event.target.closest("button[data-delete]");
  if (remove) {
    if (!window.confirm(remove.dataset.confirm)) return;
    remove.disabled = true;
    const response = await api(remove.dataset.delete, { method: "DELETE" }).catch(() => null);
    if (response?.ok) return location.assign("/");
    if (response) showProblem(await response.json().then((body) => body.detail, () => response.statusText));
    remove.disabled = false;
    return;
  }

  const download = event.target.closest("a[data-download]");
  if (download && storedToken()) {
    event.preventDefault();
    const response = await api(download.href).catch(() => null);
    if (!response?.ok) return;
    const link = Object.assign(document.createElement("a"), {
      href: URL.createObjectURL(await response.blob()),
      download: download.getAttribute("download"),
    });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    return;
  }

  if (event.target.closest("[data-forget-token]")) {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  }
});

// ---- start ----

function start() {
  $("[data-forget-token]").hidden = !storedToken();
  $$("img[data-plot]").forEach((img) => loadPlot(img));
  const sweep = $("[data-sweep-id]");
  if (sweep) {
    if (sweep.dataset.active === "true") poll(() => refreshSweep(sweep));
  } else if ($("[data-refresh]")) {
    poll(refreshLiveParts);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (!$("#content").hasAttribute("data-shell")) start();
  else if (storedToken()) loadContent();
  else askForToken("");
});
