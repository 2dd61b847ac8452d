"""The operator command language, shared by scripts, the CLI and the console's ``:`` bar.

One command per line, shell-style quoting, ``#`` starts a comment::

    load sample_apps/counter/counter.wat as counter
    call counter/alice '{"op": "incr"}'
    quota counter/alice fuel=5M storage=64MiB
    rows todo/alice items limit=20 where="done = 0"
    delete counter/alice --yes

Each command is declared once, with ``@command(name, usage, summary, ...)`` on its
executor: its spec (how it is written, whether it writes) and the code that runs it sit
together, in the order ``help`` lists them. An executor returns a typed ``Result``
that serialises itself (``to_json``) and renders itself (``__rich__``).

``parse`` turns a line into a ``Command`` (or raises ``UsageError``); ``run`` runs it
on a ``Supervisor`` and returns its ``Result`` (``execute``: the JSON-ready dict). Both
raise ``CommandError`` subclasses carrying an ``ErrorCode``; ``run_line`` wraps them
into ``{"cmd", "ok", ...}`` replies (a ``Reply``: a dict that keeps its typed result).
"""

from __future__ import annotations

import calendar
import contextvars
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from runtime import BuildProgress, ErrorCode, FacetsError, QuotaError, Supervisor, neutralize, parse_quota
from runtime import parse_when as runtime_parse_when
from runtime.billing import format_bill
from runtime.logs import LEVELS

from .format import duration, human_bytes, iso_utc, parse_response, relative
from .render import key_values, safe, table_of


def error_code(value: str | ErrorCode | None) -> ErrorCode:
    """The ``ErrorCode`` of a code string (a custom policy's unknown code becomes ``internal``)."""
    if isinstance(value, ErrorCode):
        return value
    if value is None:
        return ErrorCode.INTERNAL
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
    free_options: bool = False  # quota takes any KEY=VALUE (validated by the runtime)
    writes: bool = False  # refused in read-only mode: it changes something somewhere
    #: ``--FLAG VALUE`` (or ``--FLAG=VALUE``) spellings of options: ``load --canary 10%``
    #: is ``load canary=10%``, as the issue writes it.
    valued_flags: frozenset[str] = frozenset()
    #: Positions of arguments that must be whole numbers (a VERSION): checked when parsed,
    #: so a script with ``pin app/x two`` stops before its first line runs.
    int_args: frozenset[int] = frozenset()


