//! Guest SDK for the Facets ABI v1 (see ../ABI.md).
//!
//! An app is one Zig file that imports this module as "facet" and writes three
//! one-line exports:
//!
//!     const facet = @import("facet");
//!     export fn facet_alloc(size: usize) ?[*]u8 { return facet.alloc(size); }
//!     export fn facet_init() void { facet.init(&migrations); }
//!     export fn facet_handle(ptr: [*]const u8, len: usize) u64 { return facet.serve(ptr, len, handle); }
//!
//! An app that answers HTTP itself adds a fourth (see "HTTP" below and ABI.md):
//!
//!     export fn facet_http(ptr: [*]const u8, len: usize) u64 { return facet.serveHttp(ptr, len, route); }
//!
//! and one that sets alarms (`setAlarm`, ABI.md "Alarms") receives them with
//!
//!     export fn facet_alarm() void { facet.serveAlarm(onAlarm); }
//!
//! Memory: every allocation (request, SQL answers, your own) comes from one
//! arena that is reset on the first allocation after a request finished, so a
//! response stays valid until the host next enters the module and memory does
//! not creep from request to request.

const std = @import("std");

const host = struct {
    extern "facet" fn sql(ptr: [*]const u8, len: usize) u64;
    extern "facet" fn log(level: i32, ptr: [*]const u8, len: usize) void;
    extern "facet" fn now_ms() i64;
    extern "facet" fn random(ptr: [*]u8, len: usize) void;
    extern "facet" fn set_alarm(at_ms: i64) i32;
    extern "facet" fn get_alarm() i64;
    extern "facet" fn delete_alarm() void;
};

var arena_state = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);
var request_done = false;

/// The per-request allocator. Everything allocated with it is freed together
/// after the response has been read by the host.
pub fn allocator() std.mem.Allocator {
    return arena_state.allocator();
}

/// Implementation of the `facet_alloc` export.
pub fn alloc(size: usize) ?[*]u8 {
    if (request_done) {
        _ = arena_state.reset(.retain_capacity);
        request_done = false;
    }
    const buf = allocator().alloc(u8, size) catch return null;
    return buf.ptr;
}

fn pack(bytes: []const u8) u64 {
    return (@as(u64, @intFromPtr(bytes.ptr)) << 32) | @as(u64, bytes.len);
}

/// Implementation of the `facet_handle` export: runs `handler` on the request
/// body and packs its response. A handler error becomes `{"error": "<name>"}`.
pub fn serve(ptr: [*]const u8, len: usize, comptime handler: fn ([]const u8) anyerror![]const u8) u64 {
    defer request_done = true;
    const response = handler(ptr[0..len]) catch |err| errorJson(@errorName(err));
    return pack(response);
}

// -- logging, time, randomness -------------------------------------------------------

pub const Level = enum(i32) { debug = 0, info = 1, warn = 2, err = 3 };

pub fn log(level: Level, comptime fmt: []const u8, args: anytype) void {
    const text = std.fmt.allocPrint(allocator(), fmt, args) catch return;
    host.log(@intFromEnum(level), text.ptr, text.len);
}

pub fn nowMs() i64 {
    return host.now_ms();
}

pub fn randomBytes(buf: []u8) void {
    host.random(buf.ptr, buf.len);
}

// -- alarms ----------------------------------------------------------------------------

pub const AlarmError = error{
    /// The module exports no `facet_alarm`: the alarm could never be delivered.
    NoAlarmHandler,
    /// Negative, or past 9999-12-31T23:59:59.999Z.
    BadAlarmTime,
};

/// Schedule the facet's one alarm at `at_ms` (ms since the epoch, see `nowMs`), replacing
/// any pending one. It takes effect when the request commits.
pub fn setAlarm(at_ms: i64) AlarmError!void {
    return switch (host.set_alarm(at_ms)) {
        0 => {},
        1 => error.NoAlarmHandler,
        else => error.BadAlarmTime,
    };
}

