"""The owner serves its control API (``control_api``) on a Unix socket: ``DATA/control.sock``.

``serve_control(sup)`` starts it for a supervisor that owns its data directory and records
the socket's path in ``owner.json`` (``runtime.owner``), where ``remote`` finds it. A path
longer than ``MAX_SOCKET_PATH`` bytes cannot be a socket's address (``sun_path`` holds 108
bytes on Linux, 104 on macOS): the socket then lives in a private directory under the
system's temporary directory, and ``owner.json`` says where.

The socket is bound under a temporary name, made owner-only (0600), listened on, and only
then renamed into place: no other user can connect to it in any instant, and a client that
finds the path finds a listening socket.

PRIVATE RUNNER, TO BE REPLACED: ``_UvicornThread`` runs uvicorn in a background thread with
its own event loop until ``server.ServerThread`` (helper H1, branch h1-server) lands on main;
the lead unifies them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from runtime import Supervisor

from .control_api import ControlAPI

SOCKET_NAME = "control.sock"
#: Longest socket path used in place (bytes): under macOS's 104 and Linux's 108 with a margin.
MAX_SOCKET_PATH = 100
#: Seconds ``close`` gives requests in flight (a command runs at most its timeout quota, 2 s
#: by default); a script still running past it stops at its next line.
GRACE = 5
#: Seconds uvicorn may take to start serving (it takes ~10 ms here).
STARTUP = 10.0


def socket_path(data_dir: Path) -> tuple[Path, Path | None]:
    """Where the control socket goes, and the private directory made for it (None: in place)."""
    path = data_dir.resolve() / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path, None
    private = Path(tempfile.mkdtemp(prefix="facets-"))  # 0700, ours
    return private / SOCKET_NAME, private


def bind_unix(path: Path) -> socket.socket:
    """A listening socket at ``path``, owner-only, put in place by rename (see the module)."""
    with contextlib.suppress(FileNotFoundError):  # a crashed owner's socket: we own the directory now
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            path.unlink()
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(temp))
        os.chmod(temp, 0o600)
        sock.listen(128)
        os.replace(temp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return sock


class _UvicornThread:
    """uvicorn serving ``app`` on ``sock`` in a daemon thread with its own event loop.
    PRIVATE: replaced by ``server.ServerThread`` once it exists (see the module docstring)."""

    def __init__(self, app: ControlAPI, sock: socket.socket) -> None:
        config = uvicorn.Config(
            app,
            http="httptools",
            loop="asyncio",
            lifespan="off",
            log_config=None,  # never print to the owner's stdout (``facets run`` prints JSON Lines there)
            access_log=False,
            timeout_graceful_shutdown=GRACE,
            limit_concurrency=256,
        )
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="facets-control", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self) -> None:
        """Start serving; raise ``OSError`` when uvicorn does not start within ``STARTUP`` s
        (a client would otherwise wait forever in the socket's backlog)."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP
        while not self._server.started:  # uvicorn offers a flag, no event
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError("the control API did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(GRACE + 5)
        self._sock.close()


class ControlServer:
    """The control API of ``sup`` on its Unix socket, until ``close``."""

    def __init__(self, sup: Supervisor, *, readonly: bool = False) -> None:
        self.sup = sup
        self.path, self._private = socket_path(sup.data_dir)
        self.api = ControlAPI(sup, readonly=readonly)
        try:
            self._runner = _UvicornThread(self.api, bind_unix(self.path))
            self._runner.start()
        except BaseException:
            self._remove()
            raise
        if sup.owner is not None:
            sup.owner.publish(control=str(self.path))

    def close(self) -> None:
        if self.sup.owner is not None and self.sup.owner.held:
            self.sup.owner.publish(control=None)  # first: no new client is sent here
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._runner.stop()
        self._remove()

    def _remove(self) -> None:
        self.api.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_control(sup: Supervisor, *, readonly: bool = False) -> ControlServer | None:
    """Serve ``sup``'s control API if it owns its data directory (None: it does not)."""
    if sup.owner is None:
        return None
    try:
        return ControlServer(sup, readonly=readonly)
    except OSError as exc:  # no socket here (a filesystem without them...): serve nothing, say why
        print(
            f"facets: not serving the control socket ({type(exc).__name__}: {exc}); other commands on "
            "this data directory will be refused while this one runs",
            file=sys.stderr,
        )
        return None
