// The Facets SDK for JavaScript and TypeScript apps (ABI v2, sample_apps/wit/facets.wit).
//
// An app is an ES module whose default export (or named exports) has any of:
//
//   export default {
//     migrations: ["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)", ...],
//     async fetch(request, env) { return new Response("hello"); },   // HTTP requests
//     async call(body, env) { return "answer"; },                     // plain calls
//     alarm(env) { ... },                      // the alarm set with env.setAlarm is due
//   };
//
// `env.sql(q, ...params)` -> rows as objects; `env.sql.first(q, ...p)` -> a row or null;
// `env.sql.run(q, ...p)` -> {rowsWritten, rowsRead, lastInsertRowid}; a refused statement
// throws SqlError (`.code`: "sql_error", "not_authorized", "too_big", ...).
// `env.log(...)`, `console.*` go to the facet's log. `Date.now()`, `new Date()`,
// `Math.random()` and `crypto.getRandomValues()` use the host's clock and randomness.
// `env.setAlarm(when)` (a Date or ms since the epoch) schedules the facet's one alarm,
// replacing any pending one, and `alarm(env)` runs at or after that time; `env.getAlarm()`
// -> ms or null, `env.deleteAlarm()`. setAlarm throws AlarmError when the app has no
// `alarm` handler or the time is outside 1970..9999.
// Import the helpers with `import { Response, Headers, SqlError, HttpError } from "facets"`
// (Response and Headers are also the globals).
//
// The build bundles this file with the app (runtime/_build_js.py), and its `serve`
// becomes the component's `guest` export.

import * as host from "facets:app/host@2.1.0";

// -- the host's clock, randomness and log -------------------------------------------------

// The app's top-level code runs once, at build time (componentize-js pre-initialises the
// component), where the host is not there yet: until the first request, the clock and
// randomness refuse, and console output is dropped.
let live = false;

function notYet(what) {
  throw new Error(`${what} is not available in top-level code (it runs at build time): call it in a handler`);
}

const RealDate = Date;
function nowMs() {
  if (!live) notYet("Date.now()");
  return Number(host.nowMs());
}
function FacetsDate(...args) {
  if (!new.target) return new RealDate(nowMs()).toString();
  return args.length === 0 ? new RealDate(nowMs()) : new RealDate(...args);
}
FacetsDate.prototype = RealDate.prototype;
FacetsDate.now = nowMs;
FacetsDate.parse = RealDate.parse;
FacetsDate.UTC = RealDate.UTC;
Object.defineProperty(RealDate.prototype, "constructor", { value: FacetsDate, writable: true, configurable: true });
globalThis.Date = FacetsDate;

const MAX_RANDOM = 65536;
let pool = new Uint8Array(0);
let poolAt = 0;

/** `n` secure random bytes from the host. */
function randomBytes(n) {
  if (!live) notYet("randomness");
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += MAX_RANDOM) out.set(host.random(Math.min(MAX_RANDOM, n - at)), at);
  return out;
}

Math.random = function random() {
  if (poolAt + 7 > pool.length) {
    pool = randomBytes(1024);
    poolAt = 0;
  }
  // 53 random bits, as a double in [0, 1).
  let hi = 0;
  for (let i = 0; i < 3; i++) hi = hi * 256 + pool[poolAt++];
  hi &= 0x1fffff; // 21 bits
  let lo = 0;
  for (let i = 0; i < 4; i++) lo = lo * 256 + pool[poolAt++];
  return (hi * 4294967296 + lo) / 9007199254740992;
};

if (globalThis.crypto) {
  crypto.getRandomValues = function getRandomValues(array) {
    if (!ArrayBuffer.isView(array) || array instanceof Float32Array || array instanceof Float64Array) {
      throw new TypeError("getRandomValues: expected an integer typed array");
    }
    if (array.byteLength > MAX_RANDOM) throw new RangeError("getRandomValues: at most 65536 bytes");
    new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(randomBytes(array.byteLength));
    return array;
  };
  crypto.randomUUID = function randomUUID() {
    const b = randomBytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };
}

// The component has no network (componentize-js's fetch would trap the whole request).
globalThis.fetch = async function fetch() {
  throw new TypeError("fetch is not available: a facet has no network");
};

function show(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  try {
    const json = JSON.stringify(value, (_, v) => (typeof v === "bigint" ? v.toString() : v));
    if (json !== undefined) return json;
  } catch {
    // a cycle: fall through
  }
  return String(value);
}

function logAt(level) {
  return (...args) => {
    if (live) host.log(level, args.map(show).join(" "));
  };
}