/// The pending alarm's time in ms since the epoch, or null.
pub fn getAlarm() ?i64 {
    const at = host.get_alarm();
    return if (at < 0) null else at;
}

/// Cancel the pending alarm, if any.
pub fn deleteAlarm() void {
    host.delete_alarm();
}

/// Implementation of the `facet_alarm` export: runs `handler`. An error is logged and
/// traps, so the platform rolls back what it wrote and retries the alarm later.
pub fn serveAlarm(comptime handler: fn () anyerror!void) void {
    defer request_done = true;
    handler() catch |err| fail(err);
}

// -- SQL -------------------------------------------------------------------------------

/// What the last failed `exec` said: a stable code ("sql_error", "not_authorized",
/// "storage_full", "too_big", "timeout", "bad_request") and SQLite's message.
pub var last_error_code: []const u8 = "";
pub var last_error_message: []const u8 = "";

pub const SqlError = error{ SqlFailed, BadAnswer, OutOfMemory };

pub const Row = struct {
    values: []const std.json.Value,

    pub fn int(row: Row, i: usize) ?i64 {
        return switch (row.values[i]) {
            .integer => |v| v,
            else => null,
        };
    }

    pub fn text(row: Row, i: usize) ?[]const u8 {
        return switch (row.values[i]) {
            .string => |v| v,
            else => null,
        };
    }

    pub fn float(row: Row, i: usize) ?f64 {
        return switch (row.values[i]) {
            .float => |v| v,
            .integer => |v| @floatFromInt(v),
            else => null,
        };
    }
};

pub const Result = struct {
    rows: []const Row,
    rows_written: i64,
    last_insert_rowid: i64,

    /// The first row, if any.
    pub fn first(result: Result) ?Row {
        return if (result.rows.len > 0) result.rows[0] else null;
    }
};

/// Run one statement with positional `?` parameters given as a tuple of
/// integers, floats, strings, bools or null, e.g. `.{ "milk", 3 }`.
pub fn exec(query: []const u8, params: anytype) SqlError!Result {
    const a = allocator();
    const request = try std.json.Stringify.valueAlloc(a, .{ .sql = query, .params = params }, .{});
    const packed_answer = host.sql(request.ptr, request.len);
    const answer_ptr: [*]const u8 = @ptrFromInt(@as(usize, @intCast(packed_answer >> 32)));
    const answer = answer_ptr[0..@as(usize, @intCast(packed_answer & 0xFFFF_FFFF))];
    const parsed = std.json.parseFromSliceLeaky(std.json.Value, a, answer, .{}) catch return error.BadAnswer;
    if (parsed != .object) return error.BadAnswer;
    const obj = parsed.object;
    const ok = obj.get("ok") orelse return error.BadAnswer;
    if (ok != .bool or !ok.bool) {
        const err = obj.get("error") orelse return error.BadAnswer;
        if (err == .object) {
            if (err.object.get("code")) |c| if (c == .string) {
                last_error_code = c.string;
            };
            if (err.object.get("message")) |m| if (m == .string) {
                last_error_message = m.string;
            };
        }
        return error.SqlFailed;
    }
    const raw_rows = obj.get("rows") orelse return error.BadAnswer;
    if (raw_rows != .array) return error.BadAnswer;
    const rows = try a.alloc(Row, raw_rows.array.items.len);
    for (raw_rows.array.items, rows) |item, *row| {
        if (item != .array) return error.BadAnswer;
        row.* = .{ .values = item.array.items };
    }
    return .{
        .rows = rows,
        .rows_written = intField(obj, "rows_written"),
        .last_insert_rowid = intField(obj, "last_insert_rowid"),
    };
}

fn intField(obj: std.json.ObjectMap, name: []const u8) i64 {
    const v = obj.get(name) orelse return 0;
    return if (v == .integer) v.integer else 0;
}

// -- schema migrations -------------------------------------------------------------

