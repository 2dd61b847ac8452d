"""Facets for Python apps: write a module, `facets load app.py` builds it into a component.

An app module defines one or both handlers, and optionally its migrations::

    MIGRATIONS = ["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)"]

    def fetch(request, env):          # one HTTP request -> Response (or str/bytes/dict/list)
        rows = env.sql("SELECT id, text FROM notes ORDER BY id")
        return Response.json(rows)

    def call(body, env):              # one plain request (`facets call APP/FACET BODY`) -> str
        env.execute("INSERT INTO notes (text) VALUES (?)", body)
        return "ok"

An app may also define `alarm(env)`: `env.set_alarm(when)` (a datetime, or ms since the
epoch) schedules the facet's one alarm, replacing any pending one, and `alarm` runs at or
after that time, in its own transaction; `env.get_alarm()` answers ms or None,
`env.delete_alarm()` cancels it. `set_alarm` raises `AlarmError` when the app has no
`alarm` or the time is outside 1970..9999.

A plain request to an app without `call` becomes a `fetch` of `POST /` with that body;
an HTTP request to an app without `fetch` goes to `call` with the body (answered 200).

`MIGRATIONS[i]` moves the schema from version i to i+1: a SQL string, a list of them, or
a callable taking `env`. They run in `init` (its own transaction), once per version; the
version lives in the app's `schema_version` table. Names starting `_facets` are the
platform's.

`print` and `sys.stdout`/`sys.stderr` go to the facet's log (output at import time is
logged at each instantiation's init). An uncaught exception fails the request with code
`trap`; everything it wrote is rolled back and its traceback goes to the log. There are
no files, sockets or environment; time and randomness come from the host
(`now_ms()`, `random_bytes(n)`; `time.time()` and `random` work too).
"""

from __future__ import annotations

import base64
import datetime
import json
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

try:  # the bindings componentize-py generates at build time
    from wit_world.imports import host as _host
except ImportError:  # outside a component: importable for docs and type checkers
    _host = None

__all__ = [
    "AlarmError",
    "Env",
    "Headers",
    "Request",
    "Response",
    "SqlError",
    "Written",
    "delete_alarm",
    "env",
    "escape_html",
    "get_alarm",
    "log",
    "now_ms",
    "random_bytes",
    "set_alarm",
]

_LEVELS = {"debug": 0, "info": 1, "warn": 2, "warning": 2, "error": 3}

#: True while an export runs: the host's functions exist only then (not at import time,
#: which happens once, when the component is built).
_serving = False


def _need_host(what: str) -> Any:
    if not _serving or _host is None:
        raise RuntimeError(f"{what} is available inside handlers and MIGRATIONS, not at import time")
    return _host


# -- time, randomness, logging ---------------------------------------------------------


def now_ms() -> int:
    """Wall-clock time from the host, milliseconds since the Unix epoch."""
    return int(_need_host("now_ms()").now_ms())


def random_bytes(n: int) -> bytes:
    """`n` secure random bytes from the host."""
    host = _need_host("random_bytes()")
    out = bytearray()
    while len(out) < n:
        out += host.random(min(65536, n - len(out)))
    return bytes(out)


def log(*parts: object, level: str = "info") -> None:
    """Log one record (`parts` joined by spaces, like print): level debug, info, warn or error."""
    if level not in _LEVELS:
        raise ValueError(f"level must be one of debug, info, warn, error, not {level!r}")
    _need_host("log()").log(_LEVELS[level], " ".join(str(p) for p in parts))


# -- alarms ----------------------------------------------------------------------------


class AlarmError(Exception):
    """A refused `set_alarm`: the app defines no `alarm(env)`, or the time is out of range."""


#: The latest time an alarm may be set to: 9999-12-31T23:59:59.999Z (the host's limit too).
MAX_ALARM_MS = 253_402_300_799_999
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MS = datetime.timedelta(milliseconds=1)
#: Set by the glue (`_guest.make_guest`) when the app defines `alarm`.
_has_alarm_handler = False


