"""ConsoleHost: what screens and the palette may read from the app that hosts them.

A structural type, so that they need not import ``app.py`` (which imports them): the
screens, the palette and the app formed one 9-module import cycle. What they ask the app
to *do* travels as messages (``console/messages.py``) or actions, handled by the app.

``ConsoleSupervisor`` is the part of ``Supervisor`` the views use: an embedded
``Supervisor`` has it, and so has ``remote_supervisor.RemoteSupervisor``, which answers it
from the data directory's owner when the console attaches to one. A view that calls a
method not listed here would not work attached: mypy says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from runtime import (
    AppInfo,
    AppVersion,
    CallResult,
    FacetChanges,
    FacetInfo,
    HistoryInfo,
    LogRecord,
    Quotas,
    RestoreInfo,
    SnapshotInfo,
)
from runtime.storage import FacetReader
from runtime.supervision import HealthInfo
from runtime.toolchain import Progress


class ConsoleSupervisor(Protocol):
    """The ``Supervisor`` methods the console's views call (same signatures)."""

    data_dir: Path

    @property
    def warm_count(self) -> int: ...

    def app_list(self) -> list[AppInfo]: ...

    def app_versions(self, app: str) -> list[AppVersion]: ...

    def load_app(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: Progress | None = None,
        canary: float | str | None = None,
    ) -> AppVersion: ...

    def rollout(self, app: str) -> dict[str, Any]: ...

    def health(self, target: str) -> HealthInfo | None: ...

    def faulting(self) -> list[HealthInfo]: ...

    def reset(self, target: str) -> HealthInfo | None: ...

    def alarm_list(self, target: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]: ...

    def snapshot(self, target: str, name: str | None = None) -> SnapshotInfo: ...

    def snapshots(self, target: str) -> list[SnapshotInfo]: ...

    def delete_snapshot(self, target: str, name: str) -> None: ...

    def restore(self, target: str, *, snapshot: str | None = None, at: str | float | None = None) -> RestoreInfo: ...

    def fork(
        self, target: str, new_target: str, *, snapshot: str | None = None, at: str | float | None = None
    ) -> RestoreInfo: ...

    def undelete(self, target: str) -> RestoreInfo: ...

    def history(self, target: str) -> HistoryInfo: ...

    def facet_list(self, app: str | None = None) -> list[FacetInfo]: ...

    def facet_info(self, target: str) -> FacetInfo: ...

    def facet_changes(self, cursor: float | None = None) -> FacetChanges: ...

    def facet_exists(self, target: str) -> bool: ...

    def evict(self, target: str) -> bool: ...

    def delete(self, target: str) -> None: ...

    def call(self, target: str, body: bytes | str = b"") -> CallResult: ...

    def quotas(self, target: str = "*") -> Quotas: ...

    def explicit_quotas(self, target: str = "*") -> dict[str, Any]: ...

    def set_quotas(self, target: str, changes: dict[str, Any] | None = None, **kwargs: Any) -> Quotas: ...

    def usage(self, target: str | None = None) -> dict[str, Any]: ...

    def series(self, target: str | None, field: str, *, resolution: int = 1, points: int = 60) -> list[float]: ...

    def bill(
        self, target: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> dict[str, Any]: ...

    def logs(
        self,
        target: str | None = None,
        *,
        level: str | None = None,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
    ) -> list[LogRecord]: ...

    def subscribe_logs(self, callback: Callable[[list[LogRecord]], None]) -> Callable[[], None]: ...

    def reader(self, target: str) -> FacetReader: ...

    def query(self, target: str, sql: str, params: list[Any] | None = None) -> dict[str, Any]: ...


class ConsoleHost(Protocol):
    sup: ConsoleSupervisor
    """The supervisor every view reads from: embedded, or the owner's (attached)."""
    readonly: bool
    """Hide and refuse every write."""
    command_history: list[str]
    """The command bar's history, shared by the bars of every view."""

    def traffic_status(self) -> str:
        """One line on the load generator, e.g. ``traffic on · 1,204 sent``."""
        ...

    def ingress_status(self) -> str:
        """One line on the console's HTTP listener (``--serve``), e.g. ``serving
        http://127.0.0.1:8800/ · curl http://127.0.0.1:8800/counter/alice``; "" when none."""
        ...
