"""HTTP requests and responses as the runtime sees them: plain data, the ``facet_http``
envelope (``sample_apps/ABI.md``, section HTTP), and the map from error codes to statuses.

No server lives here (that is ``server/``): this module only says what a facet is
handed and what it may answer. ``decode_response`` is the one check every guest
response passes before any byte of it reaches a client, so a guest header with a
CR/LF, a framing header or a status the server cannot send fails the request with
``bad_response`` (rolled back, as any bad answer is) instead of reaching the wire.

Envelopes, both ways: one line of JSON (UTF-8; JSON escapes every newline inside),
``\\n``, then the raw body bytes::

    request   {"method","path","query","base","headers":[[name, value], ...]}\\n<body>
    response  {"status": 303, "headers": [["location", "/todo/alice/"]]}\\n<body>
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import ErrorCode

#: Headers a guest may not set: the server frames the response (RFC 9110 7.6.1's
#: hop-by-hop set, plus the framing and identity headers it writes itself).
FORBIDDEN_RESPONSE_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "x-request-id",
        "date",
        "server",
    }
)
#: At most this many response headers, each value at most MAX_HEADER_VALUE bytes: the
#: samples send at most 3; 64 x 8 KiB stays below the 1 MiB any client buffers.
MAX_RESPONSE_HEADERS = 64
MAX_HEADER_VALUE = 8 * 1024
#: The longest response head (the JSON line) read: 64 headers of 8 KiB, escaped, fit.
MAX_RESPONSE_HEAD = 1024 * 1024

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Visible ASCII, space and tab, and obs-text (0x80-0xFF, latin-1): RFC 9110's field-value.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")

#: Error code -> status. Every code that is not here (a guest fault, a host failure)
#: is 500: the client learns the request failed, the facet's log says why.
_STATUS: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.USAGE: 400,
    ErrorCode.BAD_QUOTA: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.REFUSED: 403,
    ErrorCode.FACET_LIMIT: 403,
    ErrorCode.TOO_BIG: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.BACKOFF: 503,
    ErrorCode.QUARANTINED: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.STORAGE_FULL: 507,
}
#: Codes whose message a client may read: they are about the request, not the host.
_PUBLIC = frozenset(_STATUS)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request for a facet.

    Attributes:
        method: upper case, e.g. ``GET``.
        path: below the facet, always starting with ``/``.
        query: the raw query string, without ``?``.
        headers: ``(name, value)`` pairs, names lower case, values latin-1 decoded.
        body: the whole request body.
        base: where the facet is mounted (``/todo/alice``; ``""`` with host routing), so
            an app can write absolute links.
    """

    method: str
    path: str = "/"
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    base: str = ""

    def envelope(self) -> bytes:
        """The bytes ``facet_http`` is handed."""
        head = {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "base": self.base,
            "headers": [list(pair) for pair in self.headers],
        }
        return json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n" + self.body


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response ready for the wire: ``headers`` checked, names lower case."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class BadHttpResponse(ValueError):
    """A guest's response envelope broke a rule; the message says which."""


def decode_response(data: bytes) -> HttpResponse:
    """Check and parse a ``facet_http`` answer (``BadHttpResponse`` says what is wrong)."""
    newline = data.find(b"\n", 0, MAX_RESPONSE_HEAD + 1)
    if newline < 0:
        raise BadHttpResponse("no response head: expected one line of JSON, a newline, then the body")
    try:
        head = json.loads(data[:newline])
    except (ValueError, RecursionError) as exc:
        raise BadHttpResponse(f"the response head is not JSON: {exc}") from None
    if not isinstance(head, dict):
        raise BadHttpResponse("the response head must be a JSON object")
    status = head.get("status", 200)
    if type(status) is not int or not 200 <= status <= 599:
        raise BadHttpResponse(f"status must be an integer from 200 to 599, not {status!r:.40}")
    raw_headers = head.get("headers", [])
    if not isinstance(raw_headers, list):
        raise BadHttpResponse("headers must be a list of [name, value] pairs")
    if len(raw_headers) > MAX_RESPONSE_HEADERS:
        raise BadHttpResponse(f"{len(raw_headers)} headers: at most {MAX_RESPONSE_HEADERS}")
    headers = []
    for pair in raw_headers:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise BadHttpResponse("each header must be a [name, value] pair of strings")
        name, value = pair
        if not _TOKEN.fullmatch(name):
            raise BadHttpResponse(f"header name {name!r:.60} is not an HTTP token")
        name = name.lower()
        if name in FORBIDDEN_RESPONSE_HEADERS:
            raise BadHttpResponse(f"header {name} is set by the server, not the app")
        if len(value) > MAX_HEADER_VALUE:
            raise BadHttpResponse(f"header {name}: value of {len(value)} characters, at most {MAX_HEADER_VALUE}")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadHttpResponse(f"header {name}: the value holds a control character (CR, LF, NUL...)")
        headers.append((name, value.strip(" \t")))
    return HttpResponse(status, tuple(headers), data[newline + 1 :])


def body_only_response(body: bytes) -> HttpResponse:
    """What a v1 (body-only) app's answer becomes: 200, typed by a look at the bytes."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        kind = "application/octet-stream"
    else:
        try:
            json.loads(text)
            kind = "application/json"
        except (ValueError, RecursionError):
            kind = "text/plain; charset=utf-8"
    return HttpResponse(200, (("content-type", kind),), body)


def status_for(code: ErrorCode | str | None) -> int:
    """The HTTP status of a request's outcome (None: it succeeded)."""
    if code is None:
        return 200
    return _STATUS.get(code, 500)


def public_message(code: ErrorCode | str, message: str) -> str:
    """What a client may read about a failure: the message for request errors, and for a
    fault (trap, bad response, host failure) only its kind: the details are the
    operator's, in the facet's log under the request id."""
    if code in _PUBLIC:
        return message
    return f"the app failed ({code}); its operator can look it up by the request id"


def error_body(code: ErrorCode | str, message: str, request_id: str) -> bytes:
    """The JSON body of an error response: ``{"error": {"code", "message"}, "request_id"}``."""
    payload = {"error": {"code": str(code), "message": public_message(code, message)}, "request_id": request_id}
    return json.dumps(payload, ensure_ascii=True).encode("ascii")
