//! shortener: random short ids for URLs, with hit counters.
//! Protocol in README.md: a JSON protocol on `facet_handle`, and on `facet_http` the
//! redirects themselves (`GET /{id}` -> 302) and link creation (`POST /`).

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
export fn facet_http(ptr: [*]const u8, len: usize) u64 {
    return facet.serveHttp(ptr, len, route);
}

const Request = struct {
    op: []const u8,
    url: ?[]const u8 = null,
    id: ?[]const u8 = null,
    limit: i64 = 20,
};

const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const id_len = 7;

fn handle(body: []const u8) ![]const u8 {
    const req = facet.parseRequest(Request, body) catch
        return facet.errorJson("expected JSON like {\"op\":\"shorten\",\"url\":\"https://example.com\"}");
    if (std.mem.eql(u8, req.op, "shorten")) return shorten(req);
    if (std.mem.eql(u8, req.op, "resolve")) return resolve(req, true);
    if (std.mem.eql(u8, req.op, "stats")) return resolve(req, false);
    if (std.mem.eql(u8, req.op, "top")) return top(req);
    return facet.errorJson("unknown op; expected shorten, resolve, stats or top");
}

/// Only http(s) URLs with a host are stored: a redirect to `javascript:` or `data:` would run
/// in the victim's browser. No byte at or below space (so no CR/LF for the `location`
/// header) and no DEL; the check runs again before each redirect.
fn validUrl(url: []const u8) bool {
    if (url.len > 2048) return false;
    const rest = if (std.mem.startsWith(u8, url, "https://"))
        url["https://".len..]
    else if (std.mem.startsWith(u8, url, "http://"))
        url["http://".len..]
    else
        return false;
    if (rest.len == 0 or rest[0] == '/' or rest[0] == '?' or rest[0] == '#') return false;
    for (url) |c| if (c <= ' ' or c == 0x7f) return false;
    return std.unicode.utf8ValidateSlice(url); // a form field can decode to any bytes
}

const bad_url = "url must be an http(s) URL without spaces, at most 2048 characters";

const Shortened = struct { id: []const u8, new: bool };

/// The id of `url` (validated by the caller), made if it is new.
fn shortenUrl(url: []const u8) !?Shortened {
    const existing = try facet.exec("SELECT id FROM links WHERE url = ?", .{url});
    if (existing.first()) |row| return .{ .id = row.text(0).?, .new = false };
    var id: [id_len]u8 = undefined;
    var attempt: usize = 0;
    while (attempt < 8) : (attempt += 1) {
        var noise: [id_len]u8 = undefined;
        facet.randomBytes(&noise);
        for (noise, &id) |n, *c| c.* = alphabet[n % alphabet.len];
        const taken = try facet.exec("SELECT 1 FROM links WHERE id = ?", .{@as([]const u8, &id)});
        if (taken.rows.len == 0) break;
    } else return null;
    const copy = try facet.allocator().dupe(u8, &id);
    _ = try facet.exec("INSERT INTO links (id, url, created_ms) VALUES (?, ?, ?)", .{ copy, url, facet.nowMs() });
    return .{ .id = copy, .new = true };
}