def _alarm_ms(when: object) -> int:
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:  # a naive datetime is UTC: the facet's clock has no zone
            when = when.replace(tzinfo=datetime.UTC)
        ms = (when - _EPOCH) // _MS
    elif isinstance(when, int) and not isinstance(when, bool):
        ms = when
    else:
        kind = type(when).__name__
        raise TypeError(f"set_alarm: expected a datetime or int milliseconds since the epoch, not {kind}")
    if not 0 <= ms <= MAX_ALARM_MS:
        raise AlarmError(f"set_alarm: {ms} is outside 0..{MAX_ALARM_MS} (1970-01-01 to 9999-12-31)")
    return ms


def set_alarm(when: datetime.datetime | int) -> None:
    """Schedule the facet's alarm at `when` (a datetime, naive = UTC, or ms since the
    epoch), replacing any pending one. `alarm(env)` runs at or after that time."""
    host = _need_host("set_alarm()")
    if not _has_alarm_handler:
        raise AlarmError("set_alarm: the app has no alarm handler: define alarm(env) in it")
    ms = _alarm_ms(when)
    if not host.set_alarm(ms):
        raise AlarmError(f"set_alarm({ms}) was refused by the host")


def get_alarm() -> int | None:
    """The pending alarm's time in ms since the epoch, or None."""
    at = _need_host("get_alarm()").get_alarm()
    return None if at is None else int(at)


def delete_alarm() -> None:
    """Cancel the pending alarm, if any."""
    _need_host("delete_alarm()").delete_alarm()


# -- SQL -------------------------------------------------------------------------------


class SqlError(Exception):
    """A statement failed: `.code` is the platform's stable code (sql_error, not_authorized,
    storage_full, too_big, timeout, bad_request) and `.message` SQLite's text. After
    storage_full or timeout the request fails and rolls back whatever you do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Written(NamedTuple):
    """What `env.execute` answers."""

    rows_written: int
    last_insert_rowid: int


def _param(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$blob": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"a SQL parameter is None, bool, int, float, str or bytes, not {type(value).__name__}")


def _value(value: object) -> object:
    if isinstance(value, dict) and "$blob" in value:
        return base64.b64decode(value["$blob"])
    return value


# CPython in a component runs json slowly: one json.dumps of three parameters cost ~34k
# fuel and one json.loads of a write's answer ~42k, against ~20k for a whole empty request
# (measured here). The two shapes nearly every write has take a faster path: parameters
# that are integers or plain ASCII text are written by hand, and a write's answer (no
# columns, no rows: the host writes its keys in this order, compact) is read with split.
_WRITE_ANSWER = '{"ok":true,"columns":[],"rows":[],"rows_read":'


def _encode_params(params: tuple[object, ...]) -> str:
    parts = []
    for value in params:
        kind = type(value)
        if kind is int:
            parts.append(str(value))
        elif kind is str and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
            parts.append('"' + value + '"')
        else:
            return json.dumps([_param(p) for p in params], allow_nan=False, separators=(",", ":"))
    return "[" + ",".join(parts) + "]"


def _decode_answer(text: str) -> dict[str, Any]:
    if text.startswith(_WRITE_ANSWER):
        rest = text[len(_WRITE_ANSWER) : -1].split(",")
        if len(rest) == 3 and rest[1].startswith('"rows_written":') and rest[2].startswith('"last_insert_rowid":'):
            try:
                return {
                    "ok": True,
                    "columns": [],
                    "rows": [],
                    "rows_read": int(rest[0]),
                    "rows_written": int(rest[1][15:]),
                    "last_insert_rowid": int(rest[2][20:]),
                }
            except ValueError:
                pass
    answer = json.loads(text)
    return answer if isinstance(answer, dict) else {"ok": False, "error": {"message": "unreadable answer"}}


def _run(statement: str, params: tuple[object, ...]) -> dict[str, Any]:
    host = _need_host("env.sql()")
    encoded = _encode_params(params) if params else ""
    answer = _decode_answer(host.sql(statement, encoded))
    if not answer.get("ok"):
        error = answer.get("error") or {}
        raise SqlError(str(error.get("code", "sql_error")), str(error.get("message", "")))
    return answer


class _Sql:
    """`env.sql(statement, *params)`: the rows as a list of dicts (column -> value)."""

    def __call__(self, statement: str, *params: object) -> list[dict[str, Any]]:
        answer = _run(statement, params)
        columns = answer.get("columns") or []
        return [dict(zip(columns, map(_value, row), strict=False)) for row in answer.get("rows") or []]

    def one(self, statement: str, *params: object) -> dict[str, Any] | None:
        """The first row, or None."""
        rows = self(statement, *params)
        return rows[0] if rows else None

    def value(self, statement: str, *params: object) -> Any:
        """The first column of the first row, or None (e.g. `SELECT count(*) ...`)."""
        answer = _run(statement, params)
        rows = answer.get("rows") or []
        return _value(rows[0][0]) if rows and rows[0] else None


class Env:
    """What a handler gets beside its request: the facet's database, log, time, randomness."""

    sql = _Sql()

    @staticmethod
    def execute(statement: str, *params: object) -> Written:
        """Run a statement for its effect: (rows_written, last_insert_rowid)."""
        answer = _run(statement, params)
        return Written(int(answer.get("rows_written") or 0), int(answer.get("last_insert_rowid") or 0))

    log = staticmethod(log)
    now_ms = staticmethod(now_ms)
    random_bytes = staticmethod(random_bytes)
    set_alarm = staticmethod(set_alarm)
    get_alarm = staticmethod(get_alarm)
    delete_alarm = staticmethod(delete_alarm)


