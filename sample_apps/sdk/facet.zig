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
