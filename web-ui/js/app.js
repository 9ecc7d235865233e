// Sluice dashboard: the shell. Signs in with the admin token (kept in this tab's
// sessionStorage only), talks to the public REST API, follows the live feed
// (/api/v1/live, server-sent events read through fetch so the token goes in a header),
// and shows one page at a time. Pages are modules with `show()`, `refresh()` and
// optional `onTick(tick)` / `onEvent(event)`.
import * as fleet from "./fleet.js";
import * as traffic from "./traffic.js";
import * as backends from "./backends.js";
import * as events from "./events.js";
import * as config from "./config.js";

const pages = { fleet, traffic, backends, events, config };
const statusBox = document.getElementById("status");
const liveBadge = document.getElementById("live");
const dialog = document.getElementById("login-dialog");

// A link may carry the token in its fragment (`/#token=…`): the fragment never reaches
// the server; the token is kept for this tab and removed from the address bar.
const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) {
  sessionStorage.setItem("sluice.token", fromLink);
  history.replaceState(null, "", location.pathname + location.search + "#fleet");
}
let token = sessionStorage.getItem("sluice.token") || "";

/** An API error in words: the server's message, or what went wrong on the way. */
export class ApiError extends Error {}

/**
 * Calls the API; resolves to `{ body, etag, status }`; throws ApiError with the
 * server's own message on failure.
 */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  let response;
  try {
    response = await fetch("/api/v1" + path, {
      method,
      headers: {
        Authorization: "Bearer " + token,
        "X-Sluice-Actor": "dashboard",
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    throw new ApiError("The control plane cannot be reached (" + err.message + ").");
  }
  let payload = null;
  const text = await response.text();
  try { payload = text ? JSON.parse(text) : null; } catch { payload = text; }
  if (response.status === 401) {
    signIn("The admin token was refused.");
    throw new ApiError("The admin token was refused.");
  }
  if (!response.ok) {
    const detail = payload && payload.message ? payload.message : `HTTP ${response.status}`;
    const fields = payload && Array.isArray(payload.errors)
      ? payload.errors.map((e) => `${e.field}: ${e.message}`).join("; ") : "";
    throw new ApiError(`${method} ${path} failed: ${detail}${fields && fields !== detail ? " (" + fields + ")" : ""}`);
  }
  return { body: payload, etag: response.headers.get("ETag"), status: response.status };
}

/** Shows a message for everyone to read (errors stay until the next success). */
export function report(message, kind = "bad") {
  statusBox.textContent = message;
  statusBox.className = kind;
  statusBox.hidden = !message;
}

/** Runs `fn`, showing any error it throws in words. */
export async function guarded(fn) {
  try {
    const result = await fn();
    if (statusBox.className === "bad") report("");
    return result;
  } catch (err) {
    report(err.message || String(err));
    return undefined;
  }
}

function signIn(problem) {
  token = "";
  sessionStorage.removeItem("sluice.token");
  document.getElementById("login-error").textContent = problem || "";
  document.getElementById("logout").hidden = true;
  if (!dialog.open) dialog.showModal();
}

document.getElementById("login").addEventListener("submit", () => {
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("sluice.token", token);
  start();
});
document.getElementById("logout").addEventListener("click", () => {
  stopLive();
  signIn("");
});

// ---- navigation ----
let current = null;
function route() {
  const name = (location.hash.slice(1).split("&")[0]) || "fleet";
  const page = pages[name] ? name : "fleet";
  for (const [n] of Object.entries(pages)) {
    document.getElementById("page-" + n).hidden = n !== page;
  }
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  current = page;
  if (token) guarded(() => pages[page].show());
}
window.addEventListener("hashchange", route);

/** The newest version, shown in the header and used by pages. */
export let newest = 0;
export async function refreshVersion() {
  const r = await api("/snapshots?limit=1");
  newest = r.body.length ? r.body[0].version : 0;
  document.getElementById("version").textContent = "configuration v" + newest;
  return newest;
}

// ---- live feed ----
let liveAbort = null;
let retryMs = 1000;
function stopLive() {
  if (liveAbort) liveAbort.abort();
  liveAbort = null;
}

async function follow() {
  stopLive();
  const abort = new AbortController();
  liveAbort = abort;
  try {
    const response = await fetch("/api/v1/live", {
      headers: { Authorization: "Bearer " + token },
      signal: abort.signal,
    });
    if (!response.ok) throw new Error("HTTP " + response.status);
    liveBadge.textContent = "live";
    liveBadge.className = "pill ok";
    retryMs = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (err) {
    if (abort.signal.aborted) return;
  }
  if (abort.signal.aborted) return;
  liveBadge.textContent = "reconnecting";
  liveBadge.className = "pill lag";
  setTimeout(follow, retryMs);
  retryMs = Math.min(retryMs * 2, 15000);
}

function dispatch(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length) return;
  let payload = data.join("\n");
  try { payload = JSON.parse(payload); } catch { /* plain text */ }
  if (kind === "tick") {
    for (const p of Object.values(pages)) if (p.onTick) p.onTick(payload, current);
  } else if (kind === "event") {
    if (payload.kind === "version_committed") guarded(refreshVersion);
    for (const p of Object.values(pages)) if (p.onEvent) p.onEvent(payload, current);
  } else if (kind === "lagged") {
    guarded(() => pages[current].refresh());
  }
}

async function start() {
  const ok = await guarded(refreshVersion);
  if (ok === undefined) return;
  if (dialog.open) dialog.close();
  document.getElementById("logout").hidden = false;
  route();
  follow();
}

// Pages re-read what the live feed does not carry (e.g. per-server state) every 10 s
// while shown; the feed carries the rest.
setInterval(() => {
  if (token && current && !document.hidden) guarded(() => pages[current].refresh());
}, 10000);

if (token) start();
else signIn("");
