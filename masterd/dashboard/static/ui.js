// Building the page: elements, tables, times and sizes for people, and the
// dialog that asks before work is destroyed.

export function $(id) { return document.getElementById(id); }

// el("a", { href, onclick: f }, "text", child...): attributes, listeners
// (on...), boolean attributes (true sets, false or null leaves out).
export function el(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
}

function fill(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "class") node.setAttribute("class", v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

export function link(href, text) {
  return el("a", { href }, text);
}

// A table with a caption for screen readers; headers are strings or nodes.
export function table(label, headers, rows, attrs = {}) {
  return el("table", { "aria-label": label, ...attrs },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
}

const LOCAL = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

// A time in the viewer's zone, the UTC instant on hover.
export function time(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const when = new Date(iso);
  return el("time", { datetime: iso, title: `${iso} (UTC)` }, LOCAL.format(when));
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function between(startIso, endIso) {
  if (!startIso) return "—";
  const end = endIso ? new Date(endIso) : new Date();
  return duration((end - new Date(startIso)) / 1000);
}

export function mebibytes(mb) {
  if (mb === null || mb === undefined) return "—";
  if (mb < 1024) return `${mb} MiB`;
  if (mb < 1024 * 1024) return `${(mb / 1024).toFixed(1)} GiB`;
  return `${(mb / 1024 / 1024).toFixed(1)} TiB`;
}

export function count(n, one, many = `${one}s`) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

// A bar for a share (CPU, RAM, a limit), read out as its label.
export function meter(value, max, label, text) {
  const safeMax = max > 0 ? max : 1;
  return el("span", { class: "meter" },
    el("meter", { min: 0, max: safeMax, value: Math.min(value, safeMax), "aria-label": label,
                  high: safeMax * 0.9, optimum: 0 }),
    el("span", { class: "muted" }, text));
}

// The message area at the top of the view: what the server said.
export function notice(message, kind = "error") {
  const area = $("notice");
  area.className = kind;
  area.setAttribute("role", kind === "error" ? "alert" : "status");
  area.textContent = message;
  area.hidden = !message;
}

export function clearNotice() { notice("", "status"); }

// Ask before destroying work: resolves true if confirmed.
export function confirmAction(title, message, action) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { "aria-labelledby": "confirm-title", class: "confirm" });
    const finish = (yes) => { dialog.close(); dialog.remove(); resolve(yes); };
    dialog.append(el("h2", { id: "confirm-title" }, title), el("p", {}, message),
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "danger", onclick: () => finish(true) }, action),
        el("button", { type: "button", onclick: () => finish(false) }, "Go back")));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); finish(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}
