// A job (its layers, dependencies and frame grid) and a task (its
// attempts and its log, followed live while it runs).

import { jobButtons, taskButtons } from "./actions.js";
import { api, apiText } from "./api.js";
import { between, el, link, table, time } from "./ui.js";

// The frame grid: one cell a task, coloured by state, on a canvas (a
// hundred thousand cells draw in a few milliseconds); a click, or Enter
// on the cell the arrow keys moved to, opens the task.
const STATE_COLOURS = { W: "#9e9e9e", Q: "#90a4ae", A: "#4fc3f7", R: "#1e88e5", D: "#43a047",
                        F: "#e53935", C: "#6d4c41" };
const STATE_NAMES = { W: "waiting", Q: "queued", A: "assigned", R: "running", D: "done",
                      F: "failed", C: "canceled" };
const WIDTH = 960;

class FrameGrid {
  constructor(jobID, app) {
    this.jobID = jobID;
    this.app = app;
    this.data = { states: "", ids: [] };
    this.cursor = 0;
    this.canvas = el("canvas", { id: "frame-grid", role: "img", tabindex: "0" });
    this.said = el("p", { class: "muted", id: "grid-cursor", "aria-live": "polite" });
    this.legend = el("ul", { class: "legend", "aria-label": "States" },
      Object.entries(STATE_NAMES).map(([c, name]) => el("li", { "data-code": c },
        el("span", { class: `swatch ${name}`, "aria-hidden": "true" }), name)));
    this.canvas.addEventListener("click", (event) => {
      const box = this.canvas.getBoundingClientRect();
      const i = Math.floor((event.clientY - box.top) / this.cell) * this.cols
        + Math.floor((event.clientX - box.left) / this.cell);
      this.open(i);
    });
    this.canvas.addEventListener("mousemove", (event) => {
      const box = this.canvas.getBoundingClientRect();
      const i = Math.floor((event.clientY - box.top) / this.cell) * this.cols
        + Math.floor((event.clientX - box.left) / this.cell);
      if (i < this.data.states.length) this.canvas.title = this.describe(i);
    });
    this.canvas.addEventListener("keydown", (event) => this.key(event));
  }

  async load() {
    this.data = await api("GET", `/api/v1/jobs/${this.jobID}/states`);
    this.draw();
  }

  draw() {
    const n = this.data.states.length;
    this.cell = Math.max(2, Math.min(24, Math.floor(Math.sqrt((WIDTH * 240) / Math.max(n, 1)))));
    this.cols = Math.max(1, Math.floor(WIDTH / this.cell));
    const rows = Math.max(1, Math.ceil(n / this.cols));
    if (this.canvas.width !== this.cols * this.cell) this.canvas.width = this.cols * this.cell;
    if (this.canvas.height !== rows * this.cell) this.canvas.height = rows * this.cell;
    const ctx = this.canvas.getContext("2d");
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const totals = {};
    const side = Math.max(1, this.cell - 1);
    // One fill style at a time: cells batched by state draw fastest.
    const byState = {};
    for (let i = 0; i < n; i++) {
      const code = this.data.states[i];
      totals[code] = (totals[code] || 0) + 1;
      (byState[code] ||= []).push(i);
    }
    for (const [code, cells] of Object.entries(byState)) {
      ctx.fillStyle = STATE_COLOURS[code] || "#000";
      for (const i of cells) {
        ctx.fillRect((i % this.cols) * this.cell, Math.floor(i / this.cols) * this.cell, side, side);
      }
    }
    if (document.activeElement === this.canvas && this.cursor < n) {
      ctx.strokeStyle = getComputedStyle(document.body).color;
      ctx.lineWidth = 2;
      ctx.strokeRect((this.cursor % this.cols) * this.cell, Math.floor(this.cursor / this.cols) * this.cell,
        this.cell, this.cell);
    }
    for (const li of this.legend.children) {
      li.lastChild.textContent = `${STATE_NAMES[li.dataset.code]} ${(totals[li.dataset.code] || 0).toLocaleString()}`;
    }
    const said = Object.entries(totals).map(([c, k]) => `${k} ${STATE_NAMES[c]}`).join(", ");
    this.canvas.setAttribute("aria-label", `Frame grid of ${n} tasks: ${said}`);
  }

  taskID(i) {
    const run = this.data.ids.find(([first, , count]) => i >= first && i < first + count);
    return run ? run[1] + (i - run[0]) : null;
  }

  describe(i) {
    return `Task ${i + 1} of ${this.data.states.length}: ${STATE_NAMES[this.data.states[i]]}`;
  }

