// The API under /api/v1, with the session's cookie; who is signed in, and
// what that role may do (the server decides: this only hides what it
// would refuse).

export const session = { current: null };

const RANKS = { viewer: 0, user: 1, operator: 2, admin: 3 };

export class APIError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function send(method, path, body, accept) {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const current = session.current;
  if (method !== "GET" && method !== "HEAD" && current && current.csrf_token) {
    headers["X-CSRF-Token"] = current.csrf_token;
  }
  const reply = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!reply.ok) {
    let message = `${method} ${path}: ${reply.status}`;
    try {
      const data = await reply.json();
      if (data && data.message) message = data.message;
    } catch (error) { /* not JSON: the status says it */ }
    throw new APIError(message, reply.status);
  }
  return reply;
}

export async function api(method, path, body) {
  const reply = await send(method, path, body, "application/json");
  const text = await reply.text();
  return text ? JSON.parse(text) : null;
}

// A text resource (a task's log) and its headers.
export async function apiText(path) {
  const reply = await send("GET", path, undefined, "text/plain");
  return { text: await reply.text(), headers: reply.headers };
}

export function may(role) {
  const current = session.current;
  return current !== null && (RANKS[current.role] ?? -1) >= RANKS[role];
}

// Users steer the jobs they own; operators and admins every job.
export function mayChangeJob(job) {
  return may("operator") || (may("user") && job.owner === session.current.user);
}