const log = logAt(1);
log.debug = logAt(0);
log.info = logAt(1);
log.warn = logAt(2);
log.error = logAt(3);
for (const [name, level] of [
  ["debug", 0],
  ["log", 1],
  ["info", 1],
  ["warn", 2],
  ["error", 3],
  ["trace", 0],
]) {
  console[name] = logAt(level);
}

// -- SQL ------------------------------------------------------------------------------------

export class SqlError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SqlError";
    this.code = code;
  }
}

function param(value) {
  if (value === undefined) return null;
  if (typeof value === "bigint") return Number(value);
  if (value instanceof Uint8Array) return { $blob: toBase64(value) };
  if (value instanceof ArrayBuffer) return { $blob: toBase64(new Uint8Array(value)) };
  if (value instanceof RealDate) return value.getTime();
  return value;
}

function column(value) {
  return value !== null && typeof value === "object" && typeof value.$blob === "string" ? fromBase64(value.$blob) : value;
}

function execute(statement, params) {
  const answer = JSON.parse(host.sql(String(statement), params.length ? JSON.stringify(params.map(param)) : ""));
  if (!answer.ok) {
    const error = answer.error || {};
    throw new SqlError(error.code || "sql_error", error.message || "the statement failed");
  }
  return answer;
}

function objects(answer) {
  const columns = answer.columns || [];
  return (answer.rows || []).map((row) => {
    const out = {};
    columns.forEach((name, i) => {
      out[name] = column(row[i]);
    });
    return out;
  });
}

/** Rows as objects keyed by column name. */
function sql(statement, ...params) {
  return objects(execute(statement, params));
}
sql.all = sql;
/** The first row, or null. */
sql.first = (statement, ...params) => sql(statement, ...params)[0] ?? null;
/** Rows as arrays of values, in column order. */
sql.values = (statement, ...params) => (execute(statement, params).rows || []).map((row) => row.map(column));
/** For writes: {rowsWritten, rowsRead, lastInsertRowid}. */
sql.run = (statement, ...params) => {
  const a = execute(statement, params);
  return { rowsWritten: a.rows_written ?? 0, rowsRead: a.rows_read ?? 0, lastInsertRowid: a.last_insert_rowid ?? 0 };
};

// -- alarms ---------------------------------------------------------------------------------

/** A refused setAlarm: the app has no `alarm` handler, or the time is out of range. */
export class AlarmError extends Error {
  constructor(message) {
    super(message);
    this.name = "AlarmError";
  }
}

/** The latest time an alarm may be set to: 9999-12-31T23:59:59.999Z (the host's limit too). */
const MAX_ALARM_MS = 253402300799999;
/** The app's alarm handler, set by `serve` (setAlarm refuses without one). */
let alarmHandler = null;

function alarmMs(when) {
  let ms = when instanceof RealDate ? when.getTime() : when;
  if (typeof ms === "bigint") ms = Number(ms);
  if (typeof ms !== "number" || !Number.isInteger(ms)) {
    throw new TypeError(`setAlarm: expected a Date or whole milliseconds since the epoch, not ${show(when)}`);
  }
  if (ms < 0 || ms > MAX_ALARM_MS) {
    throw new AlarmError(`setAlarm: ${ms} is outside 0..${MAX_ALARM_MS} (1970-01-01 to 9999-12-31)`);
  }
  return ms;
}

/** Schedule the facet's alarm at `when` (a Date or ms since the epoch), replacing any. */
function setAlarm(when) {
  if (!live) notYet("setAlarm()");
  if (alarmHandler === null) {
    throw new AlarmError("setAlarm: the app has no alarm handler: add alarm(env) to its exports");
  }
  const ms = alarmMs(when);
  if (!host.setAlarm(BigInt(ms))) throw new AlarmError(`setAlarm(${ms}) was refused by the host`);
}

/** The pending alarm's time in ms since the epoch, or null. */
function getAlarm() {
  if (!live) notYet("getAlarm()");
  const at = host.getAlarm();
  return at === undefined || at === null ? null : Number(at);
}

/** Cancel the pending alarm, if any. */
function deleteAlarm() {
  if (!live) notYet("deleteAlarm()");
  host.deleteAlarm();
}

const env = Object.freeze({ sql, log, now: nowMs, randomBytes, setAlarm, getAlarm, deleteAlarm });

// -- bytes ------------------------------------------------------------------------------------

const encoder = new TextEncoder();
const lenient = new TextDecoder("utf-8");
const strict = new TextDecoder("utf-8", { fatal: true });

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** `bytes` as text, or null when they are not UTF-8. */
function utf8OrNull(bytes) {
  try {
    return strict.decode(bytes);
  } catch {
    return null;
  }
}

