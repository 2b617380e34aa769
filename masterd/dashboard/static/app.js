// The dashboard: one page, every view at its own URL, everything from the
// API under /api/v1 with the session's cookie (docs/dashboard.md).

const state = { session: null };

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.session && state.session.csrf_token) {
    headers["X-CSRF-Token"] = state.session.csrf_token;
  }
  const reply = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await reply.text();
  const data = text ? JSON.parse(text) : null;
  if (!reply.ok) {
    const error = new Error((data && data.message) || `${method} ${path}: ${reply.status}`);
    error.status = reply.status;
    throw error;
  }
  return data;
}

function $(id) { return document.getElementById(id); }

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function showSignIn(message) {
  state.session = null;
  $("nav").hidden = true;
  $("who").hidden = true;
  $("view").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("token").focus();
}

function showSignedIn() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("user").textContent = `${state.session.user} (${state.session.role})`;
  $("view").hidden = false;
}

async function overview(view) {
  const master = await api("GET", "/api/v1/master");
  const jobs = await api("GET", "/api/v1/jobs?limit=50");
  view.replaceChildren();
  const title = document.createElement("h1");
  title.textContent = "Overview";
  const cards = document.createElement("div");
  cards.className = "cards";
  for (const [label, value] of [
    ["Master", master.name],
    ["Agents connected", master.talkback ? master.talkback.agents_connected : 0],
    ["Jobs shown", jobs.items.length],
  ]) {
    const card = document.createElement("div");
    card.className = "card";
    const n = document.createElement("div");
    n.className = "n";
    n.textContent = String(value);
    const l = document.createElement("div");
    l.textContent = label;
    card.append(n, l);
    cards.append(card);
  }
  const table = document.createElement("table");
  table.setAttribute("aria-label", "Jobs");
  const head = document.createElement("tr");
  for (const h of ["Id", "Title", "Owner", "State"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    head.append(th);
  }
  table.append(head);
  for (const job of jobs.items) {
    const row = document.createElement("tr");
    row.append(cell(job.id), cell(job.title), cell(job.owner), cell(job.state));
    table.append(row);
  }
  view.append(title, cards, table);
}

async function route() {
  const view = $("view");
  for (const a of document.querySelectorAll("nav a")) {
    const here = a.getAttribute("href") === location.pathname;
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    await overview(view);
  } catch (error) {
    if (error.status === 401) showSignIn("Your session has ended; sign in again.");
    else view.textContent = error.message;
  }
}

async function start() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      state.session = await api("POST", "/api/v1/session", { token: $("token").value });
      $("token").value = "";
      showSignedIn();
      await route();
    } catch (error) {
      showSignIn(error.message);
    }
  });
  $("signout").addEventListener("click", async () => {
    try { await api("DELETE", "/api/v1/session"); } catch (error) { /* ended anyway */ }
    showSignIn("Signed out.");
  });
  try {
    state.session = await api("GET", "/api/v1/session");
    showSignedIn();
    await route();
  } catch (error) {
    showSignIn("");
  }
}

start();
