"""The owner serves its control API (``control_api``) on a Unix socket: ``DATA/control.sock``.

``serve_control(sup)`` starts it for a supervisor that owns its data directory and records
the socket's path in ``owner.json`` (``runtime.owner``), where ``remote`` finds it. A path
longer than ``MAX_SOCKET_PATH`` bytes cannot be a socket's address (``sun_path`` holds 108
bytes on Linux, 104 on macOS): the socket then lives in a private directory under the
system's temporary directory, and ``owner.json`` says where.

The socket is bound under a temporary name, made owner-only (0600), listened on, and only
then renamed into place: no other user can connect to it in any instant, and a client that
finds the path finds a listening socket.

It runs on a ``server.ServerThread`` (its own thread and event loop), never on the
console's or the front door's loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from runtime import Supervisor

from .control_api import ControlAPI

SOCKET_NAME = "control.sock"
TOKEN_NAME = "admin.token"
#: Longest socket path used in place (bytes): under macOS's 104 and Linux's 108 with a margin.
MAX_SOCKET_PATH = 100
#: Seconds ``close`` gives requests in flight (a command runs at most its timeout quota, 2 s
#: by default); a script still running past it stops at its next line.
GRACE = 5


def admin_token(data_dir: Path) -> str:
    """The bearer token of the control API on the admin listener (``server.RequireToken``):
    ``DATA/admin.token``, made once, readable by its owner only (0600)."""
    path = data_dir / TOKEN_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text("ascii").strip()
        if len(token) >= 32:
            return token
        path.unlink()  # empty or cut short (a crash while writing it): make a new one
        return admin_token(data_dir)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
        out.flush()
        os.fsync(out.fileno())
    return token


def socket_path(data_dir: Path) -> tuple[Path, Path | None]:
    """Where the control socket goes, and the private directory made for it (None: in place)."""
    path = data_dir.resolve() / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path, None
    private = Path(tempfile.mkdtemp(prefix="facets-"))  # 0700, ours
    return private / SOCKET_NAME, private


class ControlServer:
    """The control API of ``sup`` on its Unix socket, until ``close``."""

    def __init__(self, sup: Supervisor, *, readonly: bool = False) -> None:
        self.sup = sup
        self.path, self._private = socket_path(sup.data_dir)
        self.api = ControlAPI(sup, readonly=readonly)
        try:
            # At most 256 operator connections (each command runs on the API's own pool).
            # Imported here: every `facets COMMAND` imports this module, and only an owner
            # that serves needs uvicorn.
            from server import Limits, Listen, ServerThread

            limits = Limits(connections=256, drain_timeout=GRACE)
            self._runner = ServerThread(self.api, Listen(path=str(self.path)), limits=limits, name="facets-control")
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
