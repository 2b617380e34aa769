// Agents: a table of the farm's render nodes (state, current tasks, CPU
// and RAM, last seen, tags), live, and a page for each.

import { AGENT_ACTIONS, agentButtons, perform } from "./actions.js";
import { api, may } from "./api.js";
import { el, link, mebibytes, meter, table, time } from "./ui.js";

const STATES = ["idle", "busy", "offline", "disabled"];
const PAGE = 100;

function cpu(agent) {
  const used = agent.usage && Number(agent.usage.cpu_percent);
  if (!Number.isFinite(used)) return "—";
  return meter(used, 100, `CPU of ${agent.hostname}`, `${Math.round(used)} %`);
}

function ram(agent) {
  const used = agent.usage && Number(agent.usage.ram_used_mb);
  if (!Number.isFinite(used) || !agent.ram_mb) return "—";
  return meter(used, agent.ram_mb, `RAM of ${agent.hostname}`,
    `${mebibytes(used)} of ${mebibytes(agent.ram_mb)}`);
}

function tasksCell(tasks) {
  if (!tasks || !tasks.length) return "—";
  const shown = tasks.slice(0, 3).map((t, i) => [i ? ", " : "", link(`/tasks/${t.id}`, t.id)]);
  return [shown, tasks.length > 3 ? ` +${tasks.length - 3}` : ""];
}

function agentRow(agent, tasks, selection) {
  const cells = [
    el("td", {}, link(`/agents/${agent.id}`, agent.hostname || agent.id)),
    el("td", { class: "state" }, el("span", { class: `badge ${agent.state}` }, agent.state)),
    el("td", { class: "tasks" }, tasksCell(tasks)),
    el("td", {}, cpu(agent)), el("td", {}, ram(agent)),
    el("td", {}, time(agent.last_seen)),
    el("td", {}, agent.tags.join(", ") || "—"),
    el("td", {}, agent.master || "—"),
  ];
  if (selection) {
    const box = el("input", { type: "checkbox", "aria-label": `Select agent ${agent.hostname}` });
    box.checked = selection.has(agent.id);
    box.addEventListener("change", () => {
      if (box.checked) selection.set(agent.id, agent); else selection.delete(agent.id);
    });
    cells.unshift(el("td", {}, box));
  }
  return el("tr", { "data-agent": agent.id }, cells);
}

async function current(agentID) {
  const q = agentID ? `agent=${agentID}&limit=500` : "limit=5000";
  const page = await api("GET", `/api/v1/assignments?${q}`);
  const by = new Map();
  for (const t of page.items) {
    if (!t.agent) continue;
    if (!by.has(t.agent.id)) by.set(t.agent.id, []);
    by.get(t.agent.id).push(t);
  }
  return by;
}

export async function agentsView(view, _arg, app) {
  const p = new URLSearchParams(location.search);
  const state = p.get("state") || "";
  const after = p.get("after") || "";
  const selection = may("operator") ? new Map() : null;
  const body = el("tbody", { id: "agents-body" });
  const pager = el("div", { class: "pager" });

  async function load() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (state) q.set("state", state);
    if (after) q.set("after", after);
    const [page, tasks] = await Promise.all([api("GET", `/api/v1/agents?${q}`), current(null)]);
    body.replaceChildren(...page.items.map((a) => agentRow(a, tasks.get(a.id), selection)));
    if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No agents.")));
    const nextAfter = page.next ? new URL(page.next, location.origin).searchParams.get("after") : null;
    pager.replaceChildren(
      after ? link(`/agents${state ? `?state=${state}` : ""}`, "First page") : "",
      nextAfter ? link(`/agents?${new URLSearchParams({ ...(state ? { state } : {}), after: nextAfter })}`, "Next page") : "");
  }

  const filter = el("select", { id: "filter-agent-state" },
    el("option", { value: "" }, "any"), STATES.map((s) => el("option", { value: s }, s)));
  filter.value = state;
  filter.addEventListener("change", () => app.go(`/agents${filter.value ? `?state=${filter.value}` : ""}`));
  const headers = ["Agent", "State", "Tasks", "CPU", "RAM", "Last seen", "Tags", "Master"];
  if (selection) headers.unshift("");
  const grid = table("Agents", headers, []);
  grid.querySelector("tbody").replaceWith(body);
  const bulk = selection ? el("div", { class: "actions", role: "group", "aria-label": "Actions on the selection" },
    AGENT_ACTIONS.map((a) => el("button", { type: "button", onclick: () => perform(a, "agent",
      [...selection.values()].map((g) => ({ label: g.hostname, doc: g })),
      async () => { selection.clear(); await load(); }) }, a.name))) : "";
  view.replaceChildren(el("h1", {}, "Agents"),
    el("form", { class: "filters", onsubmit: (e) => e.preventDefault() },
      el("label", { for: "filter-agent-state" }, "State"), filter),
    bulk, grid, pager);
  await load();
  return {
    refresh: load,
    on: {
      agent(event) {
        const row = body.querySelector(`tr[data-agent="${event.id}"]`);
        // Reading the page again reads every current assignment: at most
        // every 5 s, however busy the farm; the state changes at once.
        if (!row) { if (!after) app.refreshSoon(5000); return; }
        const badge = row.querySelector(".state .badge");
        badge.textContent = event.state;
        badge.className = `badge ${event.state}`;
        app.refreshSoon(5000);  // its tasks and usage
      },
    },
  };
}

