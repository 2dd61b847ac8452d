// reminders, in JavaScript: a list of things to be reminded of at a time, fired by the
// facet's own alarm (ABI v2 alarms: env.setAlarm, and the `alarm` handler). README.md.
//
// The facet keeps one alarm, set to its earliest pending reminder. When it fires, every
// reminder due by then is marked fired (and logged), and the alarm moves to the next one.
// Delivery is at least once: marking is idempotent (fired_ms is set once), so a delivery
// repeated after a crash changes nothing twice.

import { Response } from "facets";

const MAX_TEXT = 500;
/** At most this far ahead: a reminder is for this life, not year 9999. */
const MAX_AHEAD_MS = 10 * 366 * 24 * 3600 * 1000;
const MAX_SHOWN = 1000;

const migrations = [
  [
    "CREATE TABLE reminders (id INTEGER PRIMARY KEY, text TEXT NOT NULL, due_ms INTEGER NOT NULL," +
      " created_ms INTEGER NOT NULL, fired_ms INTEGER)",
    "CREATE INDEX reminders_pending ON reminders(due_ms) WHERE fired_ms IS NULL",
  ],
];

const utf8 = new TextEncoder();

function validText(text) {
  return typeof text === "string" && text.length > 0 && utf8.encode(text).length <= MAX_TEXT ? text : null;
}

/** `at` (an ISO time or ms since the epoch) or `in` (seconds from now) -> ms, or an error string. */
function dueOf(req) {
  const now = Date.now();
  let due;
  if (req.in !== undefined && req.in !== null) {
    if (typeof req.in !== "number" || !Number.isFinite(req.in) || req.in < 0) return "in must be seconds, 0 or more";
    due = now + Math.round(req.in * 1000);
  } else if (typeof req.at === "number" && Number.isSafeInteger(req.at)) {
    due = req.at;
  } else if (typeof req.at === "string") {
    due = Date.parse(req.at);
    if (Number.isNaN(due)) return "at must be an ISO time such as 2026-12-24T18:00:00Z";
  } else {
    return 'give "at" (an ISO time or ms since the epoch) or "in" (seconds from now)';
  }
  if (due < 0 || due > now + MAX_AHEAD_MS) return "the time must be between 1970 and ten years from now";
  return due;
}

/** Point the facet's alarm at its earliest pending reminder (or delete it: none pending). */
function rearm(env) {
  const next = env.sql.first("SELECT min(due_ms) AS due FROM reminders WHERE fired_ms IS NULL");
  if (next && next.due !== null) env.setAlarm(next.due);
  else env.deleteAlarm();
}

const shown = (r) => ({
  id: r.id,
  text: r.text,
  due: new Date(r.due_ms).toISOString(),
  fired: r.fired_ms === null ? null : new Date(r.fired_ms).toISOString(),
});

function add(env, req) {
  const text = validText(req.text);
  if (!text) return { status: 400, body: { error: { code: "bad_request", message: "text must be 1-500 bytes" } } };
  const due = dueOf(req);
  if (typeof due === "string") return { status: 400, body: { error: { code: "bad_request", message: due } } };
  const row = env.sql.first(
    "INSERT INTO reminders (text, due_ms, created_ms) VALUES (?, ?, ?) RETURNING *",
    text,
    due,
    Date.now(),
  );
  rearm(env);
  return { status: 201, body: shown(row) };
}

function list(env) {
  const rows = env.sql(
    "SELECT * FROM reminders ORDER BY fired_ms IS NOT NULL, due_ms, id LIMIT ?",
    MAX_SHOWN,
  );
  return { reminders: rows.map(shown), alarm: env.getAlarm() === null ? null : new Date(env.getAlarm()).toISOString() };
}

function remove(env, id) {
  const gone = env.sql.run("DELETE FROM reminders WHERE id = ?", id).rowsWritten > 0;
  if (gone) rearm(env);
  return gone;
}

/** The alarm: every reminder due by now fires, then the alarm moves to the next one. */
function alarm(env) {
  const now = Date.now();
  const due = env.sql("SELECT id, text FROM reminders WHERE fired_ms IS NULL AND due_ms <= ? ORDER BY due_ms, id", now);
  for (const r of due) {
    env.sql.run("UPDATE reminders SET fired_ms = ? WHERE id = ? AND fired_ms IS NULL", now, r.id);
    console.log(`reminder ${r.id}: ${r.text}`);
  }
  rearm(env);
}

// -- the plain-call protocol: {"op": "add" | "list" | "delete", ...} ----------------------------

function call(body, env) {
  let req;
  try {
    req = JSON.parse(body);
  } catch {
    req = null;
  }
  if (req === null || typeof req !== "object" || Array.isArray(req)) {
    return JSON.stringify({ error: 'expected JSON like {"op":"add","text":"tea","in":60}' });
  }
  switch (req.op) {
    case "add": {
      const answer = add(env, req);
      return JSON.stringify(answer.status === 201 ? answer.body : { error: answer.body.error.message });
    }
    case "list":
      return JSON.stringify(list(env));
    case "delete":
      if (!Number.isSafeInteger(req.id)) return JSON.stringify({ error: "id is required" });
      return JSON.stringify(remove(env, req.id) ? { id: req.id, deleted: true } : { error: "no such reminder" });
    default:
      return JSON.stringify({ error: "unknown op; expected add, list or delete" });
  }
}

// -- HTTP: a JSON API -------------------------------------------------------------------------

const jsonError = (status, code, message) => Response.json({ error: { code, message } }, { status });

async function fetch(req, env) {
  if (req.path === "/reminders" || req.path === "/") {
    if (req.method === "GET" || req.method === "HEAD") return Response.json(list(env));
    if (req.method !== "POST") return jsonError(405, "method_not_allowed", "GET or POST");
    let body;
    try {
      body = JSON.parse(await req.text());
    } catch {
      return jsonError(400, "bad_request", 'expected JSON like {"text":"tea","in":60}');
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      return jsonError(400, "bad_request", 'expected JSON like {"text":"tea","in":60}');
    }
    const answer = add(env, body);
    return Response.json(answer.body, { status: answer.status });
  }
  const match = /^\/reminders\/(\d{1,15})$/.exec(req.path);
  if (match) {
    if (req.method !== "DELETE") return jsonError(405, "method_not_allowed", "DELETE");
    const id = Number(match[1]);
    return remove(env, id) ? Response.json({ id, deleted: true }) : jsonError(404, "not_found", "no such reminder");
  }
  return jsonError(404, "not_found", "no such path; try GET /reminders");
}

export default { migrations, call, fetch, alarm };