/// Implementation of the `facet_init` export: bring the schema up to date.
///
/// `migrations[i]` moves the schema from version i to i+1; each is a list of
/// statements. The version lives in the app's own `schema_version` table
/// (guest PRAGMA writes are refused). facet_init runs in its own transaction,
/// so a failing migration leaves the database as it was and the request fails.
pub fn init(migrations: []const []const []const u8) void {
    migrate(migrations) catch |err| {
        log(.err, "migration failed: {s} ({s}: {s})", .{ @errorName(err), last_error_code, last_error_message });
        @trap();
    };
}

fn migrate(migrations: []const []const []const u8) SqlError!void {
    _ = try exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", .{});
    const current = try exec("SELECT version FROM schema_version", .{});
    var version: usize = 0;
    if (current.first()) |row| {
        version = @intCast(row.int(0) orelse 0);
    } else {
        _ = try exec("INSERT INTO schema_version (version) VALUES (0)", .{});
    }
    while (version < migrations.len) : (version += 1) {
        for (migrations[version]) |statement| _ = try exec(statement, .{});
        _ = try exec("UPDATE schema_version SET version = ?", .{version + 1});
        log(.info, "schema migrated to version {d}", .{version + 1});
    }
}

// -- requests and responses ----------------------------------------------------------

/// Parse a JSON request body into `T` (unknown fields are ignored).
pub fn parseRequest(comptime T: type, body: []const u8) !T {
    return std.json.parseFromSliceLeaky(T, allocator(), body, .{ .ignore_unknown_fields = true }) catch
        error.BadRequest;
}

/// Serialise `value` as the JSON response.
pub fn json(value: anytype) ![]const u8 {
    return std.json.Stringify.valueAlloc(allocator(), value, .{});
}

/// `{"error": message}`, for bad input: apps answer instead of trapping.
pub fn errorJson(message: []const u8) []const u8 {
    return std.json.Stringify.valueAlloc(allocator(), .{ .@"error" = message }, .{}) catch
        "{\"error\":\"out of memory\"}";
}

// -- HTTP (the optional `facet_http` export) -------------------------------------------
//
// Request bytes: one line of JSON {"method","path","query","base","headers"}, "\n", the raw
// body. Response bytes: one line of JSON {"status","headers"}, "\n", the raw body. The host
// checks the response before COMMIT and fails the request with `bad_response` (rolled back)
// when it breaks a rule; `HttpResponse.header` applies the same rules first, so an app finds
// out with an error it can handle instead.

/// One header as the envelope carries it: `[name, value]`. Request names are lower case.
pub const Header = [2][]const u8;

pub const HttpRequest = struct {
    method: []const u8,
    /// Below the facet, always starting with "/" (e.g. "/items/3").
    path: []const u8,
    /// The raw query string, without "?".
    query: []const u8 = "",
    /// Where the facet is mounted (e.g. "/todo/alice"; "" with host routing): prefix it to
    /// every link and `location` so the app works wherever it is mounted.
    base: []const u8 = "",
    headers: []const Header = &.{},
    body: []const u8 = "",

    /// The first value of header `name` (matched case-insensitively), if present.
    pub fn header(req: *const HttpRequest, name: []const u8) ?[]const u8 {
        for (req.headers) |h| if (std.ascii.eqlIgnoreCase(h[0], name)) return h[1];
        return null;
    }

    /// True for GET and HEAD (the server sends no body for HEAD).
    pub fn isGet(req: *const HttpRequest) bool {
        return std.mem.eql(u8, req.method, "GET") or std.mem.eql(u8, req.method, "HEAD");
    }

    pub fn isMethod(req: *const HttpRequest, method: []const u8) bool {
        return std.mem.eql(u8, req.method, method);
    }

    /// True when the body's content-type is `media_type` (case-insensitive, parameters ignored).
    pub fn contentTypeIs(req: *const HttpRequest, media_type: []const u8) bool {
        const value = req.header("content-type") orelse return false;
        const end = std.mem.indexOfScalar(u8, value, ';') orelse value.len;
        return std.ascii.eqlIgnoreCase(std.mem.trim(u8, value[0..end], " \t"), media_type);
    }

    pub fn isForm(req: *const HttpRequest) bool {
        return req.contentTypeIs("application/x-www-form-urlencoded");
    }

    pub fn isJson(req: *const HttpRequest) bool {
        return req.contentTypeIs("application/json");
    }

    /// The decoded value of query parameter `name` (`?name=value`), if present.
    pub fn queryValue(req: *const HttpRequest, name: []const u8) error{OutOfMemory}!?[]const u8 {
        return formValue(req.query, name);
    }

    /// The decoded value of field `name` of an `application/x-www-form-urlencoded` body.
    pub fn formField(req: *const HttpRequest, name: []const u8) error{OutOfMemory}!?[]const u8 {
        return formValue(req.body, name);
    }
};

