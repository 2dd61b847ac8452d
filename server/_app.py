"""The public ASGI app: ``/{app}/{facet}[/{rest}]`` (or ``{facet}.{app}.BASE_DOMAIN``) ->
``Supervisor.fetch``.

Thread rules: this app runs on the event loop and never runs guest code or SQLite there.
Each request's ``sup.fetch`` runs on the app's own ThreadPoolExecutor; the loop only
parses the address, reads the body (bounded by the facet's ``max_body`` quota and a
per-chunk timeout), counts the facet's requests in flight, and writes the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import unquote

from runtime import BadRequest, CallResult, ErrorCode, Supervisor, parse_facet_target
from runtime.http import HttpRequest, status_for

from ._limits import Limits
from ._responses import NOSNIFF, send_error

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
        # Pool size = the connection cap: uvicorn runs one request at a time per connection,
        # so at most `connections` fetches are ever in flight and none waits for a thread.
        # A thread blocked at a busy facet's gate costs no CPU (only its stack), and threads
        # are started lazily as concurrency grows. What keeps a runaway facet from holding
        # most of them is the per-facet cap below: one running + `queue` waiting (64 by
        # default), the most its gate would admit anyway; beyond it the loop answers 503
        # `overloaded` without submitting.
        self._pool = ThreadPoolExecutor(max_workers=limits.connections, thread_name_prefix="facets-http")
        self._in_flight: dict[str, int] = {}
        self._fetch = sup.fetch
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
            await send_error(send, *refusal, close=True)
            return
        body = await self._read_body(receive, send, max_body)
        if body is None:
            return  # answered (413, 408) or the client left
        queue = quotas.queue
        in_flight = self._in_flight
        count = in_flight.get(target, 0)
        if queue and count > queue:  # one running and `queue` waiting: its gate would refuse too
            message = f"{target} already has {count} requests in flight (queue={queue})"
            await send_error(send, 503, ErrorCode.OVERLOADED, message)
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
            result: CallResult = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._fetch, target, request
            )
        finally:
            left = in_flight[target] - 1
            if left:
                in_flight[target] = left
            else:
                del in_flight[target]
        await self._answer(send, result, quotas.rate)

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

    async def _read_body(self, receive: Receive, send: Send, max_body: int) -> bytes | None:
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
                await send_error(send, 408, ErrorCode.TIMEOUT, f"no body data for {timeout:g} s", close=True)
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
                await send_error(send, 413, ErrorCode.TOO_BIG, _too_big(max_body), close=more)
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
        await send_error(send, status_for(code), code, result.message, result.request_id, rate=rate)


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
