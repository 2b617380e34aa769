// The farm at a glance (jobs and agents by state, tasks finished a minute
// over the last hour, the last 7 days by hour, limits in use, masters), the
// masters' own figures, and the audit trail for those who may read it.

import { api, may } from "./api.js";
import { el, link, meter, svg, table, time } from "./ui.js";

const JOB_STATES = ["running", "queued", "waiting", "paused", "done", "failed", "canceled"];
const AGENT_STATES = ["busy", "idle", "offline", "disabled"];

function cards(label, counts, order, hrefOf) {
  return el("section", { class: "cards", "aria-label": label },
    order.map((s) => el("a", { class: `card ${s}`, href: hrefOf(s), "data-state": s },
      el("div", { class: "n" }, (counts[s] || 0).toLocaleString()), el("div", {}, s))));
}

// Bars of tasks done (and failed) a minute; each bar says its figures on
// hover, the chart says its total to screen readers.
function throughput(minutes) {
  const W = 600, H = 120, bar = W / Math.max(minutes.length, 1);
  const top = Math.max(1, ...minutes.map((m) => m.done + m.failed));
  const done = minutes.reduce((n, m) => n + m.done, 0);
  const failed = minutes.reduce((n, m) => n + m.failed, 0);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H + 14}`, class: "chart", role: "img",
    "aria-label": `Tasks finished in the last hour: ${done} done, ${failed} failed` });
  minutes.forEach((m, i) => {
    const hd = (m.done / top) * H, hf = (m.failed / top) * H;
    const g = svg("g", {}, svg("title", {}, `${new Date(m.at).toLocaleTimeString()}: ${m.done} done, ${m.failed} failed`));
    g.append(svg("rect", { x: i * bar + 1, y: H - hd, width: Math.max(1, bar - 2), height: hd, class: "done" }),
      svg("rect", { x: i * bar + 1, y: H - hd - hf, width: Math.max(1, bar - 2), height: hf, class: "failed" }));
    chart.append(g);
  });
  chart.append(svg("text", { x: 0, y: H + 12, class: "axis" }, "an hour ago"),
    svg("text", { x: W, y: H + 12, class: "axis", "text-anchor": "end" }, "now"));
  return chart;
}

const HOUR_MS = 3600 * 1000;
const HOURS = 7 * 24;
// The history changes once a roll-up (every 30 s, a minute behind): the
// overview, drawn again on every job event, reads it at most this often.
const HISTORY_MS = 60 * 1000;

// The first of the HOURS hours (UTC) up to the current one.
function historySince(now) {
  return new Date((Math.floor(now / HOUR_MS) - (HOURS - 1)) * HOUR_MS);
}

const hoursText = (h) => h.toLocaleString(undefined, { maximumFractionDigits: 1 });

// The last 7 days by hour, from GET /api/v1/history: bars of tasks done
// (and failed) each hour, core-hours as a line on a scale of its own. Each
// bar says its figures on hover; the chart says its totals to screen
// readers, and a table under it gives them day by day.
function historyChart(doc) {
  const first = Date.parse(doc.since);
  const hours = Array.from({ length: HOURS }, (_, i) => ({ at: first + i * HOUR_MS, done: 0, failed: 0, core: 0 }));
  for (const item of doc.items) {
    const h = hours[Math.round((Date.parse(item.hour) - first) / HOUR_MS)];
    if (h) { h.done += item.tasks_done; h.failed += item.tasks_failed; h.core += item.core_hours; }
  }
  const W = 672, H = 120, bar = W / HOURS;
  const top = Math.max(1, ...hours.map((h) => h.done + h.failed));
  const topCore = Math.max(...hours.map((h) => h.core)) || 1;
  const done = hours.reduce((n, h) => n + h.done, 0);
  const failed = hours.reduce((n, h) => n + h.failed, 0);
  const core = hours.reduce((n, h) => n + h.core, 0);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H + 14}`, class: "chart", role: "img", id: "history-chart",
    "aria-label": `Tasks finished each hour over the last 7 days: ${done} done, ${failed} failed, ${hoursText(core)} core-hours` });
  hours.forEach((h, i) => {
    const hd = (h.done / top) * H, hf = (h.failed / top) * H;
    const g = svg("g", {}, svg("title", {}, `${new Date(h.at).toLocaleString()}: ${h.done} done, ${h.failed} failed, ${hoursText(h.core)} core-hours`));
    g.append(svg("rect", { x: i * bar, y: H - hd, width: Math.max(1, bar - 1), height: hd, class: "done" }),
      svg("rect", { x: i * bar, y: H - hd - hf, width: Math.max(1, bar - 1), height: hf, class: "failed" }));
    chart.append(g);
  });
  chart.append(svg("polyline", { class: "core", points: hours.map((h, i) =>
    `${(i + 0.5) * bar},${H - (h.core / topCore) * H}`).join(" ") }));
  chart.append(svg("text", { x: 0, y: H + 12, class: "axis" }, "7 days ago"),
    svg("text", { x: W, y: H + 12, class: "axis", "text-anchor": "end" }, "now"));
  const days = new Map();
  for (const h of hours) {
    const day = new Date(h.at).toLocaleDateString(undefined, { weekday: "short", month: "short", day: "numeric" });
    const d = days.get(day) || { done: 0, failed: 0, core: 0 };
    d.done += h.done; d.failed += h.failed; d.core += h.core;
    days.set(day, d);
  }
  const byDay = table("Farm history by day", ["Day", "Done", "Failed", "Core-hours"],
    [...days].map(([day, d]) => el("tr", {}, el("td", {}, day), el("td", { class: "num" }, d.done.toLocaleString()),
      el("td", { class: "num" }, d.failed.toLocaleString()), el("td", { class: "num" }, hoursText(d.core)))));
  return [
    el("ul", { class: "legend", "aria-label": "Legend" },
      ["done", "failed"].map((name) => el("li", {}, el("span", { class: `swatch ${name}`, "aria-hidden": "true" }), `tasks ${name}`)),
      el("li", {}, el("span", { class: "swatch running", "aria-hidden": "true" }), "core-hours (the line)")),
    chart,
    el("p", { class: "muted" }, "Kept after jobs are deleted; complete up to ", time(doc.rolled_to), "."),
    el("details", {}, el("summary", {}, "Day by day"), byDay),
  ];
}

