"""The admin ASGI app, for the operator's listener only: ``/metrics`` (Prometheus text),
``/healthz`` (JSON), and sub-apps mounted by the caller under their prefixes (the control
API under ``/control``). The public app has no route to any of these.

Thread rules: the handlers read the supervisor (``prometheus``, the facet counts), which
takes its locks and may read SQLite, so they run on a small pool of their own, never on
the event loop, and never behind the public listener's fetch threads.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runtime import ErrorCode, Supervisor

from ._app import Receive, Scope, Send
from ._responses import NOSNIFF, new_request_id, send_error

log = logging.getLogger("facets.server")

ASGIApp = Any  # an ASGI 3 callable: (scope, receive, send) -> awaitable
PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class AdminApp:
    """The admin listener's ASGI app.

    Args:
        sup: the supervisor it reports on.
        mounts: ``{prefix: asgi_app}``; a request whose path is the prefix or below it
            (``/control``, ``/control/...``) goes to that app, with the prefix moved from
            ``path`` to ``root_path`` (the ASGI convention for a mounted app).
    """

    def __init__(self, sup: Supervisor, *, mounts: Mapping[str, ASGIApp] | None = None) -> None:
        self._sup = sup
        self._started = time.monotonic()
        self._mounts = {prefix.rstrip("/"): app for prefix, app in (mounts or {}).items()}
        for prefix in self._mounts:
            if not prefix.startswith("/") or prefix in ("", "/metrics", "/healthz"):
                raise ValueError(f"bad mount prefix {prefix!r}: it starts with / and is not an admin route")
        # Two threads: a scrape and a health check at once; the pool only serves these two
        # routes, so a slow scrape never waits behind requests to facets.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="facets-admin")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        for prefix, app in self._mounts.items():
            if path == prefix or path.startswith(prefix + "/"):
                child = dict(scope, root_path=scope.get("root_path", "") + prefix, path=path[len(prefix) :] or "/")
                await app(child, receive, send)
                return
        if path not in ("/metrics", "/healthz"):
            await send_error(send, 404, ErrorCode.NOT_FOUND, f"no admin route {path!r}: /metrics, /healthz")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, 405, ErrorCode.BAD_REQUEST, f"{path} answers GET only")
            return
        loop = asyncio.get_running_loop()
        try:
            if path == "/metrics":
                body = (await loop.run_in_executor(self._pool, self._sup.prometheus)).encode()
                content_type = PROMETHEUS_TYPE
            else:
                body = json.dumps(await loop.run_in_executor(self._pool, self._health)).encode()
                content_type = b"application/json"
        except Exception:  # an operator endpoint reports a failure, it does not crash the loop
            log.exception("admin %s failed", path)
            await send_error(send, 500, ErrorCode.INTERNAL, "internal error")
            return
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", new_request_id().encode()),
            (b"cache-control", b"no-store"),
            NOSNIFF,
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _health(self) -> dict[str, Any]:
        sup = self._sup
        return {
            "ok": True,
            "facets": sum(app.facets for app in sup.app_list()),
            "warm": sup.warm_count,
            "uptime": round(time.monotonic() - self._started, 3),
        }


class RequireToken:
    """``app`` behind a bearer token: a request without ``authorization: Bearer TOKEN``
    gets 401 and never reaches it. The admin listener is TCP, so on a shared machine any
    local user can connect to it; the control API runs operator commands (load a module,
    export a database to a path), so over TCP it asks for the token that only the data
    directory's owner can read."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if len(token) < 16:
            raise ValueError("a bearer token of at least 16 characters")
        self._app = app
        self._expected = b"Bearer " + token.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
            if not hmac.compare_digest(given, self._expected):
                await send_error(send, 401, ErrorCode.REFUSED, "the control API needs its bearer token")
                return
        await self._app(scope, receive, send)
