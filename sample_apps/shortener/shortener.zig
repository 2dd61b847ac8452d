//! shortener: random short ids for URLs, with hit counters.
//! Protocol in README.md.

const std = @import("std");
const facet = @import("facet");

const migrations = [_][]const []const u8{
    &.{
        "CREATE TABLE links (id TEXT PRIMARY KEY, url TEXT NOT NULL, hits INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL)",
        "CREATE INDEX links_by_url ON links(url)",
    },
    &.{"ALTER TABLE links ADD COLUMN last_hit_ms INTEGER"},
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
    url: ?[]const u8 = null,
    id: ?[]const u8 = null,
    limit: i64 = 20,
};

const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn handle(body: []const u8) ![]const u8 {
    const req = facet.parseRequest(Request, body) catch
        return facet.errorJson("expected JSON like {\"op\":\"shorten\",\"url\":\"https://example.com\"}");
    if (std.mem.eql(u8, req.op, "shorten")) return shorten(req);
    if (std.mem.eql(u8, req.op, "resolve")) return resolve(req, true);
    if (std.mem.eql(u8, req.op, "stats")) return resolve(req, false);
    if (std.mem.eql(u8, req.op, "top")) return top(req);
    return facet.errorJson("unknown op; expected shorten, resolve, stats or top");
}

fn validUrl(url: []const u8) bool {
    if (url.len > 2048) return false;
    const scheme_ok = std.mem.startsWith(u8, url, "https://") or std.mem.startsWith(u8, url, "http://");
    if (!scheme_ok) return false;
    for (url) |c| if (c <= ' ' or c == 0x7f) return false;
    return true;
}

fn shorten(req: Request) ![]const u8 {
    const url = req.url orelse return facet.errorJson("url is required");
    if (!validUrl(url)) return facet.errorJson("url must be an http(s) URL without spaces, at most 2048 characters");
    const existing = try facet.exec("SELECT id FROM links WHERE url = ?", .{url});
    if (existing.first()) |row| return facet.json(.{ .id = row.text(0).?, .url = url, .new = false });
    var id: [7]u8 = undefined;
    var attempt: usize = 0;
    while (attempt < 8) : (attempt += 1) {
        var noise: [7]u8 = undefined;
        facet.randomBytes(&noise);
        for (noise, &id) |n, *c| c.* = alphabet[n % alphabet.len];
        const taken = try facet.exec("SELECT 1 FROM links WHERE id = ?", .{@as([]const u8, &id)});
        if (taken.rows.len == 0) break;
    } else return facet.errorJson("could not find a free id");
    _ = try facet.exec("INSERT INTO links (id, url, created_ms) VALUES (?, ?, ?)", .{ @as([]const u8, &id), url, facet.nowMs() });
    return facet.json(.{ .id = @as([]const u8, &id), .url = url, .new = true });
}

fn resolve(req: Request, count_hit: bool) ![]const u8 {
    const id = req.id orelse return facet.errorJson("id is required");
    if (id.len == 0 or id.len > 16) return facet.errorJson("no such link");
    const r = if (count_hit)
        try facet.exec("UPDATE links SET hits = hits + 1, last_hit_ms = ? WHERE id = ? RETURNING url, hits", .{ facet.nowMs(), id })
    else
        try facet.exec("SELECT url, hits FROM links WHERE id = ?", .{id});
    const row = r.first() orelse return facet.errorJson("no such link");
    return facet.json(.{ .id = id, .url = row.text(0).?, .hits = row.int(1).? });
}

fn top(req: Request) ![]const u8 {
    if (req.limit < 1 or req.limit > 100) return facet.errorJson("limit must be 1-100");
    const r = try facet.exec("SELECT id, url, hits FROM links ORDER BY hits DESC, id LIMIT ?", .{req.limit});
    const Link = struct { id: []const u8, url: []const u8, hits: i64 };
    const out = try facet.allocator().alloc(Link, r.rows.len);
    for (r.rows, out) |row, *l| l.* = .{ .id = row.text(0).?, .url = row.text(1).?, .hits = row.int(2).? };
    return facet.json(.{ .links = out });
}