function limitsTable(limits) {
  return table("Limits", ["Limit", "In use", "Description"], limits.map((l) => el("tr", { "data-limit": l.name },
    el("td", {}, l.name),
    el("td", {}, meter(l.in_use, l.max, `${l.name} in use`, `${l.in_use} of ${l.max}`)),
    el("td", {}, l.description || ""))));
}

function mastersList(masters) {
  return el("ul", { class: "plain", "aria-label": "Masters" }, masters.map((m) => el("li", {},
    el("span", { class: `badge ${m.state}` }, m.state), " ", m.name, ", last seen ", time(m.last_seen))));
}

export async function overviewView(view, _arg, app) {
  let past = null, pastAt = 0;
  async function farmHistory() {
    if (past === null || Date.now() - pastAt >= HISTORY_MS) {
      const since = historySince(Date.now()).toISOString();
      // A master without the route (an older one behind the same address)
      // leaves the chart out, not the overview.
      past = await api("GET", `/api/v1/history?since=${encodeURIComponent(since)}`).catch(() => null);
      pastAt = Date.now();
    }
    return past;
  }
  async function render() {
    const [farm, limits, masters, history] = await Promise.all([
      api("GET", "/api/v1/farm"), api("GET", "/api/v1/limits"), api("GET", "/api/v1/masters"),
      farmHistory()]);
    view.replaceChildren(el("h1", {}, "Overview"),
      el("h2", {}, "Jobs"), cards("Jobs by state", farm.jobs, JOB_STATES, (s) => `/jobs?state=${s}`),
      el("h2", {}, "Agents"), cards("Agents by state", farm.agents, AGENT_STATES, (s) => `/agents?state=${s}`),
      el("h2", {}, "Tasks finished a minute"), throughput(farm.finished_per_minute),
      el("h2", {}, "The last 7 days"),
      el("section", { id: "history" }, history ? historyChart(history)
        : el("p", { class: "muted" }, "No history from this master.")),
      el("h2", {}, "Limits"), limits.items.length ? limitsTable(limits.items) : el("p", { class: "muted" }, "No limits."),
      el("h2", {}, "Masters"), mastersList(masters.items));
  }
  await render();
  return {
    refresh: render,
    on: {
      job() { app.refreshSoon(2000); },
      agents() { app.refreshSoon(2000); },
      limit() { app.refreshSoon(2000); },
      master() { app.refreshSoon(2000); },
    },
  };
}

function stat(m, path) {
  let v = m.stats;
  for (const k of path) v = v && v[k];
  return v ?? null;
}