fn shorten(req: Request) ![]const u8 {
    const url = req.url orelse return facet.errorJson("url is required");
    if (!validUrl(url)) return facet.errorJson(bad_url);
    const made = (try shortenUrl(url)) orelse return facet.errorJson("could not find a free id");
    return facet.json(.{ .id = made.id, .url = url, .new = made.new });
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

// -- HTTP: redirects and link creation ----------------------------------------------------

const Req = facet.HttpRequest;
const Res = facet.HttpResponse;

fn route(req: *const Req, res: *Res) !void {
    if (std.mem.eql(u8, req.path, "/")) {
        if (req.isGet()) return formPage(req, res);
        if (req.isMethod("POST")) return create(req, res);
        return res.methodNotAllowed("GET, HEAD, POST");
    }
    const id = req.path[1..];
    if (!plausibleId(id)) return notFound(res);
    if (!req.isGet()) return res.methodNotAllowed("GET, HEAD");
    return follow(req, res, id);
}

/// What `resolve` accepts (1-16 bytes) and only characters ids are made of, so other paths
/// (`/favicon.ico`, `/a/b`) are a 404 without a query.
fn plausibleId(id: []const u8) bool {
    if (id.len == 0 or id.len > 16) return false;
    for (id) |c| if (!std.ascii.isAlphanumeric(c)) return false;
    return true;
}

fn notFound(res: *Res) !void {
    res.reset(404);
    try res.header("content-type", "text/plain; charset=utf-8");
    try res.write("no such link\n");
}

/// GET /{id}: 302 Found to the stored URL. Not 301: browsers cache a 301 for good, so later
/// visits would never reach the app (no hit counted) and the link could not be changed.
/// Not 307/308: only GET and HEAD are redirected, where 302 and 307 mean the same and 302
/// is what every client knows. HEAD answers the same without counting a hit.
fn follow(req: *const Req, res: *Res, id: []const u8) !void {
    const r = try facet.exec("SELECT url FROM links WHERE id = ?", .{id});
    const url = (r.first() orelse return notFound(res)).text(0).?;
    if (!validUrl(url)) {
        // Only rows written around the app (operator SQL) can be like this: refuse to send them.
        facet.log(.warn, "link {s} does not hold an http(s) URL; not redirecting", .{id});
        res.reset(500);
        try res.header("content-type", "text/plain; charset=utf-8");
        try res.write("this link does not hold a valid http(s) URL\n");
        return;
    }
    if (req.isMethod("GET"))
        _ = try facet.exec("UPDATE links SET hits = hits + 1, last_hit_ms = ? WHERE id = ?", .{ facet.nowMs(), id });
    try res.redirect(302, try asciiUrl(url));
    try res.header("cache-control", "no-store");
}

/// `url` with every byte >= 0x80 percent-encoded (what a browser sends for a UTF-8 URL), so
/// the `location` header is plain ASCII; `validUrl` already refused bytes <= space and DEL.
fn asciiUrl(url: []const u8) ![]const u8 {
    var wide: usize = 0;
    for (url) |c| wide += @intFromBool(c >= 0x80);
    if (wide == 0) return url;
    const out = try facet.allocator().alloc(u8, url.len + 2 * wide);
    var n: usize = 0;
    for (url) |c| {
        if (c >= 0x80) {
            out[n] = '%';
            out[n + 1] = "0123456789ABCDEF"[c >> 4];
            out[n + 2] = "0123456789ABCDEF"[c & 15];
            n += 3;
        } else {
            out[n] = c;
            n += 1;
        }
    }
    return out;
}

const CreateBody = struct { url: ?[]const u8 = null };

/// POST / with `url=` as a form or `{"url": ...}` as JSON: 201 Created for a new link,
/// 200 when the URL already had one (same id); `location` is the short URL either way.
/// A JSON request gets `{"id", "url", "short", "new"}`, a form a small page with the link.
fn create(req: *const Req, res: *Res) !void {
    const json = req.isJson();
    const url: []const u8 = if (json) blk: {
        const body = facet.parseRequest(CreateBody, req.body) catch
            return res.sendJsonError(400, "bad_request", "expected JSON like {\"url\":\"https://example.com\"}");
        break :blk body.url orelse return res.sendJsonError(400, "bad_request", "url is required");
    } else if (req.isForm())
        (try req.formField("url")) orelse ""
    else {
        res.reset(415);
        try res.header("content-type", "text/plain; charset=utf-8");
        try res.write("send url= as application/x-www-form-urlencoded or {\"url\": ...} as application/json\n");
        return;
    };
    if (!validUrl(url)) {
        if (json) return res.sendJsonError(400, "bad_request", bad_url);
        return page(req, res, 400, "Not shortened", bad_url, null);
    }
    const made = (try shortenUrl(url)) orelse {
        if (json) return res.sendJsonError(503, "no_free_id", "could not find a free id; try again");
        return page(req, res, 503, "Not shortened", "Could not find a free id; try again.", null);
    };
    const short = try std.fmt.allocPrint(facet.allocator(), "{s}/{s}", .{ req.base, made.id });
    const status: u16 = if (made.new) 201 else 200;
    if (json) {
        try res.sendJson(status, .{ .id = made.id, .url = url, .short = short, .new = made.new });
    } else {
        try page(req, res, status, "Shortened", "", short);
    }
    try res.header("location", short);
}

fn formPage(req: *const Req, res: *Res) !void {
    return page(req, res, 200, "Shorten a link", "", null);
}

/// The one page: an optional message or new short link, then the form.
fn page(req: *const Req, res: *Res, status: u16, title: []const u8, message: []const u8, short: ?[]const u8) !void {
    res.reset(status);
    try res.header("content-type", "text/html; charset=utf-8");
    try res.header("content-security-policy", "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'");
    try res.header("x-content-type-options", "nosniff");
    try res.write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    try res.text(title);
    try res.write("</title>\n</head>\n<body>\n<h1>");
    try res.text(title);
    try res.write("</h1>\n");
    if (message.len > 0) {
        try res.write("<p>");
        try res.text(message);
        try res.write("</p>\n");
    }
    if (short) |link| {
        try res.write("<p><a href=\"");
        try res.text(link);
        try res.write("\">");
        try res.text(link);
        try res.write("</a></p>\n");
    }
    try res.write("<form method=\"post\" action=\"");
    try res.text(req.base);
    try res.write("/\">\n<label>URL <input name=\"url\" type=\"url\" required maxlength=\"2048\"></label>\n" ++
        "<button type=\"submit\">Shorten</button>\n</form>\n</body>\n</html>\n");
}
