"""The client side of the control API (``control_api``): how ``facets COMMAND`` and
``facets run`` reach the owner of a data directory instead of opening it themselves.

``open_or_route(data_dir, role=...)`` decides, for one invocation:

* nobody owns the directory: this process opens it (a ``Supervisor``, and owns it);
* the owner serves its control socket: a ``ControlClient`` to send the lines to;
* the owner serves none (a one-shot command, a Python program) or is not listening yet:
  wait up to ``OWNER_WAIT`` seconds for it to serve or to go, polling ``owner.json`` and the
  lock, then refuse (``DataDirBusy``, code ``refused``);
* read-only (``--readonly``): the owner's socket when it serves one (its truth: usage not
  yet flushed included), else a read-only open, which is safe beside any owner: it writes
  nothing and takes no lock.

The client is stdlib ``http.client`` over ``AF_UNIX`` (``UnixHTTPConnection``).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime import DataDirBusy, OwnerInfo, Supervisor, SupervisorSettings, owner_of
from runtime.owner import busy

from .control_api import decode, encode
from .format import dumps

#: Seconds a command waits for an owner without a control socket to serve one or to go: a
#: one-shot ``facets COMMAND`` holds the directory for well under a second (~0.3 s here),
#: an owner starting up serves within about as long; 10 s is generous for both.
OWNER_WAIT = 10.0
#: Between two looks at owner.json and the lock while waiting (s).
POLL = 0.05


class OwnerGone(OSError):
    """The owner closed the connection before the answer was complete."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """``HTTPConnection`` to a Unix socket path."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """Requests to one owner's control socket."""

    def __init__(self, path: str, owner: OwnerInfo | None = None) -> None:
        self.path = path
        self.owner = owner

    def reachable(self) -> bool:
        """Whether the owner accepts a connection on its socket now."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(2.0)
            sock.connect(self.path)
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def answers(self, timeout: float) -> bool:
        """Whether the owner answers ``GET /control/owner`` within ``timeout`` seconds: a
        stopped (SIGSTOP) owner still accepts connections, so ``reachable`` cannot tell."""
        conn = UnixHTTPConnection(self.path, timeout=timeout)
        try:
            conn.request("GET", "/control/owner")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, a broken answer
            return False
        finally:
            conn.close()

    def _post(self, route: str, payload: dict[str, Any]) -> http.client.HTTPResponse:
        conn = UnixHTTPConnection(self.path)  # no timeout: the owner bounds each command (its quotas)
        body = dumps(payload, ensure_ascii=True).encode("ascii")
        conn.request("POST", route, body, {"content-type": "application/json"})
        return conn.getresponse()

    def _json(self, route: str, payload: dict[str, Any]) -> tuple[int, Any]:
        response = self._post(route, payload)
        try:
            raw = response.read()
        except http.client.IncompleteRead as exc:
            raise OwnerGone(f"the owner closed the connection mid-answer: {exc}") from None
        try:
            return response.status, json.loads(raw)
        except ValueError:  # not the control API's JSON (uvicorn's own 503 over its connection cap...)
            raise OwnerGone(f"the owner answered {response.status} without JSON: {raw[:200]!r}") from None

    def command(self, line: str, *, readonly: bool = False, cwd: str | None = None) -> dict[str, Any]:
        """The owner's reply to one command line (the dict the embedded run prints)."""
        status, reply = self._json("/control/command", {"line": line, "readonly": readonly, "cwd": cwd or os.getcwd()})
        if status != 200:
            raise OwnerGone(f"the owner refused the request ({status}): {reply}")
        return dict(reply)

    def script(
        self, lines: list[str], *, fail_fast: bool = False, readonly: bool = False, cwd: str | None = None
    ) -> Iterator[str | int]:
        """The script's JSON Lines as the owner sends them (each a ``str`` with its newline),
        then its exit status (an ``int``). ``OwnerGone`` when the stream stops short."""
        payload = {"lines": lines, "fail_fast": fail_fast, "readonly": readonly, "cwd": cwd or os.getcwd()}
        response = self._post("/control/script", payload)
        if response.status != 200:
            raise OwnerGone(f"the owner refused the script ({response.status}): {response.read()[:200]!r}")
        while True:
            try:
                raw = response.readline()
            except http.client.IncompleteRead:
                raw = b""
            if not raw.endswith(b"\n"):
                raise OwnerGone("the owner closed the connection before the script finished")
            line = raw.decode("utf-8")
            if line.startswith('{"exit_status": '):
                yield int(json.loads(line)["exit_status"])
                return
            yield line

    def rpc(self, method: str, *args: Any, readonly: bool = False, **kwargs: Any) -> Any:
        """Call one Supervisor method on the owner (``control_api.RPC_METHODS``); its result
        decoded as the method returns it. A failure raises ``RemoteError`` with its code.
        Paths must be absolute: the owner's directory is not this process's."""
        payload = {"method": method, "args": encode(list(args)), "kwargs": encode(kwargs), "readonly": readonly}
        status, answer = self._json("/control/rpc", payload)
        if status == 200 and answer.get("ok"):
            return decode(method, answer["result"])
        error = answer.get("error", {})
        raise RemoteError(str(error.get("message", answer)), str(error.get("code", "internal")), status)


class RemoteError(Exception):
    """An RPC the owner answered with an error: ``code`` is an ``ErrorCode`` value."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def owner_client(data_dir: Path) -> tuple[OwnerInfo | None, ControlClient | None]:
    """The owner of ``data_dir`` and a client to its socket when it listens on one now."""
    info = owner_of(data_dir)
    if info is None or info.control is None:
        return info, None
    client = ControlClient(info.control, info)
    return info, client if client.reachable() else None


def open_or_route(
    data_dir: Path, *, role: str, readonly: bool = False, wait: float | None = None, durability: str | None = None
) -> Supervisor | ControlClient:
    """This invocation's way to the data directory (see the module docstring): an opened
    ``Supervisor`` (the caller closes it) or a ``ControlClient`` to the owner. Raises
    ``DataDirBusy`` when the owner serves no socket for ``wait`` seconds, and what opening
    raises (``NotFound`` read-only without a directory, a damaged control database).
    ``wait`` defaults to ``OWNER_WAIT``. ``durability`` applies to a supervisor opened here
    (an owner keeps its own)."""
    wait = OWNER_WAIT if wait is None else wait
    deadline = time.monotonic() + wait
    while True:
        info, client = owner_client(data_dir)
        if client is not None:
            return client
        if info is None or readonly:
            try:
                durability = durability or SupervisorSettings.durability
                return Supervisor(data_dir, readonly=readonly, role=role, durability=durability)
            except DataDirBusy as exc:  # taken between our look and our open
                info = exc.owner
        if time.monotonic() >= deadline:
            raise busy(data_dir, info, waited=wait)
        time.sleep(POLL)