  open(i) {
    const id = i >= 0 && i < this.data.states.length ? this.taskID(i) : null;
    if (id !== null) this.app.go(`/tasks/${id}`);
  }

  key(event) {
    const n = this.data.states.length;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.cols, ArrowUp: -this.cols,
                    Home: -n, End: n };
    if (event.key === "Enter") { event.preventDefault(); this.open(this.cursor); return; }
    if (!(event.key in moves)) return;
    event.preventDefault();
    this.cursor = Math.min(n - 1, Math.max(0, this.cursor + moves[event.key]));
    this.draw();
    this.said.textContent = `${this.describe(this.cursor)} (Enter opens it)`;
  }
}

function dependency(d) {
  const on = d.job ? el("span", {}, "job ", link(`/jobs/${d.job.id}`, d.job.id)) : `layer ${d.layer}`;
  return el("li", {}, `${d.mode} on `, on, `${d.satisfied ? " (satisfied)" : ""}`);
}

function layersTable(job) {
  return table("Layers", ["Layer", "State", "Frames", "Done", "Running", "Queued", "Failed",
                          "Depends on", "Limits"],
    (job.layers || []).map((l) => el("tr", {},
      el("td", {}, l.name), el("td", {}, el("span", { class: `badge ${l.state}` }, l.state)),
      el("td", {}, l.frames), el("td", { class: "num" }, l.tasks.done),
      el("td", { class: "num" }, l.tasks.running), el("td", { class: "num" }, l.tasks.queued),
      el("td", { class: "num" }, l.tasks.failed),
      el("td", {}, l.depends_on.length ? el("ul", { class: "plain" }, l.depends_on.map(dependency)) : "—"),
      el("td", {}, l.limits.join(", ") || "—"))));
}

function jobFacts(job) {
  const refs = (refs) => refs.length ? refs.map((r, i) => [i ? ", " : "", link(`/jobs/${r.id}`, r.id)]) : "—";
  return el("dl", { class: "facts" },
    el("dt", {}, "State"), el("dd", {}, el("span", { class: `badge ${job.state}` }, job.state),
      job.paused ? " (paused)" : ""),
    el("dt", {}, "Done"), el("dd", { id: "job-summary", "data-job": job.id },
      `${job.tasks.done.toLocaleString()} of ${job.tasks.total.toLocaleString()} tasks`
      + ` (${job.tasks.running} running, ${job.tasks.failed} failed)`),
    el("dt", {}, "Owner"), el("dd", {}, job.owner),
    el("dt", {}, "Project"), el("dd", {}, job.project),
    el("dt", {}, "Priority"), el("dd", {}, job.priority),
    el("dt", {}, "Submitted"), el("dd", {}, time(job.created_at)),
    el("dt", {}, "Finished"), el("dd", {}, time(job.finished_at)),
    el("dt", {}, "Waits for"), el("dd", {}, refs(job.parents)),
    el("dt", {}, "Needed by"), el("dd", {}, refs(job.children)));
}

export async function jobView(view, id, app) {
  const grid = new FrameGrid(id, app);
  const [job] = await Promise.all([api("GET", `/api/v1/jobs/${id}`), grid.load()]);
  const heading = el("h1", {}, `Job ${job.id}: ${job.title}`);
  const facts = el("div", {});
  const actions = el("div", {});
  const layers = el("div", {});
  function show(doc) {
    facts.replaceChildren(jobFacts(doc));
    actions.replaceChildren(jobButtons(doc, refresh) || "");
    layers.replaceChildren(layersTable(doc));
  }
  async function refresh() {
    const [doc] = await Promise.all([api("GET", `/api/v1/jobs/${id}`), grid.load()]);
    show(doc);
  }
  show(job);
  view.replaceChildren(heading, actions, facts,
    el("h2", {}, "Frames"), grid.legend, grid.canvas, grid.said, el("h2", {}, "Layers"), layers);
  let pending = null;
  return {
    on: {
      job(event) {
        if (String(event.id) !== String(id) || pending) return;
        pending = setTimeout(() => { pending = null; refresh().catch(() => {}); }, 1000);
      },
    },
    stop() { clearTimeout(pending); },
  };
}

const FOLLOWED = new Set(["assigned", "running"]);

