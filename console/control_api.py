"""The control API: how other ``facets`` processes reach the owner of a data directory.

One process owns a data directory (``runtime.owner``); every other ``facets COMMAND`` and
``facets run`` sends its lines to that owner, so that usage, quotas and logs are one
process's truth. ``ControlAPI`` is a plain ASGI app (no framework), mounted by the owner
under ``/control/`` (on its control socket, ``control_server``, or an admin listener):

``POST /control/command``  ``{"line": str, "readonly": bool, "cwd": str}`` -> the JSON
    reply of the command (the very dict ``facets COMMAND --json`` prints), HTTP 200 whether
    the command succeeded or not (``ok`` says).
``POST /control/script``   ``{"lines": [str], "fail_fast": bool, "readonly": bool, "cwd": str}``
    -> JSON Lines, streamed as each command finishes: what ``facets run`` prints (the whole
    script is parsed first, as ``headless.run_script``), then one last line
    ``{"exit_status": N}`` that the client turns into its exit status.
``POST /control/rpc``      ``{"method": str, "args": [...], "kwargs": {...}, "readonly": bool}``
    -> ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message"}}``:
    one ``Supervisor`` method of the whitelist ``RPC_METHODS``, its result encoded by
    ``encode``/``decode`` below (``bytes`` travel as ``{"$bytes": BASE64}``).
``GET /control/owner``      -> the owner's ``owner.json`` note.

``cwd`` is the client's working directory: a relative path in ``load``/``import``/``export``
is the operator's (``headless.run_at``). RPC paths must be absolute.

Every request body is checked before anything runs: its size (``MAX_BODY``, 413 ``too_big``),
that it is a JSON object with exactly the documented keys of the documented types (400
``bad_request``); an unknown route is 404, a wrong method 405. Commands and RPCs never run on
the event loop: they run on this API's own thread pool (guest code, SQLite).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import inspect
import json
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runtime import (
    AppInfo,
    AppVersion,
    CallResult,
    ErrorCode,
    FacetChanges,
    FacetInfo,
    FacetsError,
    HistoryInfo,
    HttpResponse,
    LogRecord,
    Quotas,
    RestoreInfo,
    SnapshotInfo,
    Supervisor,
    Usage,
)
from runtime.supervision import HealthInfo

from .commands import CommandError, Reply, UsageError, failure, parse
from .format import dumps
from .headless import run_at, run_script

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Largest request body (bytes). A command line is at most 1 MiB characters
#: (``commands.MAX_LINE_CHARS``), up to 6 MiB as JSON (``\\uXXXX`` for each); 8 MiB holds it.
MAX_BODY = 8 * 1024 * 1024
#: A script is many lines: 64 MiB is 16,000 lines of 4 KiB, far past any script seen here
#: (the issue's 2,000-call scripts are ~60 KiB).
MAX_SCRIPT_BODY = 64 * 1024 * 1024
#: Threads running commands and RPCs: a script holds one for its whole run; 32 leave room
#: for many scripts and the console's views while bounding what a flood of clients costs.
WORKERS = 32


class BadBody(Exception):
    """A request the API cannot take: answered ``status`` with a JSON error."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- codecs: Supervisor results as JSON, and back ----------------------------------------
