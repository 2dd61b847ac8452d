"""The glue between an app module and the component's exports (the `guest` interface of
sample_apps/wit/facets.wit). The entry module runtime/_build_py.py generates calls
`capture_output()` before importing the app and `make_guest(app)` after; componentize-py
then snapshots the initialised interpreter."""

from __future__ import annotations

import base64
import json
import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host

import facets
from facets import Headers, Request, Response, env

#: Output written before the first export (at import time, so at build time) is kept,
#: up to this much, and logged at each instantiation's init.
_EARLY_LIMIT = 8192
#: A line longer than this is logged in pieces.
_LINE_LIMIT = 16384


class _LogStream:
    """sys.stdout / sys.stderr: every line becomes one host log record."""

    def __init__(self, level: int, name: str) -> None:
        self.level = level
        self.name = name
        self.pending: list[str] = []
        self.size = 0
        self.early = ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        written = len(text)
        if not facets._serving:
            room = _EARLY_LIMIT - len(self.early)
            if room > 0:
                self.early += text[:room]
            return written
        while text:
            newline = text.find("\n")
            piece = text if newline < 0 else text[: newline + 1]
            text = text[len(piece) :]
            self.pending.append(piece)
            self.size += len(piece)
            if newline >= 0 or self.size >= _LINE_LIMIT:
                self.flush()
        return written

    def flush(self) -> None:
        if not self.pending or not facets._serving:
            return
        line = "".join(self.pending)
        self.pending.clear()
        self.size = 0
        if line.endswith("\n"):
            line = line[:-1]
        host.log(self.level, line)

    def flush_early(self) -> None:
        early, self.early = self.early, ""
        if early:
            self.write(early)
            self.flush()

    # What code that treats sys.stdout as a file may ask.
    encoding = "utf-8"
    errors = "replace"

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("the facet's output is its log; it has no file descriptor")

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)


_stdout = _LogStream(1, "<stdout>")
_stderr = _LogStream(2, "<stderr>")


def capture_output() -> None:
    """Send print and sys.stdout/sys.stderr to the host log (never WASI stdout)."""
    sys.stdout = _stdout  # type: ignore[assignment]
    sys.stderr = _stderr  # type: ignore[assignment]


def _reseed() -> None:
    """The snapshot froze `random`'s state: every instance would repeat it."""
    if "random" in sys.modules:
        sys.modules["random"].seed(facets.random_bytes(32))


_first_call = True


def _enter() -> None:
    global _first_call
    facets._serving = True
    if _first_call:
        _first_call = False
        _reseed()
        _stdout.flush_early()
        _stderr.flush_early()


def _leave() -> None:
    _stdout.flush()
    _stderr.flush()


def _is_platform(filename: str) -> bool:
    return filename.endswith(("facets/_guest.py", "facets/__init__.py", "facets_entry.py"))


def describe(exc: BaseException) -> str:
    """The traceback of `exc` from the app's first frame on (the SDK's own are left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _is_platform(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class AppImportError(Exception):
    """Importing the app failed (at build time): the message is the app's traceback."""


#: Failures the platform reports by their own code (the WIT's guest interface): CPython's
#: allocator turns a refused memory.grow into MemoryError, and its recursion limit stops a
#: runaway recursion as RecursionError before the wasm stack runs out.
_CODED = ((MemoryError, "memory_limit"), (RecursionError, "stack_overflow"))


def _failure(exc: BaseException) -> Err:
    try:
        text = describe(exc)
    except BaseException:  # e.g. MemoryError while formatting
        text = f"{type(exc).__name__} (the traceback could not be formatted)"
    try:
        _leave()
    except BaseException:  # the log is gone; the error still answers
        pass
    for kind, code in _CODED:
        if isinstance(exc, kind):
            try:
                return Err(json.dumps({"code": code, "message": text[-4096:]}))
            except BaseException:
                return Err('{"code": "' + code + '", "message": ""}')
    return Err(text)


# -- migrations ------------------------------------------------------------------------


def _migrate(migrations: list[Any]) -> None:
    env.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = env.sql.value("SELECT version FROM schema_version")
    if version is None:
        env.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = 0
    while version < len(migrations):
        step = migrations[version]
        if callable(step):
            step(env)
        elif isinstance(step, str):
            env.execute(step)
        else:
            for statement in step:
                env.execute(statement)
        version += 1
        env.execute("UPDATE schema_version SET version = ?", version)
        facets.log(f"schema migrated to version {version}")


