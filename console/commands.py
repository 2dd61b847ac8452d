"""The operator command language, shared by scripts, the CLI and the console's ``:`` bar.

One command per line, shell-style quoting, ``#`` starts a comment::

    load sample_apps/counter/counter.wat as counter
    call counter/alice '{"op": "incr"}'
    quota counter/alice fuel=5M storage=64MiB
    rows todo/alice items limit=20 where="done = 0"
    delete counter/alice --yes

``parse`` turns a line into a ``Command`` (or raises ``UsageError``);
``execute`` runs it on a ``Supervisor`` and returns a JSON-ready dict. Both
raise ``CommandError`` subclasses carrying a stable code; ``run_line`` wraps
them into ``{"cmd", "ok", ...}`` results.
"""

from __future__ import annotations

import calendar
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from runtime import ErrorCode, FacetsError, QuotaError, Supervisor, parse_quota
from runtime.storage import FacetReader
from runtime.logs import LEVELS

from .format import parse_response


def error_code(value: str | ErrorCode | None) -> ErrorCode:
    """The ``ErrorCode`` of a code string (a custom policy's unknown code becomes ``internal``)."""
    if isinstance(value, ErrorCode):
        return value
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL


class CommandError(Exception):
    """A command failed; ``code`` is one of ``runtime.errors.ErrorCode`` (the one documented list)."""

    code: ErrorCode = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, code: str | ErrorCode | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = error_code(code)

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(CommandError):
    """The line cannot be understood (bad quoting, unknown command, wrong arguments)."""

    code = ErrorCode.USAGE


class RefusedError(CommandError):
    """A destructive command without ``--yes``, or a write in read-only mode."""

    code = ErrorCode.REFUSED


@dataclass
class Command:
    line: str
    name: str
    args: list[str]
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Spec:
    """How a command is written: positional arguments, KEY=VALUE options, flags."""

    usage: str
    summary: str
    min_args: int
    max_args: int
    options: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    free_options: bool = False   # quota takes any KEY=VALUE (validated by the runtime)
    writes: bool = False         # refused in read-only mode: it changes something somewhere


SPECS: dict[str, Spec] = {
    "load": Spec("load PATH [as NAME]", "load or upgrade an app from a .wasm or .wat file", 1, 3, writes=True),
    "call": Spec("call APP/FACET [BODY]", "send one request", 1, 2, writes=True),
    "quota": Spec("quota TARGET [KEY=VALUE ...]", "show or change quotas (TARGET: *, APP, APP/FACET)",
                  1, 1, free_options=True),
    "apps": Spec("apps", "list apps and versions", 0, 0),
    "facets": Spec("facets [APP]", "list facets with state and usage", 0, 1),
    "tables": Spec("tables APP/FACET", "list a facet's tables", 1, 1),
    "rows": Spec("rows APP/FACET TABLE [limit=N] [offset=N] [where=SQL]", "page through a table", 2, 2,
                 options=frozenset({"limit", "offset", "where"})),
    "sql": Spec("sql APP/FACET QUERY [timeout=DURATION]", "run a read-only query (default deadline 10s)",
                2, 2, options=frozenset({"timeout"})),
    "logs": Spec("logs [APP[/FACET]] [tail=N] [level=LEVEL] [search=TEXT]", "show log records", 0, 1,
                 options=frozenset({"tail", "level", "search"})),
    "usage": Spec("usage [APP[/FACET]]", "show accumulated usage", 0, 1),
    "bill": Spec("bill [APP] [since=WHEN] [until=WHEN]", "cost per facet and app for a period", 0, 1,
                 options=frozenset({"since", "until"})),
    "evict": Spec("evict APP/FACET", "drop a facet's warm instance", 1, 1, writes=True),
    "delete": Spec("delete APP/FACET --yes", "delete a facet and its data", 1, 1,
                   flags=frozenset({"--yes"}), writes=True),
    "export": Spec("export APP/FACET PATH", "copy a facet's database to PATH (consistent snapshot)", 2, 2,
                   writes=True),
    "import": Spec("import PATH as APP/FACET", "create a facet from a SQLite database file", 3, 3,
                   writes=True),
    "metrics": Spec("metrics", "usage in Prometheus text format", 0, 0),
    "help": Spec("help", "list commands", 0, 0),
}
_OPTION = re.compile(r"^([a-z_]+)=(.*)$", re.S)