def encode(value: Any) -> Any:
    """A Supervisor method's result (or argument) as JSON-ready data; ``decode`` reverses it
    given the type expected."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, AppInfo):
        return {
            "name": value.name,
            "version": encode(value.version),
            "versions": value.versions,
            "facets": value.facets,
            "active": value.active,
            "pinned": value.pinned,
            "canary": value.canary,
            "canary_percent": value.canary_percent,
        }
    if isinstance(value, FacetChanges):
        return {
            "cursor": value.cursor,
            "complete": value.complete,
            "facets": [encode(f) for f in value.facets],
            "removed": list(value.removed),
        }
    if isinstance(value, CallResult):
        return {
            "ok": value.ok,
            "response": encode(value.response),
            "error": None if value.error is None else str(value.error),
            "message": value.message,
            "usage": value.usage.as_dict(),
            "request_id": value.request_id,
            "http": None if value.http is None else encode(value.http),
            "status": value.status,
            "retry_after": value.retry_after,
            "version": value.version,
        }
    if isinstance(value, HttpResponse):
        return {"status": value.status, "headers": [list(h) for h in value.headers], "body": encode(value.body)}
    if isinstance(value, AppVersion | FacetInfo | Quotas | LogRecord | Usage | HealthInfo | SnapshotInfo | RestoreInfo):
        return value.as_dict()
    if isinstance(value, HistoryInfo):
        return value.as_dict()
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def decode_bytes(data: Any) -> Any:
    """``{"$bytes": BASE64}`` back to bytes (anywhere in ``data``); everything else as it is."""
    if isinstance(data, dict):
        if set(data) == {"$bytes"} and isinstance(data["$bytes"], str):
            try:
                return base64.b64decode(data["$bytes"], validate=True)
            except ValueError:
                raise BadBody(400, ErrorCode.BAD_REQUEST, "a $bytes value is not base64") from None
        return {k: decode_bytes(v) for k, v in data.items()}
    if isinstance(data, list):
        return [decode_bytes(v) for v in data]
    return data


def _app_version(d: dict[str, Any]) -> AppVersion:
    return AppVersion(**{**d, "exports": tuple(d["exports"]), "imports": tuple(d["imports"])})


def _app_info(d: dict[str, Any]) -> AppInfo:
    return AppInfo(
        d["name"],
        _app_version(d["version"]),
        d["versions"],
        d["facets"],
        active=d["active"],
        pinned=d["pinned"],
        canary=d["canary"],
        canary_percent=d["canary_percent"],
    )


def _health(d: dict[str, Any] | None) -> HealthInfo | None:
    return None if d is None else HealthInfo(**d)


def _facet_info(d: dict[str, Any]) -> FacetInfo:
    return FacetInfo(**d)


def _call_result(d: dict[str, Any]) -> CallResult:
    error = d["error"]
    return CallResult(
        ok=d["ok"],
        response=decode_bytes(d["response"]),
        error=None if error is None else ErrorCode(error),
        message=d["message"],
        usage=Usage(**d["usage"]),
        request_id=d["request_id"],
        http=None if d["http"] is None else _http_response(d["http"]),
        status=d["status"],
        retry_after=d["retry_after"],
        version=d["version"],
    )


def _http_response(d: dict[str, Any]) -> HttpResponse:
    return HttpResponse(d["status"], tuple((name, value) for name, value in d["headers"]), decode_bytes(d["body"]))


def _history(d: dict[str, Any]) -> HistoryInfo:
    return HistoryInfo(**{**d, "snapshots": [SnapshotInfo(**s) for s in d["snapshots"]]})


def _plain(d: Any) -> Any:
    return d


@dataclasses.dataclass(frozen=True)
class Method:
    """A Supervisor method the RPC serves: whether it writes (refused when the request is
    ``readonly``), and how its result is rebuilt from JSON by a client."""

    writes: bool
    decode: Callable[[Any], Any] = _plain
    attribute: bool = False  # a property or attribute, read without a call


#: The Supervisor methods a remote console needs (what ``console/`` calls on ``sup``), and
#: nothing else: no ``reader`` (a live SQLite connection; ``rows``/``query`` do its work),
#: no ``subscribe_logs`` (a callback; poll ``logs(since=...)``), no ``close``.
RPC_METHODS: dict[str, Method] = {
    # reads
    "app_list": Method(False, lambda d: [_app_info(a) for a in d]),
    "app_versions": Method(False, lambda d: [_app_version(v) for v in d]),
    "facet_list": Method(False, lambda d: [_facet_info(f) for f in d]),
    "facet_info": Method(False, _facet_info),
    "facet_changes": Method(
        False, lambda d: FacetChanges(d["cursor"], d["complete"], [_facet_info(f) for f in d["facets"]], d["removed"])
    ),
    "facet_exists": Method(False),
    "quotas": Method(False, lambda d: Quotas(**d)),
    "explicit_quotas": Method(False),
    "usage": Method(False),
    "series": Method(False),
    "bill": Method(False),
    "prometheus": Method(False),
    "logs": Method(False, lambda d: [LogRecord(**r) for r in d]),
    "tables": Method(False),
    "rows": Method(False),
    "query": Method(False),
    "health": Method(False, _health),
    "faulting": Method(False, lambda d: [HealthInfo(**h) for h in d]),
    "alarm_list": Method(False),
    "rollout": Method(False),
    "snapshots": Method(False, lambda d: [SnapshotInfo(**s) for s in d]),
    "history": Method(False, _history),
    "warm_count": Method(False, attribute=True),
    "max_open_dbs": Method(False, attribute=True),
    "data_dir": Method(False, str, attribute=True),
    # writes
    "call": Method(True, _call_result),
    "load_app": Method(True, _app_version),
    "load_app_bytes": Method(True, _app_version),
    "set_quotas": Method(True, lambda d: Quotas(**d)),
    "evict": Method(True),
    "delete": Method(True),
    "export_facet": Method(True),
    "import_facet": Method(True),
    "flush_usage": Method(True),
    "reset": Method(True, _health),
    "pin": Method(True),
    "unpin": Method(True),
    "promote": Method(True),
    "rollback": Method(True),
    "snapshot": Method(True, lambda d: SnapshotInfo(**d)),
    "delete_snapshot": Method(True),
    "restore": Method(True, lambda d: RestoreInfo(**d)),
    "fork": Method(True, lambda d: RestoreInfo(**d)),
    "undelete": Method(True, lambda d: RestoreInfo(**d)),
}


def decode(method: str, result: Any) -> Any:
    """A ``/control/rpc`` result, as the Supervisor method itself returns it."""
    return RPC_METHODS[method].decode(result)


# -- request bodies --------------------------------------------------------------------------
def _fields(body: Any, required: dict[str, type | tuple[type, ...]], optional: dict[str, Any]) -> dict[str, Any]:
    """``body``'s keys checked: an object, every required key of its type, optional keys of
    theirs (``None`` in ``optional``'s value means "any JSON"), nothing else."""
    if not isinstance(body, dict):
        raise BadBody(400, ErrorCode.BAD_REQUEST, "the request body must be a JSON object")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise BadBody(400, ErrorCode.BAD_REQUEST, f"unknown keys: {', '.join(sorted(unknown))}")
    for key, kind in required.items():
        if key not in body:
            raise BadBody(400, ErrorCode.BAD_REQUEST, f"missing key {key!r}")
        if not _is(body[key], kind):
            raise BadBody(400, ErrorCode.BAD_REQUEST, f"{key!r} has the wrong type")
    for key, kind in optional.items():
        if key in body and kind is not None and not _is(body[key], kind):
            raise BadBody(400, ErrorCode.BAD_REQUEST, f"{key!r} has the wrong type")
    return body


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and kind is not bool and (kind is int or (isinstance(kind, tuple) and bool not in kind)):
        return False  # JSON true is not a number here
    return isinstance(value, kind)


_NULLABLE_STR = (str, type(None))


class _Lines:
    """The ``out`` of a ``run_script`` on a worker thread: each line goes to the event loop's
    queue at once (a client sees each result as it finishes); it stops the script, by
    raising, once the client is gone."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None], gone: threading.Event
    ) -> None:
        self._loop, self._queue, self._gone = loop, queue, gone

    def write(self, text: str) -> int:
        if self._gone.is_set():
            raise BrokenPipeError("the client of the script is gone")
        self._loop.call_soon_threadsafe(self._queue.put_nowait, text)
        return len(text)

    def flush(self) -> None:
        pass


class ControlAPI:
    """The control API of one supervisor (its owner's)."""

    def __init__(self, sup: Supervisor, *, readonly: bool = False) -> None:
        self.sup = sup
        #: Refuse every write, whatever the request says (an owner opened for reading).
        self.readonly = readonly
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="facets-control")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if not path.startswith("/control/"):  # mounted with the prefix moved to root_path
            path = scope.get("root_path", "") + path
        routes: dict[str, tuple[str, int]] = {
            "/control/command": ("POST", MAX_BODY),
            "/control/script": ("POST", MAX_SCRIPT_BODY),
            "/control/rpc": ("POST", MAX_BODY),
            "/control/owner": ("GET", 0),
        }
        try:
            if path not in routes:
                raise BadBody(404, ErrorCode.NOT_FOUND, f"no control route {path!r}")
            method, limit = routes[path]
            if scope["method"] != method:
                raise BadBody(405, ErrorCode.BAD_REQUEST, f"{path} takes {method}, not {scope['method']}")
            body = await _read_json(receive, limit) if method == "POST" else None
            if path == "/control/command":
                await _send_json(send, 200, await self._run(self._command, body))
            elif path == "/control/script":
                await self._script(body, receive, send)
            elif path == "/control/rpc":
                status, answer = await self._run(self._rpc, body)
                await _send_json(send, status, answer)
            else:
                owner = self.sup.owner
                await _send_json(send, 200, owner.info.as_dict() if owner is not None else {})
        except BadBody as exc:
            await _send_json(send, exc.status, {"error": {"code": str(exc.code), "message": exc.message}})

    async def _run(self, fn: Callable[[Any], Any], body: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, body)

    # -- /control/command ----------------------------------------------------------------
    def _command(self, body: Any) -> dict[str, Any]:
        fields = _fields(body, {"line": str}, {"readonly": bool, "cwd": _NULLABLE_STR})
        line: str = fields["line"]
        readonly = self.readonly or fields.get("readonly", False)
        try:
            cmd = parse(line)
        except UsageError as exc:
            return failure(line, exc)
        if cmd is None:
            raise BadBody(400, ErrorCode.BAD_REQUEST, "the line is blank: no command to run")
        try:
            return Reply(cmd.line, run_at(self.sup, cmd, readonly=readonly, cwd=fields.get("cwd")))
        except CommandError as exc:
            return failure(line, exc)

    # -- /control/script -------------------------------------------------------------------
    async def _script(self, body: Any, receive: Receive, send: Send) -> None:
        fields = _fields(body, {"lines": list}, {"fail_fast": bool, "readonly": bool, "cwd": _NULLABLE_STR})
        lines = fields["lines"]
        if not all(isinstance(line, str) for line in lines):
            raise BadBody(400, ErrorCode.BAD_REQUEST, "'lines' must be a list of strings")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        gone = threading.Event()
        out = _Lines(loop, queue, gone)

        def work() -> None:
            status = 1
            try:
                status = run_script(
                    self.sup,
                    lines,
                    out,  # type: ignore[arg-type]  # only write and flush are used
                    fail_fast=fields.get("fail_fast", False),
                    readonly=self.readonly or fields.get("readonly", False),
                    cwd=fields.get("cwd"),
                )
            finally:  # the client learns the status, or that the script broke off
                loop.call_soon_threadsafe(queue.put_nowait, dumps({"exit_status": status}) + "\n")
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async def watch() -> None:  # the body is read: the next message is the disconnect
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        running = loop.run_in_executor(self._pool, work)
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]}
            )
            while (chunk := await queue.get()) is not None:
                await send({"type": "http.response.body", "body": chunk.encode("utf-8"), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.set()  # a script still running stops at its next line
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokenPipeError):
                await watcher
            with contextlib.suppress(BrokenPipeError):
                await running

    # -- /control/rpc ----------------------------------------------------------------------
    def _rpc(self, body: Any) -> tuple[int, dict[str, Any]]:
        fields = _fields(body, {"method": str}, {"args": list, "kwargs": dict, "readonly": bool})
        name: str = fields["method"]
        method = RPC_METHODS.get(name)
        if method is None:
            raise BadBody(400, ErrorCode.BAD_REQUEST, f"no RPC method {name!r}; methods: {', '.join(RPC_METHODS)}")
        args = decode_bytes(fields.get("args", []))
        kwargs = decode_bytes(fields.get("kwargs", {}))
        if method.writes and (self.readonly or fields.get("readonly", False)):
            return 200, _error(ErrorCode.REFUSED, f"{name}: refused in read-only mode")
        if method.attribute:
            if args or kwargs:
                raise BadBody(400, ErrorCode.BAD_REQUEST, f"{name} takes no arguments")
            return 200, {"ok": True, "result": encode(getattr(self.sup, name))}
        bound = getattr(self.sup, name)
        try:
            arguments = inspect.signature(bound).bind(*args, **kwargs).arguments
        except TypeError as exc:
            raise BadBody(400, ErrorCode.BAD_REQUEST, f"{name}: {exc}") from None
        path = arguments.get("path")
        if isinstance(path, str) and not os.path.isabs(path):  # the owner's directory is not the caller's
            raise BadBody(400, ErrorCode.BAD_REQUEST, f"{name}: the path must be absolute, not {path!r}")
        try:
            result = bound(*args, **kwargs)
        except FacetsError as exc:
            return 200, _error(exc.code, exc.message)
        except (OSError, sqlite3.Error) as exc:  # by type, as the command language classifies them
            return 200, _error(ErrorCode.IO_ERROR, f"{type(exc).__name__}: {exc}")
        except (TypeError, ValueError, AttributeError) as exc:  # an argument of the wrong type or value
            return 400, _error(ErrorCode.BAD_REQUEST, f"{name}: bad arguments ({type(exc).__name__}: {exc})")
        return 200, {"ok": True, "result": encode(result)}


def _error(code: ErrorCode | str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": str(code), "message": message}}


async def _read_json(receive: Receive, limit: int) -> Any:
    """The request body as JSON; ``BadBody`` (413 past ``limit``, 400 when not JSON)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadBody(400, ErrorCode.BAD_REQUEST, "the client went away before its body was read")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:  # stop reading: the rest is never buffered
            raise BadBody(413, ErrorCode.TOO_BIG, f"the request body is over {limit:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadBody(400, ErrorCode.BAD_REQUEST, f"the request body is not JSON ({type(exc).__name__})") from None


async def _send_json(send: Send, status: int, payload: Any) -> None:
    body = dumps(payload, ensure_ascii=True).encode("ascii")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
