"""The result and info types of the runtime's interface, in one place so that any module
(the policy, the console) can name them without importing the machinery that makes them.

``CallResult`` and ``Usage`` describe one request; ``FacetInfo``, ``FacetChanges`` and
``AppInfo`` are what the supervisor lists. All are plain data: no locks, no threads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode
from .http import HttpResponse

if TYPE_CHECKING:
    from .apps import AppVersion


@dataclass(slots=True)
class Usage:
    """What one request used (see the module docstring for what each field counts)."""

    fuel: int = 0
    wall_ms: float = 0.0
    rows_read: int = 0
    rows_written: int = 0
    sql_calls: int = 0
    log_bytes: int = 0
    logs_truncated: int = 0
    cold_start: bool = False
    memory: int = 0
    #: How many requests shared this request's COMMIT (1: a transaction of its own).
    commit_group: int = 1

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class CallResult:
    """The outcome of one request.

    Attributes:
        ok: True when the guest answered and its transaction committed.
        response: the guest's response bytes (empty on failure).
        error: a stable ``ErrorCode`` (a ``StrEnum``: it prints and serialises as its
            string), or None when ok.
        message: a human explanation of the error ("" when ok).
        usage: what the request used.
        request_id: identifies the request in logs.
        http: the response for the wire of an ok ``Supervisor.fetch`` (else None).
        status: the HTTP status a ``fetch`` was counted with, failures included (0 for ``call``).
        retry_after: for a refusal that will pass (``backoff``), the seconds until it may;
            what an HTTP server answers as ``Retry-After`` (0: not said).
        version: the app version that ran the request (0: it reached no instance).
    """

    ok: bool
    response: bytes = b""
    error: ErrorCode | None = None
    message: str = ""
    usage: Usage = field(default_factory=Usage)
    request_id: str = ""
    http: HttpResponse | None = None
    status: int = 0
    retry_after: float = 0.0
    version: int = 0

    @classmethod
    def failure(cls, code: ErrorCode, message: str, request_id: str = "", usage: Usage | None = None) -> CallResult:
        return cls(ok=False, error=ErrorCode(code), message=message, request_id=request_id, usage=usage or Usage())


@dataclass(frozen=True)
class FacetInfo:
    """A facet as listed.

    Attributes:
        state: cold, warm, busy or failed; or backoff, quarantined (``runtime.supervision``).
        version: the app version its warm instance runs (None when cold).
        assigned: the version its next request runs (``runtime.rollout``: pins, canary).
        retry_at: in backoff, when a request may probe again (epoch seconds).
        faults: consecutive faults so far (0: healthy).
        alarm_at: its pending alarm (ms since the epoch), or None.
        pinned: the facet is pinned to its version on its own (``pin APP/FACET VERSION``).
    """

    app: str
    name: str
    state: str
    created_at: float
    usage: dict[str, Any]
    version: int | None = None
    assigned: int | None = None
    retry_at: float | None = None
    faults: int = 0
    alarm_at: int | None = None
    pinned: bool = False

    @property
    def target(self) -> str:
        return f"{self.app}/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "name": self.name,
            "state": self.state,
            "version": self.version,
            "assigned": self.assigned,
            "retry_at": self.retry_at,
            "faults": self.faults,
            "alarm_at": self.alarm_at,
            "pinned": self.pinned,
            "created_at": self.created_at,
            "usage": self.usage,
        }


@dataclass(frozen=True)
class FacetChanges:
    """The facet list's changes since an earlier ``Supervisor.facet_changes`` call.

    Attributes:
        cursor: pass it to the next call.
        complete: ``facets`` is every facet (the first call, a quota change, or the
            last call too long ago); else it is only the facets that changed.
        facets: the facets, as ``facet_list`` lists them.
        removed: targets deleted since (a target can also be in ``facets`` if it was
            created again: apply removals first).
    """

    cursor: float
    complete: bool
    facets: list[FacetInfo]
    removed: list[str]


@dataclass(frozen=True)
class AppInfo:
    """An app as listed: ``version`` is its latest loaded; ``active`` the one its facets run
    (unless pinned on their own), ``canary`` and ``canary_percent`` a staged canary."""

    name: str
    version: AppVersion
    versions: int
    facets: int
    active: int = 0
    pinned: bool = False
    canary: int | None = None
    canary_percent: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version.version,
            "active": self.active,
            "pinned": self.pinned,
            "canary": self.canary,
            "canary_percent": self.canary_percent,
            "versions": self.versions,
            "facets": self.facets,
            "sha256": self.version.sha256,
            "exports": list(self.version.exports),
            "imports": list(self.version.imports),
        }


@dataclass(frozen=True)
class SnapshotInfo:
    """A named, consistent copy of a facet's database (``runtime.history``).

    Attributes:
        reason: ``manual`` (``snapshot``) or ``before-restore`` (taken by a restore, so
            that the restore can itself be undone).
    """

    name: str
    created_at: float
    size: int
    reason: str = "manual"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HistoryInfo:
    """What can be got back of one facet (``Supervisor.history``).

    Attributes:
        window_start: the oldest moment a point-in-time restore reaches (epoch seconds),
            or None before anything is archived.
        window_end: the newest archived commit.
        archive_bytes: the WAL archive on disk (bases and logs), snapshots not included.
        retention_s: how long history is kept (the ``history_ms`` quota).
        deleted: the facet was deleted and its history kept: ``undelete`` brings it back.
    """

    target: str
    window_start: float | None
    window_end: float | None
    archive_bytes: int
    snapshot_bytes: int
    retention_s: float
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["snapshots"] = [s.as_dict() for s in self.snapshots]
        return out


@dataclass(frozen=True)
class RestoreInfo:
    """The outcome of a restore, a fork or an undelete.

    Attributes:
        source: what the data came from: ``snapshot NAME``, a moment (ISO 8601), or
            ``current data``.
        restored_to: the time of the last commit the data includes (epoch seconds), when
            it came from the archive.
        undo_snapshot: the snapshot a restore took of the state it replaced.
    """

    target: str
    source: str
    restored_to: float | None
    undo_snapshot: str | None
    size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