export async function agentView(view, id) {
  const agent = await api("GET", `/api/v1/agents/${id}`);
  const [failures, exceptions, jobs, tasks] = await Promise.all([
    api("GET", `${agent.failures}?limit=20`), api("GET", `${agent.exceptions}?limit=20`),
    api("GET", `${agent.jobs}?limit=20`), current(agent.id)]);
  const refresh = async () => view.replaceChildren(...(await render()));
  async function render() {
    const doc = await api("GET", agent.href);
    return [
      el("h1", {}, `Agent ${doc.hostname}`),
      agentButtons(doc, refresh) || "",
      el("dl", { class: "facts" },
        el("dt", {}, "State"), el("dd", {}, el("span", { class: `badge ${doc.state}` }, doc.state)),
        el("dt", {}, "Id"), el("dd", {}, doc.id),
        el("dt", {}, "Running"), el("dd", {}, tasksCell(tasks.get(doc.id))),
        el("dt", {}, "CPU"), el("dd", {}, cpu(doc)), el("dt", {}, "RAM"), el("dd", {}, ram(doc)),
        el("dt", {}, "Machine"), el("dd", {}, `${doc.os || "?"}, ${doc.cpus} CPUs, ${mebibytes(doc.ram_mb)}, ${doc.gpus} GPUs`),
        el("dt", {}, "Tags"), el("dd", {}, doc.tags.join(", ") || "—"),
        el("dt", {}, "Master"), el("dd", {}, doc.master || "—"),
        el("dt", {}, "Connected"), el("dd", {}, time(doc.connected_at)),
        el("dt", {}, "Last seen"), el("dd", {}, time(doc.last_seen))),
      el("h2", {}, "Failures"),
      table("Failures", ["Task", "Job", "Attempt", "Finished", "Exit code", "Reason"],
        failures.items.map((a) => el("tr", {}, el("td", {}, link(`/tasks/${a.task.id}`, a.task.id)),
          el("td", {}, link(`/jobs/${a.job.id}`, a.job.id)), el("td", { class: "num" }, a.attempt),
          el("td", {}, time(a.finished_at)), el("td", { class: "num" }, a.exit_code ?? "—"),
          el("td", {}, a.error || "")))),
      el("h2", {}, "Exceptions"),
      table("Exceptions", ["At", "Message"], exceptions.items.map((x) => el("tr", {},
        el("td", {}, time(x.at)), el("td", {}, x.traceback
          ? el("details", {}, el("summary", {}, x.message), el("pre", {}, x.traceback)) : x.message)))),
      el("h2", {}, "Jobs processed"),
      table("Jobs processed", ["Job", "Attempts", "Done", "Failed", "Last started"],
        jobs.items.map((j) => el("tr", {}, el("td", {}, link(`/jobs/${j.job.id}`, j.job.id)),
          el("td", { class: "num" }, j.attempts), el("td", { class: "num" }, j.done),
          el("td", { class: "num" }, j.failed), el("td", {}, time(j.last_started_at))))),
    ];
  }
  await refresh();
  return {
    on: {
      agent(event) { if (event.id === agent.id) refresh().catch(() => {}); },
    },
  };
}