def _check_migrations(app: ModuleType) -> list[Any]:
    migrations = getattr(app, "MIGRATIONS", None)
    if migrations is None:
        return []
    if not isinstance(migrations, (list, tuple)):
        raise TypeError("MIGRATIONS must be a list: each a SQL string, a list of them, or a callable taking env")
    for i, step in enumerate(migrations):
        ok = callable(step) or isinstance(step, str)
        ok = ok or (isinstance(step, (list, tuple)) and all(isinstance(s, str) for s in step))
        if not ok:
            raise TypeError(f"MIGRATIONS[{i}] must be a SQL string, a list of them, or a callable taking env")
    return list(migrations)


# -- requests and responses ------------------------------------------------------------


def _request(head: str, body: str) -> Request:
    h = json.loads(head)
    data = base64.b64decode(body) if h.get("body_encoding") == "base64" else body.encode("utf-8")
    return Request(
        method=h.get("method", "GET"),
        path=h.get("path", "/"),
        query=h.get("query", ""),
        headers=Headers((str(n), str(v)) for n, v in h.get("headers") or ()),
        body=data,
        base=h.get("base", ""),
    )


def _as_response(value: object) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, (str, bytes, bytearray)):
        return Response(bytes(value) if not isinstance(value, str) else value)
    if isinstance(value, (dict, list)):
        return Response.json(value)
    raise TypeError(f"fetch must return a Response, str, bytes, dict or list, not {type(value).__name__}")


def _plain_answer(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    raise TypeError(f"call must return a str, bytes, dict or list, not {type(value).__name__}")


def _typed(body: str) -> str:
    """The content-type the platform gives a body-only answer (runtime.http.body_only_response)."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return "text/plain; charset=utf-8"
    return "application/json"


def _wire(response: Response) -> tuple[str, str]:
    head: dict[str, Any] = {"status": response.status, "headers": response.headers.pairs()}
    try:
        body = response.body.decode("utf-8")
    except UnicodeDecodeError:
        head["body_encoding"] = "base64"
        body = base64.b64encode(response.body).decode("ascii")
    return json.dumps(head, separators=(",", ":")), body


def make_guest(app: ModuleType) -> type:
    """The `Guest` class componentize-py exports, serving `app`'s handlers."""
    fetch_handler: Callable[..., Any] | None = getattr(app, "fetch", None)
    call_handler: Callable[..., Any] | None = getattr(app, "call", None)
    if fetch_handler is not None and not callable(fetch_handler):
        raise TypeError("fetch must be a function fetch(request, env)")
    if call_handler is not None and not callable(call_handler):
        raise TypeError("call must be a function call(body, env)")
    if fetch_handler is None and call_handler is None:
        raise TypeError("the app defines neither fetch(request, env) nor call(body, env)")
    alarm_handler: Callable[..., Any] | None = getattr(app, "alarm", None)
    if alarm_handler is not None and not callable(alarm_handler):
        raise TypeError("alarm must be a function alarm(env)")
    facets._has_alarm_handler = alarm_handler is not None
    migrations = _check_migrations(app)

    def serve_fetch(request: Request) -> Response:
        if fetch_handler is not None:
            return _as_response(fetch_handler(request, env))
        assert call_handler is not None
        text = request.body.decode("utf-8", "surrogateescape")
        answer = _plain_answer(call_handler(text, env))
        return Response(answer.encode("utf-8"), 200, {"content-type": _typed(answer)})

    class Guest(exports.Guest):
        def init(self) -> None:
            try:
                _enter()
                _migrate(migrations)
                _leave()
            except BaseException as exc:  # every failure is the request's
                raise _failure(exc) from None

        def call(self, body: str) -> str:
            try:
                _enter()
                if call_handler is not None:
                    answer = _plain_answer(call_handler(body, env))
                else:
                    response = serve_fetch(Request("POST", "/", body=body.encode("utf-8")))
                    answer = response.body.decode("utf-8", "replace")
                _leave()
                return answer
            except BaseException as exc:
                raise _failure(exc) from None

        def fetch(self, head: str, body: str) -> tuple[str, str]:
            try:
                _enter()
                answer = _wire(serve_fetch(_request(head, body)))
                _leave()
                return answer
            except BaseException as exc:
                raise _failure(exc) from None

        # Every SDK app exports `alarm` (the world has it). Without a handler set_alarm
        # refuses, so an alarm arrives only if the handler was removed since: it is done,
        # with a warning (failing would only retry what can never succeed).
        def alarm(self) -> None:
            try:
                _enter()
                if alarm_handler is None:
                    facets.log("an alarm arrived but the app has no alarm handler: ignored", level="warn")
                else:
                    alarm_handler(env)
                _leave()
            except BaseException as exc:
                raise _failure(exc) from None

    return Guest
