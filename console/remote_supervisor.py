"""RemoteSupervisor: the console's supervisor when another process owns the data directory.

``facets console`` on a directory whose owner serves its control socket (``runtime.owner``,
``console.control_server``) attaches to it instead of opening the directory: the views
read and write through this class, which answers ``host.ConsoleSupervisor`` (the methods
the views call) with the owner's ``/control/rpc`` (``console.remote.ControlClient``), so the
console shows the owner's live meters, quotas and logs, the one truth of the directory.

* Each method is one RPC; results come back as the types ``Supervisor`` returns
  (``control_api.decode``), and an error the owner answers is raised as the same
  ``FacetsError`` subclass (by its code), so the views handle it as they do embedded.
* The owner unreachable (it exited, crashed, closed its socket): every method raises
  ``OwnerUnreachable`` (a ``FacetsError``, code ``io_error``) and ``call`` returns a failed
  ``CallResult``, as ``Supervisor.call`` never raises; ``status`` then says so for the
  console's header. ``check`` (the console's 1 s heartbeat) looks at ``owner.json`` and
  the lock again, asks the owner for an answer (a stopped owner still accepts
  connections), and reattaches to a new owner of the directory.
* ``subscribe_logs``: there is no callback over a request/response socket, so one thread
  polls ``logs(since=...)`` every ``LOG_POLL`` seconds and hands each new batch to the
  subscribers on that thread, as the owner's log writer does to its own.
* ``reader``: a read-only ``FacetReader`` opened here, on the facet's database file. The
  data tab keeps one connection open, pages through it by keyset and asks its
  ``data_version`` every second to see new commits; ``data_version`` only means something
  on one connection kept open (it changes when *another* connection commits), which
  one-shot RPCs (``rows``, ``query``: a new connection each) cannot give, and ``close``
  interrupts a count in progress. Opening the file here is safe: attaching only happens
  on the same machine (the control socket is a Unix socket in the data directory), the
  connection is ``mode=ro`` with ``query_only``, and in WAL the owner never waits for a
  reader.
* The ``:`` bar's lines go whole to ``/control/command`` (``run_line``): the owner runs
  them with its command language and answers the very reply an embedded run gives.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import (
    AppInfo,
    AppVersion,
    BadModule,
    BadRequest,
    CallResult,
    ErrorCode,
    FacetChanges,
    FacetInfo,
    FacetsError,
    HistoryInfo,
    LogRecord,
    NotFound,
    OwnerInfo,
    QuotaError,
    Quotas,
    RestoreInfo,
    SnapshotInfo,
    parse_facet_target,
)
from runtime.apps import precompile
from runtime.storage import FacetReader
from runtime.supervision import HealthInfo
from runtime.toolchain import Progress, is_source

from .commands import CommandError, UsageError, failure, parse
from .remote import ControlClient, RemoteError, owner_client

#: Seconds between two polls of the owner's logs while a view subscribes: the owner's own
#: log writer hands out batches about as often (it lets a batch build up before writing).
LOG_POLL = 0.5
#: Each poll reads again the records stamped up to this many seconds before the previous
#: poll: a request's records reach the log store when the request ends, stamped when they
#: were logged, so a request running at the previous poll (bounded by its timeout quota,
#: 2 s by default) adds older records later. Records already delivered are not repeated.
LOG_OVERLAP = 5.0
#: Records one poll reads at most (the newest): a flood past it shows its newest records.
LOG_POLL_LIMIT = 1000
#: Seconds the heartbeat waits for the owner's answer to ``GET /control/owner`` (answered on
#: its event loop, never behind a command: well under 10 ms here) before saying it does not
#: answer: a stopped (SIGSTOP) or wedged owner still accepts connections (the kernel queues
#: them), so only an answer proves it is there.
PING_TIMEOUT = 2.0

_ERRORS: dict[str, type[FacetsError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.BAD_MODULE: BadModule,
    ErrorCode.BAD_QUOTA: QuotaError,
}


class OwnerUnreachable(FacetsError):
    """The data directory's owner did not answer (gone, or its socket closed)."""

    code = ErrorCode.IO_ERROR


