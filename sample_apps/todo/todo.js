// todo, in JavaScript: the twin of todo.zig (the same protocol, pages, API and schema; README.md).
// Lists of items that can be done/undone and reordered: a JSON protocol on plain calls and,
// over HTTP, an HTML page with forms plus a JSON API.

import { Response, HttpError, escapeHtml } from "facets";

const MAX_TITLE = 500;
/** Items added without a list name (the page's form) go here. */
const DEFAULT_LIST = "home";
/** The page and `GET /api/items` show at most this many items. */
const MAX_SHOWN = 1000;

const migrations = [
  [
    "CREATE TABLE lists (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL)",
    "CREATE TABLE items (id INTEGER PRIMARY KEY, list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE," +
      " title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, position INTEGER NOT NULL, created_ms INTEGER NOT NULL)",
    "CREATE INDEX items_by_list ON items(list_id, position)",
  ],
  ["ALTER TABLE items ADD COLUMN done_ms INTEGER"],
];

const utf8 = new TextEncoder();
const byteLength = (text) => utf8.encode(text).length;

/** A string of 1-500 bytes of UTF-8, else null. */
function validTitle(title) {
  return typeof title === "string" && title.length > 0 && byteLength(title) <= MAX_TITLE ? title : null;
}

// -- the plain-call protocol --------------------------------------------------------------

const FIELDS = { op: "string", list: "string", title: "string", id: "integer", position: "integer" };

/** The request, or null when it is not an object with fields of the right types (and an op). */
function parseRequest(body, fields, required = []) {
  let req;
  try {
    req = JSON.parse(body);
  } catch {
    return null;
  }
  if (req === null || typeof req !== "object" || Array.isArray(req)) return null;
  for (const [name, type] of Object.entries(fields)) {
    const v = req[name];
    if (v === undefined || v === null) {
      if (required.includes(name)) return null;
      req[name] = null;
    } else if (type === "integer" ? !Number.isSafeInteger(v) : typeof v !== type) return null;
  }
  return req;
}

const error = (message) => ({ error: message });

function handle(body, env) {
  const req = parseRequest(body, FIELDS, ["op"]);
  if (!req) return error('expected JSON like {"op":"add","list":"home","title":"milk"}');
  switch (req.op) {
    case "lists":
      return lists(env);
    case "add":
      return add(env, req);
    case "list":
      return listItems(env, req);
    case "done":
      return setDone(env, req, true);
    case "undone":
      return setDone(env, req, false);
    case "rename":
      return rename(env, req);
    case "move":
      return move(env, req);
    case "delete":
      return remove(env, req);
    default:
      return error("unknown op; expected lists, add, list, done, undone, rename, move or delete");
  }
}

function lists(env) {
  const rows = env.sql.values(
    "SELECT l.name, count(i.id), coalesce(sum(i.done), 0) FROM lists l LEFT JOIN items i ON i.list_id = l.id " +
      "GROUP BY l.id ORDER BY l.name",
  );
  return { lists: rows.map(([name, items, done]) => ({ name, items, done })) };
}

function listId(env, name, create) {
  const found = env.sql.first("SELECT id FROM lists WHERE name = ?", name);
  if (found) return found.id;
  if (!create) return null;
  return env.sql.run("INSERT INTO lists (name, created_ms) VALUES (?, ?)", name, Date.now()).lastInsertRowid;
}

function add(env, req) {
  const name = validTitle(req.list);
  if (!name) return error("list must be 1-500 characters");
  const title = validTitle(req.title);
  if (!title) return error("title must be 1-500 characters");
  const item = insertItem(env, name, title);
  return { id: item.id, list: name, title, position: item.position, done: false };
}

/** Append `title` to list `name` (created if new). */
function insertItem(env, name, title) {
  const listIdValue = listId(env, name, true);
  return env.sql.first(
    "INSERT INTO items (list_id, title, position, created_ms) " +
      "VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM items WHERE list_id = ?), ?) RETURNING id, position",
    listIdValue,
    title,
    listIdValue,
    Date.now(),
  );
}

