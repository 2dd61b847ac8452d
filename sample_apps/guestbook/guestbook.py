"""guestbook: an append-only list of signed messages, newest first, paged by id.

The Python twin of guestbook.zig: the same protocol (README.md), answers, schema and
HTTP behaviour (any HTTP request is a plain request with the request's body).
"""

import json
import re

import facets

MIGRATIONS = [
    "CREATE TABLE entries (id INTEGER PRIMARY KEY, name TEXT NOT NULL, message TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL)",
]

USAGE = 'expected JSON like {"op":"sign","name":"ada","message":"hi"}'
_I64 = (-(2**63), 2**63 - 1)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class BadRequest(ValueError):
    pass


def _answer(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error(message):
    return _answer({"error": message})


def _text(value):
    if not isinstance(value, str):
        raise BadRequest("not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, or a body that was not UTF-8
        raise BadRequest("not UTF-8") from None
    return value


def _int(value):
    """An integer as the Zig twin reads one: a JSON integer, an integral number, or a
    string holding one; within i64."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest("not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise BadRequest("not an integer")
        value = int(value)
    if not _I64[0] <= value <= _I64[1]:
        raise BadRequest("out of range")
    return value


def _no_constants(name):
    raise BadRequest(name)


class _Fields(list):
    """A JSON object as its (key, value) pairs, so duplicate keys can be refused."""


def _parse(body):
    try:
        doc = json.loads(body, object_pairs_hook=_Fields, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise BadRequest("not JSON") from None
    if not isinstance(doc, _Fields):
        raise BadRequest("not an object")
    known = {"op": _text, "name": _text, "message": _text, "before": _int, "limit": _int}
    optional = {"name", "message", "before"}
    fields = {}
    for key, value in doc:
        if key not in known:
            continue
        if key in fields:
            raise BadRequest("duplicate field")
        if value is None and key in optional:
            fields[key] = None
        else:
            fields[key] = known[key](value)
    if "op" not in fields:
        raise BadRequest("op is required")
    fields.setdefault("limit", 20)
    return fields


def call(body, env):
    try:
        req = _parse(body)
    except BadRequest:
        return _error(USAGE)
    try:
        if req["op"] == "sign":
            return _sign(req, env)
        if req["op"] == "list":
            return _list(req, env)
        if req["op"] == "count":
            return _answer({"count": env.sql.value("SELECT count(*) FROM entries")})
    except facets.SqlError:
        return _error("SqlFailed")  # what the Zig twin answers when a statement fails
    return _error("unknown op; expected sign, list or count")


def _sign(req, env):
    name, message = req.get("name"), req.get("message")
    if name is None:
        return _error("name is required")
    if message is None:
        return _error("message is required")
    # Lengths in UTF-8 bytes, as the Zig twin counts them.
    if not 1 <= len(name.encode()) <= 80:
        return _error("name must be 1-80 characters")
    if not 1 <= len(message.encode()) <= 2000:
        return _error("message must be 1-2000 characters")
    now = facets.now_ms()
    written = env.execute("INSERT INTO entries (name, message, created_ms) VALUES (?, ?, ?)", name, message, now)
    return _answer({"id": written.last_insert_rowid, "created_ms": now})


def _list(req, env):
    """Newest first; pass the `next` of a page as `before` to get the following page."""
    limit = req["limit"]
    if not 1 <= limit <= 100:
        return _error("limit must be 1-100")
    before = req.get("before")
    if before is None:
        before = _I64[1]
    rows = env.sql(
        "SELECT id, name, message, created_ms FROM entries WHERE id < ? ORDER BY id DESC LIMIT ?",
        before,
        limit + 1,
    )
    shown = rows[:limit]
    entries = [
        {"id": r["id"], "name": r["name"], "message": r["message"], "created_ms": r["created_ms"]} for r in shown
    ]
    following = shown[-1]["id"] if len(rows) > limit else None
    return _answer({"entries": entries, "next": following})
