"""What the supervisor reports about its apps and facets: listed rows and what changed
since the last listing, usage, time series, bills, Prometheus text and stored logs.
Reads only: meters in memory, the control database, the registry, residency.

Thread-safety: no lock of its own. ``Meters`` and ``ControlDB`` lock inside; the
registry's keys and counts, residency's memory figures and changes are copied under
their locks (one at a time: none is held while taking another). Runs on
the caller's thread (the console's workers, the CLI, an HTTP handler).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .abi import is_valid_name
from .billing import PriceSheet, compute_bill, prometheus_text
from .control import ControlDB
from .errors import BadRequest, NotFound
from .logs import LEVEL_RANK, LogRecord, LogSink
from .metering import RESOLUTIONS, SERIES_FIELDS, Meters
from .registry import FacetRegistry, parse_facet_target
from .types import AppInfo, FacetChanges, FacetInfo

if TYPE_CHECKING:
    from .alarms import AlarmScheduler
    from .apps import AppStore
    from .residency import Residency
    from .rollout import Rollouts


class Reports:
    def __init__(
        self,
        *,
        meters: Meters,
        control: ControlDB,
        apps: AppStore,
        registry: FacetRegistry,
        residency: Residency,
        log_sink: LogSink,
        prices: PriceSheet,
        flush_usage: Callable[[], None],
        rollouts: Rollouts,
        alarms: AlarmScheduler,
    ) -> None:
        self._rollouts = rollouts
        self._alarms = alarms
        self._meters = meters
        self._control = control
        self._apps = apps
        self._registry = registry
        self._residency = residency
        self._log_sink = log_sink
        self.prices = prices
        self._flush_usage = flush_usage

    def app_list(self) -> list[AppInfo]:
        counts = self._registry.app_counts()
        apps = self._apps
        infos = []
        for name in apps.names():
            rollout = self._rollouts.get(name)
            infos.append(
                AppInfo(
                    name=name,
                    version=apps.current(name),
                    versions=len(apps.versions(name)),
                    facets=counts.get(name, 0),
                    active=self._rollouts.active(name),
                    pinned=rollout.pinned,
                    canary=rollout.canary,
                    canary_percent=rollout.canary_percent if rollout.canary is not None else None,
                )
            )
        return infos

    def facet_list(self, app: str | None = None) -> list[FacetInfo]:
        if app is not None and not self._apps.has(app):
            raise NotFound(f"no app named {app!r}")
        return self.facet_infos(self._registry.listed(app))

    def facet_changes(self, cursor: float | None = None) -> FacetChanges:
        now, complete, changed, removed = self._residency.changes_since(cursor)
        if complete:
            return FacetChanges(now, True, self.facet_list(), [])
        return FacetChanges(now, False, self.facet_infos(changed), [f"{app}/{facet}" for app, facet in removed])

    def facet_infos(self, keys: list[tuple[str, str]]) -> list[FacetInfo]:
        """Listed rows of ``keys`` that still exist (one deleted meanwhile is left out)."""
        infos = []
        for key in keys:
            created_at = self._registry.created.get(key)
            if created_at is None:
                continue
            slot = self._registry.slots.get(key)
            usage = self._meters.snapshot(*key)
            usage["memory"] = slot.memory_bytes() if slot is not None else 0
            health = slot.health if slot is not None else None
            assigned = self._rollouts.version_for(*key)
            if slot is not None:
                assigned = slot.runs_version(assigned)
            infos.append(
                FacetInfo(
                    app=key[0],
                    name=key[1],
                    state=slot.state if slot else "cold",
                    created_at=created_at,
                    usage=usage,
                    version=slot.guest_version if slot is not None and slot.guest is not None else None,
                    assigned=assigned,
                    retry_at=health.retry_at if health is not None and health.state == "backoff" else None,
                    faults=health.faults if health is not None else 0,
                    alarm_at=self._alarms.get(*key),
                    pinned=self._rollouts.pin_of(*key) is not None,
                )
            )
        return infos

    def usage(self, target: str | None = None) -> dict[str, Any]:
        if not target or target == "*":
            snap = self._meters.snapshot()
            snap["memory"] = self._residency.memory_of(None)
            return snap
        if "/" in target:
            app, facet = parse_facet_target(target)
            if (app, facet) not in self._registry.created:
                raise NotFound(f"no facet {target}")
            snap = self._meters.snapshot(app, facet)
            slot = self._registry.slots.get((app, facet))
            if slot is not None:
                snap["memory"] = slot.memory_bytes()
            return snap
        if not self._apps.has(target):
            raise NotFound(f"no app named {target!r}")
        snap = self._meters.snapshot(target)
        snap["memory"] = self._residency.memory_of(target)
        return snap

    def series(self, target: str | None, field: str, *, resolution: int = 1, points: int = 60) -> list[float]:
        if field not in SERIES_FIELDS:
            raise BadRequest(f"unknown series {field!r}; known: {', '.join(SERIES_FIELDS)}")
        if resolution not in {r for r, _ in RESOLUTIONS}:
            raise BadRequest(f"resolution must be one of {[r for r, _ in RESOLUTIONS]} seconds")
        app: str | None
        facet: str | None
        if not target or target == "*":
            app, facet = None, None
        elif "/" in target:
            app, facet = parse_facet_target(target)
        else:
            app, facet = target, None
        if resolution == 1:  # live, in memory
            return self._meters.live_series(app, facet, field, points)
        self._flush_usage()  # minutes and hours are read where they are kept
        current = int(time.time()) // resolution
        totals = self._control.series_totals(app, facet, resolution, current - points + 1)
        index = SERIES_FIELDS.index(field)
        return [totals[b][index] if b in totals else 0.0 for b in range(current - points + 1, current + 1)]

    def bill(
        self, target: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> dict[str, Any]:
        now = time.time()
        until = now if until is None else until
        if since is None:
            t = time.gmtime(now)
            since = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        if since > until:
            raise BadRequest("since must not be after until")
        app = None
        if target and target != "*":
            if not self._apps.has(target):
                raise NotFound(f"no app named {target!r}")
            app = target
        self._flush_usage()
        per_facet = ((a, f, self._control.load_series(a, f, 3600)) for a, f in self._registry.listed(app))
        return compute_bill(per_facet, self.prices, since, until)

    def prometheus(self) -> str:
        return prometheus_text((a, f, self.usage(f"{a}/{f}")) for a, f in self._registry.listed())

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
        app = facet = None
        if target and target != "*":
            if "/" in target:
                app, facet = parse_facet_target(target)
            elif is_valid_name(target):
                app = target
            else:
                raise BadRequest(f"bad log target {target!r}: expected APP or APP/FACET")
        if level is not None and level not in LEVEL_RANK:
            raise BadRequest(f"bad level {level!r}: expected one of {', '.join(LEVEL_RANK)}")
        self._log_sink.flush()
        return self._control.read_logs(
            app=app, facet=facet, level=level, since=since, until=until, search=search, limit=limit
        )
