//! poll: questions with options; one vote per voter; live results.
//! Protocol in README.md.

const std = @import("std");
const facet = @import("facet");

const migrations = [_][]const []const u8{
    &.{
        "CREATE TABLE polls (id INTEGER PRIMARY KEY, question TEXT NOT NULL, closed INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL)",
        "CREATE TABLE options (poll_id INTEGER NOT NULL REFERENCES polls(id), idx INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (poll_id, idx))",
        "CREATE TABLE votes (poll_id INTEGER NOT NULL, voter TEXT NOT NULL, idx INTEGER NOT NULL, voted_ms INTEGER NOT NULL, PRIMARY KEY (poll_id, voter))",
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
    question: ?[]const u8 = null,
    options: ?[]const []const u8 = null,
    poll: ?i64 = null,
    voter: ?[]const u8 = null,
    option: ?i64 = null,
};

fn handle(body: []const u8) ![]const u8 {
    const req = facet.parseRequest(Request, body) catch
        return facet.errorJson("expected JSON like {\"op\":\"vote\",\"poll\":1,\"voter\":\"ada\",\"option\":0}");
    if (std.mem.eql(u8, req.op, "create")) return create(req);
    if (std.mem.eql(u8, req.op, "vote")) return vote(req);
    if (std.mem.eql(u8, req.op, "results")) return results(req);
    if (std.mem.eql(u8, req.op, "close")) return close(req);
    if (std.mem.eql(u8, req.op, "polls")) return polls();
    return facet.errorJson("unknown op; expected create, vote, results, close or polls");
}

fn create(req: Request) ![]const u8 {
    const question = req.question orelse return facet.errorJson("question is required");
    const options = req.options orelse return facet.errorJson("options is required");
    if (question.len == 0 or question.len > 300) return facet.errorJson("question must be 1-300 characters");
    if (options.len < 2 or options.len > 20) return facet.errorJson("a poll has 2-20 options");
    for (options) |o| if (o.len == 0 or o.len > 200) return facet.errorJson("options must be 1-200 characters");
    const made = try facet.exec("INSERT INTO polls (question, created_ms) VALUES (?, ?)", .{ question, facet.nowMs() });
    for (options, 0..) |text, i| {
        _ = try facet.exec("INSERT INTO options (poll_id, idx, text) VALUES (?, ?, ?)", .{ made.last_insert_rowid, i, text });
    }
    return facet.json(.{ .poll = made.last_insert_rowid });
}

fn vote(req: Request) ![]const u8 {
    const poll = req.poll orelse return facet.errorJson("poll is required");
    const voter = req.voter orelse return facet.errorJson("voter is required");
    const option = req.option orelse return facet.errorJson("option is required");
    if (voter.len == 0 or voter.len > 100) return facet.errorJson("voter must be 1-100 characters");
    const p = try facet.exec("SELECT closed FROM polls WHERE id = ?", .{poll});
    const row = p.first() orelse return facet.errorJson("no such poll");
    if (row.int(0).? != 0) return facet.errorJson("poll is closed");
    const o = try facet.exec("SELECT 1 FROM options WHERE poll_id = ? AND idx = ?", .{ poll, option });
    if (o.rows.len == 0) return facet.errorJson("no such option");
    const r = try facet.exec(
        "INSERT INTO votes (poll_id, voter, idx, voted_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        .{ poll, voter, option, facet.nowMs() },
    );
    if (r.rows_written == 0) return facet.errorJson("already voted");
    return facet.json(.{ .poll = poll, .voter = voter, .option = option });
}

fn results(req: Request) ![]const u8 {
    const poll = req.poll orelse return facet.errorJson("poll is required");
    const p = try facet.exec("SELECT question, closed FROM polls WHERE id = ?", .{poll});
    const head = p.first() orelse return facet.errorJson("no such poll");
    const r = try facet.exec(
        "SELECT o.text, count(v.voter) FROM options o LEFT JOIN votes v ON v.poll_id = o.poll_id AND v.idx = o.idx " ++
            "WHERE o.poll_id = ? GROUP BY o.idx ORDER BY o.idx",
        .{poll},
    );
    const Option = struct { text: []const u8, votes: i64 };
    const out = try facet.allocator().alloc(Option, r.rows.len);
    var total: i64 = 0;
    for (r.rows, out) |row, *o| {
        o.* = .{ .text = row.text(0).?, .votes = row.int(1).? };
        total += o.votes;
    }
    return facet.json(.{ .poll = poll, .question = head.text(0).?, .closed = head.int(1).? != 0, .options = out, .total = total });
}

fn close(req: Request) ![]const u8 {
    const poll = req.poll orelse return facet.errorJson("poll is required");
    const r = try facet.exec("UPDATE polls SET closed = 1 WHERE id = ?", .{poll});
    if (r.rows_written == 0) return facet.errorJson("no such poll");
    return facet.json(.{ .poll = poll, .closed = true });
}

fn polls() ![]const u8 {
    const r = try facet.exec(
        "SELECT p.id, p.question, p.closed, (SELECT count(*) FROM votes v WHERE v.poll_id = p.id) FROM polls p ORDER BY p.id DESC LIMIT 100",
        .{},
    );
    const Poll = struct { poll: i64, question: []const u8, closed: bool, votes: i64 };
    const out = try facet.allocator().alloc(Poll, r.rows.len);
    for (r.rows, out) |row, *p| p.* = .{ .poll = row.int(0).?, .question = row.text(1).?, .closed = row.int(2).? != 0, .votes = row.int(3).? };
    return facet.json(.{ .polls = out });
}
