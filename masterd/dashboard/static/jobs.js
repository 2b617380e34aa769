// The jobs table: search, filters, sorting and paging kept in the URL (a
// link shares the same table), live rows, and actions on a selection.

import { JOB_ACTIONS, perform } from "./actions.js";
import { api, may, mayChangeJob } from "./api.js";
import { el, link, notice, table, time } from "./ui.js";

const STATES = ["waiting", "queued", "running", "paused", "done", "failed", "canceled"];
const COLUMNS = [
  // [heading, sort key or null]
  ["Id", "id"], ["Title", "title"], ["Owner", "owner"], ["Project", null], ["State", "state"],
  ["Priority", "priority"], ["Done", null], ["Updated", "updated"],
];
export const PAGE = 50;

function done(job) {
  return `${job.tasks.done.toLocaleString()} / ${job.tasks.total.toLocaleString()}`;
}

// A row of a jobs table; selectable when the role may change the job.
export function jobRow(job, selection) {
  const cells = [
    el("td", {}, link(`/jobs/${job.id}`, job.id)),
    el("td", {}, job.title || ""),
    el("td", {}, job.owner || ""),
    el("td", {}, job.project || ""),
    el("td", { class: "state" }, el("span", { class: `badge ${job.state}` }, job.state)),
    el("td", { class: "num" }, job.priority),
    el("td", { class: "done num" }, done(job)),
    el("td", { class: "updated" }, time(job.updated_at)),
  ];
  if (selection) {
    const box = el("input", { type: "checkbox", "aria-label": `Select job ${job.id}`,
                              disabled: !mayChangeJob(job) });
    box.checked = selection.has(job.id);
    box.addEventListener("change", () => {
      if (box.checked) selection.set(job.id, job); else selection.delete(job.id);
      selection.changed();
    });
    cells.unshift(el("td", {}, box));
  }
  return el("tr", { "data-job": job.id }, cells);
}

export function updateJobRow(row, job) {
  const badge = row.querySelector(".state .badge");
  badge.textContent = job.state;
  badge.className = `badge ${job.state}`;
  row.querySelector(".done").textContent = done(job);
}

function params() {
  const p = new URLSearchParams(location.search);
  return {
    q: p.get("q") || "", state: p.get("state") || "", owner: p.get("owner") || "",
    project: p.get("project") || "", sort: p.get("sort") || "-id",
    offset: Math.max(0, parseInt(p.get("offset") || "0", 10) || 0),
  };
}

function query(p) {
  const q = new URLSearchParams();
  for (const key of ["q", "state", "owner", "project"]) if (p[key]) q.set(key, p[key]);
  if (p.sort !== "-id") q.set("sort", p.sort);
  if (p.offset) q.set("offset", String(p.offset));
  return q;
}

