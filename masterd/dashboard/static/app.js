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

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function link(href, text) {
  return el("a", { href }, text);
}

function jobRow(job) {
  const counts = job.tasks || {};
  const row = el("tr", { "data-job": job.id },
    el("td", {}, link(`/jobs/${job.id}`, job.id)),
    el("td", {}, job.title || ""),
    el("td", {}, job.owner || ""),
    el("td", {}, job.project || ""),
    el("td", { class: "state" }, job.state),
    el("td", { class: "done" }, `${counts.done || 0} / ${counts.total || 0}`));
  return row;
}

function updateRow(row, job) {
  row.querySelector(".state").textContent = job.state;
  row.querySelector(".done").textContent = `${job.tasks.done} / ${job.tasks.total}`;
}

function jobsTable(jobs) {
  const head = el("tr", {}, ...["Id", "Title", "Owner", "Project", "State", "Done"].map(
    (h) => el("th", { scope: "col" }, h)));
  const body = el("tbody", { id: "jobs-body" }, ...jobs.map(jobRow));
  return el("table", { "aria-label": "Jobs" }, el("thead", {}, head), body);
}

const views = {
  async overview(view) {
    const master = await api("GET", "/api/v1/master");
    const jobs = await api("GET", "/api/v1/jobs?limit=50");
    const cards = el("div", { class: "cards" });
    for (const [label, value] of [
      ["Master", master.name],
      ["Agents connected", master.talkback ? master.talkback.agents_connected : 0],
      ["Jobs shown", jobs.items.length],
    ]) {
      cards.append(el("div", { class: "card" }, el("div", { class: "n" }, value),
        el("div", {}, label)));
    }
    view.replaceChildren(el("h1", {}, "Overview"), cards, jobsTable(jobs.items));
  },
  async jobs(view) {
    const jobs = await api("GET", "/api/v1/jobs?limit=100");
    view.replaceChildren(el("h1", {}, "Jobs"), jobsTable(jobs.items));
  },
  async job(view, id) {
    const job = await api("GET", `/api/v1/jobs/${id}`);
    const layers = el("table", { "aria-label": "Layers" },
      el("thead", {}, el("tr", {}, ...["Layer", "Done", "Running", "Queued", "Failed"].map(
        (h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...(job.layers || []).map((l) => el("tr", {},
        el("td", {}, l.name), el("td", {}, l.tasks.done), el("td", {}, l.tasks.running),
        el("td", {}, l.tasks.queued), el("td", {}, l.tasks.failed)))));
    const summary = el("p", { id: "job-summary", "data-job": job.id },
      `${job.state}: ${job.tasks.done} of ${job.tasks.total} done`);
    const grid = await frameGrid(job.id);
    view.replaceChildren(el("h1", {}, `Job ${job.id}: ${job.title}`), summary, grid, layers);
  },
  async task(view, id) {
    const task = await api("GET", `/api/v1/tasks/${id}`);
    const attempts = await api("GET", `/api/v1/tasks/${id}/attempts`);
    const rows = attempts.items.map((a) => el("tr", {},
      el("td", {}, a.attempt), el("td", {}, a.agent ? (a.agent.hostname || a.agent.id) : ""),
      el("td", {}, a.state), el("td", {}, a.started_at || ""), el("td", {}, a.finished_at || ""),
      el("td", {}, a.exit_code === null || a.exit_code === undefined ? "" : a.exit_code),
      el("td", {}, a.error || "")));
    view.replaceChildren(el("h1", {}, `Task ${task.id}`),
      el("p", {}, `${task.state}, layer ${task.layer}, frames ${frameText(task.frames)}, job `,
        link(`/jobs/${task.job.id}`, task.job.id)),
      el("table", { "aria-label": "Attempts" }, el("thead", {}, el("tr", {},
        ...["Attempt", "Agent", "State", "Started", "Finished", "Exit code", "Reason"].map(
          (h) => el("th", { scope: "col" }, h)))), el("tbody", {}, ...rows)));
  },
  async agents(view) {
    const agents = await api("GET", "/api/v1/agents?limit=100");
    const head = el("tr", {}, ...["Agent", "State", "Last seen"].map(
      (h) => el("th", { scope: "col" }, h)));
    view.replaceChildren(el("h1", {}, "Agents"), el("table", { "aria-label": "Agents" },
      el("thead", {}, head), el("tbody", {}, ...agents.items.map((a) => el("tr", {},
        el("td", {}, a.hostname || a.id), el("td", {}, a.state || ""),
        el("td", {}, a.last_seen || ""))))));
  },
  async masters(view) {
    const masters = await api("GET", "/api/v1/masters");
    view.replaceChildren(el("h1", {}, "Masters"), el("ul", {},
      ...masters.items.map((m) => el("li", {}, `${m.name}: ${m.state || ""}`))));
  },
};

function frameText(frames) {
  if (!frames || !frames.length) return "";
  return frames.length === 1 ? String(frames[0]) : `${frames[0]}-${frames[frames.length - 1]}`;
}

// The frame grid: one cell a task, coloured by state, on a canvas (a
// hundred thousand cells draw in a few milliseconds); a click opens the task.
const STATE_COLOURS = { W: "#9e9e9e", Q: "#90a4ae", A: "#4fc3f7", R: "#1e88e5", D: "#43a047",
                        F: "#e53935", C: "#6d4c41" };
const STATE_NAMES = { W: "waiting", Q: "queued", A: "assigned", R: "running", D: "done",
                      F: "failed", C: "canceled" };

async function frameGrid(jobID) {
  const data = await api("GET", `/api/v1/jobs/${jobID}/states`);
  const n = data.states.length;
  const width = 960;
  const cell = Math.max(2, Math.min(24, Math.floor(Math.sqrt((width * 240) / Math.max(n, 1)))));
  const cols = Math.max(1, Math.floor(width / cell));
  const rows = Math.max(1, Math.ceil(n / cols));
  const canvas = el("canvas", { id: "frame-grid", width: cols * cell, height: rows * cell,
                                role: "img", tabindex: "0" });
  const ctx = canvas.getContext("2d");
  const totals = {};
  for (let i = 0; i < n; i++) {
    const code = data.states[i];
    totals[code] = (totals[code] || 0) + 1;
    ctx.fillStyle = STATE_COLOURS[code] || "#000";
    ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, Math.max(1, cell - 1),
      Math.max(1, cell - 1));
  }
  const said = Object.entries(totals).map(([c, k]) => `${k} ${STATE_NAMES[c]}`).join(", ");
  canvas.setAttribute("aria-label", `Frame grid of ${n} tasks: ${said}`);
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    const i = Math.floor((event.clientY - box.top) / cell) * cols
      + Math.floor((event.clientX - box.left) / cell);
    const run = data.ids.find(([first, , count]) => i >= first && i < first + count);
    if (i < n && run) {
      history.pushState({}, "", `/tasks/${run[1] + (i - run[0])}`);
      route();
    }
  });
  return canvas;
}

