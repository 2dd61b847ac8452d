//! counter, written with the Zig SDK: the same protocol as counter.wat plus a
//! few operations. Loading this over counter.wat is an upgrade that keeps the
//! count: migration 1 adopts the WAT's table, migration 2 adds a column.
//!
//!   ""  or {"op":"incr","by":N}   -> {"count":N}
//!   {"op":"get"}                   -> {"count":N,"updated_ms":T}
//!   {"op":"reset"}                 -> {"count":0}

const std = @import("std");
const facet = @import("facet");

const migrations = [_][]const []const u8{
    &.{
        "CREATE TABLE IF NOT EXISTS counter(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO counter(id, n) VALUES (1, 0)",
    },
    &.{"ALTER TABLE counter ADD COLUMN updated_ms INTEGER"},
};

export fn facet_alloc(size: usize) ?[*]u8 {
    return facet.alloc(size);
}
export fn facet_init() void {
    facet.init(&migrations);
}
export fn facet_handle(ptr: [*]const u8, len: usize) u64 {
    return facet.serve(ptr, len, handle);
}

const Request = struct {
    op: []const u8 = "incr",
    by: i64 = 1,
};

fn handle(body: []const u8) ![]const u8 {
    const req: Request = if (body.len == 0) .{} else facet.parseRequest(Request, body) catch
        return facet.errorJson("expected JSON like {\"op\":\"incr\"}");
    if (std.mem.eql(u8, req.op, "incr")) {
        if (req.by < -1_000_000 or req.by > 1_000_000) return facet.errorJson("by must be within +-1000000");
        const r = try facet.exec("UPDATE counter SET n = n + ?, updated_ms = ? WHERE id = 1 RETURNING n", .{ req.by, facet.nowMs() });
        return facet.json(.{ .count = r.first().?.int(0).? });
    }
    if (std.mem.eql(u8, req.op, "get")) {
        const r = try facet.exec("SELECT n, updated_ms FROM counter WHERE id = 1", .{});
        const row = r.first().?;
        return facet.json(.{ .count = row.int(0).?, .updated_ms = row.int(1) });
    }
    if (std.mem.eql(u8, req.op, "reset")) {
        _ = try facet.exec("UPDATE counter SET n = 0, updated_ms = ? WHERE id = 1", .{facet.nowMs()});
        facet.log(.info, "counter reset", .{});
        return facet.json(.{ .count = 0 });
    }
    return facet.errorJson("unknown op; expected incr, get or reset");
}
