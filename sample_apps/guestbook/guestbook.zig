//! guestbook: an append-only list of signed messages, newest first, paged by id.
//! Protocol in README.md.

const std = @import("std");
const facet = @import("facet");

const migrations = [_][]const []const u8{
    &.{
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, name TEXT NOT NULL, message TEXT NOT NULL, created_ms INTEGER NOT NULL)",
    },
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
    op: []const u8,
    name: ?[]const u8 = null,
    message: ?[]const u8 = null,
    before: ?i64 = null,
    limit: i64 = 20,
};

fn handle(body: []const u8) ![]const u8 {
    const req = facet.parseRequest(Request, body) catch
        return facet.errorJson("expected JSON like {\"op\":\"sign\",\"name\":\"ada\",\"message\":\"hi\"}");
    if (std.mem.eql(u8, req.op, "sign")) return sign(req);
    if (std.mem.eql(u8, req.op, "list")) return list(req);
    if (std.mem.eql(u8, req.op, "count")) {
        const r = try facet.exec("SELECT count(*) FROM entries", .{});
        return facet.json(.{ .count = r.first().?.int(0).? });
    }
    return facet.errorJson("unknown op; expected sign, list or count");
}

fn sign(req: Request) ![]const u8 {
    const name = req.name orelse return facet.errorJson("name is required");
    const message = req.message orelse return facet.errorJson("message is required");
    if (name.len == 0 or name.len > 80) return facet.errorJson("name must be 1-80 characters");
    if (message.len == 0 or message.len > 2000) return facet.errorJson("message must be 1-2000 characters");
    const now = facet.nowMs();
    const r = try facet.exec("INSERT INTO entries (name, message, created_ms) VALUES (?, ?, ?)", .{ name, message, now });
    return facet.json(.{ .id = r.last_insert_rowid, .created_ms = now });
}

/// Newest first; pass the `next` of a page as `before` to get the following page.
fn list(req: Request) ![]const u8 {
    if (req.limit < 1 or req.limit > 100) return facet.errorJson("limit must be 1-100");
    const before = req.before orelse std.math.maxInt(i64);
    const r = try facet.exec(
        "SELECT id, name, message, created_ms FROM entries WHERE id < ? ORDER BY id DESC LIMIT ?",
        .{ before, req.limit + 1 },
    );
    const Entry = struct { id: i64, name: []const u8, message: []const u8, created_ms: i64 };
    const shown = @min(r.rows.len, @as(usize, @intCast(req.limit)));
    const out = try facet.allocator().alloc(Entry, shown);
    for (r.rows[0..shown], out) |row, *e| e.* = .{
        .id = row.int(0).?,
        .name = row.text(1).?,
        .message = row.text(2).?,
        .created_ms = row.int(3).?,
    };
    const next: ?i64 = if (r.rows.len > shown) out[shown - 1].id else null;
    return facet.json(.{ .entries = out, .next = next });
}