export async function mastersView(view, _arg, app) {
  async function render() {
    const masters = await api("GET", "/api/v1/masters");
    const rows = masters.items.map((m) => el("tr", { "data-master": m.name },
      el("td", {}, m.name), el("td", {}, el("span", { class: `badge ${m.state}` }, m.state)),
      el("td", {}, m.version), el("td", {}, time(m.started_at)), el("td", {}, time(m.last_seen)),
      el("td", { class: "num" }, stat(m, ["requests"]) === null ? "—" : stat(m, ["requests"]).toLocaleString()),
      el("td", { class: "num" }, stat(m, ["avg_ms"]) === null ? "—" : `${Number(stat(m, ["avg_ms"])).toFixed(1)} ms`),
      el("td", { class: "num" }, stat(m, ["in_flight"]) ?? "—"),
      el("td", { class: "num" }, stat(m, ["exceptions"]) ?? "—"),
      el("td", { class: "num" }, stat(m, ["agents_connected"]) ?? "—")));
    const recent = masters.items.flatMap((m) => (stat(m, ["recent_exceptions"]) || []).map((x) => [m.name, x]));
    view.replaceChildren(el("h1", {}, "Masters"),
      table("Masters", ["Master", "State", "Version", "Started", "Last seen", "Requests",
                        "Average time", "In flight", "Exceptions", "Agents"], rows),
      el("h2", {}, "Recent exceptions"),
      recent.length ? table("Recent exceptions", ["Master", "At", "Route", "Type", "Message"],
        recent.map(([name, x]) => el("tr", {}, el("td", {}, name), el("td", {}, time(x.at)),
          el("td", {}, x.route), el("td", {}, x.type), el("td", {}, x.message || ""))))
        : el("p", { class: "muted" }, "None."),
      may("operator") ? el("p", {}, link("/audit", "The audit trail")) : "");
  }
  await render();
  return { refresh: render, on: { master() { app.refreshSoon(2000); } } };
}

export async function auditView(view, _arg, app) {
  if (!may("operator")) {
    view.replaceChildren(el("h1", {}, "Audit trail"),
      el("p", {}, "Only operators and admins may read the audit trail."));
    return {};
  }
  const p = new URLSearchParams(location.search);
  const q = new URLSearchParams({ limit: "100" });
  for (const key of ["actor", "action", "resource", "after"]) if (p.get(key)) q.set(key, p.get(key));
  const body = el("tbody", { id: "audit-body" });
  const pager = el("div", { class: "pager" });
  async function load() {
    const page = await api("GET", `/api/v1/audit?${q}`);
    body.replaceChildren(...page.items.map((e) => el("tr", { "data-audit": e.id },
      el("td", {}, time(e.at)), el("td", {}, e.actor), el("td", {}, e.role), el("td", {}, e.action),
      el("td", {}, e.resource.startsWith("/api/v1/") ? e.resource : e.resource),
      el("td", {}, Object.keys(e.changes || {}).length ? el("code", {}, JSON.stringify(e.changes)) : ""),
      el("td", {}, e.master), el("td", {}, e.address || ""))));
    const after = page.next ? new URL(page.next, location.origin).searchParams.get("after") : null;
    const rest = new URLSearchParams(q); rest.delete("limit");
    if (after) rest.set("after", after);
    pager.replaceChildren(after ? link(`/audit?${rest}`, "Older entries") : "");
  }
  const input = (key, label) => {
    const field = el("input", { id: `audit-${key}`, name: key, value: p.get(key) || "", maxlength: 255 });
    return [el("label", { for: `audit-${key}` }, label), field];
  };
  const form = el("form", { class: "filters", role: "search" },
    input("actor", "Actor"), input("action", "Action"), input("resource", "Resource"),
    el("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = new URLSearchParams();
    for (const key of ["actor", "action", "resource"]) {
      const v = form.querySelector(`[name=${key}]`).value.trim();
      if (v) f.set(key, v);
    }
    app.go(`/audit${f.toString() ? `?${f}` : ""}`);
  });
  const grid = table("Audit trail", ["At", "Actor", "Role", "Action", "Resource", "Changes", "Master", "Address"], []);
  grid.querySelector("tbody").replaceWith(body);
  view.replaceChildren(el("h1", {}, "Audit trail"), form, grid, pager);
  await load();
  return { refresh: load, on: { audit() { if (!p.get("after")) app.refreshSoon(); } } };
}
