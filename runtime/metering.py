"""Usage: per request (``Usage``), accumulated per facet and per app (``Meter``),
and as time series for sparklines and billing.

What is counted, exactly:

* ``requests``: every request that reached a facet (admitted or refused by a quota).
* ``errors``: failed requests by error code.
* ``fuel``: wasm fuel consumed, including instantiation and ``facet_init`` on a cold start.
* ``wall_ms``: time from the facet's input gate to COMMIT (queueing excluded); in a
  commit group, the request's own run plus its share of the group's COMMIT.
* ``rows_read``: rows visited, as Durable Objects bill them, counted by SQLite's own
  statement counters (see ``FacetDB.execute_guest``): a full scan of a 10,000-row
  table reads about 10,000 even if it returns one row, a primary-key lookup 1, a
  failed statement the rows it visited before it failed.
* ``rows_written``: rows inserted, updated or deleted by committed requests
  (``sqlite3_total_changes``); a rolled-back request writes nothing.
* ``log_bytes`` / ``logs_truncated``: guest log bytes kept, and log calls cut
  or dropped by the ``log_bytes`` quota.
* ``cold_starts``: instantiations (first call, after eviction, after a failure, after an upgrade).
* supervision and alarms (``Meters.count``, off the request path): ``faults`` (requests,
  alarms and migrations that faulted: ``runtime.supervision.FAULT_CODES``), ``backoffs``,
  ``quarantines``, ``recoveries`` and ``resets`` (transitions), ``alarms`` (deliveries,
  each also counted as a request), ``alarm_failures`` (failed deliveries) and
  ``alarms_abandoned`` (given up after the last retry).
* gauges ``storage`` (database bytes) and ``memory`` (linear memory bytes), last seen.

Durability: counters live in memory and are flushed to the control database
every second, so a crash loses at most the last second of counters (the
facets' data itself is durable at COMMIT). Time series: per-second buckets for
the last two minutes, in memory only (the live sparklines); per-minute for the
last day and per-hour for 400 days, in the control database (the hourly ones
feed billing). A meter keeps a minute or hour bucket only until it is flushed
and complete, and buckets are flat ``array('d')`` rows, which Python's garbage
collector does not track: a busy facet's meter stays about 40 KiB however long
it runs, most of it the latency window (a dict of lists was ~320 KiB after three
hours at a request a second, and would have been millions of tracked objects
across 10,000 facets, each full collection taking seconds).

Thread-safety: ``Meters`` has one lock (``_lock``, also ``lock``) around every meter
it holds: ``record`` on request threads, ``collect_dirty`` on the housekeeper's,
snapshots on operators'. It is a leaf: nothing else is acquired while it is held,
and callers may hold the registry's or residency's lock around it. A ``Meter`` on
its own is not thread-safe; only ``Meters`` touches one.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from typing import Any

from .types import Usage

#: (bucket seconds, buckets kept): per-second ones in memory, the others in the control database.
RESOLUTIONS: tuple[tuple[int, int], ...] = ((1, 120), (60, 1440), (3600, 24 * 400))
#: Fields of a time-series bucket, in order.
SERIES_FIELDS = ("requests", "errors", "fuel", "wall_ms", "rows_read", "rows_written", "log_bytes", "storage")
_STORAGE = SERIES_FIELDS.index("storage")
#: The coarser series a facet's per-second buckets are rolled up into. App and fleet
#: aggregates keep live (per-second) series only; billing reads facets'.
ROLLUPS = tuple(res for res, _ in RESOLUTIONS if res != 1)
LATENCY_WINDOW = 1024
_ZERO_ROW = array("d", [0.0] * len(SERIES_FIELDS))
#: A series bucket. ``Any``: a list or an array('d') of floats, indexed on every request,
#: where a union would need a check per access on the hot path.
Row = Any


COUNTER_FIELDS = (
    "requests",
    "fuel",
    "wall_ms",
    "rows_read",
    "rows_written",
    "sql_calls",
    "log_bytes",
    "logs_truncated",
    "cold_starts",
    # HTTP requests (Supervisor.fetch) by status class; a call is counted in none.
    "http_2xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    # Supervision and alarms, counted by Meters.count.
    "faults",
    "backoffs",
    "quarantines",
    "recoveries",
    "resets",
    "alarms",
    "alarm_failures",
    "alarms_abandoned",
)
#: Status // 100 -> its counter.
_STATUS_CLASS = {2: "http_2xx", 3: "http_3xx", 4: "http_4xx", 5: "http_5xx"}


class Meter:
    """Counters, gauges, a latency window and time series for one facet or one app."""

    def __init__(self, saved: dict[str, Any] | None = None, rollups: tuple[int, ...] = ROLLUPS) -> None:
        saved = saved or {}
        self.counters: dict[str, float] = {k: saved.get(k, 0) for k in COUNTER_FIELDS}
        self.errors: dict[str, int] = dict(saved.get("errors", {}))
        self.storage = int(saved.get("storage", 0))
        self.memory = int(saved.get("memory", 0))
        self.last_error: str | None = saved.get("last_error")
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._percentiles: tuple[int, float, float] | None = None  # (samples seen, p50, p99)
        self._samples = 0
        #: resolution -> {bucket start (epoch seconds // resolution): values}
        #: Buckets per resolution: each a row of SERIES_FIELDS values, a list while its
        #: second is open (quicker to add to), then a flat array('d').
        self.series: dict[int, dict[int, Row]] = {res: {} for res, _ in RESOLUTIONS}
        self.dirty_buckets: set[tuple[int, int]] = set()
        self.dirty = False
        self.rollups = rollups
        #: The per-second bucket requests currently land in, its start, and how much of it
        #: is already in the roll-ups. Rolling up once per second instead of on every
        #: request keeps the request path to one bucket.
        self._open: Row = None  # None until the first request
        self._snapshot: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        self._open_second = -1
        self._rolled: Row = _ZERO_ROW

    def record(self, usage: Usage, error: str | None, now: float, storage: int | None = None, status: int = 0) -> None:
        """Count one request (``status``: its HTTP status, 0 for a call). This is on every
        request's path: keep it flat."""
        c = self.counters
        c["requests"] += 1
        if status:
            c[_STATUS_CLASS[status // 100]] += 1
        fuel, wall, read, written, logged = (
            usage.fuel,
            usage.wall_ms,
            usage.rows_read,
            usage.rows_written,
            usage.log_bytes,
        )
        c["fuel"] += fuel
        c["wall_ms"] += wall
        c["rows_read"] += read
        c["rows_written"] += written
        c["sql_calls"] += usage.sql_calls
        c["log_bytes"] += logged
        if usage.logs_truncated:
            c["logs_truncated"] += usage.logs_truncated
        if usage.cold_start:
            c["cold_starts"] += 1
        failed = 0
        if error:
            error = str(error)  # an ErrorCode: stored and saved as its plain string
            failed = 1
            self.errors[error] = self.errors.get(error, 0) + 1
            self.last_error = error
        if storage is not None:
            self.storage = storage
        self.memory = usage.memory
        self._latency.append(wall)
        self._samples += 1
        second = int(now)
        row = self._open
        if second != self._open_second:
            self.roll_up()
            buckets = self.series[1]
            if row is not None and type(row) is list:
                # The second is over: keep it as a flat array (compact, and not tracked by
                # the garbage collector). The open one is a list, quicker to add to.
                buckets[self._open_second] = array("d", row)
            row = buckets.get(second)
            if row is None:
                row = buckets[second] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
            self._open, self._open_second, self._rolled = row, second, row[:]
        row[0] += 1
        row[1] += failed
        row[2] += fuel
        row[3] += wall
        row[4] += read
        row[5] += written
        row[6] += logged
        row[7] = self.storage
        self.dirty = True

    def roll_up(self) -> None:
        """Add what the open per-second bucket gained since the last roll-up to the
        coarser buckets (and mark those for the flusher). Readers of the coarser series
        call this first."""
        row, rolled = self._open, self._rolled
        if row is None or not self.rollups or row[0] == rolled[0]:
            return  # every request adds 1 to row[0]: nothing new since the last roll-up
        for res in self.rollups:
            buckets = self.series[res]
            bucket = self._open_second // res
            if buckets and bucket < max(buckets):
                # The clock went back into a bucket already flushed and dropped: a fresh
                # one would overwrite the stored one, so count it in the newest instead.
                bucket = max(buckets)
            target = buckets.get(bucket)
            if target is None:
                target = buckets[bucket] = _ZERO_ROW[:]
            for i in range(_STORAGE):
                target[i] += row[i] - rolled[i]
            target[_STORAGE] = row[_STORAGE]  # a gauge: the last value seen
            self.dirty_buckets.add((res, bucket))
        self._rolled = row[:]

    def percentile(self, p: float) -> float:
        """The p-th percentile of the last ``LATENCY_WINDOW`` requests' wall times."""
        if not self._latency:
            return 0.0
        ordered = sorted(self._latency)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]

    def latency(self) -> tuple[float, float]:
        """(p50, p99), recomputed only when requests arrived since the last call: a
        console refreshing 10,000 facets a second must not sort 10,000 windows."""
        cached = self._percentiles
        if cached is None or cached[0] != self._samples:
            cached = self._percentiles = (self._samples, self.percentile(50), self.percentile(99))
        return cached[1], cached[2]

    def rate(self, now: float | None = None) -> float:
        """Requests in the last complete second."""
        second = int(now if now is not None else time.time()) - 1
        row = self.series[1].get(second)
        return row[0] if row else 0.0

    def trim(self, now: float) -> None:
        """Drop per-second buckets past their window, and minute and hour buckets that
        are flushed (call after ``Meters.collect_dirty``) and can receive nothing more."""
        oldest = int(now) - RESOLUTIONS[0][1]
        buckets = self.series[1]
        if buckets and min(buckets) <= oldest:
            for bucket in [b for b in buckets if b <= oldest]:
                del buckets[bucket]
        for res in self.rollups:
            buckets = self.series[res]
            if len(buckets) > 1:
                newest = max(buckets)  # the open second's bucket, still being rolled into
                for bucket in [b for b in buckets if b != newest and (res, b) not in self.dirty_buckets]:
                    del buckets[bucket]

    def sparkline(self, field: str, resolution: int = 1, points: int = 60, now: float | None = None) -> list[float]:
        """The last ``points`` buckets of ``field`` (oldest first; empty buckets are 0)."""
        index = SERIES_FIELDS.index(field)
        if resolution != 1:
            self.roll_up()
        current = int(now if now is not None else time.time()) // resolution
        buckets = self.series[resolution]
        return [buckets[b][index] if b in buckets else 0.0 for b in range(current - points + 1, current + 1)]

    def snapshot(self) -> dict[str, Any]:
        """Counters, gauges, latency and rate as one new dict.

        Built again only when a request was counted since, or when the rate can have
        changed (a request in the last two seconds): a console refreshing 10,000
        facets a second mostly gets copies.
        """
        second = int(time.time())
        key = (self._samples, self.storage, second if self._open_second >= second - 1 else -1)
        cached = self._snapshot
        if cached is None or cached[0] != key:
            cached = self._snapshot = (key, self._build_snapshot())
        snap = cached[1].copy()
        snap["errors"] = snap["errors"].copy()
        return snap

    def _build_snapshot(self) -> dict[str, Any]:
        c = self.counters
        requests = c["requests"]
        p50, p99 = self.latency()
        return {
            **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in c.items()},
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "storage": self.storage,
            "memory": self.memory,
            "last_error": self.last_error,
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "rps": self.rate(),
            "avg_ms": round(c["wall_ms"] / requests, 3) if requests else 0.0,
        }

    def saved_state(self) -> dict[str, Any]:
        return {
            **self.counters,
            "errors": dict(self.errors),
            "storage": self.storage,
            "memory": self.memory,
            "last_error": self.last_error,
        }