function listItems(env, req) {
  if (req.list === null) return error("list is required");
  const id = listId(env, req.list, false);
  if (id === null) return error("no such list");
  const rows = env.sql("SELECT id, title, done, position FROM items WHERE list_id = ? ORDER BY position, id", id);
  return { list: req.list, items: rows.map((r) => ({ id: r.id, title: r.title, done: r.done !== 0, position: r.position })) };
}

function setDone(env, req, done) {
  if (req.id === null) return error("id is required");
  if (!updateDone(env, req.id, done)) return error("no such item");
  return { id: req.id, done };
}

/** False when there is no item `id`. */
function updateDone(env, id, done) {
  const flag = done ? 1 : 0;
  const r = env.sql.run("UPDATE items SET done = ?, done_ms = CASE WHEN ? THEN ? END WHERE id = ?", flag, flag, Date.now(), id);
  return r.rowsWritten > 0;
}

function rename(env, req) {
  if (req.id === null) return error("id is required");
  const title = validTitle(req.title);
  if (!title) return error("title must be 1-500 characters");
  if (!updateTitle(env, req.id, title)) return error("no such item");
  return { id: req.id, title };
}

function updateTitle(env, id, title) {
  return env.sql.run("UPDATE items SET title = ? WHERE id = ?", title, id).rowsWritten > 0;
}

/** Move an item to `position` (1-based) within its list, shifting the others. */
function move(env, req) {
  if (req.id === null) return error("id is required");
  if (req.position === null) return error("position is required");
  const found = env.sql.first("SELECT list_id FROM items WHERE id = ?", req.id);
  if (!found) return error("no such item");
  const others = env.sql("SELECT id FROM items WHERE list_id = ? AND id != ? ORDER BY position, id", found.list_id, req.id);
  const target = Math.min(Math.max(req.position, 1), others.length + 1);
  let pos = 1;
  for (const row of others) {
    if (pos === target) pos += 1;
    env.sql.run("UPDATE items SET position = ? WHERE id = ?", pos, row.id);
    pos += 1;
  }
  env.sql.run("UPDATE items SET position = ? WHERE id = ?", target, req.id);
  return { id: req.id, position: target };
}

function remove(env, req) {
  if (req.id === null) return error("id is required");
  if (!deleteItem(env, req.id)) return error("no such item");
  return { id: req.id, deleted: true };
}

function deleteItem(env, id) {
  return env.sql.run("DELETE FROM items WHERE id = ?", id).rowsWritten > 0;
}

// -- HTTP: the page, its forms, and the JSON API --------------------------------------------

const CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const isGet = (req) => req.method === "GET" || req.method === "HEAD";

function methodNotAllowed(allow) {
  return new Response(`method not allowed; allowed: ${allow}\n`, {
    status: 405,
    headers: { allow, "content-type": "text/plain; charset=utf-8" },
  });
}

/** `{"error": {"code", "message"}}`: the shape the platform's own error bodies have. */
const jsonError = (status, code, message) => Response.json({ error: { code, message } }, { status });

function route(req, env) {
  const path = req.path;
  if (path === "/") return isGet(req) ? page(req, env) : methodNotAllowed("GET, HEAD");
  if (path === "/items") return req.method === "POST" ? formAdd(req, env) : methodNotAllowed("POST");
  if (path.startsWith("/items/")) return formAction(req, env, path.slice("/items/".length));
  if (path === "/api/items") {
    if (isGet(req)) return apiList(req, env);
    if (req.method === "POST") return apiAdd(req, env);
    return methodNotAllowed("GET, HEAD, POST");
  }
  if (path.startsWith("/api/items/")) {
    const id = parseId(path.slice("/api/items/".length));
    if (id === null) return jsonError(404, "not_found", "no such item");
    if (isGet(req)) return apiItem(env, id);
    if (req.method === "PATCH") return apiPatch(req, env, id);
    if (req.method === "DELETE") return apiDelete(env, id);
    return methodNotAllowed("GET, HEAD, PATCH, DELETE");
  }
  if (path.startsWith("/api/")) return jsonError(404, "not_found", "no such resource");
  return errorPage(req, 404, "Not found", "There is no page here.");
}

