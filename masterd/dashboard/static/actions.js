// What a person can do to jobs, tasks and agents: buttons named for what
// they do, shown only to a role that may, asking first where work is
// destroyed, and saying what the server answered when it refuses.

import { api, may, mayChangeJob } from "./api.js";
import { confirmAction, el, notice } from "./ui.js";

const FINISHED = new Set(["done", "failed", "canceled"]);

// Each action: its name, whether it applies to an item (shown on the
// item's page only then), whether it destroys work, and the request.
export const JOB_ACTIONS = [
  { name: "Pause", applies: (j) => !j.paused && !FINISHED.has(j.state),
    run: (j) => api("PATCH", j.href, { paused: true }) },
  { name: "Resume", applies: (j) => j.paused,
    run: (j) => api("PATCH", j.href, { paused: false }) },
  { name: "Cancel", applies: (j) => !FINISHED.has(j.state), destroys: true,
    run: (j) => api("POST", `${j.href}/cancel`) },
  { name: "Retry", applies: (j) => j.tasks.failed + j.tasks.canceled > 0,
    run: (j) => api("POST", `${j.href}/retry`) },
  { name: "Delete", applies: (j) => FINISHED.has(j.state), destroys: true,
    run: (j) => api("DELETE", j.href) },
];

const ACTIVE = new Set(["queued", "assigned", "running", "waiting"]);

export const TASK_ACTIONS = [
  { name: "Cancel", applies: (t) => ACTIVE.has(t.state), destroys: true,
    run: (t) => api("POST", `${t.href}/cancel`) },
  { name: "Retry", applies: (t) => !ACTIVE.has(t.state),
    run: (t) => api("POST", `${t.href}/retry`, { done: t.state === "done" }) },
];

export const AGENT_ACTIONS = [
  { name: "Disable", applies: (a) => a.enabled,
    run: (a) => api("PATCH", a.href, { enabled: false }) },
  { name: "Enable", applies: (a) => !a.enabled,
    run: (a) => api("PATCH", a.href, { enabled: true }) },
];

function what(kind, items) {
  if (items.length === 1) return `${kind} ${items[0].label}`;
  return `${items.length} ${kind}s`;
}

// Run an action on items ({ label, doc }); says what was done and what
// the server refused, then calls done().
export async function perform(action, kind, items, done) {
  if (!items.length) return;
  const target = what(kind, items);
  if (action.destroys) {
    const consequence = action.name === "Delete"
      ? "Its tasks, attempts and logs are deleted for good."
      : "Running tasks are stopped on their agents, and their work so far is lost.";
    const ok = await confirmAction(`${action.name} ${target}?`, consequence,
      `${action.name} ${target}`);
    if (!ok) return;
  }
  const refused = [];
  for (const item of items) {
    try {
      await action.run(item.doc);
    } catch (error) {
      refused.push(`${kind} ${item.label}: ${error.message}`);
    }
  }
  const worked = items.length - refused.length;
  if (refused.length) {
    notice(`${action.name}: ${worked ? `done for ${worked}; ` : ""}refused for ${refused.join("; ")}`);
  } else {
    notice(`${action.name}: done for ${target}.`, "status");
  }
  if (done) await done();
}

// The buttons for one item the role may change: those that apply.
export function buttonsFor(actions, kind, label, doc, done) {
  return el("div", { class: "actions", role: "group", "aria-label": "Actions" },
    actions.filter((a) => a.applies(doc)).map((a) => el("button", {
      type: "button", class: a.destroys ? "danger" : "",
      onclick: () => perform(a, kind, [{ label, doc }], done),
    }, a.name)));
}

export function jobButtons(job, done) {
  if (!mayChangeJob(job)) return null;
  return buttonsFor(JOB_ACTIONS, "job", job.id, job, done);
}

export function taskButtons(task, job, done) {
  if (!mayChangeJob(job)) return null;
  return buttonsFor(TASK_ACTIONS, "task", task.id, task, done);
}

export function agentButtons(agent, done) {
  if (!may("operator")) return null;
  return buttonsFor(AGENT_ACTIONS, "agent", agent.hostname, agent, done);
}
