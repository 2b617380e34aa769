// The dashboard: one page, every view at its own URL, everything from the
// API under /api/v1 with the session's cookie, live from the event stream
// (docs/dashboard.md).

import { agentView, agentsView } from "./agents.js";
import { api, may, session } from "./api.js";
import { auditView, mastersView, overviewView } from "./farm.js";
import { jobView, taskView } from "./job.js";
import { jobsView } from "./jobs.js";
import { $, clearNotice, el, notice } from "./ui.js";

const VIEWS = [
  [/^\/$/, overviewView],
  [/^\/jobs$/, jobsView],
  [/^\/jobs\/(\d+)$/, jobView],
  [/^\/tasks\/(\d+)$/, taskView],
  [/^\/agents$/, agentsView],
  [/^\/agents\/([0-9a-f-]{36})$/, agentView],
  [/^\/masters$/, mastersView],
  [/^\/audit$/, auditView],
];

// What the view on screen does with events, how it reads itself again,
// and what it stops when left.
let shown = { on: {} };
let pending = null;
let routing = 0;

const app = {
  go(path) {
    history.pushState({}, "", path);
    route();
  },
  // Read the view again soon, at most once a second (or every ms).
  refreshSoon(ms = 1000) {
    if (pending !== null) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        if (shown.refresh) await shown.refresh(); else await route();
      } catch (error) { failed(error); }
    }, ms);
  },
};

function showSignIn(message) {
  session.current = null;
  for (const id of ["nav", "who", "view"]) $(id).hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  clearNotice();
  $("token").focus();
}

function showSignedIn() {
  const current = session.current;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("nav-audit").hidden = !may("operator");
  $("user").textContent = `${current.user} (${current.role})`;
  $("view").hidden = false;
}

function failed(error) {
  if (error.status === 401) {
    stopListening();
    showSignIn("Your session has ended; sign in again.");
  } else {
    notice(error.message);
  }
}

async function route() {
  const mine = ++routing;
  clearTimeout(pending);
  pending = null;
  if (shown.stop) shown.stop();
  shown = { on: {} };
  clearNotice();
  const view = $("view");
  for (const a of document.querySelectorAll("nav a")) {
    const here = a.getAttribute("href") === location.pathname;
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const [pattern, render] = VIEWS.find(([p]) => p.test(location.pathname)) || VIEWS[0];
  const [, arg] = location.pathname.match(pattern) || [];
  try {
    const result = (await render(view, arg, app)) || {};
    // A newer navigation may have finished first: only the last one stays.
    if (mine === routing) shown = { on: {}, ...result };
    else if (result.stop) result.stop();
  } catch (error) {
    if (mine !== routing) return;
    if (error.status === 401) failed(error);
    else view.replaceChildren(el("h1", {}, "Not shown"),
      el("p", { class: "error", role: "alert" }, error.message));
  }
}

// Live: the master's event stream. Each event goes to the view on screen;
// after a reconnect the view reads everything again, so a missed event
// loses nothing.
let stream = null;

function listen() {
  stopListening();
  let opened = false;
  stream = new EventSource("/api/v1/events");
  stream.addEventListener("hello", () => {
    if (opened) app.refreshSoon(0);
    opened = true;
  });
  for (const kind of ["job", "agent", "agents", "limit", "master", "audit"]) {
    stream.addEventListener(kind, (event) => {
      const handler = shown.on && shown.on[kind];
      if (handler) handler(JSON.parse(event.data));
    });
  }
  stream.addEventListener("error", async () => {
    // Closed for good (the session ended, or the master refused): find out.
    if (stream && stream.readyState === EventSource.CLOSED) {
      try { await api("GET", "/api/v1/session"); setTimeout(listen, 3000); } catch (error) { failed(error); }
    }
  });
}

function stopListening() {
  if (stream) stream.close();
  stream = null;
}

function navigate(event) {
  const a = event.target.closest("a");
  if (!a || a.origin !== location.origin || a.target || event.ctrlKey || event.metaKey
      || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  if (a.pathname + a.search !== location.pathname + location.search) {
    history.pushState({}, "", a.pathname + a.search);
  }
  route();
}

// Keys: "/" searches, "j" and "k" move between the rows of the table on
// screen, "g" then "o", "j", "a", "m" go to a view.
let leader = false;
function keys(event) {
  const t = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (t.closest && t.closest("input, select, textarea, dialog, canvas")) return;
  if (leader) {
    leader = false;
    const to = { o: "/", j: "/jobs", a: "/agents", m: "/masters" }[event.key];
    if (to) { event.preventDefault(); app.go(to); }
    return;
  }
  if (event.key === "g") { leader = true; return; }
  if (event.key === "/" && $("search")) { event.preventDefault(); $("search").focus(); return; }
  if (event.key !== "j" && event.key !== "k") return;
  const rows = [...document.querySelectorAll("#view tbody tr")].filter((r) => r.querySelector("a"));
  if (!rows.length) return;
  event.preventDefault();
  const at = rows.findIndex((r) => r.contains(document.activeElement));
  const next = at < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, at + (event.key === "j" ? 1 : -1)));
  rows[next].querySelector("a").focus();
}

// Light, dark, or as the system says; remembered in this browser.
const THEMES = ["system", "light", "dark"];
function applyTheme(theme) {
  if (theme === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $("theme").textContent = `Theme: ${theme}`;
}

async function start() {
  document.addEventListener("click", navigate);
  document.addEventListener("keydown", keys);
  window.addEventListener("popstate", () => route());
  let theme = localStorage.getItem("masterd-theme") || "system";
  applyTheme(theme);
  $("theme").addEventListener("click", () => {
    theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    localStorage.setItem("masterd-theme", theme);
    applyTheme(theme);
  });
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      session.current = await api("POST", "/api/v1/session", { token: $("token").value });
      $("token").value = "";
      showSignedIn();
      listen();
      await route();
    } catch (error) {
      showSignIn(error.message);
    }
  });
  $("signout").addEventListener("click", async () => {
    stopListening();
    try { await api("DELETE", "/api/v1/session"); } catch (error) { /* ended anyway */ }
    showSignIn("Signed out.");
  });
  try {
    session.current = await api("GET", "/api/v1/session");
  } catch (error) {
    showSignIn("");
    return;
  }
  showSignedIn();
  listen();
  await route();
}

start();