// -- HTTP -------------------------------------------------------------------------------------

/** A failure with an HTTP status: thrown from `fetch`, it answers `status` with its message. */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

/** Header names are lower case; `append` keeps repeated headers, `get` joins them with ", ". */
export class Headers {
  #list = [];
  constructor(init) {
    if (init == null) return;
    const pairs = init instanceof Headers ? init.entries() : Array.isArray(init) ? init : Object.entries(init);
    for (const [name, value] of pairs) this.append(name, value);
  }
  append(name, value) {
    this.#list.push([String(name).toLowerCase(), String(value)]);
  }
  set(name, value) {
    this.delete(name);
    this.append(name, value);
  }
  delete(name) {
    const n = String(name).toLowerCase();
    this.#list = this.#list.filter(([k]) => k !== n);
  }
  get(name) {
    const n = String(name).toLowerCase();
    const values = this.#list.filter(([k]) => k === n).map(([, v]) => v);
    return values.length ? values.join(", ") : null;
  }
  has(name) {
    return this.get(name) !== null;
  }
  *entries() {
    for (const [k, v] of this.#list) yield [k, v];
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  forEach(fn) {
    for (const [k, v] of this.#list) fn(v, k, this);
  }
}

function decodeComponent(bytes) {
  // `+` is a space, `%XY` a byte; a `%` without two hex digits stays (WHATWG).
  const out = new Uint8Array(bytes.length);
  let n = 0;
  const hex = (c) => (c >= 48 && c <= 57 ? c - 48 : c >= 65 && c <= 70 ? c - 55 : c >= 97 && c <= 102 ? c - 87 : -1);
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c === 43) out[n++] = 32;
    else if (c === 37 && i + 2 < bytes.length && hex(bytes[i + 1]) >= 0 && hex(bytes[i + 2]) >= 0) {
      out[n++] = hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]);
      i += 2;
    } else out[n++] = c;
  }
  const text = utf8OrNull(out.subarray(0, n));
  if (text === null) throw new HttpError(400, "form or query text is not UTF-8");
  return text;
}

/** The fields of an `application/x-www-form-urlencoded` string or body, decoded. */
export class FormData {
  #fields = [];
  constructor(encoded = "") {
    const bytes = typeof encoded === "string" ? encoder.encode(encoded) : encoded;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 38) continue;
      const piece = bytes.subarray(start, i);
      start = i + 1;
      if (piece.length === 0) continue;
      const eq = piece.indexOf(61);
      const name = eq < 0 ? piece : piece.subarray(0, eq);
      const value = eq < 0 ? new Uint8Array(0) : piece.subarray(eq + 1);
      this.#fields.push([decodeComponent(name), decodeComponent(value)]);
    }
  }
  /** The first value of `name`, or null. */
  get(name) {
    const found = this.#fields.find(([k]) => k === name);
    return found ? found[1] : null;
  }
  getAll(name) {
    return this.#fields.filter(([k]) => k === name).map(([, v]) => v);
  }
  has(name) {
    return this.get(name) !== null;
  }
  *entries() {
    yield* this.#fields;
  }
  [Symbol.iterator]() {
    return this.entries();
  }
}