function which(path) {
  let m;
  if (path === "/") return ["overview"];
  if (path === "/jobs") return ["jobs"];
  if ((m = path.match(/^\/jobs\/(\d+)$/))) return ["job", m[1]];
  if ((m = path.match(/^\/tasks\/(\d+)$/))) return ["task", m[1]];
  if (path === "/agents") return ["agents"];
  if (path === "/masters") return ["masters"];
  return ["overview"];
}

// Live: the master's event stream. A job event updates its row or summary;
// a job not shown yet makes the view read again (at most once a second);
// after a reconnect the view reads everything again.
let stream = null;
let pending = null;

function refreshSoon() {
  if (pending === null) pending = setTimeout(() => { pending = null; route(); }, 1000);
}

function onJob(job) {
  const summary = document.getElementById("job-summary");
  if (summary && summary.dataset.job === String(job.id)) {
    refreshSoon();
    return;
  }
  const body = document.getElementById("jobs-body");
  if (!body) return;
  const row = body.querySelector(`tr[data-job="${job.id}"]`);
  if (row) updateRow(row, job); else refreshSoon();
}

function listen() {
  if (stream) stream.close();
  let opened = false;
  stream = new EventSource("/api/v1/events");
  stream.addEventListener("hello", () => {
    if (opened) route();
    opened = true;
  });
  stream.addEventListener("job", (event) => onJob(JSON.parse(event.data)));
}

function stopListening() {
  if (stream) stream.close();
  stream = null;
}

async function route() {
  const view = $("view");
  for (const a of document.querySelectorAll("nav a")) {
    const here = a.getAttribute("href") === location.pathname;
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const [name, arg] = which(location.pathname);
  try {
    await views[name](view, arg);
  } catch (error) {
    if (error.status === 401) {
      stopListening();
      showSignIn("Your session has ended; sign in again.");
    }
    else view.replaceChildren(el("p", { class: "error", role: "alert" }, error.message));
  }
}

function navigate(event) {
  const a = event.target.closest("a");
  if (!a || a.origin !== location.origin || event.ctrlKey || event.metaKey) return;
  event.preventDefault();
  if (a.pathname !== location.pathname) history.pushState({}, "", a.pathname);
  route();
}

async function start() {
  document.addEventListener("click", navigate);
  window.addEventListener("popstate", () => route());
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("signin-error").textContent = "";
    try {
      state.session = await api("POST", "/api/v1/session", { token: $("token").value });
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
    state.session = await api("GET", "/api/v1/session");
    showSignedIn();
    listen();
    await route();
  } catch (error) {
    showSignIn("");
  }
}

start();
