//! todo: lists of items that can be done/undone and reordered.
//! Protocol in README.md: a JSON protocol on `facet_handle` (operator calls, v1 clients) and,
//! on `facet_http`, an HTML page with forms plus a JSON API over HTTP.

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
export fn facet_http(ptr: [*]const u8, len: usize) u64 {
    return facet.serveHttp(ptr, len, route);
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
    const item = try insertItem(name, title);
    return facet.json(.{ .id = item.id, .list = name, .title = title, .position = item.position, .done = false });
}

const Added = struct { id: i64, position: i64 };

/// Append `title` to list `name` (created if new).
fn insertItem(name: []const u8, title: []const u8) !Added {
    const list_id = (try listId(name, true)).?;
    const r = try facet.exec(
        "INSERT INTO items (list_id, title, position, created_ms) " ++
            "VALUES (?, ?, (SELECT coalesce(max(position), 0) + 1 FROM items WHERE list_id = ?), ?) RETURNING id, position",
        .{ list_id, title, list_id, facet.nowMs() },
    );
    const row = r.first().?;
    return .{ .id = row.int(0).?, .position = row.int(1).? };
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
    if (!try updateDone(id, done)) return facet.errorJson("no such item");
    return facet.json(.{ .id = id, .done = done });
}

/// False when there is no item `id`.
fn updateDone(id: i64, done: bool) !bool {
    const r = try facet.exec(
        "UPDATE items SET done = ?, done_ms = CASE WHEN ? THEN ? END WHERE id = ?",
        .{ @as(i64, @intFromBool(done)), done, facet.nowMs(), id },
    );
    return r.rows_written > 0;
}

fn rename(req: Request) ![]const u8 {
    const id = req.id orelse return facet.errorJson("id is required");
    const title = validTitle(req.title) orelse return facet.errorJson("title must be 1-500 characters");
    if (!try updateTitle(id, title)) return facet.errorJson("no such item");
    return facet.json(.{ .id = id, .title = title });
}

fn updateTitle(id: i64, title: []const u8) !bool {
    const r = try facet.exec("UPDATE items SET title = ? WHERE id = ?", .{ title, id });
    return r.rows_written > 0;
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
    if (!try deleteItem(id)) return facet.errorJson("no such item");
    return facet.json(.{ .id = id, .deleted = true });
}

fn deleteItem(id: i64) !bool {
    const r = try facet.exec("DELETE FROM items WHERE id = ?", .{id});
    return r.rows_written > 0;
}

// -- HTTP: the page, its forms, and the JSON API -----------------------------------------

const Req = facet.HttpRequest;
const Res = facet.HttpResponse;

/// Items added without a list name (the page's form) go here.
const default_list = "home";
/// The page and `GET /api/items` show at most this many items (the sql answer of 1,000
/// 500-byte titles is ~0.6 MB, well inside the result limit).
const max_shown = 1000;

fn route(req: *const Req, res: *Res) !void {
    const path = req.path;
    if (eql(path, "/")) {
        if (req.isGet()) return page(req, res);
        return res.methodNotAllowed("GET, HEAD");
    }
    if (eql(path, "/items")) {
        if (req.isMethod("POST")) return formAdd(req, res);
        return res.methodNotAllowed("POST");
    }
    if (std.mem.startsWith(u8, path, "/items/")) return formAction(req, res, path["/items/".len..]);
    if (eql(path, "/api/items")) {
        if (req.isGet()) return apiList(req, res);
        if (req.isMethod("POST")) return apiAdd(req, res);
        return res.methodNotAllowed("GET, HEAD, POST");
    }
    if (std.mem.startsWith(u8, path, "/api/items/")) {
        const id = parseId(path["/api/items/".len..]) orelse return res.sendJsonError(404, "not_found", "no such item");
        if (req.isGet()) return apiItem(res, id);
        if (req.isMethod("PATCH")) return apiPatch(req, res, id);
        if (req.isMethod("DELETE")) return apiDelete(res, id);
        return res.methodNotAllowed("GET, HEAD, PATCH, DELETE");
    }
    if (std.mem.startsWith(u8, path, "/api/")) return res.sendJsonError(404, "not_found", "no such resource");
    return errorPage(req, res, 404, "Not found", "There is no page here.");
}

/// A decimal item id of 1-18 digits (so it fits an i64), else null.
fn parseId(text: []const u8) ?i64 {
    if (text.len == 0 or text.len > 18) return null;
    for (text) |c| if (!std.ascii.isDigit(c)) return null;
    return std.fmt.parseInt(i64, text, 10) catch null;
}

/// 1-500 bytes of UTF-8 (form bodies can decode to any bytes).
fn validText(text: []const u8) bool {
    return text.len > 0 and text.len <= max_title and std.unicode.utf8ValidateSlice(text);
}

