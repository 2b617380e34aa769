// The farm at a glance (jobs and agents by state, tasks finished a minute
// over the last hour, limits in use, masters), the masters' own figures,
// and the audit trail for those who may read it.

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
  async function render() {
    const [farm, limits, masters] = await Promise.all([
      api("GET", "/api/v1/farm"), api("GET", "/api/v1/limits"), api("GET", "/api/v1/masters")]);
    view.replaceChildren(el("h1", {}, "Overview"),
      el("h2", {}, "Jobs"), cards("Jobs by state", farm.jobs, JOB_STATES, (s) => `/jobs?state=${s}`),
      el("h2", {}, "Agents"), cards("Agents by state", farm.agents, AGENT_STATES, (s) => `/agents?state=${s}`),
      el("h2", {}, "Tasks finished a minute"), throughput(farm.finished_per_minute),
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
