"""Responses the server makes itself (errors before or instead of a facet's answer), and
the ids they carry.

A request that reaches ``Supervisor.fetch`` carries the supervisor's request id (it is
also in the facet's log). One the server answers on its own (a bad address, a body over
the limit, a header read timeout, a full facet) gets an id from ``new_request_id``, of
the same shape with a prefix of its own, so every response has ``x-request-id``.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from runtime import ErrorCode, error_body

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_ids = itertools.count(1)
_prefix = "s" + secrets.token_hex(3)

#: Added to every response: a browser must not guess a type other than the one the
#: facet (or the server) named.
NOSNIFF = (b"x-content-type-options", b"nosniff")
JSON_TYPE = (b"content-type", b"application/json")
#: Seconds a client is asked to wait after 429 or 503: the rate quota's token bucket
#: refills within a second at any rate >= 1/s, and a gate's queue drains in well under one
#: at the default timeout_ms of 2 s a request (the queue default is 64).
RETRY_AFTER_S = 1


def new_request_id() -> str:
    """An id for a response the server makes without the supervisor (unique per process)."""
    return f"{_prefix}-{next(_ids):x}"


def retry_after(status: int, rate: float = 0.0, wait: float = 0.0) -> int | None:
    """``Retry-After`` seconds for ``status`` (None when it takes none): for 429, the time
    one token of a ``rate`` below 1/s takes to refill; ``wait``, when the supervisor said
    (a facet in backoff: ``CallResult.retry_after``), rounded up; none for a negative
    ``wait`` (a quarantined facet: no time would be true)."""
    if wait < 0:
        return None
    if wait > 0:
        return max(1, math.ceil(wait))
    if status == 429:
        return max(RETRY_AFTER_S, math.ceil(1 / rate)) if 0 < rate < 1 else RETRY_AFTER_S
    if status == 503:
        return RETRY_AFTER_S
    return None


def error_headers(
    request_id: str, status: int, length: int, *, close: bool = False, rate: float = 0.0, wait: float = 0.0
) -> list[tuple[bytes, bytes]]:
    headers = [JSON_TYPE, (b"content-length", str(length).encode()), (b"x-request-id", request_id.encode()), NOSNIFF]
    seconds = retry_after(status, rate, wait)
    if seconds is not None:
        headers.append((b"retry-after", str(seconds).encode()))
    if close:  # the rest of the request is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    return headers


async def send_error(
    send: Send,
    status: int,
    code: ErrorCode | str,
    message: str,
    request_id: str | None = None,
    *,
    close: bool = False,
    rate: float = 0.0,
    wait: float = 0.0,
) -> None:
    """Answer with the JSON error body on an ASGI ``send``."""
    request_id = request_id or new_request_id()
    body = error_body(code, message, request_id)  # only what a client may see of a fault
    headers = error_headers(request_id, status, len(body), close=close, rate=rate, wait=wait)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def raw_error(status: int, reason: str, code: ErrorCode | str, message: str) -> bytes:
    """A whole HTTP/1.1 error response, for the protocol to write before any ASGI app
    runs (malformed request, headers too large, header timeout); it closes the connection."""
    request_id = new_request_id()
    body = error_body(code, message, request_id)  # only what a client may see of a fault
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    lines += [name + b": " + value for name, value in error_headers(request_id, status, len(body), close=True)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