fn trimmed(text: []const u8) []const u8 {
    return std.mem.trim(u8, text, " \t\r\n");
}

fn htmlStart(res: *Res, status: u16, title: []const u8) !void {
    res.reset(status);
    try res.header("content-type", "text/html; charset=utf-8");
    // Defence in depth behind the escaping: no script runs and forms post only here.
    try res.header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'");
    try res.header("x-content-type-options", "nosniff");
    try res.write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n" ++
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    try res.text(title);
    try res.write("</title>\n<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}" ++
        "li{margin:.3rem 0}li form{display:inline}.done .title{text-decoration:line-through;color:#666}</style>\n" ++
        "</head>\n<body>\n");
}

fn htmlEnd(res: *Res) !void {
    try res.write("</body>\n</html>\n");
}

fn errorPage(req: *const Req, res: *Res, status: u16, title: []const u8, message: []const u8) !void {
    try htmlStart(res, status, title);
    try res.write("<h1>");
    try res.text(title);
    try res.write("</h1>\n<p>");
    try res.text(message);
    try res.write("</p>\n<p><a href=\"");
    try res.text(req.base);
    try res.write("/\">Back to the list</a></p>\n");
    try htmlEnd(res);
}

fn page(req: *const Req, res: *Res) !void {
    const r = try facet.exec(
        "SELECT l.name, i.id, i.title, i.done FROM items i JOIN lists l ON l.id = i.list_id " ++
            "ORDER BY l.name, i.position, i.id LIMIT ?",
        .{max_shown + 1},
    );
    const rows = r.rows[0..@min(r.rows.len, max_shown)];
    try htmlStart(res, 200, "Todo");
    try res.write("<h1>Todo</h1>\n");
    if (rows.len == 0) try res.write("<p>Nothing to do yet.</p>\n");
    var current: ?[]const u8 = null;
    for (rows) |row| {
        const list = row.text(0).?;
        if (current == null or !eql(current.?, list)) {
            if (current != null) try res.write("</ul>\n");
            try res.write("<h2>");
            try res.text(list);
            try res.write("</h2>\n<ul>\n");
            current = list;
        }
        const id = row.int(1).?;
        const done = row.int(3).? != 0;
        try res.write(if (done) "<li class=\"done\">" else "<li>");
        try res.write("<span class=\"title\">");
        try res.text(row.text(2).?);
        try res.write("</span>\n");
        try itemButton(req, res, id, if (done) "undone" else "done", if (done) "Undo" else "Done");
        try itemButton(req, res, id, "delete", "Delete");
        try res.write("</li>\n");
    }
    if (current != null) try res.write("</ul>\n");
    if (r.rows.len > max_shown) try res.print("<p>Showing the first {d} items.</p>\n", .{max_shown});
    try res.write("<form method=\"post\" action=\"");
    try res.text(req.base);
    try res.print("/items\">\n<label>New item <input name=\"title\" required maxlength=\"{d}\"></label>\n", .{max_title});
    try res.print("<label>List <input name=\"list\" value=\"{s}\" maxlength=\"{d}\"></label>\n", .{ default_list, max_title });
    try res.write("<button type=\"submit\">Add</button>\n</form>\n");
    try htmlEnd(res);
}

fn itemButton(req: *const Req, res: *Res, id: i64, action: []const u8, label: []const u8) !void {
    try res.write("<form method=\"post\" action=\"");
    try res.text(req.base);
    try res.print("/items/{d}/{s}\"><button type=\"submit\">{s}</button></form>\n", .{ id, action, label });
}

/// After a form post: 303 See Other, so the browser GETs the page (a reload does not post again).
fn backToPage(req: *const Req, res: *Res) !void {
    try res.redirect(303, try std.fmt.allocPrint(facet.allocator(), "{s}/", .{req.base}));
}

/// POST /items (form: title, optional list).
fn formAdd(req: *const Req, res: *Res) !void {
    if (!req.isForm())
        return errorPage(req, res, 415, "Unsupported form", "Send the form as application/x-www-form-urlencoded.");
    const title = trimmed((try req.formField("title")) orelse "");
    if (!validText(title))
        return errorPage(req, res, 400, "Could not add the item", "The title must be 1-500 bytes of text.");
    const list_field = trimmed((try req.formField("list")) orelse "");
    const list = if (list_field.len == 0) default_list else list_field;
    if (!validText(list))
        return errorPage(req, res, 400, "Could not add the item", "The list name must be 1-500 bytes of text.");
    _ = try insertItem(list, title);
    return backToPage(req, res);
}