export async function jobsView(view, _arg, app) {
  const p = params();
  const selection = new Map();
  const body = el("tbody", { id: "jobs-body" });
  const status = el("p", { class: "muted", id: "jobs-status", "aria-live": "polite" });
  const pager = el("div", { class: "pager" });
  const bulk = el("div", { class: "actions", role: "group", "aria-label": "Actions on the selection" });
  const all = el("input", { type: "checkbox", "aria-label": "Select all jobs on this page" });

  function go(changes, replace = false) {
    Object.assign(p, changes);
    const q = query(p).toString();
    const url = `/jobs${q ? `?${q}` : ""}`;
    if (replace) history.replaceState({}, "", url); else history.pushState({}, "", url);
    load().catch((error) => notice(error.message));
  }

  selection.changed = () => {
    const n = selection.size;
    for (const b of bulk.querySelectorAll("button")) b.disabled = n === 0;
    bulk.querySelector(".selected").textContent = n ? `${n} selected` : "none selected";
  };
  if (may("user")) {
    bulk.append(el("span", { class: "selected muted" }, "none selected"),
      ...JOB_ACTIONS.map((a) => el("button", {
        type: "button", class: a.destroys ? "danger" : "", disabled: true,
        onclick: () => perform(a, "job", [...selection.values()].map(
          (j) => ({ label: j.id, doc: j })), async () => { selection.clear(); await load(); }),
      }, a.name)));
    all.addEventListener("change", () => {
      for (const box of body.querySelectorAll("input[type=checkbox]:not(:disabled)")) {
        if (box.checked !== all.checked) { box.checked = all.checked; box.dispatchEvent(new Event("change")); }
      }
    });
  }

  const headers = COLUMNS.map(([name, key]) => {
    if (!key) return name;
    const current = p.sort === key ? "ascending" : p.sort === `-${key}` ? "descending" : null;
    const next = p.sort === `-${key}` ? key : `-${key}`;
    return el("button", { type: "button", class: "sort", "aria-pressed": current !== null,
      onclick: () => go({ sort: next, offset: 0 }), "data-sort": current || "none",
      title: `Sort by ${name.toLowerCase()}` },
      name, current === "ascending" ? " ▲" : current === "descending" ? " ▼" : "");
  });
  if (may("user")) headers.unshift(all);
  const grid = table("Jobs", headers, [], {});
  grid.querySelector("tbody").replaceWith(body);
  COLUMNS.forEach(([, key], i) => {
    const th = grid.querySelectorAll("th")[i + (may("user") ? 1 : 0)];
    if (key && (p.sort === key || p.sort === `-${key}`)) {
      th.setAttribute("aria-sort", p.sort.startsWith("-") ? "descending" : "ascending");
    }
  });

  let typing = null;
  const search = el("input", { id: "search", type: "search", value: p.q, placeholder: "Title or id",
                               maxlength: 255 });
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => go({ q: search.value.trim(), offset: 0 }, true), 300);
  });
  const stateSelect = el("select", { id: "filter-state" },
    el("option", { value: "" }, "any"), STATES.map((s) => el("option", { value: s }, s)));
  stateSelect.value = p.state;
  stateSelect.addEventListener("change", () => go({ state: stateSelect.value, offset: 0 }));
  const text = (id, key) => {
    const input = el("input", { id, type: "text", value: p[key], maxlength: 255 });
    input.addEventListener("change", () => go({ [key]: input.value.trim(), offset: 0 }));
    return input;
  };
  const filters = el("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() },
    el("label", { for: "search" }, "Search"), search,
    el("label", { for: "filter-state" }, "State"), stateSelect,
    el("label", { for: "filter-owner" }, "Owner"), text("filter-owner", "owner"),
    el("label", { for: "filter-project" }, "Project"), text("filter-project", "project"));

  async function load() {
    const q = query(p);
    q.set("limit", String(PAGE));
    const page = await api("GET", `/api/v1/jobs?${q}`);
    body.replaceChildren(...page.items.map((j) => jobRow(j, may("user") ? selection : null)));
    for (const [id, job] of selection) {
      if (!page.items.some((j) => j.id === id)) selection.delete(id);
      else selection.set(id, page.items.find((j) => j.id === id) || job);
    }
    all.checked = false;
    if (selection.changed && bulk.querySelector(".selected")) selection.changed();
    const total = page.total ?? page.items.length;
    const first = page.items.length ? p.offset + 1 : 0;
    status.textContent = `Jobs ${first.toLocaleString()}–${(p.offset + page.items.length).toLocaleString()} of ${total.toLocaleString()}`;
    pager.replaceChildren(
      el("button", { type: "button", disabled: p.offset === 0,
        onclick: () => go({ offset: Math.max(0, p.offset - PAGE) }) }, "Previous page"),
      el("button", { type: "button", disabled: !page.next,
        onclick: () => go({ offset: p.offset + PAGE }) }, "Next page"));
    if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No jobs match.")));
  }

  view.replaceChildren(el("h1", {}, "Jobs"), filters, bulk, status, grid, pager);
  await load();
  return {
    refresh: load,
    on: {
      job(job) {
        const row = body.querySelector(`tr[data-job="${job.id}"]`);
        if (row) updateJobRow(row, job);
        else if (p.offset === 0 && (!p.state || p.state === job.state)) app.refreshSoon();
      },
    },
  };
}