class Result:
    """A command's typed result: it serialises itself (``to_json``, the JSON every
    interface prints after ``cmd`` and ``ok``) and renders itself (``__rich__``, what the
    CLI without ``--json`` and the console's result view show).

    Subclasses are dataclasses whose fields, in order, are the JSON keys.
    """

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        return cls(**{f.name: data[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    def __rich__(self) -> RenderableType:
        return key_values(self.to_json())


Executor = Callable[[Supervisor, "Command"], Result]


@dataclass(frozen=True)
class Registered:
    """One command: how it is written, what runs it, and the type of what it returns."""

    spec: Spec
    run: Executor
    result: type[Result]


#: Every command, in the order ``help`` lists them; filled by ``@command`` below.
COMMANDS: dict[str, Registered] = {}
#: The specs alone (the CLI, the palette and the help screen read them).
SPECS: dict[str, Spec] = {}


def command(
    name: str,
    usage: str,
    summary: str,
    args: tuple[int, int],
    *,
    result: type[Result],
    options: Iterable[str] = (),
    flags: Iterable[str] = (),
    free_options: bool = False,
    writes: bool = False,
    valued_flags: Iterable[str] = (),
    int_args: Iterable[int] = (),
) -> Callable[[Executor], Executor]:
    """Declare a command: its spec and its executor together, in one place."""

    def register(run: Executor) -> Executor:
        spec = Spec(
            usage,
            summary,
            args[0],
            args[1],
            frozenset(options) | {f[2:] for f in valued_flags},
            frozenset(flags),
            free_options,
            writes,
            frozenset(valued_flags),
            frozenset(int_args),
        )
        if name in COMMANDS:
            raise ValueError(f"command {name!r} declared twice")
        COMMANDS[name] = Registered(spec, run, result)
        SPECS[name] = spec
        return run

    return register


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
    parts: list[str] | None = None  # the token being built; None between tokens
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t\r\n":
            if parts is not None:
                tokens.append("".join(parts))
                parts = None
            i += 1
            continue
        if c == "#":  # a comment, even inside a word (as shlex)
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
            parts.append(line[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                match = _DOUBLE_QUOTED.match(line, i)
                assert match is not None  # the pattern matches the empty string
                parts.append(match.group())
                i = match.end()
                if i >= n:
                    raise ValueError("No closing quotation")
                if line[i] == '"':
                    i += 1
                    break
                if i + 1 >= n:  # a backslash at the very end
                    raise ValueError("No escaped character")
                escaped = line[i + 1]
                parts.append(escaped if escaped in '"\\' else "\\" + escaped)
                i += 2
        else:
            match = _PLAIN.match(line, i)
            assert match is not None  # c is none of the special characters
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
    remaining = iter(rest)
    for token in remaining:
        match = _OPTION.match(token)
        flag, equals, value = token.partition("=")
        if flag in spec.valued_flags:
            if not equals:
                value = next(remaining, "")
                if not value:
                    raise UsageError(f"{name}: {flag} needs a value; usage: {spec.usage}")
            options[flag[2:]] = value
        elif token.startswith("--"):
            if token not in spec.flags:
                raise UsageError(f"{name}: unknown flag {token}; usage: {spec.usage}")
            flags.add(token)
        elif match and (spec.free_options or match.group(1) in spec.options) and args_complete(name, args):
            options[match.group(1)] = match.group(2)
        else:
            args.append(token)
    if name in ("load", "import") and len(args) > 1 and (len(args) != 3 or args[1] != "as"):
        raise UsageError(f"{name}: wrong arguments; usage: {spec.usage}")
    if name == "fork" and len(args) >= 2 and args[1] != "as":
        raise UsageError(f"{name}: wrong arguments; usage: {spec.usage}")
    if name in ("restore", "fork"):  # the state to take: a SNAPSHOT or at=WHEN, not both
        given = len(args) - spec.min_args + ("at" in options)
        if given > 1 or (name == "restore" and given == 0):
            raise UsageError(f"{name}: give a SNAPSHOT or at=WHEN{' (not both)' if given else ''}; usage: {spec.usage}")
        if "at" in options:
            _check_when(name, options["at"], spec)
    if not spec.min_args <= len(args) <= spec.max_args:
        raise UsageError(f"{name}: wrong number of arguments; usage: {spec.usage}")
    for index in spec.int_args:
        if index < len(args) and not re.fullmatch(r"[0-9]{1,9}", args[index]):
            raise UsageError(f"{name}: VERSION must be a version number, not {args[index][:40]!r}; usage: {spec.usage}")
    return Command(line=line.strip(), name=name, args=args, options=options, flags=flags)


def _check_when(name: str, raw: str, spec: Spec) -> None:
    """A bad WHEN stops a script before its first line runs (as a bad VERSION does); the
    text itself goes to the runtime, which resolves a relative one when the command runs."""
    try:
        runtime_parse_when(raw)
    except FacetsError as exc:
        raise UsageError(f"{name}: {exc.message}; usage: {spec.usage}") from None


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
    raise CommandError(f"bad time {raw!r}: expected 2026-11-01, 2026-11-01T12:00, epoch seconds, or 7d / 24h / 30m ago")


#: Deadline of an operator's ``sql`` and ``rows`` (ms; ``sql ... timeout=2s`` changes it),
#: enforced by ``FacetReader``'s progress handler: a query over a facet's database is
#: browsing, and 5 s is long for that, while a runaway one (a recursive CTE, a cross join)
#: would otherwise run until it ends.
SQL_TIMEOUT_MS = 5_000


def _timeout_option(cmd: Command) -> int:
    raw = cmd.options.get("timeout")
    if raw is None:
        return SQL_TIMEOUT_MS
    try:
        return int(parse_quota("timeout_ms", raw))
    except QuotaError as exc:
        raise CommandError(f"timeout: {exc.message}") from None


# -- results ------------------------------------------------------------------------------
@dataclass
class Loaded(Result):
    app: str
    version: int
    sha256: str
    exports: list[str]
    imports: list[str]
    kind: str = "module"
    language: str = "wasm"
    toolchain: str = ""
    size: int = 0
    #: After the load: the version facets run, and a canary staged by ``--canary``.
    active: int = 0
    canary: int | None = None
    canary_percent: float | None = None


#: Where a running ``load`` reports build and compile progress (``BuildProgress``): set by
#: whoever runs the command (the CLI's progress bar or JSON lines, a script's output, the
#: console's Apps view); None reports nothing.
LOAD_PROGRESS: contextvars.ContextVar[Callable[[BuildProgress], None] | None] = contextvars.ContextVar(
    "load_progress", default=None
)


@dataclass
class Called(Result):
    response: Any  # the guest's JSON value, or its text (format.parse_response)
    usage: dict[str, Any]
    request_id: str

    def __rich__(self) -> RenderableType:
        return Group(Text("response", style="bold"), safe(self.response), key_values(self.usage, title="usage"))


@dataclass
class QuotaView(Result):
    target: str
    quotas: dict[str, Any]
    explicit: dict[str, Any]

    def __rich__(self) -> RenderableType:
        return key_values(self.quotas, title=f"effective quotas of {self.target}")


@dataclass
class AppList(Result):
    apps: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        rows = [
            {
                **a,
                "latest": a["version"],
                "active": a.get("active", a["version"]),
                "canary": f"{a['canary']} ({a['canary_percent']:g}%)" if a.get("canary") is not None else "-",
                "pinned": "yes" if a.get("pinned") else "-",
            }
            for a in self.apps
        ]
        return table_of(rows, ["name", "latest", "active", "canary", "pinned", "versions", "facets", "sha256"])


@dataclass
class FacetList(Result):
    facets: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        rows = [
            {
                "facet": f"{f['app']}/{f['name']}",
                "state": f["state"],
                "version": f.get("assigned") or "-",
                "faults": f.get("faults") or "-",
                "alarm": iso_utc(f["alarm_at"] / 1000) if f.get("alarm_at") is not None else "-",
                "requests": f["usage"]["requests"],
                "errors": f["usage"]["error_count"],
                "p50_ms": f["usage"]["p50_ms"],
                "p99_ms": f["usage"]["p99_ms"],
                "storage": f["usage"]["storage"],
                "last_error": f["usage"]["last_error"],
            }
            for f in self.facets
        ]
        columns = ["facet", "state", "version", "faults", "alarm", "requests", "errors", "p50_ms", "p99_ms"]
        return table_of(rows, [*columns, "storage", "last_error"])


@dataclass
class TableList(Result):
    tables: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        return table_of(self.tables, ["name", "count", "columns"]) if self.tables else super().__rich__()


@dataclass
class Mapped(Result):
    """A result the runtime already returns as a JSON-ready dict (its keys are the runtime's)."""

    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        return cls({k: v for k, v in data.items() if k not in ("cmd", "ok")})


@dataclass
class Rows(Mapped):
    """``{columns, rows}`` of ``rows`` and ``sql``."""

    def __rich__(self) -> RenderableType:
        grid = Table(header_style="bold")
        for column in self.data["columns"]:
            grid.add_column(neutralize(str(column)))
        for row in self.data["rows"]:
            grid.add_row(*(safe(v) for v in row))
        return grid


@dataclass
class Bill(Mapped):
    def __rich__(self) -> RenderableType:
        return Text(format_bill(self.data))


@dataclass
class LogList(Result):
    logs: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        grid = Table(header_style="bold")
        for column in ("time", "facet", "level", "message"):
            grid.add_column(column)
        for r in self.logs:
            stamp = time.strftime("%H:%M:%S", time.localtime(r["time"]))
            grid.add_row(
                stamp, safe(f"{r['app']}/{r['facet']}" if r["app"] else "-"), safe(r["level"]), safe(r["message"])
            )
        return grid


@dataclass
class UsageView(Result):
    target: str
    usage: dict[str, Any]

    def __rich__(self) -> RenderableType:
        return key_values(self.usage, title=f"usage of {self.target}")


@dataclass
class Evicted(Result):
    facet: str
    was_warm: bool


#: What a delete keeps: said by ``delete``'s refusal, its result and the console's confirmation.
KEPT_FOR_UNDELETE = "its history is kept for the retention window (the history_ms quota) and undelete {} brings it back"


@dataclass
class Deleted(Result):
    facet: str
    deleted: bool

    def __rich__(self) -> RenderableType:
        return Text(f"deleted {neutralize(self.facet)}; {KEPT_FOR_UNDELETE.format(neutralize(self.facet))}")


@dataclass
class Exported(Result):
    facet: str
    path: str
    bytes: int


@dataclass
class Imported(Result):
    facet: str
    path: str
    tables: list[str]


@dataclass
class Reset(Result):
    """What ``reset`` cleared: the supervision record it ended (None: the facet was healthy)."""

    facet: str
    cleared: dict[str, Any] | None

    def __rich__(self) -> RenderableType:
        if self.cleared is None:
            return Text.assemble(safe(self.facet), " was healthy: nothing to reset")
        c = self.cleared
        return Group(
            Text.assemble(
                ("reset ", "bold"), safe(self.facet), f": was {c['state']} after {c['faults']} faults in a row"
            ),
            faults_table(c.get("last_faults") or []),
        )


def faults_table(faults: list[dict[str, Any]], title: str = "last faults") -> Table:
    """time (UTC), code, message: the guest's message neutralised."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in ("time", "code", "message"):
        grid.add_column(column)
    for fault in faults:
        grid.add_row(iso_utc(fault["time"]), safe(fault["code"]), safe(fault["message"]))
    return grid


@dataclass
class HealthView(Result):
    """``health``: one facet's supervision state (``target`` APP/FACET), or every facet with
    a record, the worst first (``target`` ``*``). A healthy facet is ``state`` ok, 0 faults."""

    target: str
    facets: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        now = time.time()
        if "/" in self.target and len(self.facets) == 1:
            h = self.facets[0]
            head = key_values(
                {
                    "state": h["state"],
                    "faults in a row": h["faults"],
                    "since": iso_utc(h["since"]) if h["faults"] else "-",
                    "next retry": _retry(h.get("retry_at"), now),
                },
                title=f"supervision of {neutralize(self.target)}",
            )
            return Group(head, faults_table(h["last_faults"])) if h["last_faults"] else head
        if not self.facets:
            return Text("every facet is healthy")
        rows = [
            {
                "facet": h["target"],
                "state": h["state"],
                "faults": h["faults"],
                "next retry": _retry(h.get("retry_at"), now),
                "last fault": _last_fault(h["last_faults"]),
            }
            for h in self.facets
        ]
        return table_of(rows, ["facet", "state", "faults", "next retry", "last fault"])


def _retry(retry_at: float | None, now: float) -> str:
    if retry_at is None:
        return "-"
    return f"{iso_utc(retry_at)} ({relative(retry_at, now)})" if retry_at > now else "due (the next request probes)"


def _last_fault(faults: list[dict[str, Any]]) -> str:
    if not faults:
        return "-"
    last = faults[-1]
    return f"{last['code']}: {last['message']}"


def healthy(target: str) -> dict[str, Any]:
    """The ``health`` record of a facet with none."""
    return {"target": target, "state": "ok", "faults": 0, "since": 0.0, "retry_at": None, "last_faults": []}


@dataclass
class AlarmList(Result):
    """``alarms``: pending alarms, soonest first. Each: target, at_ms (asked for), due_ms
    (the next delivery: later for a retry), attempt (failed deliveries so far), and
    ``at``/``due`` as UTC ISO times."""

    target: str
    alarms: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        if not self.alarms:
            return Text(f"no pending alarms ({neutralize(self.target)})")
        now = time.time()
        grid = Table(header_style="bold")
        for column in ("facet", "at (UTC)", "when", "attempt", "next delivery"):
            grid.add_column(column)
        for a in self.alarms:
            retry = a["due_ms"] != a["at_ms"]
            grid.add_row(
                safe(a["target"]),
                a["at"],
                relative(a["at_ms"] / 1000, now) if a["at_ms"] / 1000 > now else "due",
                str(a["attempt"]),
                f"{a['due']} ({relative(a['due_ms'] / 1000, now)})" if retry else "-",
            )
        return grid


@dataclass
class RolloutView(Mapped):
    """``rollout``, ``pin``, ``unpin``, ``promote``, ``rollback``: the app's rollout
    (``Supervisor.rollout``: active, latest, pinned, canary, canary_percent, facet_pins,
    versions) with ``app`` and, per version, ``error_rate`` (errors / requests, 0 with none)."""

    def __rich__(self) -> RenderableType:
        d = self.data
        head = Text.assemble(
            ("app ", "bold"),
            safe(d["app"]),
            f" · active {d['active']}",
            (" (pinned)", "yellow") if d["pinned"] else "",
            f" · latest {d['latest']}",
            (f" · canary {d['canary']} at {d['canary_percent']:g}%", "bold yellow") if d["canary"] is not None else "",
        )
        parts: list[RenderableType] = [head, versions_table(d)]
        if d["facet_pins"]:
            pins = ", ".join(f"{facet}={version}" for facet, version in sorted(d["facet_pins"].items()))
            parts.append(Text.assemble(("pinned facets: ", "bold"), safe(pins)))
        if "unpinned" in d:
            parts.insert(0, Text("unpinned" if d["unpinned"] else "there was no pin to remove"))
        return Group(*parts)


def version_role(rollout: Mapping[str, Any], version: int) -> str:
    """``active``, ``canary 10%``, ``active, pinned``, ``latest`` or ""."""
    roles = []
    if version == rollout["active"]:
        roles.append("active, pinned" if rollout["pinned"] else "active")
    if version == rollout["canary"]:
        roles.append(f"canary {rollout['canary_percent']:g}%")
    if version == rollout["latest"] and not roles:
        roles.append("latest")
    return ", ".join(roles)


def versions_table(rollout: Mapping[str, Any]) -> Table:
    """The versions side by side, newest first: what a bad canary shows in."""
    grid = Table(header_style="bold")
    for column in ("version", "role", "facets", "warm", "requests", "errors", "error %"):
        grid.add_column(column, justify="left" if column == "role" else "right")
    for v in sorted(rollout["versions"], key=lambda v: -v["version"]):
        rate = v.get("error_rate", _rate(v))
        grid.add_row(
            str(v["version"]),
            version_role(rollout, v["version"]),
            str(v["facets"]),
            str(v["warm"]),
            str(v["requests"]),
            Text(str(v["errors"]), style="red" if v["errors"] else ""),
            Text(f"{rate * 100:.1f}", style="bold red" if rate >= 0.05 else "red" if rate else ""),
        )
    return grid


def _rate(version: Mapping[str, Any]) -> float:
    return version["errors"] / version["requests"] if version["requests"] else 0.0


def rollout_of(sup: Supervisor, app: str, described: dict[str, Any] | None = None) -> RolloutView:
    data = dict(described if described is not None else sup.rollout(app))
    data["versions"] = [{**v, "error_rate": round(_rate(v), 4)} for v in data["versions"]]
    return RolloutView({"app": app, **data})


# -- history: snapshots, restore, fork, undelete ------------------------------------------
def snapshots_table(snapshots: list[dict[str, Any]], title: str | None = None) -> Table:
    """name, created (UTC), size, reason: newest first, as ``Supervisor.snapshots`` lists them."""
    grid = Table(title=title, title_justify="left", header_style="bold")
    for column in ("snapshot", "created (UTC)", "size", "reason"):
        grid.add_column(column, justify="right" if column == "size" else "left")
    for s in snapshots:
        grid.add_row(safe(s["name"]), iso_utc(s["created_at"]), human_bytes(s["size"]), safe(s["reason"]))
    return grid


@dataclass
class SnapshotTaken(Mapped):
    """``snapshot``: ``{"target", "name", "created_at", "size", "reason"}`` (``SnapshotInfo``)."""

    def __rich__(self) -> RenderableType:
        d = self.data
        return Text.assemble(
            ("snapshot ", "bold"),
            safe(d["name"]),
            " of ",
            safe(d["target"]),
            f" taken at {iso_utc(d['created_at'])} ({human_bytes(d['size'])})",
        )


@dataclass
class SnapshotList(Result):
    target: str
    snapshots: list[dict[str, Any]]

    def __rich__(self) -> RenderableType:
        if not self.snapshots:
            return Text(f"{neutralize(self.target)} has no snapshots")
        return snapshots_table(self.snapshots, title=f"snapshots of {neutralize(self.target)}")


@dataclass
class Restored(Mapped):
    """``restore``, ``fork``, ``undelete``: ``RestoreInfo.as_dict()`` (target, source,
    restored_to, undo_snapshot, size)."""

    def __rich__(self) -> RenderableType:
        d = self.data
        head = Text.assemble(
            (f"{self.verb()} ", "bold"), safe(d["target"]), " from ", safe(d["source"]), f" ({human_bytes(d['size'])})"
        )
        lines: list[RenderableType] = [head]
        if d.get("restored_to") is not None:
            lines.append(Text(f"includes every commit up to {iso_utc(d['restored_to'])}"))
        if d.get("undo_snapshot"):
            target = neutralize(str(d["target"]))
            undo = neutralize(str(d["undo_snapshot"]))
            lines.append(Text(f"the state it replaced is snapshot {undo}: restore {target} {undo} undoes this"))
        return Group(*lines)

    def verb(self) -> str:
        return "restored"


@dataclass
class Forked(Restored):
    def verb(self) -> str:
        return "forked"


@dataclass
class Undeleted(Restored):
    def verb(self) -> str:
        return "undeleted"


def window_text(history: Mapping[str, Any]) -> str:
    """``2026-12-01T14:05:00Z .. 2026-12-02T09:00:00Z``, or why there is none."""
    start, end = history.get("window_start"), history.get("window_end")
    if start is None or end is None:
        return "nothing archived yet"
    return f"{iso_utc(start)} .. {iso_utc(end)}"


@dataclass
class HistoryView(Mapped):
    """``history``: ``HistoryInfo.as_dict()`` (target, window_start, window_end,
    archive_bytes, snapshot_bytes, retention_s, snapshots, deleted)."""

    def __rich__(self) -> RenderableType:
        d = self.data
        head = key_values(
            {
                "restorable": window_text(d),
                "retention": duration(d["retention_s"]),
                "archive": human_bytes(d["archive_bytes"]),
                "snapshots": f"{len(d['snapshots'])} ({human_bytes(d['snapshot_bytes'])})",
            },
            title=f"history of {neutralize(d['target'])}",
        )
        parts: list[RenderableType] = [head]
        if d.get("deleted"):
            parts.insert(0, Text(f"deleted: undelete {neutralize(d['target'])} brings it back", style="bold yellow"))
        if d["snapshots"]:
            parts.append(snapshots_table(d["snapshots"]))
        return Group(*parts)


@dataclass
class Metrics(Result):
    text: str

    def __rich__(self) -> RenderableType:
        return Text(self.text)


@dataclass
class Help(Result):
    commands: list[dict[str, str]]

    def __rich__(self) -> RenderableType:
        return table_of(self.commands, ["usage", "summary"])


# -- the commands ---------------------------------------------------------------------------
@command(
    "load",
    "load PATH [as NAME] [--canary N%]",
    "load or upgrade an app: .wasm (module or component), .wat, or .js/.ts/.py (built into a component);"
    " --canary N% (or canary=N%) sends only N% of its facets to the new version",
    (1, 3),
    result=Loaded,
    writes=True,
    valued_flags=("--canary",),
)
def _load(sup: Supervisor, cmd: Command) -> Loaded:
    name = cmd.args[2] if len(cmd.args) == 3 else None
    version = sup.load_app(cmd.args[0], name, progress=LOAD_PROGRESS.get(), canary=cmd.options.get("canary"))
    rollout = sup.rollout(version.app)
    return Loaded(
        version.app,
        version.version,
        version.sha256,
        list(version.exports),
        list(version.imports),
        version.kind,
        version.language,
        version.toolchain,
        version.size,
        rollout["active"],
        rollout["canary"],
        rollout["canary_percent"],
    )


@command("call", "call APP/FACET [BODY]", "send one request", (1, 2), result=Called, writes=True)
def _call(sup: Supervisor, cmd: Command) -> Called:
    body = cmd.args[1] if len(cmd.args) > 1 else ""
    result = sup.call(cmd.args[0], body.encode("utf-8"))
    if not result.ok:
        raise CommandError(result.message, result.error)
    return Called(parse_response(result.response), result.usage.as_dict(), result.request_id)


@command(
    "quota",
    "quota TARGET [KEY=VALUE ...]",
    "show or change quotas (TARGET: *, APP, APP/FACET)",
    (1, 1),
    result=QuotaView,
    free_options=True,
)
def _quota(sup: Supervisor, cmd: Command) -> QuotaView:
    target = cmd.args[0]
    quotas = sup.set_quotas(target, dict(cmd.options)) if cmd.options else sup.quotas(target)
    return QuotaView(target, quotas.as_dict(), sup.explicit_quotas(target))


@command("apps", "apps", "list apps and versions", (0, 0), result=AppList)
def _apps(sup: Supervisor, cmd: Command) -> AppList:
    return AppList([a.as_dict() for a in sup.app_list()])


@command("facets", "facets [APP]", "list facets with state and usage", (0, 1), result=FacetList)
def _facets(sup: Supervisor, cmd: Command) -> FacetList:
    return FacetList([f.as_dict() for f in sup.facet_list(cmd.args[0] if cmd.args else None)])


@command("tables", "tables APP/FACET", "list a facet's tables", (1, 1), result=TableList)
def _tables(sup: Supervisor, cmd: Command) -> TableList:
    return TableList(sup.tables(cmd.args[0]))


@command(
    "rows",
    "rows APP/FACET TABLE [limit=N] [offset=N] [where=SQL]",
    "page through a table",
    (2, 2),
    result=Rows,
    options=("limit", "offset", "where"),
)
def _rows(sup: Supervisor, cmd: Command) -> Rows:
    limit = _int_option(cmd, "limit", 100)
    offset = _int_option(cmd, "offset", 0)
    # The reader's own progress handler stops the query at its deadline (code ``timeout``).
    with sup.reader(cmd.args[0]) as reader:
        where = cmd.options.get("where")
        return Rows(reader.rows(cmd.args[1], limit=limit, offset=offset, where=where, timeout=SQL_TIMEOUT_MS / 1000))


@command(
    "sql",
    "sql APP/FACET QUERY [timeout=DURATION]",
    "run a read-only query (default deadline 5s)",
    (2, 2),
    result=Rows,
    options=("timeout",),
)
def _sql(sup: Supervisor, cmd: Command) -> Rows:
    timeout_ms = _timeout_option(cmd)
    with sup.reader(cmd.args[0]) as reader:
        return Rows(reader.query(cmd.args[1], None, timeout=timeout_ms / 1000))


@command(
    "logs",
    "logs [APP[/FACET]] [tail=N] [level=LEVEL] [search=TEXT]",
    "show log records",
    (0, 1),
    result=LogList,
    options=("tail", "level", "search"),
)
def _logs(sup: Supervisor, cmd: Command) -> LogList:
    level = cmd.options.get("level")
    if level is not None and level not in LEVELS:
        raise CommandError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    records = sup.logs(
        cmd.args[0] if cmd.args else None,
        level=level,
        limit=_int_option(cmd, "tail", 50, 1),
        search=cmd.options.get("search"),
    )
    return LogList([r.as_dict() for r in records])


@command("usage", "usage [APP[/FACET]]", "show accumulated usage", (0, 1), result=UsageView)
def _usage(sup: Supervisor, cmd: Command) -> UsageView:
    target = cmd.args[0] if cmd.args else None
    return UsageView(target or "*", sup.usage(target))


@command(
    "bill",
    "bill [APP] [since=WHEN] [until=WHEN]",
    "cost per facet and app for a period",
    (0, 1),
    result=Bill,
    options=("since", "until"),
)
def _bill(sup: Supervisor, cmd: Command) -> Bill:
    since = parse_when(cmd.options["since"]) if "since" in cmd.options else None
    until = parse_when(cmd.options["until"]) if "until" in cmd.options else None
    return Bill(sup.bill(cmd.args[0] if cmd.args else None, since=since, until=until))


@command("evict", "evict APP/FACET", "drop a facet's warm instance", (1, 1), result=Evicted, writes=True)
def _evict(sup: Supervisor, cmd: Command) -> Evicted:
    return Evicted(cmd.args[0], sup.evict(cmd.args[0]))


@command(
    "delete",
    "delete APP/FACET --yes",
    "delete a facet and its data",
    (1, 1),
    result=Deleted,
    flags=("--yes",),
    writes=True,
)
def _delete(sup: Supervisor, cmd: Command) -> Deleted:
    if "--yes" not in cmd.flags:
        raise RefusedError(
            f"delete removes {cmd.args[0]} and all its data; {KEPT_FOR_UNDELETE.format(cmd.args[0])}; repeat with --yes"
        )
    sup.delete(cmd.args[0])
    return Deleted(cmd.args[0], True)


@command(
    "reset",
    "reset APP/FACET",
    "end a facet's backoff or quarantine: its next request runs (shows what was cleared)",
    (1, 1),
    result=Reset,
    writes=True,
)
def _reset(sup: Supervisor, cmd: Command) -> Reset:
    cleared = sup.reset(cmd.args[0])
    return Reset(cmd.args[0], cleared.as_dict() if cleared is not None else None)


@command(
    "health",
    "health [APP/FACET]",
    "supervision: a facet's state, faults in a row, next retry and last faults; alone, every faulting facet",
    (0, 1),
    result=HealthView,
)
def _health(sup: Supervisor, cmd: Command) -> HealthView:
    if not cmd.args or cmd.args[0] == "*":
        return HealthView("*", [h.as_dict() for h in sup.faulting()])
    target = cmd.args[0]
    if "/" not in target:  # an app: its faulting facets
        sup.app_versions(target)  # not_found for an unknown app
        return HealthView(target, [h.as_dict() for h in sup.faulting() if h.target.split("/", 1)[0] == target])
    info = sup.health(target)
    return HealthView(target, [info.as_dict() if info is not None else healthy(target)])


@command(
    "alarms",
    "alarms [TARGET] [limit=N]",
    "pending alarms, soonest first (TARGET: *, APP, APP/FACET; default limit 100)",
    (0, 1),
    result=AlarmList,
    options=("limit",),
)
def _alarms(sup: Supervisor, cmd: Command) -> AlarmList:
    target = cmd.args[0] if cmd.args else "*"
    alarms = sup.alarm_list(target, limit=_int_option(cmd, "limit", 100, 1))
    return AlarmList(
        target,
        [{**a, "at": iso_utc(a["at_ms"] / 1000), "due": iso_utc(a["due_ms"] / 1000)} for a in alarms],
    )


@command(
    "rollout",
    "rollout APP",
    "which version its facets run: versions side by side (facets, warm, requests, errors, error %)",
    (1, 1),
    result=RolloutView,
)
def _rollout(sup: Supervisor, cmd: Command) -> RolloutView:
    return rollout_of(sup, cmd.args[0])


@command(
    "pin",
    "pin APP[/FACET] VERSION",
    "run an app (every facet not pinned on its own) or one facet on VERSION",
    (2, 2),
    result=RolloutView,
    writes=True,
    int_args=(1,),
)
def _pin(sup: Supervisor, cmd: Command) -> RolloutView:
    target = cmd.args[0]
    return rollout_of(sup, target.split("/", 1)[0], sup.pin(target, int(cmd.args[1])))


@command("unpin", "unpin APP[/FACET]", "remove a pin", (1, 1), result=RolloutView, writes=True)
def _unpin(sup: Supervisor, cmd: Command) -> RolloutView:
    target = cmd.args[0]
    removed = sup.unpin(target)
    view = rollout_of(sup, target.split("/", 1)[0])
    view.data["unpinned"] = removed
    return view


@command("promote", "promote APP", "move every facet to the canary version", (1, 1), result=RolloutView, writes=True)
def _promote(sup: Supervisor, cmd: Command) -> RolloutView:
    return rollout_of(sup, cmd.args[0], sup.promote(cmd.args[0]))


@command(
    "rollback",
    "rollback APP [VERSION]",
    "return the canaries to the active version; with no canary (or VERSION), make an older version active",
    (1, 2),
    result=RolloutView,
    writes=True,
    int_args=(1,),
)
def _rollback(sup: Supervisor, cmd: Command) -> RolloutView:
    version = int(cmd.args[1]) if len(cmd.args) > 1 else None
    return rollout_of(sup, cmd.args[0], sup.rollback(cmd.args[0], version))


@command(
    "snapshot",
    "snapshot APP/FACET [NAME]",
    "take a consistent copy of a facet's data, online (NAME: default a timestamp)",
    (1, 2),
    result=SnapshotTaken,
    writes=True,
)
def _snapshot(sup: Supervisor, cmd: Command) -> SnapshotTaken:
    taken = sup.snapshot(cmd.args[0], cmd.args[1] if len(cmd.args) > 1 else None)
    return SnapshotTaken({"target": cmd.args[0], **taken.as_dict()})


@command("snapshots", "snapshots APP/FACET", "a facet's snapshots, newest first", (1, 1), result=SnapshotList)
def _snapshots(sup: Supervisor, cmd: Command) -> SnapshotList:
    return SnapshotList(cmd.args[0], [s.as_dict() for s in sup.snapshots(cmd.args[0])])


@command(
    "restore",
    "restore APP/FACET SNAPSHOT|at=WHEN --yes",
    "replace a facet's data with a snapshot, or with its state at WHEN (2026-12-01T14:05:00Z, -15m, epoch"
    " seconds); the state replaced is snapshotted first, so a restore can be undone",
    (1, 2),
    result=Restored,
    options=("at",),
    flags=("--yes",),
    writes=True,
)
def _restore(sup: Supervisor, cmd: Command) -> Restored:
    snapshot, at = _source(cmd, cmd.args[1:])
    if "--yes" not in cmd.flags:
        what = f"snapshot {snapshot}" if snapshot is not None else f"its state at {at}"
        raise RefusedError(
            f"restore replaces the data of {cmd.args[0]} with {what} (the current state is snapshotted first);"
            " repeat with --yes"
        )
    return Restored(sup.restore(cmd.args[0], snapshot=snapshot, at=at).as_dict())


@command(
    "fork",
    "fork APP/FACET as APP/NEW [SNAPSHOT|at=WHEN]",
    "create a new facet of the same app from a facet's current data, a snapshot, or its state at WHEN",
    (3, 4),
    result=Forked,
    options=("at",),
    writes=True,
)
def _fork(sup: Supervisor, cmd: Command) -> Forked:
    snapshot, at = _source(cmd, cmd.args[3:])
    return Forked(sup.fork(cmd.args[0], cmd.args[2], snapshot=snapshot, at=at).as_dict())


@command(
    "undelete",
    "undelete APP/FACET",
    "bring back a deleted facet as it was when deleted (within the retention window)",
    (1, 1),
    result=Undeleted,
    writes=True,
)
def _undelete(sup: Supervisor, cmd: Command) -> Undeleted:
    return Undeleted(sup.undelete(cmd.args[0]).as_dict())


@command(
    "history",
    "history APP/FACET",
    "what can be got back: the restorable window, the archive's size, the snapshots (a deleted facet's too)",
    (1, 1),
    result=HistoryView,
)
def _history(sup: Supervisor, cmd: Command) -> HistoryView:
    return HistoryView(sup.history(cmd.args[0]).as_dict())


def _source(cmd: Command, rest: list[str]) -> tuple[str | None, str | None]:
    """``(snapshot, at)`` of a restore or a fork: the parser has checked that at most one is given."""
    return (rest[0] if rest else None), cmd.options.get("at")


@command(
    "export",
    "export APP/FACET PATH",
    "copy a facet's database to PATH (consistent snapshot)",
    (2, 2),
    result=Exported,
    writes=True,
)  # it writes PATH: refused under --readonly
def _export(sup: Supervisor, cmd: Command) -> Exported:
    return Exported(cmd.args[0], cmd.args[1], sup.export_facet(cmd.args[0], cmd.args[1]))


@command(
    "import",
    "import PATH as APP/FACET",
    "create a facet from a SQLite database file",
    (3, 3),
    result=Imported,
    writes=True,
)
def _import(sup: Supervisor, cmd: Command) -> Imported:
    return Imported(cmd.args[2], cmd.args[0], sup.import_facet(cmd.args[0], cmd.args[2]))


@command("metrics", "metrics", "usage in Prometheus text format", (0, 0), result=Metrics)
def _metrics(sup: Supervisor, cmd: Command) -> Metrics:
    return Metrics(sup.prometheus())


@command("help", "help", "list commands", (0, 0), result=Help)
def _help(sup: Supervisor, cmd: Command) -> Help:
    return Help([{"usage": s.usage, "summary": s.summary} for s in SPECS.values()])


def is_write(cmd: Command) -> bool:
    """Commands refused in read-only mode: anything that writes anywhere. That is apps,
    facets, their data, quotas, a warm instance (``evict``), and files outside the data
    directory too (``export`` writes PATH)."""
    return SPECS[cmd.name].writes or (cmd.name == "quota" and bool(cmd.options))


def run(sup: Supervisor, cmd: Command, *, readonly: bool = False) -> Result:
    """Run a parsed command; its typed result. Raises ``CommandError`` (runtime errors are
    converted, by exception type)."""
    if readonly and is_write(cmd):
        raise RefusedError(f"{cmd.name}: refused in read-only mode")
    try:
        return COMMANDS[cmd.name].run(sup, cmd)
    except CommandError:
        raise
    except FacetsError as exc:
        raise CommandError(exc.message, exc.code) from None
    except (OSError, sqlite3.Error) as exc:  # by type: the OS or SQLite failed on a file
        raise CommandError(f"{type(exc).__name__}: {exc}", ErrorCode.IO_ERROR) from None
    except ValueError as exc:  # by type: a library refused an argument (a path, a string)
        raise CommandError(f"{type(exc).__name__}: {exc}", ErrorCode.BAD_REQUEST) from None


def execute(sup: Supervisor, cmd: Command, *, readonly: bool = False) -> dict[str, Any]:
    """Run a parsed command; its JSON-ready dict (``run(...).to_json()``)."""
    return run(sup, cmd, readonly=readonly).to_json()


class Reply(dict[str, Any]):
    """A successful command's ``{"cmd", "ok": true, ...}``: a plain dict to every reader and
    to ``json.dumps``, which also carries its typed ``result`` for rendering."""

    def __init__(self, line: str, result: Result) -> None:
        super().__init__({"cmd": line, "ok": True, **result.to_json()})
        self.result = result


def result_of(reply: Mapping[str, Any]) -> Result | None:
    """The typed result of a successful reply: its own, or one rebuilt from the JSON of the
    command named in ``cmd`` (a reply that went through JSON). None when there is none."""
    if isinstance(reply, Reply):
        return reply.result
    try:
        cmd = parse(str(reply.get("cmd") or ""))
    except UsageError:
        return None
    if cmd is None:
        return None
    try:
        return COMMANDS[cmd.name].result.from_json(reply)
    except (KeyError, TypeError):
        return None


def render(result: Mapping[str, Any]) -> RenderableType:
    """A command's reply for a terminal: the error, or what its typed result renders.

    The result renders itself (``Result.__rich__``); nothing is guessed from the reply's
    keys. A reply that went through JSON is rebuilt by the command named in ``cmd``.
    """
    if not result.get("ok", True):
        error = result.get("error", {})
        return Text.assemble(
            ("error ", "bold red"), (f"[{error.get('code')}] ", "red"), neutralize(str(error.get("message", "")))
        )
    typed = result_of(result)
    if typed is None:
        return key_values({k: v for k, v in result.items() if k not in ("cmd", "ok")})
    return typed.__rich__()


def failure(line: str, exc: CommandError | FacetsError) -> dict[str, Any]:
    """The result of a command that failed: ``{"cmd", "ok": false, "error": {code, message}}``."""
    if len(line) > MAX_LINE_CHARS:  # refused for its length: not echoed whole
        line = f"{line[:80]}... ({len(line):,} characters)"
    return {"cmd": printable(line), "ok": False, "error": {"code": str(exc.code), "message": printable(exc.message)}}


def run_line(sup: Supervisor, line: str, *, readonly: bool = False) -> dict[str, Any] | None:
    """Parse and run one line; the result always has ``cmd`` and ``ok``. None for blank lines."""
    try:
        cmd = parse(line)
        if cmd is None:
            return None
        result = run(sup, cmd, readonly=readonly)
    except CommandError as exc:
        return failure(line.strip(), exc)
    return Reply(cmd.line, result)
