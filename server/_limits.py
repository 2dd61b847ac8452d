"""Limits on hostile clients, and the one protocol class that enforces the ones uvicorn lacks.

uvicorn's own knobs do most of it (``uvicorn_config``): ``limit_concurrency`` is the
connection cap (beyond it a request is answered 503), ``timeout_keep_alive`` closes an
idle kept-alive connection, ``backlog`` bounds the kernel's accept queue. With httptools,
uvicorn bounds neither the header count nor their size, and nothing closes a connection
that never finishes its headers (slowloris: one byte a second keeps it open forever).
``GuardedProtocol`` is a small subclass of uvicorn's ``HttpToolsProtocol`` that adds
those three: it parses nothing itself (httptools does).

Runs on the event loop only; every method here is a protocol callback or a loop timer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime import ErrorCode

from ._responses import raw_error, send_error


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may hold or send.

    Attributes:
        connections: open connections at once (uvicorn's ``limit_concurrency``); a request
            on a connection beyond it is answered 503 ``overloaded``. Also the size of the
            fetch thread pool (see ``PublicApp``).
        backlog: connections the kernel queues before they are accepted.
        keep_alive: seconds an idle kept-alive connection stays open.
        header_timeout: seconds from a request's first byte (or the connection's opening)
            to the end of its headers; then 408 and the connection is closed.
        body_timeout: seconds the server waits for each chunk of a request body; then 408.
        max_headers: header lines per request; beyond, 431.
        max_header_bytes: bytes of request line and headers; beyond, 431.
        discard_body: bytes of a body over its facet's ``max_body`` read and dropped before
            the 413, so a client still sending gets the answer instead of a reset.
        drain_timeout: seconds a shutdown waits for in-flight requests (each is bounded by
            its facet's timeout_ms quota, 2 s by default) before it cancels what is left.
    """

    connections: int = 1024
    backlog: int = 2048
    keep_alive: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024
    discard_body: int = 1024 * 1024
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("connections", "backlog", "max_headers", "max_header_bytes", "discard_body"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {getattr(self, name)!r}")
        for name in ("keep_alive", "header_timeout", "body_timeout", "drain_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be a positive number of seconds, not {getattr(self, name)!r}")


class _Refused(Exception):
    """Raised inside a parser callback to stop httptools; uvicorn then calls
    ``send_400_response``, which writes the refusal kept in ``GuardedProtocol._refusal``."""


async def overloaded(scope: Any, receive: Any, send: Any) -> None:
    """Answers a request beyond the connection cap (instead of uvicorn's plain-text 503)."""
    await send_error(send, 503, ErrorCode.OVERLOADED, "the server has too many connections", close=True)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and header count/size limits.

    Use ``protocol_class(limits)``: uvicorn instantiates the class itself, so the limits
    are a class attribute of a subclass made for them.
    """

    limits: Limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._header_count = 0
        self._header_bytes = 0
        self._refusal: bytes | None = None

    # -- the header deadline --------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_headers()  # a connection that never sends a byte is closed too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begin_headers()

    def _begin_headers(self) -> None:
        self._in_headers = True
        self._header_count = self._header_bytes = 0
        if self._header_timer is None:  # opened by connection_made: the deadline runs from there
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def _end_headers(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            limit = self.limits.header_timeout
            self._write_and_close(
                raw_error(408, "Request Timeout", ErrorCode.TIMEOUT, f"the request headers took over {limit:g} s")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_headers()
        super().connection_lost(exc)

    # -- header count and size ------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse_headers(f"over {self.limits.max_headers} header lines")
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_headers()
        super().on_headers_complete()

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse_headers(f"over {self.limits.max_header_bytes} bytes of request line and headers")

    def _refuse_headers(self, why: str) -> None:
        self._refusal = raw_error(431, "Request Header Fields Too Large", ErrorCode.TOO_BIG, f"the request has {why}")
        raise _Refused(why)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self.parser is None:
            return  # refused: the rest is discarded until the close completes
        in_headers = self._in_headers
        super().data_received(data)
        # A header still incomplete is buffered inside httptools, which calls on_header only
        # once it ends: count what arrives while headers are incomplete, so one endless
        # header line is refused too (a chunk where a message began is left out: uvloop
        # reads at most 256 KiB at once, so that bounds the overshoot).
        if in_headers and self._in_headers and self._refusal is None and not self.transport.is_closing():
            try:
                self._count_header_bytes(len(data))
            except _Refused:
                self._write_and_close(self._refusal or b"")

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when httptools stops: on malformed HTTP, or on ``_Refused``."""
        refusal = self._refusal or raw_error(400, "Bad Request", ErrorCode.BAD_REQUEST, "the request is not valid HTTP")
        self._write_and_close(refusal)

    def _write_and_close(self, response: bytes) -> None:
        self._end_headers()
        if self._refusal is None:
            self._refusal = response
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- the connection cap's answer -------------------------------------------------
    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn picks its own plain-text 503 app beyond limit_concurrency; ours is the
        # JSON error every other response uses (x-request-id, Retry-After).
        super()._start_asgi_task(cycle, overloaded if app is service_unavailable else app)


def protocol_class(limits: Limits) -> type[GuardedProtocol]:
    """A ``GuardedProtocol`` subclass bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})