const Head = struct {
    method: []const u8,
    path: []const u8,
    query: []const u8 = "",
    base: []const u8 = "",
    headers: []const Header = &.{},
};

/// Split and parse the request envelope. Strings point into `bytes` where they need no
/// unescaping, so the request costs the arena little more than its own size.
pub fn parseHttp(bytes: []const u8) error{BadRequest}!HttpRequest {
    const nl = std.mem.indexOfScalar(u8, bytes, '\n') orelse return error.BadRequest;
    const head = std.json.parseFromSliceLeaky(Head, allocator(), bytes[0..nl], .{ .ignore_unknown_fields = true }) catch
        return error.BadRequest;
    return .{
        .method = head.method,
        .path = head.path,
        .query = head.query,
        .base = head.base,
        .headers = head.headers,
        .body = bytes[nl + 1 ..],
    };
}

/// The limits the host enforces on a response (ABI.md, "HTTP").
pub const max_headers = 64;
pub const max_header_value = 8192;
const forbidden_headers = [_][]const u8{
    "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te",
    "trailer",        "upgrade",           "x-request-id", "date",     "server",
};

fn isTokenChar(c: u8) bool {
    return std.ascii.isAlphanumeric(c) or std.mem.indexOfScalar(u8, "!#$%&'*+-.^_`|~", c) != null;
}

/// Whether `name: value` may be sent: an HTTP token name that is not a framing/hop-by-hop
/// or server-owned header, and a value of at most 8 KiB of visible ASCII, space and tab.
/// (Non-ASCII is refused here although the host only refuses control characters: a
/// `location` or `content-disposition` should be percent-encoded anyway.)
pub fn headerAllowed(name: []const u8, value: []const u8) bool {
    if (name.len == 0 or name.len > 256) return false;
    for (name) |c| if (!isTokenChar(c)) return false;
    for (forbidden_headers) |f| if (std.ascii.eqlIgnoreCase(name, f)) return false;
    if (value.len > max_header_value) return false;
    for (value) |c| if ((c < 0x20 and c != '\t') or c >= 0x7f) return false;
    return true;
}