/// POST /items/{id}/done, /undone, /delete (the page's buttons).
fn formAction(req: *const Req, res: *Res, rest: []const u8) !void {
    const slash = std.mem.indexOfScalar(u8, rest, '/') orelse return errorPage(req, res, 404, "Not found", "There is no page here.");
    const action = rest[slash + 1 ..];
    const known = eql(action, "done") or eql(action, "undone") or eql(action, "delete");
    const id = parseId(rest[0..slash]);
    if (!known or id == null) return errorPage(req, res, 404, "Not found", "There is no page here.");
    if (!req.isMethod("POST")) return res.methodNotAllowed("POST");
    const found = if (eql(action, "delete")) try deleteItem(id.?) else try updateDone(id.?, eql(action, "done"));
    if (!found) return errorPage(req, res, 404, "No such item", "That item does not exist (any more).");
    return backToPage(req, res);
}

const ApiItem = struct { id: i64, list: []const u8, title: []const u8, done: bool, position: i64 };

fn apiItems(r: facet.Result) ![]ApiItem {
    const rows = r.rows[0..@min(r.rows.len, max_shown)];
    const out = try facet.allocator().alloc(ApiItem, rows.len);
    for (rows, out) |row, *it| it.* = .{
        .id = row.int(0).?,
        .list = row.text(1).?,
        .title = row.text(2).?,
        .done = row.int(3).? != 0,
        .position = row.int(4).?,
    };
    return out;
}

const item_columns = "SELECT i.id, l.name, i.title, i.done, i.position FROM items i JOIN lists l ON l.id = i.list_id ";

/// GET /api/items[?list=NAME]: `{"items": [{"id", "list", "title", "done", "position"}]}`.
fn apiList(req: *const Req, res: *Res) !void {
    const wanted = try req.queryValue("list");
    if (wanted) |list| if (!std.unicode.utf8ValidateSlice(list))
        return res.sendJsonError(400, "bad_request", "list must be UTF-8");
    const r = if (wanted) |list|
        try facet.exec(item_columns ++ "WHERE l.name = ? ORDER BY i.position, i.id LIMIT ?", .{ list, max_shown })
    else
        try facet.exec(item_columns ++ "ORDER BY l.name, i.position, i.id LIMIT ?", .{max_shown});
    try res.sendJson(200, .{ .items = try apiItems(r) });
}

const ApiAdd = struct { title: ?[]const u8 = null, list: ?[]const u8 = null };

/// POST /api/items `{"title", "list"?}` -> 201, the item as `{"op": "add"}` answers it.
fn apiAdd(req: *const Req, res: *Res) !void {
    const body = facet.parseRequest(ApiAdd, req.body) catch
        return res.sendJsonError(400, "bad_request", "expected JSON like {\"title\":\"milk\",\"list\":\"home\"}");
    const title = validTitle(body.title) orelse return res.sendJsonError(400, "bad_request", "title must be 1-500 bytes");
    const list = validTitle(body.list orelse default_list) orelse
        return res.sendJsonError(400, "bad_request", "list must be 1-500 bytes");
    const item = try insertItem(list, title);
    try res.sendJson(201, .{ .id = item.id, .list = list, .title = title, .position = item.position, .done = false });
    try res.header("location", try std.fmt.allocPrint(facet.allocator(), "{s}/api/items/{d}", .{ req.base, item.id }));
}

fn apiItem(res: *Res, id: i64) !void {
    const r = try facet.exec(item_columns ++ "WHERE i.id = ?", .{id});
    const items = try apiItems(r);
    if (items.len == 0) return res.sendJsonError(404, "not_found", "no such item");
    try res.sendJson(200, items[0]);
}

const ApiPatch = struct { title: ?[]const u8 = null, done: ?bool = null };

/// PATCH /api/items/{id} `{"title"?, "done"?}` -> the item.
fn apiPatch(req: *const Req, res: *Res, id: i64) !void {
    const body = facet.parseRequest(ApiPatch, req.body) catch
        return res.sendJsonError(400, "bad_request", "expected JSON like {\"done\":true} or {\"title\":\"oat milk\"}");
    if (body.title == null and body.done == null)
        return res.sendJsonError(400, "bad_request", "nothing to change: give title and/or done");
    if (body.title) |t| {
        const title = validTitle(t) orelse return res.sendJsonError(400, "bad_request", "title must be 1-500 bytes");
        if (!try updateTitle(id, title)) return res.sendJsonError(404, "not_found", "no such item");
    }
    if (body.done) |done| {
        if (!try updateDone(id, done)) return res.sendJsonError(404, "not_found", "no such item");
    }
    return apiItem(res, id);
}

fn apiDelete(res: *Res, id: i64) !void {
    if (!try deleteItem(id)) return res.sendJsonError(404, "not_found", "no such item");
    try res.sendJson(200, .{ .id = id, .deleted = true });
}