env = Env()


# -- HTTP --------------------------------------------------------------------------------


class Headers(Mapping[str, str]):
    """HTTP headers: case-insensitive, in order, a name may repeat (`get_all`)."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        if isinstance(items, Mapping):
            items = items.items()
        for name, value in items or ():
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((str(name).lower(), str(value)))

    def set(self, name: str, value: str) -> None:
        """Replace every `name` header with this one."""
        self.pop(name, None)
        self.add(name, value)

    def pop(self, name: str, default: Any = None) -> Any:
        name = name.lower()
        found = [v for n, v in self._items if n == name]
        self._items = [(n, v) for n, v in self._items if n != name]
        return found[0] if found else default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self._items if n == name]

    def __getitem__(self, name: str) -> str:
        name = name.lower()
        for n, v in self._items:
            if n == name:
                return v
        raise KeyError(name)

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(n for n, _ in self._items))

    def __len__(self) -> int:
        return len(dict.fromkeys(n for n, _ in self._items))

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Request:
    """One HTTP request. `path` is below the facet (starting "/"), `query` the raw query
    string, `base` where the facet is mounted (prefix it to links and redirects)."""

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        query: str = "",
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        base: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.base = base

    @property
    def args(self) -> dict[str, str]:
        """The query string's fields (the last of a repeated name wins)."""
        return dict(urllib.parse.parse_qsl(self.query, keep_blank_values=True))

    def text(self) -> str:
        """The body as text (UTF-8; undecodable bytes become U+FFFD)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """An `application/x-www-form-urlencoded` body's fields (the last of a repeated name wins)."""
        return dict(urllib.parse.parse_qsl(self.text(), keep_blank_values=True))

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r}>"


class Response:
    """One HTTP response. A str body without a content-type is sent as text/plain."""

    def __init__(
        self,
        body: str | bytes = b"",
        status: int = 200,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        if isinstance(body, str):
            if "content-type" not in self.headers:
                self.headers.add("content-type", "text/plain; charset=utf-8")
            body = body.encode("utf-8")
        self.body = bytes(body)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        out = cls(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(), status, headers)
        out.headers.set("content-type", "application/json")
        return out

    @classmethod
    def html(cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        out = cls(text.encode("utf-8"), status, headers)
        out.headers.set("content-type", "text/html; charset=utf-8")
        return out

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        out = cls(text.encode("utf-8"), status, headers)
        out.headers.set("content-type", "text/plain; charset=utf-8")
        return out

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(b"", status, {"location": location})

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def escape_html(text: object) -> str:
    """`text` with & < > " ' escaped, so untrusted text renders as text."""
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )
