"""Facets' HTTP front door: the supervisor behind uvicorn (httptools, uvloop).

    from runtime import Supervisor
    from server import Listen, serve
    with Supervisor("data") as sup:
        serve(sup, Listen("127.0.0.1", 8800), Listen("127.0.0.1", 8801))  # until SIGTERM

* ``PublicApp``: ``/{app}/{facet}[/{rest}]`` (or ``{facet}.{app}.BASE_DOMAIN``) ->
  ``Supervisor.fetch``; every response has ``x-request-id`` and every error is the JSON
  body ``{"error": {"code", "message"}, "request_id"}``.
* ``AdminApp``: ``/metrics``, ``/healthz`` and mounted sub-apps (the control API, behind
  ``RequireToken``), for a separate listener; the public app has no route to them.
* ``Limits``: bounds on hostile clients (connections, header count, size and read time,
  body chunk time, keep-alive, drain), enforced by uvicorn's knobs and ``GuardedProtocol``.
* ``serve`` runs both listeners on one event loop in the main thread until SIGTERM/SIGINT,
  then drains and returns; ``ServerThread`` runs one app in a background thread.

Thread rules:

* The event loop never runs guest code or SQLite. It parses addresses, reads bodies, counts
  requests in flight and writes answers; it reads only in-memory supervisor state (the
  effective quotas, a dict lookup).
* Every ``sup.fetch`` runs on ``PublicApp``'s own ThreadPoolExecutor, sized to the
  connection cap (``Limits.connections``): a thread blocked at a busy facet's gate costs
  no CPU, and uvicorn runs one request per connection at a time, so no fetch ever waits for
  a thread. A runaway facet may only hold its own gate: the loop caps each facet's requests
  in flight at its ``queue`` quota + 1 and answers 503 ``overloaded`` with ``Retry-After``
  beyond that, without submitting.
* The admin routes read the supervisor on a 2-thread pool of their own.
* ``serve`` must run in the main thread (it installs the signal handlers); a
  ``ServerThread`` has its own thread and loop, and takes no signals.

This package imports ``runtime`` only (never ``console``, never Textual).
"""

from ._admin import AdminApp, RequireToken
from ._app import PublicApp
from ._lifecycle import Listen, ServerThread, parse_listen, serve
from ._limits import GuardedProtocol, Limits
from ._responses import new_request_id

__all__ = [
    "AdminApp",
    "GuardedProtocol",
    "Limits",
    "Listen",
    "PublicApp",
    "RequireToken",
    "ServerThread",
    "new_request_id",
    "parse_listen",
    "serve",
]
