"""Running the listeners: ``serve`` (both on one event loop in the main thread, stopped by
SIGTERM/SIGINT) and ``ServerThread`` (one app in a background thread with its own loop, for
the console and the control socket).

Sockets are bound here, before uvicorn starts, so a port in use is a plain ``OSError`` for
the caller (uvicorn would ``sys.exit``), port 0 is resolved at once, and a Unix socket gets
mode 0600 before anyone can connect. uvicorn's ``Server.capture_signals`` is replaced by one
handler for both listeners: uvicorn's would re-raise the captured SIGTERM after shutdown
(>= 0.29) and kill the process with status 143 before the supervisor is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import uvicorn
import uvloop

from runtime import Supervisor

from ._admin import AdminApp, ASGIApp
from ._app import PublicApp
from ._limits import Limits, protocol_class

log = logging.getLogger("facets.server")


@dataclass(frozen=True)
class Listen:
    """Where a listener binds: TCP ``host:port`` (port 0: any free port) or a Unix socket ``path``."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str | None = None

    def url(self, port: int | None = None) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}"


def parse_listen(text: str) -> Listen:
    """``HOST:PORT`` (``[::1]:8800`` for IPv6) -> ``Listen``; ``ValueError`` with a clear message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8800), not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host is written in brackets ([::1]:8800), not {text!r}")
    if not host:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8800), not {text!r}")
    return Listen(host, int(port))


def bind(listen: Listen, backlog: int) -> socket.socket:
    """A listening socket for ``listen`` (Unix sockets: mode 0600, a stale file replaced)."""
    if listen.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temp = f"{listen.path}.{os.getpid()}.tmp"
        try:
            _remove_stale_socket(listen.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            # Bound under a temporary name, made owner-only, listening, then renamed into
            # place: nobody else can connect in any instant (no process-wide umask change).
            sock.bind(temp)
            os.chmod(temp, 0o600)
            sock.listen(backlog)
            os.replace(temp, listen.path)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return sock
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: left by a process that died
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another process is listening on it")


def uvicorn_config(app: ASGIApp, limits: Limits) -> uvicorn.Config:
    """uvicorn's Config with every limit it has, and ``GuardedProtocol`` for the rest."""
    return uvicorn.Config(
        app,
        http=protocol_class(limits),
        ws="none",
        lifespan="off",
        interface="asgi3",
        log_config=None,  # the caller's logging stays as it is
        access_log=False,  # one line per request would be a flood under load
        proxy_headers=False,  # no X-Forwarded-* from clients is trusted
        server_header=False,
        limit_concurrency=limits.connections,
        backlog=limits.backlog,
        timeout_keep_alive=limits.keep_alive,  # type: ignore[arg-type]  # call_later takes a float
        # Used by uvicorn's h11 protocol only; GuardedProtocol bounds headers under httptools.
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_graceful_shutdown=limits.drain_timeout,  # type: ignore[arg-type]
    )


def quiet_uvicorn() -> None:
    """uvicorn logs a warning per malformed request or request over the connection cap: a
    hostile client would fill stderr. Its errors (an app's exception) still show."""
    logging.getLogger("uvicorn.error").setLevel(logging.ERROR)


class _Server(uvicorn.Server):
    """uvicorn's Server without its signal handling, telling when it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are handled by serve(), for both listeners, and never re-raised

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._on_started()


def serve(
    sup: Supervisor,
    listen: Listen | None = None,
    admin: Listen | None = None,
    *,
    base_domain: str | None = None,
    limits: Limits | None = None,
    mounts: Mapping[str, ASGIApp] | None = None,
    ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Serve ``sup`` publicly on ``listen`` and the admin app on ``admin`` until SIGTERM or
    SIGINT, in the calling (main) thread.

    A signal stops both listeners accepting, closes idle connections, lets the requests in
    flight finish (each bounded by its facet's timeout, all by ``limits.drain_timeout``),
    waits for their fetch threads, and returns: the caller then closes the supervisor
    (flushing meters and logs) and exits 0. A second SIGINT stops waiting. ``ready`` gets
    the two URLs once both listen. Raises ``OSError`` when a listener cannot bind.
    """
    limits = limits or Limits()
    listen = listen or Listen("127.0.0.1", 8800)
    admin = admin or Listen("127.0.0.1", 8801)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve() handles signals: call it in the main thread (or use ServerThread)")
    quiet_uvicorn()
    sockets = [bind(listen, limits.backlog)]
    try:
        sockets.append(bind(admin, limits.backlog))
    except BaseException:
        sockets[0].close()
        raise
    urls = [listen.url(_port(sockets[0])), admin.url(_port(sockets[1]))]
    public = PublicApp(sup, base_domain=base_domain, limits=limits)
    admin_app = AdminApp(sup, mounts=mounts)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_all([public, admin_app], sockets, limits, lambda: ready(urls) if ready else None))
    finally:
        for sock in sockets:
            sock.close()
        for where in (listen, admin):
            if where.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(where.path)
        public.close()
        admin_app.close()


async def _serve_all(
    apps: list[ASGIApp], sockets: list[socket.socket], limits: Limits, ready: Callable[[], None]
) -> None:
    loop = asyncio.get_running_loop()
    started = 0

    def on_started() -> None:
        nonlocal started
        started += 1
        if started == len(servers):
            ready()

    servers = [_Server(uvicorn_config(app, limits), on_started) for app in apps]

    def stop() -> None:
        for server in servers:
            if server.should_exit:
                server.force_exit = True  # the second signal: stop waiting for the drain
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, sockets, strict=True)]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop_all = [s for s in servers if not s.should_exit]
        for server in stop_all:  # one listener failed or stopped: stop the other too
            server.should_exit = True
        for task in tasks:
            await task  # a failure of either is raised here
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _port(sock: socket.socket) -> int | None:
    return sock.getsockname()[1] if sock.family in (socket.AF_INET, socket.AF_INET6) else None


class ServerThread:
    """An ASGI app served by uvicorn in a background thread with its own event loop.

    ``start()`` returns once the server accepts connections (``port`` is then the bound
    port, also when 0 was asked); ``stop()`` stops accepting, drains the requests in flight
    (``limits.drain_timeout``) and joins the thread. Also a context manager.

    Args:
        app: the ASGI app (``PublicApp``, ``AdminApp``, the control API...).
        listen: a ``Listen`` (TCP host and port, or a Unix socket ``path``).
    """

    def __init__(
        self, app: ASGIApp, listen: Listen | None = None, *, limits: Limits | None = None, name: str = "facets-server"
    ) -> None:
        self.app = app
        self.listen = listen or Listen()
        self.limits = limits or Limits()
        self._name = name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return self.listen.url(self.port)

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("this ServerThread was started already")
        quiet_uvicorn()
        sock = bind(self.listen, self.limits.backlog)
        self.port = _port(sock)
        self._server = _Server(uvicorn_config(self.app, self.limits), self._ready.set)
        self._thread = threading.Thread(target=self._run, args=(sock,), name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()  # set by the server's startup, or by _run when it failed
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"the server on {self.url} failed to start") from self._error
        return self

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by start(), or logged once running
            if self._ready.is_set():
                log.exception("the server on %s failed", self.url)
            self._error = exc
        finally:
            sock.close()
            self._ready.set()
            if self.listen.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.listen.path)

    def stop(self) -> None:
        """Stop accepting, drain, and join the thread (safe to call twice)."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True  # read by uvicorn's main loop every 0.1 s
        self._thread.join()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Listen", "ServerThread", "bind", "parse_listen", "serve", "uvicorn_config"]