export class Request {
  #body;
  constructor(head, body) {
    /** "GET", "POST", ... */
    this.method = head.method || "GET";
    /** Below the facet, starting with "/" (e.g. "/items/3"). */
    this.path = head.path || "/";
    /** The raw query string, without "?". */
    this.query = head.query || "";
    /** Where the facet is mounted ("/todo/alice", or "" with host routing): prefix links with it. */
    this.base = head.base || "";
    this.headers = new Headers(head.headers || []);
    this.#body = body;
  }
  /** The path and query, as the app sees them ("/items?list=home"). */
  get url() {
    return this.query ? `${this.path}?${this.query}` : this.path;
  }
  /** The decoded query parameters (get, getAll, has). */
  get searchParams() {
    return new FormData(this.query);
  }
  /** The body's bytes. */
  bytes() {
    return typeof this.#body === "string" ? encoder.encode(this.#body) : this.#body;
  }
  async arrayBuffer() {
    return this.bytes().slice().buffer;
  }
  async text() {
    return typeof this.#body === "string" ? this.#body : lenient.decode(this.#body);
  }
  async json() {
    return JSON.parse(await this.text());
  }
  /** The media type of the body, lower case without parameters ("application/json"). */
  get contentType() {
    return (this.headers.get("content-type") || "").split(";")[0].trim().toLowerCase();
  }
  /** The form fields of an `application/x-www-form-urlencoded` body; HttpError 415 otherwise. */
  async formData() {
    if (this.contentType !== "application/x-www-form-urlencoded") {
      throw new HttpError(415, "expected an application/x-www-form-urlencoded body");
    }
    return new FormData(typeof this.#body === "string" ? this.#body : this.#body);
  }
}

export class Response {
  constructor(body = null, init = {}) {
    this.status = init.status ?? 200;
    this.headers = new Headers(init.headers);
    this.body = body ?? "";
    if (typeof this.body === "string" && this.body !== "" && !this.headers.has("content-type")) {
      this.headers.set("content-type", "text/plain; charset=utf-8");
    }
  }
  /** `value` as JSON, with `content-type: application/json`. */
  static json(value, init = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(JSON.stringify(value), { ...init, headers });
  }
  /** A redirect (301, 302, 303, 307 or 308) to `location`, with an empty body. */
  static redirect(location, status = 302) {
    return new Response(null, { status, headers: { location } });
  }
  /** HTML, with `content-type: text/html; charset=utf-8`. */
  static html(text, init = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has("content-type")) headers.set("content-type", "text/html; charset=utf-8");
    return new Response(text, { ...init, headers });
  }
  async text() {
    return typeof this.body === "string" ? this.body : lenient.decode(asBytes(this.body));
  }
}
globalThis.Response = Response;
globalThis.Headers = Headers;
globalThis.Request = Request;
globalThis.FormData = FormData;

function asBytes(body) {
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return encoder.encode(String(body));
}

/** HTML-escape `& < > " '`, for text in element content and quoted attribute values. */
export function escapeHtml(value) {
  return String(value).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

/** A template tag: `html\`<p>${title}</p>\`` escapes every interpolated value. */
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => {
    out += (v instanceof Raw ? v.text : escapeHtml(v)) + strings[i + 1];
  });
  return new Raw(out);
}
class Raw {
  constructor(text) {
    this.text = text;
  }
  toString() {
    return this.text;
  }
}
/** Mark already-safe HTML (e.g. a fragment built with `html`) so `html` does not escape it. */
export const raw = (text) => new Raw(String(text));

// -- the guest exports ----------------------------------------------------------------------

const MAX_STACK_LINES = 20;

// Failures the platform reports by their own code (the WIT's guest interface): SpiderMonkey
// throws the string "out of memory" when a memory.grow is refused, and stops a runaway
// recursion with an InternalError before the wasm stack runs out.
function codedFailure(error) {
  if (error === "out of memory") return { code: "memory_limit", message: "out of memory" };
  if (typeof InternalError !== "undefined" && error instanceof InternalError && /recursion/.test(error.message)) {
    return { code: "stack_overflow", message: `${error.name}: ${error.message}` };
  }
  return null;
}

function failure(error) {
  // A result's err must be a string (anything else traps in componentize-js).
  const coded = codedFailure(error);
  if (coded !== null) return JSON.stringify(coded);
  if (error instanceof Error) {
    let stack = (error.stack || "").split("\n").filter((l) => l && !l.includes("initializer.js"));
    if (stack.length > MAX_STACK_LINES) {
      stack = [...stack.slice(0, MAX_STACK_LINES), `... ${stack.length - MAX_STACK_LINES} more frames`];
    }
    return [`${error.name || "Error"}: ${error.message}`, ...stack].join("\n").slice(0, 8192);
  }
  return `uncaught: ${show(error)}`.slice(0, 8192);
}

function toResponse(value) {
  if (value instanceof Response) return value;
  if (typeof value === "string") return new Response(value);
  if (value === undefined || value === null) return new Response(null, { status: 204 });
  return Response.json(value);
}

function responseParts(response) {
  const head = { status: response.status, headers: [...response.headers] };
  let body = response.body;
  if (typeof body !== "string") {
    const bytes = asBytes(body);
    const text = utf8OrNull(bytes);
    if (text === null) {
      head.body_encoding = "base64";
      body = toBase64(bytes);
    } else body = text;
  }
  return [JSON.stringify(head), body];
}

function answerText(value) {
  if (typeof value === "string") return value;
  if (value === undefined || value === null) return "";
  if (value instanceof Uint8Array) return lenient.decode(value);
  return JSON.stringify(value);
}

function looksJson(text) {
  const t = text.trimStart();
  if (!(t.startsWith("{") || t.startsWith("["))) return false;
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
}

function migrate(migrations) {
  sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  const row = sql.first("SELECT version FROM schema_version");
  let version = row ? Number(row.version) : 0;
  if (!row) sql.run("INSERT INTO schema_version (version) VALUES (0)");
  for (; version < migrations.length; version++) {
    const step = migrations[version];
    refuseAsync(step);
    if (typeof step === "function") step(env);
    else for (const statement of Array.isArray(step) ? step : [step]) sql.run(statement);
    sql.run("UPDATE schema_version SET version = ?", version + 1);
    log.info(`schema migrated to version ${version + 1}`);
  }
}
function refuseAsync(step) {
  if (typeof step === "function" && step.constructor && step.constructor.name === "AsyncFunction") {
    throw new Error("a migration must be synchronous (it runs SQL, which is synchronous)");
  }
}

/**
 * The component's `guest` export for `app` (the module namespace: its default export, or its
 * named exports `fetch`, `call`, `migrations`, `init`, `alarm`).
 */
export function serve(module) {
  const app = module.default ?? module;
  const handlers = {
    fetch: typeof app.fetch === "function" ? app.fetch.bind(app) : null,
    call: typeof app.call === "function" ? app.call.bind(app) : null,
    init: typeof app.init === "function" ? app.init.bind(app) : null,
    alarm: typeof app.alarm === "function" ? app.alarm.bind(app) : null,
  };
  if (app.alarm !== undefined && app.alarm !== null && !handlers.alarm) throw new Error("alarm must be a function alarm(env)");
  alarmHandler = handlers.alarm;
  const migrations = app.migrations ?? [];
  if (!handlers.fetch && !handlers.call) throw new Error("the app exports neither fetch(request, env) nor call(body, env)");
  if (!Array.isArray(migrations)) throw new Error("migrations must be an array of SQL statements or functions");

  // A handler that answers without a promise is answered without one: an async export
  // makes componentize-js run the event loop on every request (a sync handler's write cost
  // 387k fuel through the async path, measured here). A promise is still awaited.
  function httpError(error) {
    if (error instanceof HttpError) return new Response(`${error.message}\n`, { status: error.status });
    throw error;
  }

  function typedAnswer(value) {
    const text = answerText(value);
    return new Response(text, {
      headers: { "content-type": looksJson(text) ? "application/json" : "text/plain; charset=utf-8" },
    });
  }

  /** The handler's Response, or a promise of it (only when the handler made one). */
  function httpAnswer(head, body) {
    try {
      if (handlers.fetch) {
        const value = handlers.fetch(new Request(head, body), env);
        return isThenable(value) ? value.then(toResponse).catch(httpError) : toResponse(value);
      }
      const text = typeof body === "string" ? body : lenient.decode(body);
      const value = handlers.call(text, env);
      return isThenable(value) ? value.then(typedAnswer).catch(httpError) : typedAnswer(value);
    } catch (error) {
      return httpError(error);
    }
  }

  const rejected = (error) => Promise.reject(failure(error));

  return {
    init() {
      live = true;
      try {
        migrate(migrations);
        if (handlers.init) {
          const done = handlers.init(env);
          if (isThenable(done)) return done.then(() => undefined, rejected);
        }
      } catch (error) {
        throw failure(error);
      }
    },
    call(body) {
      live = true;
      try {
        if (handlers.call) {
          const value = handlers.call(body, env);
          return isThenable(value) ? value.then(answerText, rejected) : answerText(value);
        }
        const response = httpAnswer({ method: "POST", path: "/", headers: [] }, body);
        return isThenable(response) ? response.then(responseText, rejected) : responseText(response);
      } catch (error) {
        throw failure(error);
      }
    },
    fetch(headJson, body) {
      live = true;
      try {
        const head = JSON.parse(headJson);
        const payload = head.body_encoding === "base64" ? fromBase64(body) : body;
        const response = httpAnswer(head, payload);
        return isThenable(response) ? response.then(responseParts, rejected) : responseParts(response);
      } catch (error) {
        throw failure(error);
      }
    },
    // Every SDK app exports `alarm` (the world has it). Without a handler, setAlarm refuses,
    // so an alarm arrives only if a handler was removed since: it is done, with a warning
    // (failing would only retry what can never succeed).
    alarm() {
      live = true;
      try {
        if (!handlers.alarm) {
          log.warn("an alarm arrived but the app has no alarm handler: ignored");
          return;
        }
        const done = handlers.alarm(env);
        if (isThenable(done)) return done.then(() => undefined, rejected);
      } catch (error) {
        throw failure(error);
      }
    },
  };
}

function isThenable(value) {
  return value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function";
}

function responseText(response) {
  return typeof response.body === "string" ? response.body : lenient.decode(asBytes(response.body));
}

export { sql, log, env, setAlarm, getAlarm, deleteAlarm };