class Meters:
    """All facet meters plus per-app aggregates, safe to use from many threads."""

    def __init__(
        self,
        saved: dict[tuple[str, str], dict[str, Any]] | None = None,
        versions: dict[tuple[str, int], list[int]] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        #: Held while a meter is read or changed; readers outside take it for series.
        self.lock = self._lock
        self._facets: dict[tuple[str, str], Meter] = {}
        self._apps: dict[str, Meter] = {}
        #: (app, version) -> [requests, errors], and those changed since the last flush.
        self._versions: dict[tuple[str, int], list[int]] = {k: list(v) for k, v in (versions or {}).items()}
        self._versions_dirty: set[tuple[str, int]] = set()
        for (app, facet), state in (saved or {}).items():
            self._facets[(app, facet)] = Meter(state)
            self._add_to_aggregates(app, state)

    def _add_to_aggregates(self, app: str, state: dict[str, Any]) -> None:
        meter = self._apps.get(app)
        if meter is None:
            meter = self._apps[app] = Meter(rollups=())
        for k in COUNTER_FIELDS:
            meter.counters[k] += state.get(k, 0)
        for code, n in state.get("errors", {}).items():
            meter.errors[code] = meter.errors.get(code, 0) + n
        meter.storage += int(state.get("storage", 0))

    def _fleet(self) -> Meter:
        """The whole fleet, added up from the apps on demand (off the request path)."""
        fleet = Meter(rollups=())
        for meter in self._apps.values():
            for k, v in meter.counters.items():
                fleet.counters[k] += v
            for code, n in meter.errors.items():
                fleet.errors[code] = fleet.errors.get(code, 0) + n
            fleet.storage += meter.storage
            fleet._latency.extend(meter._latency)
            fleet._samples += meter._samples
            for bucket, row in meter.series[1].items():
                total = fleet.series[1].get(bucket)
                if total is None:
                    total = fleet.series[1][bucket] = _ZERO_ROW[:]
                for i, v in enumerate(row):
                    total[i] += v
        return fleet

    def record(
        self,
        app: str,
        facet: str,
        usage: Usage,
        error: str | None,
        storage: int | None = None,
        status: int = 0,
        version: int = 0,
    ) -> None:
        now = time.time()
        with self._lock:
            if version:  # per app version: what a rollout is judged by
                counts = self._versions.get((app, version))
                if counts is None:
                    counts = self._versions[(app, version)] = [0, 0]
                counts[0] += 1
                if error:
                    counts[1] += 1
                self._versions_dirty.add((app, version))
            meter = self._facets.get((app, facet))
            if meter is None:
                meter = self._facets[(app, facet)] = Meter()
            old_storage = meter.storage
            meter.record(usage, error, now, storage, status)
            delta = meter.storage - old_storage
            agg = self._apps.get(app)
            if agg is None:
                agg = self._apps[app] = Meter(rollups=())
            agg.storage += delta
            agg.record(usage, error, now, agg.storage, status)

    def by_version(self, app: str) -> dict[int, tuple[int, int]]:
        """Requests and errors per version of ``app`` (persisted with the usage flushes)."""
        with self._lock:
            return {v: (c[0], c[1]) for (a, v), c in self._versions.items() if a == app}

    def count(self, app: str, facet: str, counter: str, n: int = 1) -> None:
        """Add ``n`` to one counter of a facet (and its app): a transition, an alarm."""
        with self._lock:
            meter = self._facets.get((app, facet))
            if meter is None:
                meter = self._facets[(app, facet)] = Meter()
            meter.counters[counter] += n
            meter.dirty = True
            meter._snapshot = None
            agg = self._apps.get(app)
            if agg is None:
                agg = self._apps[app] = Meter(rollups=())
            agg.counters[counter] += n
            agg._snapshot = None

    def live_series(self, app: str | None, facet: str | None, field: str, points: int) -> list[float]:
        """The last ``points`` per-second buckets of ``field`` for a facet, an app (``facet``
        None) or the fleet (both None). Minute and hour series are read from the control
        database (``Supervisor.series``)."""
        now = time.time()
        with self._lock:
            if facet is not None:
                meter = self._facets.get((app, facet)) if app is not None else None
            else:
                meter = self._fleet() if app is None else self._apps.get(app)
            return meter.sparkline(field, 1, points, now) if meter else [0.0] * points

    def facet(self, app: str, facet: str) -> Meter | None:
        return self._facets.get((app, facet))

    def app(self, app: str) -> Meter | None:
        return self._apps.get(app)

    def snapshot(self, app: str | None = None, facet: str | None = None) -> dict[str, Any]:
        with self._lock:
            if facet is not None:
                meter = self._facets.get((app, facet)) if app is not None else None
            elif app is not None:
                meter = self._apps.get(app)
            else:
                meter = self._fleet()
            return (meter or Meter()).snapshot()

    def remove(self, app: str, facet: str) -> None:
        """Forget a deleted facet's meter (its usage stays in the app's totals)."""
        with self._lock:
            self._facets.pop((app, facet), None)

    def collect_versions(self) -> list[tuple[str, int, int, int]]:
        """The per-version counts changed since the last call, for the flusher."""
        with self._lock:
            dirty, self._versions_dirty = self._versions_dirty, set()
            counts = self._versions
            return [(app, version, counts[(app, version)][0], counts[(app, version)][1]) for app, version in dirty]

    def collect_dirty(
        self,
    ) -> tuple[list[tuple[str, str, dict[str, Any]]], list[tuple[str, str, int, int, list[float]]]]:
        """Take what changed since the last call, for the flusher."""
        rows, series = [], []
        now = time.time()
        with self._lock:
            for (app, facet), meter in self._facets.items():
                if not meter.dirty:
                    continue
                meter.dirty = False
                meter.roll_up()
                rows.append((app, facet, meter.saved_state()))
                for res, bucket in meter.dirty_buckets:  # per-second buckets are never stored
                    values = meter.series[res].get(bucket)
                    if values is not None:
                        series.append((app, facet, res, bucket, list(values)))
                meter.dirty_buckets.clear()
                meter.trim(now)
            for agg in self._apps.values():
                agg.dirty_buckets.clear()
                agg.trim(now)
        return rows, series
