// The dashboard's page script. The server renders every page; this module puts a page's content in
// place once the API has its token (api.js asks for it), keeps pages up to date, pages and sorts the
// runs table (the server does the sorting), and runs the buttons. charts.js draws the sweep page's charts.

import { $, $$, Unauthorized, TOKEN_NEEDED, api, askForToken, fetchFragment, showProblem, token } from "./api.js";
import { drawCharts, drawRunChart, lastDrawingMs } from "./charts.js";

const POLL_MS = 2500;
const PLOT_MS = 10_000; // a running sweep's charts are redrawn at most this often: each fetches every curve

// This URL again, with the token, as the server's rendering of the page's content alone.
async function fetchPage() {
  const response = await fetchFragment(location.pathname + location.search);
  return new DOMParser().parseFromString(await response.text(), "text/html");
}

// ---- the page's content, once the API has a token ----

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
  const jump = event.target.closest("form[data-runs-form]");
  if (jump) {
    event.preventDefault();
    const given = [...new FormData(jump)].filter(([, value]) => value !== ""); // an empty bound is no bound
    const search = `?${new URLSearchParams(given)}`;
    showRuns(jump.closest("[data-sweep-id]"), search).catch(() => {});
    return;
  }
  const form = event.target.closest("[data-token-form]");
  if (!form) return;
  event.preventDefault();
  token.set(form.elements.token.value.trim());
  form.reset();
  form.hidden = true;
  loadContent();
});

// ---- keeping a page up to date ----

// One poll at a time: runs `step` every POLL_MS for as long as it returns true, and through failures
// (the banner says why); stopped while the API waits for a token.
const polling = {
  timer: null,
  stop() {
    clearTimeout(polling.timer);
  },
  every(step) {
    polling.stop();
    polling.timer = setTimeout(async () => {
      let again = true;
      try {
        again = await step();
      } catch (error) {
        if (error instanceof Unauthorized) return;
      }
      if (again) polling.every(step);
    }, POLL_MS);
  },
};
document.addEventListener(TOKEN_NEEDED, polling.stop);

// Sweeps and run pages: put in the fresh rendering of every [data-live] part.
async function refreshLiveParts() {
  const page = await fetchPage();
  for (const fresh of $$("[data-live]", page)) document.getElementById(fresh.id)?.replaceWith(fresh);
  $$("img[data-plot]").forEach((img) => loadPlot(img, true));
  const runChart = $("[data-run-chart]");
  if (runChart) await drawRunChart(runChart);
  return $("[data-refresh]", page) !== null;
}

// The sweep page: counts from the sweep's summary, the runs table's current page again, the charts now and then.
async function refreshSweep(section) {
  const response = await api(`/sweeps/${section.dataset.sweepId}`);
  if (!response.ok) return false;
  const sweep = await response.json();
  $("[data-sweep-status]", section).textContent = sweep.status;
  for (const [status, count] of Object.entries(sweep.counts)) {
    const counter = $(`[data-count="${status}"]`, section);
    if (counter) counter.textContent = count;
  }
  setProgress($("[data-progress]", section), sweep.counts, sweep.n_runs, sweep.planned_runs);
  for (const button of $$("button[data-action]", section)) {
    button.disabled = !button.dataset.when.split(" ").some((status) => sweep.counts[status] > 0);
  }
  for (const button of $$("button[data-delete]", section)) button.disabled = sweep.counts.running > 0;
  await showRuns(section, location.search, { rowsOnly: true });

  // Redrawn at most every PLOT_MS while runs go on, and once more when the last one has ended; a big
  // sweep's charts take seconds to draw, and the page spends at most a fifth of its time on them.
  const active = sweep.status !== "finished";
  const every = Math.max(PLOT_MS, 5 * lastDrawingMs());
  if (!active || Date.now() - Number(section.dataset.drawnAt ?? 0) >= every) {
    section.dataset.drawnAt = Date.now();
    drawCharts(section);
  }
  return active;
}

// `planned`: the runs the sweep will have (a Bayesian search's run cap × repeats from its first wave), of which
// `made` exist so far.
function setProgress(progress, counts, made, planned = made) {
  const total = Math.max(planned, made);
  const done = made - counts.queued - counts.running;
  for (const segment of $$("[data-segment]", progress)) {
    segment.style.width = `${(100 * (counts[segment.dataset.segment] ?? 0)) / total}%`;
  }
  $("[role=progressbar]", progress).setAttribute("aria-valuenow", done);
  $("[role=progressbar]", progress).setAttribute("aria-valuemax", total);
  $("[data-progress-label]", progress).textContent = `${Math.floor((100 * done) / total)}% · ${done}/${total}`;
}

// ---- plot images ----

