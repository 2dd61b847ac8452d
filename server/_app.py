"""The public ASGI app: ``/{app}/{facet}[/{rest}]`` (or ``{facet}.{app}.BASE_DOMAIN``) ->
``Supervisor.fetch``.

Thread rules: this app runs on the event loop and never runs guest code or SQLite there.
The loop only parses the address, reads the body (bounded by the facet's ``max_body``
quota and a per-chunk timeout), counts the facet's requests in flight, queues the request
in its facet's ``_Lane``, and writes the answer. A lane's requests run on the app's own
ThreadPoolExecutor, one pool job per lane at a time, in batches through
``Supervisor.fetch_many``: a busy facet costs one thread hand-off and one pass through its
gate per batch, not per request (16 connections on one facet: from 1 hand-off per
request to about one per 8 or more; bench/README.md, section http, has the figures).
A lane's ``pending`` deque is appended on the loop and popped by its one pool job (deque
operations are atomic); ``running`` is read and written on the loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import unquote

from runtime import BadRequest, CallResult, ErrorCode, HttpRequest, Supervisor, parse_facet_target, status_for

from ._limits import Limits
from ._responses import NOSNIFF, new_request_id, send_error

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("facets.server")

_NOT_ROUTED = "no facet here: address a facet as /APP/FACET/..."


class _Refused(NamedTuple):
    """Why a request is answered without reaching a facet."""

    status: int
    code: ErrorCode
    message: str


#: At most this many of a facet's requests go to the pool in one job: the supervisor's
#: commit-group size (``runtime.gate.MAX_GROUP``), so a batch is at most one COMMIT at
#: ``full`` durability.
BATCH = 64


class _Lane:
    """One facet's requests waiting on the loop for the pool, and whether a pool job runs them."""

    __slots__ = ("pending", "running")

    def __init__(self) -> None:
        self.pending: deque[tuple[HttpRequest, asyncio.Future[CallResult]]] = deque()
        self.running = False