function attemptsTable(attempts) {
  return table("Attempts", ["Attempt", "Agent", "State", "Started", "Finished", "Took",
                            "Exit code", "Reason"],
    attempts.map((a) => el("tr", {},
      el("td", { class: "num" }, a.attempt),
      el("td", {}, a.agent ? link(`/agents/${a.agent.id}`, a.agent.hostname || a.agent.id) : "—"),
      el("td", {}, el("span", { class: `badge ${a.state}` }, a.state)),
      el("td", {}, time(a.started_at)), el("td", {}, time(a.finished_at)),
      el("td", {}, a.started_at ? between(a.started_at, a.finished_at) : "—"),
      el("td", { class: "num" }, a.exit_code ?? "—"), el("td", {}, a.error || ""))));
}

export async function taskView(view, id, app) {
  let task = await api("GET", `/api/v1/tasks/${id}`);
  const job = await api("GET", task.job.href);
  const facts = el("div", { id: "task-facts" });
  const actions = el("div", {});
  const attempts = el("div", {});
  const log = el("pre", { id: "task-log", tabindex: "0", "aria-label": "Log" });
  const following = el("p", { class: "muted", id: "log-state", "aria-live": "polite" });
  let after = 0;
  let attempt = null;
  let timer = null;
  let stopped = false;

  async function show() {
    const list = await api("GET", `/api/v1/tasks/${id}/attempts`);
    facts.replaceChildren(el("span", {}, el("span", { class: `badge ${task.state}` }, task.state),
      `, layer ${task.layer}, frames ${frameText(task.frames)}, attempt ${task.attempt}, job `,
      link(`/jobs/${task.job.id}`, `${task.job.id}: ${job.title}`),
      task.agent ? [", on ", link(`/agents/${task.agent.id}`, task.agent.hostname || task.agent.id)] : ""),
      openjdFacts(task));
    actions.replaceChildren(taskButtons(task, job, async () => { task = await api("GET", task.href); await show(); follow(); }) || "");
    attempts.replaceChildren(attemptsTable(list.items));
  }

  async function readLog() {
    const { text, headers } = await apiText(`${task.log}?after=${after}`);
    const chosen = headers.get("X-Masterd-Attempt");
    if (attempt !== null && chosen !== attempt) { log.textContent = ""; after = 0; }
    attempt = chosen;
    if (text) {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(text);
      if (atEnd) log.scrollTop = log.scrollHeight;
    }
    after = parseInt(headers.get("X-Masterd-Next-After") || String(after), 10);
  }

  // While the task runs, its log is read every second from where the
  // last read ended, and the task every other read.
  async function follow() {
    clearTimeout(timer);
    let tick = 0;
    const step = async () => {
      timer = null;
      if (stopped) return;
      try {
        await readLog();
        if (tick++ % 2 === 1) {
          const now = await api("GET", task.href);
          const changed = now.state !== task.state || now.attempt !== task.attempt;
          task = now;
          if (changed) await show();
        }
      } catch (error) { /* the next read tries again */ }
      if (stopped) return;
      if (FOLLOWED.has(task.state)) {
        following.textContent = "Following the log while the task runs.";
        timer = setTimeout(step, 1000);
      } else {
        following.textContent = `The task is ${task.state}: this is its log as it ended.`;
      }
    };
    await step();
  }

  await show();
  view.replaceChildren(el("h1", {}, `Task ${task.id}`), facts, actions,
    el("h2", {}, "Attempts"), attempts, el("h2", {}, "Log"), following, log);
  await follow();
  // A change to the job while the task is not followed may be its retry
  // or its cancel: read the task again (at most once a second).
  let pending = null;
  async function reread() {
    pending = null;
    const now = await api("GET", task.href);
    const changed = now.state !== task.state || now.attempt !== task.attempt;
    task = now;
    if (changed) await show();
    if (timer === null) await follow();
  }
  return {
    on: {
      job(event) {
        if (String(event.id) !== String(task.job.id) || pending || timer !== null) return;
        pending = setTimeout(() => reread().catch(() => {}), 1000);
      },
    },
    stop() { stopped = true; clearTimeout(timer); clearTimeout(pending); },
  };
}

// An OpenJD task's parameter values and its last openjd_status line.
function openjdFacts(task) {
  const parameters = Object.entries(task.parameters || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!parameters.length && !task.status) return "";
  return el("dl", { class: "facts", id: "task-openjd" },
    parameters.length ? [el("dt", {}, "Parameters"), el("dd", {},
      parameters.map(([name, v]) => `${name}=${v && typeof v === "object" ? v.value : v}`).join(", "))] : "",
    task.status ? [el("dt", {}, "Status"), el("dd", {}, task.status)] : "");
}

export function frameText(frames) {
  if (!frames || !frames.length) return "";
  return frames.length === 1 ? String(frames[0]) : `${frames[0]}-${frames[frames.length - 1]}`;
}