// Without a token an image is just its URL; with one it is fetched with the header, as a blob.
// `fresh` adds a query that no cache has seen, so the server draws the plot again.
async function loadPlot(img, fresh = false) {
  let url = img.dataset.plot;
  if (fresh) url += `${url.includes("?") ? "&" : "?"}t=${Date.now()}`;
  if (!token.get()) {
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

// ---- the runs table: a page at a time, in the server's order ----

const runsTable = { asked: 0 }; // the newest request wins: a poll must not put back the page a click has just left

// Puts in the table for `search` (the sweep page's own query: page, sort, order), and shows it in the URL.
// `rowsOnly`: the same page again, as a poll asks for it, leaving the pager (and a page number being typed) be.
async function showRuns(section, search, { rowsOnly = false } = {}) {
  const request = ++runsTable.asked;
  const response = await fetchFragment(`/ui/sweeps/${section.dataset.sweepId}/runs${search}`);
  if (!response.ok || request !== runsTable.asked) return;
  const fresh = $("[data-runs-table]", new DOMParser().parseFromString(await response.text(), "text/html"));
  if (!fresh || request !== runsTable.asked) return;
  const part = rowsOnly ? "tbody" : "[data-runs-table]";
  $(part, section).replaceWith(rowsOnly ? $("tbody", fresh) : fresh);
  if (search !== location.search) history.replaceState(history.state, "", location.pathname + search);
}

// ---- clicks: the runs table's pages and sorts, the sweep's buttons, downloads that need the token ----

document.addEventListener("click", async (event) => {
  const runsLink = event.target.closest("a[data-runs-link]");
  if (runsLink) {
    event.preventDefault();
    showRuns(runsLink.closest("[data-sweep-id]"), new URL(runsLink.href).search).catch(() => {});
    return;
  }

  const action = event.target.closest("button[data-action]");
  if (action) {
    const section = action.closest("[data-sweep-id]");
    action.disabled = true;
    try {
      await api(action.dataset.action, { method: "POST" });
      if (await refreshSweep(section)) polling.every(() => refreshSweep(section));
    } catch (error) {
      action.disabled = false;
    }
    return;
  }

  // Deleting a sweep leaves its page for the list; revoking a token reloads the tokens page.
  const remove = event.target.closest("button[data-delete], button[data-revoke]");
  if (remove) {
    if (!window.confirm(remove.dataset.confirm)) return;
    remove.disabled = true;
    const url = remove.dataset.delete ?? remove.dataset.revoke;
    const response = await api(url, { method: "DELETE" }).catch(() => null);
    if (response?.ok) return remove.dataset.delete ? location.assign("/") : loadContent();
    if (response) showProblem(await response.json().then((body) => body.detail, () => response.statusText));
    remove.disabled = false;
    return;
  }

  const download = event.target.closest("a[data-download]");
  if (download && token.get()) {
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
    token.forget();
    location.reload();
  }
});

// ---- start ----

function start() {
  $("[data-forget-token]").hidden = !token.get();
  $$("img[data-plot]").forEach((img) => loadPlot(img));
  const sweep = $("[data-sweep-id]");
  if (sweep) {
    performance.mark("gradsweep:table-ready"); // rendered by the server, and its links work from now on
    sweep.dataset.drawnAt = Date.now();
    drawCharts(sweep);
    if (sweep.dataset.active === "true") polling.every(() => refreshSweep(sweep));
  } else if ($("[data-refresh]")) {
    polling.every(refreshLiveParts);
  }
  const runChart = $("[data-run-chart]");
  if (runChart) drawRunChart(runChart).catch((error) => {
    if (!(error instanceof Unauthorized)) showProblem(`Chart: ${error.message}`);
  });
}

// A new token: its secret is shown once, in the page, and the table is fetched again.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-token-create]");
  if (!form) return;
  event.preventDefault();
  const error = $("[data-token-create-error]", form);
  const body = JSON.stringify({ name: form.elements.name.value, role: form.elements.role.value });
  const response = await api("/tokens", { method: "POST", headers: { "Content-Type": "application/json" }, body })
    .catch(() => null);
  if (!response) return;
  const answer = await response.json();
  error.hidden = response.ok;
  if (!response.ok) {
    const detail = Array.isArray(answer.detail) ? answer.detail.map((e) => e.msg).join("; ") : answer.detail;
    error.textContent = `Not created: ${detail}`;
    return;
  }
  const rows = $("tbody", (await fetchPage()).body);
  if (rows) $("[data-tokens] tbody").replaceWith(rows);
  $("[data-token-secret-value]", form).textContent = answer.token;
  $("[data-token-secret]", form).hidden = false;
  form.reset();
});

// A module runs once the document is parsed, before DOMContentLoaded.
if (!$("#content").hasAttribute("data-shell")) start();
else if (token.get()) loadContent();
else askForToken("");
