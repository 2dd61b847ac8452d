//! todo: lists of items that can be done/undone and reordered.
//! Protocol in README.md.

const std = @import("std");
const facet = @import("facet");

const migrations = [_][]const []const u8{
    &.{
        "CREATE TABLE lists (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_ms INTEGER NOT NULL)",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE," ++
            " title TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, position INTEGER NOT NULL, created_ms INTEGER NOT NULL)",
        "CREATE INDEX items_by_list ON items(list_id, position)",
    },
    &.{"ALTER TABLE items ADD COLUMN done_ms INTEGER"},
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
    list: ?[]const u8 = null,
    title: ?[]const u8 = null,
    id: ?i64 = null,
    position: ?i64 = null,
};

const max_title = 500;

fn handle(body: []const u8) ![]const u8 {
    const req = facet.parseRequest(Request, body) catch
        return facet.errorJson("expected JSON like {\"op\":\"add\",\"list\":\"home\",\"title\":\"milk\"}");
    const op = req.op;
    if (eql(op, "lists")) return lists();
    if (eql(op, "add")) return add(req);
    if (eql(op, "list")) return listItems(req);
    if (eql(op, "done")) return setDone(req, true);
    if (eql(op, "undone")) return setDone(req, false);
    if (eql(op, "rename")) return rename(req);
    if (eql(op, "move")) return move(req);
    if (eql(op, "delete")) return delete(req);
    return facet.errorJson("unknown op; expected lists, add, list, done, undone, rename, move or delete");
}

fn eql(a: []const u8, b: []const u8) bool {
    return std.mem.eql(u8, a, b);
}

fn validTitle(title: ?[]const u8) ?[]const u8 {
    const t = title orelse return null;
    if (t.len == 0 or t.len > max_title) return null;
    return t;
}

fn lists() ![]const u8 {
    const r = try facet.exec(
        "SELECT l.name, count(i.id), coalesce(sum(i.done), 0) FROM lists l LEFT JOIN items i ON i.list_id = l.id " ++
            "GROUP BY l.id ORDER BY l.name",
        .{},
    );
    const List = struct { name: []const u8, items: i64, done: i64 };
    const out = try facet.allocator().alloc(List, r.rows.len);
    for (r.rows, out) |row, *l| l.* = .{ .name = row.text(0).?, .items = row.int(1).?, .done = row.int(2).? };
    return facet.json(.{ .lists = out });
}

fn listId(name: []const u8, create: bool) !?i64 {
    const found = try facet.exec("SELECT id FROM lists WHERE name = ?", .{name});
    if (found.first()) |row| return row.int(0).?;
    if (!create) return null;
    const made = try facet.exec("INSERT INTO lists (name, created_ms) VALUES (?, ?)", .{ name, facet.nowMs() });
    return made.last_insert_rowid;
}

fn add(req: Request) ![]const u8 {
    const name = validTitle(req.list) orelse return facet.errorJson("list must be 1-500 characters");
    const title = validTitle(req.title) orelse return facet.errorJson("title must be 1-500 characters");
    const list_id = (try listId(name, true)).?;
    const r = try facet.exec(
        "INSERT INTO items (list_id, title, position, created_ms) " ++
            "VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM items WHERE list_id = ?), ?) RETURNING id, position",
        .{ list_id, title, list_id, facet.nowMs() },
    );
    const row = r.first().?;
    return facet.json(.{ .id = row.int(0).?, .list = name, .title = title, .position = row.int(1).?, .done = false });
}

fn listItems(req: Request) ![]const u8 {
    const name = req.list orelse return facet.errorJson("list is required");
    const list_id = (try listId(name, false)) orelse return facet.errorJson("no such list");
    const r = try facet.exec(
        "SELECT id, title, done, position FROM items WHERE list_id = ? ORDER BY position, id",
        .{list_id},
    );
    const Item = struct { id: i64, title: []const u8, done: bool, position: i64 };
    const out = try facet.allocator().alloc(Item, r.rows.len);
    for (r.rows, out) |row, *it| it.* = .{
        .id = row.int(0).?,
        .title = row.text(1).?,
        .done = row.int(2).? != 0,
        .position = row.int(3).?,
    };
    return facet.json(.{ .list = name, .items = out });
}

fn setDone(req: Request, done: bool) ![]const u8 {
    const id = req.id orelse return facet.errorJson("id is required");
    const r = try facet.exec(
        "UPDATE items SET done = ?, done_ms = CASE WHEN ? THEN ? END WHERE id = ?",
        .{ @as(i64, @intFromBool(done)), done, facet.nowMs(), id },
    );
    if (r.rows_written == 0) return facet.errorJson("no such item");
    return facet.json(.{ .id = id, .done = done });
}

fn rename(req: Request) ![]const u8 {
    const id = req.id orelse return facet.errorJson("id is required");
    const title = validTitle(req.title) orelse return facet.errorJson("title must be 1-500 characters");
    const r = try facet.exec("UPDATE items SET title = ? WHERE id = ?", .{ title, id });
    if (r.rows_written == 0) return facet.errorJson("no such item");
    return facet.json(.{ .id = id, .title = title });
}

/// Move an item to `position` (1-based) within its list, shifting the others.
fn move(req: Request) ![]const u8 {
    const id = req.id orelse return facet.errorJson("id is required");
    const wanted = req.position orelse return facet.errorJson("position is required");
    const found = try facet.exec("SELECT list_id FROM items WHERE id = ?", .{id});
    const list_id = (found.first() orelse return facet.errorJson("no such item")).int(0).?;
    const ids = try facet.exec("SELECT id FROM items WHERE list_id = ? AND id != ? ORDER BY position, id", .{ list_id, id });
    const count: i64 = @intCast(ids.rows.len);
    const target = std.math.clamp(wanted, 1, count + 1);
    var pos: i64 = 1;
    for (ids.rows) |row| {
        if (pos == target) pos += 1;
        _ = try facet.exec("UPDATE items SET position = ? WHERE id = ?", .{ pos, row.int(0).? });
        pos += 1;
    }
    _ = try facet.exec("UPDATE items SET position = ? WHERE id = ?", .{ target, id });
    return facet.json(.{ .id = id, .position = target });
}

fn delete(req: Request) ![]const u8 {
    const id = req.id orelse return facet.errorJson("id is required");
    const r = try facet.exec("DELETE FROM items WHERE id = ?", .{id});
    if (r.rows_written == 0) return facet.errorJson("no such item");
    return facet.json(.{ .id = id, .deleted = true });
}