#: Longest line accepted (characters). A line is typed or scripted by an operator; 1 MiB
#: leaves room for a large request body while bounding what one line can cost.
MAX_LINE_CHARS = 1024 * 1024
_PLAIN = re.compile(r"[^ \t\r\n'\"\\#]+")
_DOUBLE_QUOTED = re.compile(r'[^"\\]*')


def split_line(line: str) -> list[str]:
    """``shlex.split(line, comments=True)`` (POSIX rules) in linear time.

    ``shlex`` appends one character at a time to an attribute string, which CPython
    cannot grow in place: a 1 MB line took 16 s (quadratic). Here every run of plain
    characters is one regex match and each token is joined once. Raises ``ValueError``
    with shlex's messages on an open quote or a trailing backslash.
    """
    tokens: list[str] = []
    parts: list[str] | None = None       # the token being built; None between tokens
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\n":
            if parts is not None:
                tokens.append("".join(parts))
                parts = None
            i += 1
            continue
        if c == "#":                      # a comment, even inside a word (as shlex)
            if parts is not None:
                tokens.append("".join(parts))
                parts = None
            end = line.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if parts is None:
            parts = []
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("No escaped character")
            parts.append(line[i + 1])
            i += 2
        elif c == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ValueError("No closing quotation")
            parts.append(line[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                match = _DOUBLE_QUOTED.match(line, i)
                assert match is not None      # the pattern matches the empty string
                parts.append(match.group())
                i = match.end()
                if i >= n:
                    raise ValueError("No closing quotation")
                if line[i] == '"':
                    i += 1
                    break
                if i + 1 >= n:                # a backslash at the very end
                    raise ValueError("No escaped character")
                escaped = line[i + 1]
                parts.append(escaped if escaped in '"\\' else "\\" + escaped)
                i += 2
        else:
            match = _PLAIN.match(line, i)
            assert match is not None          # c is none of the special characters
            parts.append(match.group())
            i = match.end()
    if parts is not None:
        tokens.append("".join(parts))
    return tokens


def check_text(line: str) -> None:
    """Refuse what no command can mean: NUL bytes, text that is not UTF-8, huge lines.

    A non-UTF-8 argument reaches us as lone surrogates (Python's ``surrogateescape``
    decoding of argv); encoding it later would raise ``UnicodeEncodeError``.
    """
    if len(line) > MAX_LINE_CHARS:
        raise UsageError(f"line too long: {len(line):,} characters (at most {MAX_LINE_CHARS:,})")
    if "\x00" in line:
        raise UsageError(f"the line contains a NUL byte at character {line.index(chr(0)) + 1}")
    surrogate = _SURROGATE.search(line)
    if surrogate:
        code = ord(surrogate.group())
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise UsageError(f"the line is not valid UTF-8 ({what} at character {surrogate.start() + 1})")


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` safe to print and serialise as strict UTF-8: lone surrogates become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def parse(line: str) -> Command | None:
    """Parse one line; None for blank lines and comments. Raises ``UsageError``."""
    check_text(line)
    try:
        tokens = split_line(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse line: {exc}") from None
    if not tokens:
        return None
    name, rest = tokens[0], tokens[1:]
    spec = SPECS.get(name)
    if spec is None:
        raise UsageError(f"unknown command {name!r}; commands: {', '.join(SPECS)}")
    args: list[str] = []
    options: dict[str, str] = {}
    flags: set[str] = set()
    for token in rest:
        match = _OPTION.match(token)
        if token.startswith("--"):
            if token not in spec.flags:
                raise UsageError(f"{name}: unknown flag {token}; usage: {spec.usage}")
            flags.add(token)
        elif match and (spec.free_options or match.group(1) in spec.options) and args_complete(name, args):
            options[match.group(1)] = match.group(2)
        else:
            args.append(token)
    if name in ("load", "import") and len(args) > 1 and (len(args) != 3 or args[1] != "as"):
        raise UsageError(f"{name}: wrong arguments; usage: {spec.usage}")
    if not spec.min_args <= len(args) <= spec.max_args:
        raise UsageError(f"{name}: wrong number of arguments; usage: {spec.usage}")
    return Command(line=line.strip(), name=name, args=args, options=options, flags=flags)


def args_complete(name: str, args: list[str]) -> bool:
    """KEY=VALUE tokens are options only once the positional arguments are there
    (so ``call app/f a=b`` sends the body ``a=b``)."""
    if name == "call":
        return False
    spec = SPECS[name]
    return len(args) >= spec.min_args


# -- execution -------------------------------------------------------------------------
def _int_option(cmd: Command, key: str, default: int, minimum: int = 0) -> int:
    raw = cmd.options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CommandError(f"{key} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise CommandError(f"{key} must be at least {minimum}")
    return value


def parse_when(raw: str, now: float | None = None) -> float:
    """``2026-11-01``, ``2026-11-01T12:00``, epoch seconds, or relative ``7d``/``24h``/``30m``."""
    now = time.time() if now is None else now
    text = raw.strip()
    rel = re.fullmatch(r"(\d+(?:\.\d+)?)([dhm])", text)
    if rel:
        return now - float(rel.group(1)) * {"d": 86400, "h": 3600, "m": 60}[rel.group(2)]
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise CommandError(f"bad time {raw!r}: expected 2026-11-01, 2026-11-01T12:00, epoch seconds, "
                       "or 7d / 24h / 30m ago")


def _response_value(data: bytes) -> Any:
    return parse_response(data)   # strict, depth-bounded JSON, else text (see format.py)


def _exec_load(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    name = cmd.args[2] if len(cmd.args) == 3 else None
    version = sup.load_app(cmd.args[0], name)
    return {"app": version.app, "version": version.version, "sha256": version.sha256,
            "exports": list(version.exports), "imports": list(version.imports)}


def _exec_call(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    body = cmd.args[1] if len(cmd.args) > 1 else ""
    result = sup.call(cmd.args[0], body.encode("utf-8"))
    if not result.ok:
        raise CommandError(result.message, result.error)
    return {"response": _response_value(result.response), "usage": result.usage.as_dict(),
            "request_id": result.request_id}


def _exec_quota(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    target = cmd.args[0]
    if cmd.options:
        quotas = sup.set_quotas(target, dict(cmd.options))
    else:
        quotas = sup.quotas(target)
    return {"target": target, "quotas": quotas.as_dict(), "explicit": sup.explicit_quotas(target)}


def _exec_apps(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    return {"apps": [a.as_dict() for a in sup.app_list()]}


def _exec_facets(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    app = cmd.args[0] if cmd.args else None
    return {"facets": [f.as_dict() for f in sup.facet_list(app)]}


def _exec_tables(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    return {"tables": sup.tables(cmd.args[0])}


#: Deadline of an operator's ``sql`` and ``rows`` (ms; ``sql ... timeout=2s`` changes it):
#: a query over a facet's database is browsing, and 10 s is long for that, while a
#: runaway one (a recursive CTE, a cross join) would otherwise run until it ends.
SQL_TIMEOUT_MS = 10_000


def _with_deadline(reader: FacetReader, timeout_ms: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a reader query; past ``timeout_ms``, interrupt it and fail with ``timeout``.

    ``FacetReader.close`` is the documented way to stop a running query from another
    thread (it calls sqlite3's ``interrupt``). Whether the deadline fired is our own
    event, so the error is classified by what happened, not by SQLite's message.
    """
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        reader.close()

    timer = threading.Timer(timeout_ms / 1000, expire)
    timer.daemon = True
    timer.start()
    try:
        return run()
    except FacetsError:
        if fired.is_set():
            raise CommandError(f"the query ran past its deadline of {timeout_ms} ms and was stopped "
                               "(sql ... timeout=DURATION sets another, up to 10 minutes)",
                               ErrorCode.TIMEOUT) from None
        raise
    finally:
        timer.cancel()


def _timeout_option(cmd: Command) -> int:
    raw = cmd.options.get("timeout")
    if raw is None:
        return SQL_TIMEOUT_MS
    try:
        return int(parse_quota("timeout_ms", raw))
    except QuotaError as exc:
        raise CommandError(f"timeout: {exc.message}") from None


def _exec_rows(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    limit = _int_option(cmd, "limit", 100)
    offset = _int_option(cmd, "offset", 0)
    with sup.reader(cmd.args[0]) as reader:
        return _with_deadline(reader, SQL_TIMEOUT_MS, lambda: reader.rows(
            cmd.args[1], limit=limit, offset=offset, where=cmd.options.get("where")))


def _exec_sql(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    timeout_ms = _timeout_option(cmd)
    with sup.reader(cmd.args[0]) as reader:
        return _with_deadline(reader, timeout_ms, lambda: reader.query(cmd.args[1]))


def _exec_logs(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    level = cmd.options.get("level")
    if level is not None and level not in LEVELS:
        raise CommandError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    records = sup.logs(cmd.args[0] if cmd.args else None, level=level,
                       limit=_int_option(cmd, "tail", 50, 1), search=cmd.options.get("search"))
    return {"logs": [r.as_dict() for r in records]}


def _exec_usage(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    target = cmd.args[0] if cmd.args else None
    return {"target": target or "*", "usage": sup.usage(target)}


def _exec_bill(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    since = parse_when(cmd.options["since"]) if "since" in cmd.options else None
    until = parse_when(cmd.options["until"]) if "until" in cmd.options else None
    return sup.bill(cmd.args[0] if cmd.args else None, since=since, until=until)


def _exec_evict(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    return {"facet": cmd.args[0], "was_warm": sup.evict(cmd.args[0])}


def _exec_delete(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    if "--yes" not in cmd.flags:
        raise RefusedError(f"delete removes {cmd.args[0]} and all its data; repeat with --yes")
    sup.delete(cmd.args[0])
    return {"facet": cmd.args[0], "deleted": True}


def _exec_export(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    size = sup.export_facet(cmd.args[0], cmd.args[1])
    return {"facet": cmd.args[0], "path": cmd.args[1], "bytes": size}


def _exec_import(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    tables = sup.import_facet(cmd.args[0], cmd.args[2])
    return {"facet": cmd.args[2], "path": cmd.args[0], "tables": tables}


def _exec_metrics(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    return {"text": sup.prometheus()}


def _exec_help(sup: Supervisor, cmd: Command) -> dict[str, Any]:
    return {"commands": [{"usage": s.usage, "summary": s.summary} for s in SPECS.values()]}


EXECUTORS: dict[str, Callable[[Supervisor, Command], dict[str, Any]]] = {
    name: globals()[f"_exec_{name}"] for name in SPECS
}


def is_write(cmd: Command) -> bool:
    """Commands refused in read-only mode: anything that writes anywhere. That is apps,
    facets, their data, quotas, a warm instance (``evict``), and files outside the data
    directory too (``export`` writes PATH)."""
    return SPECS[cmd.name].writes or (cmd.name == "quota" and bool(cmd.options))


def execute(sup: Supervisor, cmd: Command, *, readonly: bool = False) -> dict[str, Any]:
    """Run a parsed command. Raises ``CommandError`` (runtime errors are converted)."""
    if readonly and is_write(cmd):
        raise RefusedError(f"{cmd.name}: refused in read-only mode")
    try:
        return EXECUTORS[cmd.name](sup, cmd)
    except CommandError:
        raise
    except FacetsError as exc:
        raise CommandError(exc.message, exc.code) from None
    except (OSError, sqlite3.Error) as exc:   # by type: the OS or SQLite failed on a file
        raise CommandError(f"{type(exc).__name__}: {exc}", ErrorCode.IO_ERROR) from None
    except ValueError as exc:    # by type: a library refused an argument (a path, a string)
        raise CommandError(f"{type(exc).__name__}: {exc}", ErrorCode.BAD_REQUEST) from None


def failure(line: str, exc: CommandError | FacetsError) -> dict[str, Any]:
    """The result of a command that failed: ``{"cmd", "ok": false, "error": {code, message}}``."""
    if len(line) > MAX_LINE_CHARS:   # refused for its length: not echoed whole
        line = f"{line[:80]}... ({len(line):,} characters)"
    return {"cmd": printable(line), "ok": False,
            "error": {"code": str(exc.code), "message": printable(exc.message)}}


def run_line(sup: Supervisor, line: str, *, readonly: bool = False) -> dict[str, Any] | None:
    """Parse and run one line; the result always has ``cmd`` and ``ok``. None for blank lines."""
    try:
        cmd = parse(line)
        if cmd is None:
            return None
        result = execute(sup, cmd, readonly=readonly)
    except CommandError as exc:
        return failure(line.strip(), exc)
    return {"cmd": cmd.line, "ok": True, **result}