pub const HttpResponse = struct {
    status: u16 = 200,
    headers: std.ArrayList(Header) = .empty,
    body: std.ArrayList(u8) = .empty,

    /// Add a header (names are sent lower case). Refused with `error.BadHeader` when the host
    /// would refuse it (see `headerAllowed`), or past 64 headers.
    pub fn header(res: *HttpResponse, name: []const u8, value: []const u8) error{ BadHeader, OutOfMemory }!void {
        if (!headerAllowed(name, value) or res.headers.items.len >= max_headers) return error.BadHeader;
        const lower = try std.ascii.allocLowerString(allocator(), name);
        try res.headers.append(allocator(), .{ lower, value });
    }

    /// Append raw bytes to the body.
    pub fn write(res: *HttpResponse, bytes: []const u8) error{OutOfMemory}!void {
        try res.body.appendSlice(allocator(), bytes);
    }

    /// Append formatted text to the body. Never format untrusted text with it into HTML:
    /// use `text` for that.
    pub fn print(res: *HttpResponse, comptime fmt: []const u8, args: anytype) error{OutOfMemory}!void {
        try res.body.print(allocator(), fmt, args);
    }

    /// Append `text` HTML-escaped (safe in element content and in quoted attribute values).
    pub fn text(res: *HttpResponse, value: []const u8) error{OutOfMemory}!void {
        try appendHtmlEscaped(&res.body, value);
    }

    /// Append `value` serialised as JSON.
    pub fn json(res: *HttpResponse, value: anytype) error{OutOfMemory}!void {
        try res.write(try std.json.Stringify.valueAlloc(allocator(), value, .{}));
    }

    /// Start over with `status` and no headers or body (e.g. to answer an error instead).
    pub fn reset(res: *HttpResponse, status: u16) void {
        res.* = .{ .status = status };
    }

    /// A JSON answer: status, `content-type: application/json`, `value` as the body.
    pub fn sendJson(res: *HttpResponse, status: u16, value: anytype) error{ BadHeader, OutOfMemory }!void {
        res.reset(status);
        try res.header("content-type", "application/json");
        try res.json(value);
    }

    /// `{"error": {"code", "message"}}`: the shape the platform's own error bodies have.
    pub fn sendJsonError(res: *HttpResponse, status: u16, code: []const u8, message: []const u8) error{ BadHeader, OutOfMemory }!void {
        try res.sendJson(status, .{ .@"error" = .{ .code = code, .message = message } });
    }

    /// A redirect (`status` 301, 302, 303, 307 or 308) to `location`, with an empty body.
    pub fn redirect(res: *HttpResponse, status: u16, location: []const u8) error{ BadHeader, OutOfMemory }!void {
        res.reset(status);
        try res.header("location", location);
    }

    /// 405 with the `allow` header listing the methods the path takes, e.g. "GET, HEAD".
    pub fn methodNotAllowed(res: *HttpResponse, allow: []const u8) error{ BadHeader, OutOfMemory }!void {
        res.reset(405);
        try res.header("allow", allow);
        try res.header("content-type", "text/plain; charset=utf-8");
        try res.print("method not allowed; allowed: {s}\n", .{allow});
    }

    /// The response envelope: the head line, "\n", the body.
    pub fn envelope(res: *HttpResponse) error{OutOfMemory}![]const u8 {
        const head = try std.json.Stringify.valueAlloc(allocator(), .{ .status = res.status, .headers = res.headers.items }, .{});
        const out = try allocator().alloc(u8, head.len + 1 + res.body.items.len);
        @memcpy(out[0..head.len], head);
        out[head.len] = '\n';
        @memcpy(out[head.len + 1 ..], res.body.items);
        return out;
    }
};

/// Implementation of the `facet_http` export: parse the request, run `handler`, pack the
/// response envelope. An envelope the SDK cannot read answers 400. `error.BadRequest` from
/// the handler answers 400 too; any other error (a failed `exec`, out of memory) is logged
/// and traps, so the platform rolls back what the request wrote and answers 500 with the
/// request id (the log holds the error under it).
pub fn serveHttp(ptr: [*]const u8, len: usize, comptime handler: fn (*const HttpRequest, *HttpResponse) anyerror!void) u64 {
    defer request_done = true;
    var res: HttpResponse = .{};
    if (parseHttp(ptr[0..len])) |req| {
        handler(&req, &res) catch |err| switch (err) {
            error.BadRequest => plainError(&res, 400, "bad request\n"),
            else => fail(err),
        };
    } else |_| plainError(&res, 400, "unreadable request envelope\n");
    const out = res.envelope() catch fail(error.OutOfMemory);
    return pack(out);
}

fn plainError(res: *HttpResponse, status: u16, message: []const u8) void {
    res.reset(status);
    res.header("content-type", "text/plain; charset=utf-8") catch fail(error.OutOfMemory);
    res.write(message) catch fail(error.OutOfMemory);
}

fn fail(err: anyerror) noreturn {
    log(.err, "request failed: {s} ({s}: {s})", .{ @errorName(err), last_error_code, last_error_message });
    @trap();
}

// -- HTML and form encoding ------------------------------------------------------------

/// Append `value` with & < > " ' escaped, so untrusted text renders as text.
pub fn appendHtmlEscaped(out: *std.ArrayList(u8), value: []const u8) error{OutOfMemory}!void {
    var start: usize = 0;
    for (value, 0..) |c, i| {
        const entity: []const u8 = switch (c) {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&#39;",
            else => continue,
        };
        try out.appendSlice(allocator(), value[start..i]);
        try out.appendSlice(allocator(), entity);
        start = i + 1;
    }
    try out.appendSlice(allocator(), value[start..]);
}

/// `value` HTML-escaped, in the arena.
pub fn escapeHtml(value: []const u8) error{OutOfMemory}![]const u8 {
    var out: std.ArrayList(u8) = .empty;
    try appendHtmlEscaped(&out, value);
    return out.items;
}

fn hexValue(c: u8) ?u8 {
    return switch (c) {
        '0'...'9' => c - '0',
        'a'...'f' => c - 'a' + 10,
        'A'...'F' => c - 'A' + 10,
        else => null,
    };
}

/// Decode one form/query component: `+` is a space, `%XY` a byte; a `%` not followed by two
/// hex digits stays as it is (the WHATWG URL standard's rule). Returns `raw` itself when
/// there is nothing to decode; otherwise the result (never longer than `raw`) is in the
/// arena. The result may be any bytes: check UTF-8 where you need text.
pub fn formDecode(raw: []const u8) error{OutOfMemory}![]const u8 {
    if (std.mem.indexOfAny(u8, raw, "%+") == null) return raw;
    const out = try allocator().alloc(u8, raw.len);
    return out[0..decodeInto(out, raw)];
}

fn decodeInto(out: []u8, raw: []const u8) usize {
    var n: usize = 0;
    var i: usize = 0;
    while (i < raw.len) : (n += 1) {
        const c = raw[i];
        if (c == '+') {
            out[n] = ' ';
            i += 1;
        } else if (c == '%' and i + 2 < raw.len and hexValue(raw[i + 1]) != null and hexValue(raw[i + 2]) != null) {
            out[n] = hexValue(raw[i + 1]).? * 16 + hexValue(raw[i + 2]).?;
            i += 3;
        } else {
            out[n] = c;
            i += 1;
        }
    }
    return n;
}

pub const FormField = struct { name: []const u8, value: []const u8 };

/// The fields of an `application/x-www-form-urlencoded` string (a body or a query), in
/// order, decoded; empty pieces (`a=1&&b=2`) are skipped.
pub const FormIterator = struct {
    rest: []const u8,

    pub fn next(it: *FormIterator) error{OutOfMemory}!?FormField {
        while (it.rest.len > 0) {
            const amp = std.mem.indexOfScalar(u8, it.rest, '&') orelse it.rest.len;
            const piece = it.rest[0..amp];
            it.rest = if (amp < it.rest.len) it.rest[amp + 1 ..] else "";
            if (piece.len == 0) continue;
            const eq = std.mem.indexOfScalar(u8, piece, '=') orelse piece.len;
            return .{
                .name = try formDecode(piece[0..eq]),
                .value = try formDecode(if (eq < piece.len) piece[eq + 1 ..] else ""),
            };
        }
        return null;
    }
};

pub fn formFields(encoded: []const u8) FormIterator {
    return .{ .rest = encoded };
}

/// The decoded value of the first field named `name` in a form-encoded string.
pub fn formValue(encoded: []const u8, name: []const u8) error{OutOfMemory}!?[]const u8 {
    var it = formFields(encoded);
    while (try it.next()) |field| if (std.mem.eql(u8, field.name, name)) return field.value;
    return null;
}