def _raised(error: RemoteError) -> FacetsError:
    """The owner's answered error as the exception the same call raises embedded."""
    try:
        code = ErrorCode(error.code)
    except ValueError:  # a code this console does not know: still a FacetsError
        code = ErrorCode.INTERNAL
    kind = _ERRORS.get(code)
    return kind(error.message) if kind is not None else FacetsError(error.message, code)


def _identity(record: LogRecord) -> tuple[Any, ...]:
    return (record.time, record.app, record.facet, record.request_id, record.level, record.message, record.source)


class RemoteSupervisor:
    """``host.ConsoleSupervisor`` answered by the owner of ``data_dir`` over ``client``.

    Thread-safe as the views need: methods run on the console's worker threads, each RPC
    on its own connection; the client and the status are replaced whole (one assignment).
    """

    def __init__(self, data_dir: Path, client: ControlClient, owner: OwnerInfo, *, readonly: bool = False) -> None:
        self.data_dir = data_dir
        self.readonly = readonly
        self._client = client
        #: The owner attached to (the last one seen, after it went away).
        self.owner = owner
        #: Why the owner does not answer now, or None while it does.
        self.problem: str | None = None
        self._subscribers: list[Callable[[list[LogRecord]], None]] = []
        self._subscribers_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop_polling = threading.Event()

    # -- the connection ------------------------------------------------------------------
    @property
    def status(self) -> str:
        """For the console's header: ``attached to serve pid 4711``, or why it is not."""
        who = f"{self.owner.role} pid {self.owner.pid}"
        return f"attached to {who}" if self.problem is None else f"owner {who} {self.problem}"

    def check(self) -> None:
        """Look at the directory's owner again (the console's heartbeat): follow a new owner
        of the directory, or record that none answers."""
        try:
            info, client = owner_client(self.data_dir)
        except OSError as exc:  # the directory itself is gone or unreadable
            self.problem = f"unreachable ({type(exc).__name__})"
            return
        if client is not None and info is not None:
            self._client, self.owner = client, info
            self.problem = None if client.answers(PING_TIMEOUT) else f"does not answer (no reply in {PING_TIMEOUT:g} s)"
        elif info is None:
            self.problem = "is gone: no process owns the data directory"
        elif info.pid != self.owner.pid:
            self.owner, self.problem = info, "serves no control socket"
        else:
            self.problem = "does not answer on its control socket"

    def _lost(self, exc: OSError) -> OwnerUnreachable:
        self.problem = "does not answer on its control socket"
        return OwnerUnreachable(f"lost the data directory's owner: {type(exc).__name__}: {exc}")

    def _rpc(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self._client.rpc(method, *args, readonly=self.readonly, **kwargs)
        except RemoteError as exc:
            self.problem = None
            raise _raised(exc) from None
        except OSError as exc:  # refused, reset, the socket file gone, an answer cut short
            raise self._lost(exc) from None
        except ValueError as exc:  # an answer that is not JSON: not an owner speaking the API
            raise self._lost(OSError(f"not a control API answer ({type(exc).__name__})")) from None
        self.problem = None
        return result

    def close(self) -> None:
        """Stop polling the owner's logs (the owner itself goes on)."""
        with self._subscribers_lock:
            self._subscribers.clear()
        self._stop_polling.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)

    # -- the command bar -------------------------------------------------------------------
    def run_line(self, line: str, *, readonly: bool = False) -> dict[str, Any] | None:
        """``commands.run_line``, run by the owner: the same reply, or None for a blank line.
        The line is parsed here first, so a usage error never travels and a blank line is
        not a request."""
        try:
            if parse(line) is None:
                return None
        except UsageError as exc:
            return failure(line.strip(), exc)
        try:
            return self._client.command(line, readonly=readonly or self.readonly, cwd=os.getcwd())
        except OSError as exc:
            lost = self._lost(exc)
            return failure(line.strip(), CommandError(lost.message, ErrorCode.IO_ERROR))
        except ValueError as exc:
            lost = self._lost(OSError(f"not a control API answer ({type(exc).__name__})"))
            return failure(line.strip(), CommandError(lost.message, ErrorCode.IO_ERROR))

    # -- apps ----------------------------------------------------------------------------
    def app_list(self) -> list[AppInfo]:
        return self._rpc("app_list")

    def app_versions(self, app: str) -> list[AppVersion]:
        return self._rpc("app_versions", app)

    def load_app(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: Progress | None = None,
        canary: float | str | None = None,
    ) -> AppVersion:
        if is_source(path):  # built and compiled here, with progress; the owner finds the caches warm
            precompile(path, progress=progress)
        # the owner's working directory is not this one: the path goes absolute
        return self._rpc("load_app", os.path.abspath(path), name, canary=canary)

    # -- rollouts --------------------------------------------------------------------------
    def rollout(self, app: str) -> dict[str, Any]:
        return self._rpc("rollout", app)

    def pin(self, target: str, version: int) -> dict[str, Any]:
        return self._rpc("pin", target, version)

    def unpin(self, target: str) -> bool:
        return bool(self._rpc("unpin", target))

    def promote(self, app: str) -> dict[str, Any]:
        return self._rpc("promote", app)

    def rollback(self, app: str, version: int | None = None) -> dict[str, Any]:
        return self._rpc("rollback", app, version)

    # -- supervision and alarms --------------------------------------------------------------
    def health(self, target: str) -> HealthInfo | None:
        return self._rpc("health", target)

    def faulting(self) -> list[HealthInfo]:
        return self._rpc("faulting")

    def reset(self, target: str) -> HealthInfo | None:
        return self._rpc("reset", target)

    def alarm_list(self, target: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        return self._rpc("alarm_list", target, limit=limit)

    # -- history: snapshots, restore, fork, undelete -------------------------------------
    def snapshot(self, target: str, name: str | None = None) -> SnapshotInfo:
        return self._rpc("snapshot", target, name)

    def snapshots(self, target: str) -> list[SnapshotInfo]:
        return self._rpc("snapshots", target)

    def delete_snapshot(self, target: str, name: str) -> None:
        self._rpc("delete_snapshot", target, name)

    def restore(self, target: str, *, snapshot: str | None = None, at: str | float | None = None) -> RestoreInfo:
        return self._rpc("restore", target, snapshot=snapshot, at=at)

    def fork(
        self, target: str, new_target: str, *, snapshot: str | None = None, at: str | float | None = None
    ) -> RestoreInfo:
        return self._rpc("fork", target, new_target, snapshot=snapshot, at=at)

    def undelete(self, target: str) -> RestoreInfo:
        return self._rpc("undelete", target)

    def history(self, target: str) -> HistoryInfo:
        return self._rpc("history", target)

    # -- facets --------------------------------------------------------------------------
    def facet_list(self, app: str | None = None) -> list[FacetInfo]:
        return self._rpc("facet_list", app)

    def facet_info(self, target: str) -> FacetInfo:
        return self._rpc("facet_info", target)

    def facet_changes(self, cursor: float | None = None) -> FacetChanges:
        return self._rpc("facet_changes", cursor)

    def facet_exists(self, target: str) -> bool:
        return bool(self._rpc("facet_exists", target))

    def evict(self, target: str) -> bool:
        return bool(self._rpc("evict", target))

    def delete(self, target: str) -> None:
        self._rpc("delete", target)

    @property
    def warm_count(self) -> int:
        return int(self._rpc("warm_count"))

    # -- requests ------------------------------------------------------------------------
    def call(self, target: str, body: bytes | str = b"") -> CallResult:
        """As ``Supervisor.call``: never raises; an owner that does not answer is a failed
        result (``io_error``)."""
        try:
            return self._rpc("call", target, body)
        except FacetsError as exc:
            return CallResult.failure(exc.code, exc.message)

    # -- quotas --------------------------------------------------------------------------
    def quotas(self, target: str = "*") -> Quotas:
        return self._rpc("quotas", target)

    def explicit_quotas(self, target: str = "*") -> dict[str, Any]:
        return self._rpc("explicit_quotas", target)

    def set_quotas(self, target: str, changes: dict[str, Any] | None = None, **kwargs: Any) -> Quotas:
        return self._rpc("set_quotas", target, {**(changes or {}), **kwargs})

    # -- usage and logs ------------------------------------------------------------------
    def usage(self, target: str | None = None) -> dict[str, Any]:
        return self._rpc("usage", target)

    def series(self, target: str | None, field: str, *, resolution: int = 1, points: int = 60) -> list[float]:
        return self._rpc("series", target, field, resolution=resolution, points=points)

    def bill(
        self, target: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> dict[str, Any]:
        return self._rpc("bill", target, since=since, until=until)

    def logs(
        self,
        target: str | None = None,
        *,
        level: str | None = None,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> list[LogRecord]:
        return self._rpc("logs", target, level=level, limit=limit, since=since, until=until, search=search)

    def subscribe_logs(self, callback: Callable[[list[LogRecord]], None]) -> Callable[[], None]:
        """Hand new log batches to ``callback`` on the polling thread; returns unsubscribe."""
        with self._subscribers_lock:
            self._subscribers.append(callback)
            if self._poller is None or not self._poller.is_alive():
                self._stop_polling.clear()
                self._poller = threading.Thread(
                    target=self._poll_logs, args=(time.time(),), name="facets-remote-logs", daemon=True
                )
                self._poller.start()

        def unsubscribe() -> None:
            with self._subscribers_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _poll_logs(self, subscribed_at: float) -> None:
        """Deliver the records the owner logs from ``subscribed_at`` on, each once, in store order."""
        polled_at: float | None = None  # when the last poll that was answered started
        seen: dict[tuple[Any, ...], float] = {}
        while not self._stop_polling.is_set():
            with self._subscribers_lock:
                subscribers = list(self._subscribers)
            if not subscribers:
                break
            started = time.time()  # the owner stamps records with this machine's clock too
            since = (subscribed_at if polled_at is None else polled_at) - LOG_OVERLAP
            try:
                records = self.logs(since=since, limit=LOG_POLL_LIMIT)
            except FacetsError:  # the owner is away: try again at the next poll, from the same point
                records = None
            if records is not None:
                fresh = [r for r in records if _identity(r) not in seen]
                for record in fresh:
                    seen[_identity(record)] = record.time
                for key in [k for k, stamped in seen.items() if stamped < since]:
                    del seen[key]
                if polled_at is None:  # the first poll: what was logged before is only marked seen
                    fresh = [r for r in fresh if r.time >= subscribed_at]
                if fresh:
                    for subscriber in subscribers:
                        try:
                            subscriber(fresh)
                        except Exception:  # a broken subscriber must not stop the others' logs
                            pass
                polled_at = started
            self._stop_polling.wait(LOG_POLL)
        with self._subscribers_lock:
            if self._poller is threading.current_thread():
                self._poller = None

    # -- browsing ------------------------------------------------------------------------
    def reader(self, target: str) -> FacetReader:
        """A read-only connection, opened here, to the facet's database (the module says why)."""
        app, facet = parse_facet_target(target)  # BadRequest for a bad name: never a path outside
        if not self.facet_exists(target):
            raise NotFound(f"no facet {target}")
        # The owner's layout (runtime.registry.FacetRegistry.db_path); test_attach checks
        # that this is the path the owner's Supervisor.db_path names.
        return FacetReader(str(self.data_dir / "facets" / app / f"{facet}.sqlite3"))

    def query(self, target: str, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        return self._rpc("query", target, sql, params)


def attach(data_dir: Path, *, readonly: bool = False) -> RemoteSupervisor | None:
    """A ``RemoteSupervisor`` on ``data_dir``'s owner when one serves its control socket now."""
    info, client = owner_client(data_dir)
    if client is None or info is None:
        return None
    return RemoteSupervisor(data_dir, client, info, readonly=readonly)
