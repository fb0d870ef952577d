// The base every dashboard script imports: the server's constants, the API token, requests to the API
// with that token and with visible errors, and the small DOM helpers.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

// What the server knows and the scripts need (colours, field names, limits): sent once, in every page
// (service/api/dashboard/constants.py).
export const constants = JSON.parse($("#gradsweep-constants").textContent);

// ---- the token (only asked for when the API needs one), kept in this tab's sessionStorage ----

const TOKEN_KEY = "gradsweep.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  forget: () => sessionStorage.removeItem(TOKEN_KEY),
};

// Dispatched on `document` when the API wants a token: whatever polls the API stops until one is given.
export const TOKEN_NEEDED = "gradsweep:token-needed";

export function askForToken(error) {
  token.forget();
  document.dispatchEvent(new Event(TOKEN_NEEDED));
  const form = $("[data-token-form]");
  $("[data-token-error]").textContent = error;
  $("[data-token-error]").hidden = !error;
  form.hidden = false;
  $("#content").hidden = true;
  $("[data-forget-token]").hidden = true;
  form.elements.token.focus();
}

// ---- the API, with the token and visible errors ----

export class Unauthorized extends Error {}

export async function api(path, options = {}) {
  const stored = token.get();
  const headers = { ...options.headers, ...(stored ? { Authorization: `Bearer ${stored}` } : {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (error) {
    showProblem("Cannot reach the gradsweep API. Is it running?");
    throw error;
  }
  if (response.status === 401) {
    askForToken(stored ? "The API refused that token. Enter it again." : "");
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

// A dashboard page's content alone, as the server renders it for the scripts (see routes.py).
export function fetchFragment(path) {
  return api(path, { headers: { [constants.fragment_header]: "1" } });
}

export function showProblem(message) {
  const banner = $("[data-problem]");
  banner.textContent = message ?? "";
  banner.hidden = !message;
}