/** A decimal item id of 1-18 digits, else null. */
function parseId(text) {
  return /^[0-9]{1,18}$/.test(text) ? Number(text) : null;
}

const trimmed = (text) => text.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");

function htmlPage(status, title, body) {
  const text =
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>' +
    escapeHtml(title) +
    "</title>\n<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}" +
    "li{margin:.3rem 0}li form{display:inline}.done .title{text-decoration:line-through;color:#666}</style>\n" +
    "</head>\n<body>\n" +
    body +
    "</body>\n</html>\n";
  return new Response(text, {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      // Defence in depth behind the escaping: no script runs and forms post only here.
      "content-security-policy": CSP,
      "x-content-type-options": "nosniff",
    },
  });
}

function errorPage(req, status, title, message) {
  return htmlPage(
    status,
    title,
    `<h1>${escapeHtml(title)}</h1>\n<p>${escapeHtml(message)}</p>\n` +
      `<p><a href="${escapeHtml(req.base)}/">Back to the list</a></p>\n`,
  );
}

function page(req, env) {
  const rows = env.sql.values(
    "SELECT l.name, i.id, i.title, i.done FROM items i JOIN lists l ON l.id = i.list_id " +
      "ORDER BY l.name, i.position, i.id LIMIT ?",
    MAX_SHOWN + 1,
  );
  const shown = rows.slice(0, MAX_SHOWN);
  const base = escapeHtml(req.base);
  let out = "<h1>Todo</h1>\n";
  if (shown.length === 0) out += "<p>Nothing to do yet.</p>\n";
  let current = null;
  for (const [list, id, title, doneFlag] of shown) {
    if (current === null || current !== list) {
      if (current !== null) out += "</ul>\n";
      out += `<h2>${escapeHtml(list)}</h2>\n<ul>\n`;
      current = list;
    }
    const done = doneFlag !== 0;
    out += done ? '<li class="done">' : "<li>";
    out += `<span class="title">${escapeHtml(title)}</span>\n`;
    out += itemButton(base, id, done ? "undone" : "done", done ? "Undo" : "Done");
    out += itemButton(base, id, "delete", "Delete");
    out += "</li>\n";
  }
  if (current !== null) out += "</ul>\n";
  if (rows.length > MAX_SHOWN) out += `<p>Showing the first ${MAX_SHOWN} items.</p>\n`;
  out += `<form method="post" action="${base}/items">\n`;
  out += `<label>New item <input name="title" required maxlength="${MAX_TITLE}"></label>\n`;
  out += `<label>List <input name="list" value="${DEFAULT_LIST}" maxlength="${MAX_TITLE}"></label>\n`;
  out += '<button type="submit">Add</button>\n</form>\n';
  return htmlPage(200, "Todo", out);
}

function itemButton(base, id, action, label) {
  return `<form method="post" action="${base}/items/${id}/${action}"><button type="submit">${label}</button></form>\n`;
}

/** After a form post: 303 See Other, so the browser GETs the page (a reload does not post again). */
const backToPage = (req) => Response.redirect(`${req.base}/`, 303);

/** POST /items (form: title, optional list). */
async function formAdd(req, env) {
  if (req.contentType !== "application/x-www-form-urlencoded") {
    return errorPage(req, 415, "Unsupported form", "Send the form as application/x-www-form-urlencoded.");
  }
  let form;
  try {
    form = await req.formData();
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
    return errorPage(req, 400, "Could not add the item", "The title must be 1-500 bytes of text.");
  }
  const title = validTitle(trimmed(form.get("title") ?? ""));
  if (!title) return errorPage(req, 400, "Could not add the item", "The title must be 1-500 bytes of text.");
  const listField = trimmed(form.get("list") ?? "");
  const list = validTitle(listField.length === 0 ? DEFAULT_LIST : listField);
  if (!list) return errorPage(req, 400, "Could not add the item", "The list name must be 1-500 bytes of text.");
  insertItem(env, list, title);
  return backToPage(req);
}