class PublicApp:
    """The public listener's ASGI app.

    Args:
        sup: the supervisor requests go to (the caller opens and closes it; ``close``
            this app first, so no fetch is still running when the supervisor closes).
        base_domain: with it, ``{facet}.{app}.BASE_DOMAIN`` addresses a facet by the Host
            header (mounted at ``/``, ``base`` is ""); other hosts use the path.
        limits: ``Limits``; its ``connections`` sizes the fetch pool, its
            ``body_timeout`` bounds each body chunk.
    """

    def __init__(self, sup: Supervisor, *, base_domain: str | None = None, limits: Limits | None = None) -> None:
        self._sup = sup
        self._limits = limits = limits or Limits()
        self._base_domain = "." + base_domain.strip(".").lower() if base_domain else None
        # Pool size = the connection cap: a pool job serves one facet's lane, and there are
        # never more facets in flight than connections (uvicorn runs one request at a time
        # per connection), so no lane waits for a thread. A thread waiting at a busy facet's
        # gate costs no CPU (only its stack), and threads are started lazily. A runaway facet
        # holds one thread; its lane is capped at one running + `queue` waiting (64 by
        # default), the most its gate would admit anyway: beyond, the loop answers 503
        # `overloaded` without queueing.
        self._pool = ThreadPoolExecutor(max_workers=limits.connections, thread_name_prefix="facets-http")
        self._in_flight: dict[str, int] = {}
        self._lanes: dict[str, _Lane] = {}
        self._fetch_many = sup.fetch_many
        self._count_refused = sup.count_refused
        self._quotas = sup.quotas

    def close(self) -> None:
        """Wait for the fetches still running (after the server stopped)."""
        self._pool.shutdown(wait=True)

    def in_flight(self, target: str) -> int:
        """Requests of ``target`` submitted and not answered yet (read on the loop)."""
        return self._in_flight.get(target, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are not served
            return
        try:
            await self._serve(scope, receive, send)
        except Exception:  # a bug here: the client gets a JSON 500 (with an id), the details go to the log
            log.exception("the server failed on %s %r", scope.get("method"), scope.get("path"))
            try:
                await send_error(send, 500, ErrorCode.INTERNAL, "internal error")
            except RuntimeError:
                pass  # the answer had started: uvicorn closes the connection

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        routed = self._route(scope)
        if isinstance(routed, _Refused):
            await send_error(send, *routed)
            return
        target, path, base = routed
        quotas = self._quotas(target)
        max_body: int = quotas.max_body
        headers = scope["headers"]
        declared = _content_length(headers)
        if declared is not None and (declared < 0 or declared > max_body + self._limits.discard_body):
            # Refused unread: the client may see a reset instead of the answer (it sent too much).
            refusal = _Refused(413, ErrorCode.TOO_BIG, _too_big(max_body)) if declared >= 0 else _BAD_LENGTH
            await send_error(send, *refusal, self._counted(target, refusal), close=True)
            return
        body = await self._read_body(receive, send, target, max_body)
        if body is None:
            return  # answered (413, 408) or the client left
        queue = quotas.queue
        in_flight = self._in_flight
        count = in_flight.get(target, 0)
        if queue and count > queue:  # one running and `queue` waiting: its gate would refuse too
            message = f"{target} already has {count} requests in flight (queue={queue})"
            refused = _Refused(503, ErrorCode.OVERLOADED, message)
            await send_error(send, *refused, self._counted(target, refused))
            return
        request = HttpRequest(
            method=scope["method"],
            path=path,
            query=scope["query_string"].decode("latin-1"),
            headers=tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers),
            body=body,
            base=base,
        )
        in_flight[target] = count + 1
        try:
            loop = asyncio.get_running_loop()
            answered: asyncio.Future[CallResult] = loop.create_future()
            lane = self._lanes.get(target)
            if lane is None:
                lane = self._lanes[target] = _Lane()
            lane.pending.append((request, answered))
            if not lane.running:
                lane.running = True
                self._pool.submit(self._drain, loop, target, lane)
            result = await answered
        finally:
            left = in_flight[target] - 1
            if left:
                in_flight[target] = left
            else:
                del in_flight[target]
        await self._answer(send, result, quotas.rate)

    def _drain(self, loop: asyncio.AbstractEventLoop, target: str, lane: _Lane) -> None:
        """On a pool thread: run ``lane``'s requests, a batch at a time, until none is left;
        then tell the loop (``_idle``), which alone decides whether the lane runs again."""
        pending = lane.pending
        try:
            while pending:
                batch = [pending.popleft() for _ in range(min(len(pending), BATCH))]
                try:
                    results: list[CallResult] | BaseException = self._fetch_many(target, [r for r, _ in batch])
                except Exception as exc:  # a bug: these requests get a 500, the lane goes on
                    log.exception("fetch_many failed for %s", target)
                    results = exc
                loop.call_soon_threadsafe(_deliver, [future for _, future in batch], results)
        finally:
            try:
                loop.call_soon_threadsafe(self._idle, loop, target, lane)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _idle(self, loop: asyncio.AbstractEventLoop, target: str, lane: _Lane) -> None:
        """On the loop: a lane's pool job finished; start another if requests came meanwhile."""
        if lane.pending:
            self._pool.submit(self._drain, loop, target, lane)
        else:
            lane.running = False
            if self._lanes.get(target) is lane:  # no lane kept per idle facet (100,000 of them)
                del self._lanes[target]

    def _route(self, scope: Scope) -> tuple[str, str, str] | _Refused:
        """(target, path below the facet, base), or (status, code, message) to refuse."""
        raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1")
        if self._base_domain is not None:
            host = _host(scope)
            if host.endswith(self._base_domain):
                labels = host[: -len(self._base_domain)].split(".")
                if len(labels) != 2:
                    where = "no facet here: address a facet as FACET.APP." + self._base_domain[1:]
                    return _Refused(404, ErrorCode.NOT_FOUND, where)
                facet, app = labels
                target = _checked(app, facet)
                if isinstance(target, _Refused):
                    return target
                return target, scope["path"] or "/", ""
        parts = raw.split(b"/", 3)  # b"", app, facet, rest
        if len(parts) < 3 or not parts[1] or not parts[2]:
            return _Refused(404, ErrorCode.NOT_FOUND, _NOT_ROUTED)
        app, facet = parts[1].decode("latin-1"), parts[2].decode("latin-1")
        target = _checked(app, facet)
        if isinstance(target, _Refused):
            return target
        rest = parts[3].decode("latin-1") if len(parts) == 4 else ""
        return target, "/" + (unquote(rest) if "%" in rest else rest), f"/{app}/{facet}"

    def _counted(self, target: str, refused: _Refused) -> str:
        """A request id for a refusal the server answers itself, counted in the facet's
        meters (and logged, throttled) as the supervisor's own refusals are."""
        request_id = new_request_id()
        self._count_refused(target, refused.code, refused.message, request_id, refused.status)
        return request_id

    async def _read_body(self, receive: Receive, send: Send, target: str, max_body: int) -> bytes | None:
        """The whole body, read chunk by chunk; None once answered (413: over ``max_body``;
        408: a chunk slower than ``body_timeout``) or when the client left.

        A body over the limit is read on and discarded up to ``Limits.discard_body`` more
        bytes before the 413: closing a connection with unread data makes the kernel send a
        reset, and a client still sending (``http.client``, most libraries) would then lose
        the answer. Past that budget the 413 goes out at once, with ``connection: close``.
        """
        chunks: list[bytes] = []
        size = 0
        budget = max_body + self._limits.discard_body
        timeout = self._limits.body_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                refused = _Refused(408, ErrorCode.TIMEOUT, f"no body data for {timeout:g} s")
                await send_error(send, *refused, self._counted(target, refused), close=True)
                return None
            if message["type"] != "http.request":
                return None  # http.disconnect: nobody to answer
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > max_body:
                chunks.clear()
                if more and size <= budget:
                    continue
                refused = _Refused(413, ErrorCode.TOO_BIG, _too_big(max_body))
                await send_error(send, *refused, self._counted(target, refused), close=more)
                return None
            if chunk:
                chunks.append(chunk)
            if not more:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _answer(self, send: Send, result: CallResult, rate: float) -> None:
        request_id = result.request_id.encode()
        http = result.http
        if result.ok and http is not None:
            body = http.body
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in http.headers]
            if not any(name == b"x-content-type-options" for name, _ in headers):
                headers.append(NOSNIFF)
            headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"x-request-id", request_id))
            await send({"type": "http.response.start", "status": http.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        code = result.error or ErrorCode.INTERNAL
        # A quarantine ends when an operator says so: no Retry-After would be true.
        wait = -1.0 if code == ErrorCode.QUARANTINED else result.retry_after
        await send_error(send, status_for(code), code, result.message, result.request_id, rate=rate, wait=wait)


def _deliver(futures: list[asyncio.Future[CallResult]], results: list[CallResult] | BaseException) -> None:
    """On the loop: hand a batch's results to the requests still waiting for them."""
    for index, future in enumerate(futures):
        if future.done():  # cancelled: the server shut down without waiting
            continue
        if isinstance(results, BaseException):
            future.set_exception(results)
        else:
            future.set_result(results[index])


def _checked(app: str, facet: str) -> str | _Refused:
    target = f"{app}/{facet}"
    try:
        parse_facet_target(target)
    except BadRequest as exc:
        return _Refused(400, ErrorCode.BAD_REQUEST, exc.message)
    return target


def _host(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1").lower()
            return host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return ""


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length; -1 when it is not a number (httptools lets a few through)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


_BAD_LENGTH = _Refused(400, ErrorCode.BAD_REQUEST, "the content-length header is not a number")


def _too_big(max_body: int) -> str:
    return f"the request body is over the facet's max_body quota ({max_body} bytes)"
