"""Ingress: the public HTTP listener run inside the console's process (``facets console --serve``).

The same front door as ``facets serve`` (``server.PublicApp`` on uvicorn), in a background
thread (``server.ServerThread``) beside the console's event loop, so a newcomer who runs
``make run`` can ``curl`` a sample app at once. It never stops the console from starting:
a port in use (or any other bind failure) is reported in ``status`` and the console runs
without ingress. ``stop`` drains the requests in flight and must run before the supervisor
closes (the console's exit does it, then ``run_console`` closes the supervisor).
"""

from __future__ import annotations

import errno
import threading

from runtime import FacetsError, Supervisor, neutralize
from server import Limits, Listen, PublicApp, ServerThread

#: The facet the curl hint names when it exists: a sample app that answers a plain GET.
SAMPLE_TARGET = "counter/alice"
#: Seconds the console's exit waits for requests in flight: each is bounded by its facet's
#: timeout quota (2 s by default), so 5 s lets them finish without making ``q`` feel stuck
#: (``facets serve`` waits up to ``Limits.drain_timeout``, 30 s).
DRAIN_SECONDS = 5.0


def address(listen: Listen, port: int | None = None) -> str:
    """``127.0.0.1:8800`` (``[::1]:8800`` for IPv6): the listener without its scheme."""
    return listen.url(port).removeprefix("http://")


class Ingress:
    """The public listener of ``sup`` on ``listen``, from ``start`` until ``stop``.

    ``start`` and ``stop`` may run on different threads (a console worker starts it, the
    app's exit stops it): a lock orders them, and a ``stop`` before ``start`` finished waits
    for it and then stops what it started.
    """

    def __init__(self, sup: Supervisor, listen: Listen) -> None:
        self._sup = sup
        self.listen = listen
        self._lock = threading.Lock()
        self._server: ServerThread | None = None
        self._app: PublicApp | None = None
        self._stopped = False
        #: The base URL once serving (``http://127.0.0.1:8800``), else None.
        self.url: str | None = None
        #: One line for the console's header: the URL and a curl to try, or why not serving.
        self.status = f"ingress: starting on {address(listen)}"

    def start(self) -> None:
        """Bind and serve; never raises for a listener that cannot start (``status`` says why)."""
        with self._lock:
            if self._stopped or self._server is not None:
                return
            app = PublicApp(self._sup, limits=Limits(drain_timeout=DRAIN_SECONDS))
            server = ServerThread(app, self.listen, name="facets-ingress")
            try:
                server.start()
            except OSError as exc:  # bound before uvicorn starts: the OS's reason, by errno
                app.close()
                reason = "in use" if exc.errno == errno.EADDRINUSE else f"not served ({exc.strerror or exc})"
                self.status = f"ingress: {address(self.listen)} {reason}"
                return
            except RuntimeError:  # uvicorn failed after the bind (ServerThread says so by type)
                app.close()
                self.status = f"ingress: {address(self.listen)} failed to start"
                return
            self._server, self._app = server, app
            self.url = server.url
            self.status = f"serving {self.url}/ · curl {self.url}/{self._sample()}"
            self._publish(self.url)

    def _sample(self) -> str:
        """What to curl: ``counter/alice`` (a sample app's seeded facet), else the first facet,
        else the address pattern."""
        try:
            if self._sup.facet_exists(SAMPLE_TARGET):
                return SAMPLE_TARGET
            facets = self._sup.facet_list()
        except FacetsError:  # a hint only: a failing listing must not stop serving
            return "APP/FACET"
        # a facet name is guest-influenced text on its way to a terminal: neutralized
        return neutralize(facets[0].target) if facets else "APP/FACET"

    def _publish(self, url: str | None) -> None:
        """Say in ``owner.json`` where the owner serves HTTP (an attached console shows it)."""
        owner = self._sup.owner
        if owner is not None and owner.held:
            try:
                owner.publish(public_url=url)
            except OSError:  # the note is advisory: serving goes on without it
                pass

    def stop(self) -> None:
        """Stop accepting, let the requests in flight finish, release the port (idempotent)."""
        with self._lock:
            self._stopped = True
            server, app = self._server, self._app
            self._server = self._app = None
            if server is None or app is None:
                return
            self._publish(None)  # first: nobody is sent to a listener about to close
            server.stop()
            app.close()
            self.url = None
            self.status = "ingress stopped"