/** POST /items/{id}/done, /undone, /delete (the page's buttons). */
function formAction(req, env, rest) {
  const slash = rest.indexOf("/");
  if (slash < 0) return errorPage(req, 404, "Not found", "There is no page here.");
  const action = rest.slice(slash + 1);
  const id = parseId(rest.slice(0, slash));
  if (!["done", "undone", "delete"].includes(action) || id === null) {
    return errorPage(req, 404, "Not found", "There is no page here.");
  }
  if (req.method !== "POST") return methodNotAllowed("POST");
  const found = action === "delete" ? deleteItem(env, id) : updateDone(env, id, action === "done");
  if (!found) return errorPage(req, 404, "No such item", "That item does not exist (any more).");
  return backToPage(req);
}

const ITEM_COLUMNS = "SELECT i.id, l.name, i.title, i.done, i.position FROM items i JOIN lists l ON l.id = i.list_id ";

function apiItems(rows) {
  return rows.slice(0, MAX_SHOWN).map(([id, list, title, done, position]) => ({ id, list, title, done: done !== 0, position }));
}

/** GET /api/items[?list=NAME]: `{"items": [{"id", "list", "title", "done", "position"}]}`. */
function apiList(req, env) {
  let wanted;
  try {
    wanted = req.searchParams.get("list");
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
    return jsonError(400, "bad_request", "list must be UTF-8");
  }
  const rows =
    wanted !== null
      ? env.sql.values(ITEM_COLUMNS + "WHERE l.name = ? ORDER BY i.position, i.id LIMIT ?", wanted, MAX_SHOWN)
      : env.sql.values(ITEM_COLUMNS + "ORDER BY l.name, i.position, i.id LIMIT ?", MAX_SHOWN);
  return Response.json({ items: apiItems(rows) });
}

/** POST /api/items `{"title", "list"?}` -> 201, the item as `{"op": "add"}` answers it. */
async function apiAdd(req, env) {
  const body = parseRequest(await req.text(), { title: "string", list: "string" });
  if (!body) return jsonError(400, "bad_request", 'expected JSON like {"title":"milk","list":"home"}');
  const title = validTitle(body.title);
  if (!title) return jsonError(400, "bad_request", "title must be 1-500 bytes");
  const list = validTitle(body.list ?? DEFAULT_LIST);
  if (!list) return jsonError(400, "bad_request", "list must be 1-500 bytes");
  const item = insertItem(env, list, title);
  return Response.json(
    { id: item.id, list, title, position: item.position, done: false },
    { status: 201, headers: { location: `${req.base}/api/items/${item.id}` } },
  );
}

function apiItem(env, id) {
  const items = apiItems(env.sql.values(ITEM_COLUMNS + "WHERE i.id = ?", id));
  if (items.length === 0) return jsonError(404, "not_found", "no such item");
  return Response.json(items[0]);
}

/** PATCH /api/items/{id} `{"title"?, "done"?}` -> the item. */
async function apiPatch(req, env, id) {
  const body = parseRequest(await req.text(), { title: "string", done: "boolean" });
  if (!body) return jsonError(400, "bad_request", 'expected JSON like {"done":true} or {"title":"oat milk"}');
  if (body.title === null && body.done === null) {
    return jsonError(400, "bad_request", "nothing to change: give title and/or done");
  }
  if (body.title !== null) {
    const title = validTitle(body.title);
    if (!title) return jsonError(400, "bad_request", "title must be 1-500 bytes");
    if (!updateTitle(env, id, title)) return jsonError(404, "not_found", "no such item");
  }
  if (body.done !== null && !updateDone(env, id, body.done)) return jsonError(404, "not_found", "no such item");
  return apiItem(env, id);
}

function apiDelete(env, id) {
  if (!deleteItem(env, id)) return jsonError(404, "not_found", "no such item");
  return Response.json({ id, deleted: true });
}

export default {
  migrations,
  call: (body, env) => JSON.stringify(handle(body, env)),
  fetch: route,
};
