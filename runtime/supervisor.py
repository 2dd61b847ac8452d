"""The supervisor: a façade over the parts that host apps and their facets.

A request's path (see ``call``): name check -> app lookup -> facet creation
(``registry``, policy) -> policy admission (rate) -> the facet's input gate (``gate``,
queue quota) -> ``FacetSlot.run`` (instance, transaction, guest, COMMIT) ->
residency, meters, logs, policy observation -> ``CallResult``.

The parts: ``registry`` (which facets exist), ``gate`` (who runs on a facet),
``facet`` (a facet's instance, database and transaction), ``residency`` (which stay
warm), ``transfer`` (import/export), ``housekeeper`` (the background thread),
``reports`` (usage, series, bills, logs), ``settings``.

Thread-safety rules: the supervisor has one lock of its own, ``_flush_lock`` (two
usage flushes must not write out of order), a leaf. Lock order, outermost first: a
facet's gate (``Gate.lock``) -> the registry's lock -> residency's lock -> the leaf
locks inside ``ControlDB``, ``Meters``, ``LogSink``, ``QuotaBook`` and the policy;
``Gate.queue_lock`` is innermost of all. Nobody waits for a gate while holding any
of these (evictions only try a gate). Each module states which of its reads are
safe without its lock. Threads: ``call`` runs on the caller's thread (``submit``: a
pool worker), the housekeeper and the log writer on their own; operator methods on
the caller's.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .apps import AppStore, AppVersion
from .control import ControlDB
from .errors import BadRequest, ErrorCode, FacetsError, NotFound
from .facet import FacetSlot
from .gate import Request, fail_all, pass_gate
from .housekeeper import Housekeeper
from .logs import LogRecord, LogSink, Throttle
from .metering import RESOLUTIONS, Meters
from .policy import Policy, QuotaPolicy
from .quotas import QuotaBook, Quotas, parse_target, scope_of
from .registry import FacetRegistry, parse_facet_target
from .reports import Reports
from .residency import Residency
from .settings import SupervisorSettings
from .storage import FacetReader
from .transfer import Transfer
from .types import AppInfo, CallResult, FacetChanges, FacetInfo
from .wasm import WasmRuntime


class Supervisor:
    """Hosts apps and their facets from one data directory.

    Args:
        data_dir: holds ``control.sqlite3``, ``modules/`` and ``facets/``; created if missing
            (unless ``readonly``).
        settings: a ``SupervisorSettings``; keywords override its fields (each keyword
            of ``SupervisorSettings`` works on its own too: ``Supervisor(d, max_warm=3)``).
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], settings: SupervisorSettings | None = None, **overrides: Any
    ) -> None:
        settings = dataclasses.replace(settings or SupervisorSettings(), **overrides)
        settings.validate()
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.readonly = readonly = settings.readonly
        if readonly:
            if not (self.data_dir / "control.sqlite3").is_file():
                raise NotFound(f"no data directory at {self.data_dir} (no control.sqlite3) to open read-only")
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / "facets").mkdir(exist_ok=True)
        self.durability = settings.durability
        self.commit_groups = settings.groups_commits()
        self.log_retention_count = settings.log_retention_count
        self.log_retention_age = settings.log_retention_age
        self.policy = settings.policy or QuotaPolicy()
        self.prices = settings.price_sheet(self.data_dir)
        self.control = ControlDB(str(self.data_dir / "control.sqlite3"), readonly=readonly)
        self.wasm = WasmRuntime(settings.engine)
        self.apps = AppStore(self.data_dir, self.control, self.wasm, readonly=readonly)
        self.quota_book = QuotaBook(self.control.quota_settings())
        self.meters = Meters(self.control.load_usage())
        # Read-only, the supervisor's own events still reach subscribers, and are not stored.
        self.log_sink = LogSink(_discard if readonly else self.control.write_logs)
        log = self._supervisor_log
        for rejected in self.quota_book.rejected:
            log("", "", "warn", f"stored quota ignored: {rejected}")
        self.registry = FacetRegistry(
            self.data_dir,
            self.control,
            durability=self.durability,
            policy=self.policy,
            quota_book=self.quota_book,
            log=log,
        )
        if not readonly:
            self.registry.adopt_orphans()
        self.residency = Residency(
            max_warm=settings.max_warm,
            idle_timeout=settings.idle_timeout,
            max_open_dbs=settings.open_db_limit(),
            memory_budget=settings.memory_limit(),
            log=log,
        )
        self.transfer = Transfer(self.registry, self.apps, self.quota_book, self.reader, log)
        self.reports = Reports(
            meters=self.meters,
            control=self.control,
            apps=self.apps,
            registry=self.registry,
            residency=self.residency,
            log_sink=self.log_sink,
            prices=self.prices,
            flush_usage=self.flush_usage,
            parse=parse_facet_target,
        )
        self._targets: dict[str, tuple[str, str]] = {}  # "app/facet" -> parsed, checked once
        self._observes = type(self.policy).observe is not Policy.observe
        self._breaches = Throttle(1.0)
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.workers or max(4, (os.cpu_count() or 2) * 2), thread_name_prefix="facets-worker"
        )
        self._closed = False
        self._flush_lock = threading.Lock()
        self._housekeeper = Housekeeper(
            interval=settings.usage_flush_interval,
            every_round=[self.flush_usage, self.residency.evict_idle],
            prune=self._prune,
            report=lambda exc: log("", "", "error", f"housekeeping failed: {exc!r}"),
        )
        if not readonly:  # nothing to flush, prune or evict: no request runs
            self._housekeeper.start()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish in-flight requests, flush usage and logs, release every file."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        self._housekeeper.stop()
        with self.registry.lock:
            slots = list(self.registry.slots.values())
        for slot in slots:
            with slot.gate.held():
                slot.close()
        self.flush_usage()
        self.log_sink.close()
        self.wasm.close()
        self.control.close()

    def _refuse_if_readonly(self, what: str) -> None:
        if self.readonly:
            raise FacetsError(f"{what} refused: the supervisor was opened read-only", ErrorCode.REFUSED)

    # -- apps -------------------------------------------------------------------
    def load_app(self, path: str | os.PathLike[str], name: str | None = None) -> AppVersion:
        """Load a ``.wasm`` or ``.wat`` file as a new version of app ``name`` (default: the file's stem)."""
        self._refuse_if_readonly("loading an app")
        data = AppStore.read_source(path)
        return self.load_app_bytes(data, name or AppStore.default_name(path), source=str(path))

    def load_app_bytes(self, data: bytes | str, name: str, source: str = "") -> AppVersion:
        self._refuse_if_readonly("loading an app")
        if isinstance(data, str):
            data = data.encode("utf-8")
        version, is_new = self.apps.load(data, name, source=source)
        if is_new:
            what = "loaded" if version.version == 1 else f"upgraded to version {version.version}"
            self._supervisor_log(name, "", "info", f"app {name} {what} (sha256 {version.sha256[:12]})")
        return version

    def app_list(self) -> list[AppInfo]:
        counts = self.registry.app_counts()
        return [
            AppInfo(name=n, version=self.apps.current(n), versions=len(self.apps.versions(n)), facets=counts.get(n, 0))
            for n in self.apps.names()
        ]

    def app_versions(self, app: str) -> list[AppVersion]:
        return self.apps.versions(app)

    # -- facets -----------------------------------------------------------------
    def facet_list(self, app: str | None = None) -> list[FacetInfo]:
        if app is not None and not self.apps.has(app):
            raise NotFound(f"no app named {app!r}")
        return self.reports.facet_infos(self.registry.listed(app))

    def facet_changes(self, cursor: float | None = None) -> FacetChanges:
        """The facets whose listed state or usage may have changed since the call that
        returned ``cursor`` (all of them when None): what a live view refreshes, at a
        cost that follows the traffic, not the number of facets."""
        now, complete, changed, removed = self.residency.changes_since(cursor)
        if complete:
            return FacetChanges(now, True, self.facet_list(), [])
        return FacetChanges(now, False, self.reports.facet_infos(changed), [f"{app}/{facet}" for app, facet in removed])

    def facet_exists(self, target: str) -> bool:
        return parse_facet_target(target) in self.registry.created

    def _slot(self, app: str, facet: str) -> FacetSlot:
        return self.registry.slot(app, facet)

    def _known(self, target: str) -> tuple[str, str]:
        key = parse_facet_target(target)
        if key not in self.registry.created:
            raise NotFound(f"no facet {target}")
        return key

    def evict(self, target: str) -> bool:
        """Drop the facet's warm instance and close its database; True if it was warm."""
        self._refuse_if_readonly("evict")
        app, facet = self._known(target)
        slot = self.registry.slots.get((app, facet))
        was_warm = slot is not None and self.residency.evict(slot)
        if was_warm:
            self._supervisor_log(app, facet, "info", "evicted by operator")
        return was_warm

    def delete(self, target: str) -> None:
        """Delete a facet: its instance, its database files, its quotas and usage rows."""
        self._refuse_if_readonly("delete")
        app, facet = self._known(target)
        slot = self.registry.slot(app, facet)
        # Under the gate, after closing: a request queued meanwhile finds it deleted.
        self.residency.close(slot, then=lambda: self.registry.remove(slot), deleted=True)
        self.meters.remove(app, facet)
        self.policy.forget(app, facet)
        self._supervisor_log(app, facet, "warn", f"facet {app}/{facet} deleted")

    def export_facet(self, target: str, path: str | os.PathLike[str]) -> int:
        """Write a consistent copy of the facet's database to ``path`` (SQLite's backup API,
        safe while the facet serves). Never overwrites; atomic (``transfer``): a killed
        export leaves no partial file in the way of a retry. Returns the copy's size."""
        self._refuse_if_readonly("export")
        return self.transfer.export(target, path)

    def import_facet(self, path: str | os.PathLike[str], target: str) -> list[str]:
        """Create facet ``target`` from a SQLite database file (copied, never moved).

        The app must be loaded and the facet must not exist, now or when the copy is
        registered (a call may create it meanwhile: the import then fails, and never
        overwrites what the call wrote); the file must pass ``PRAGMA quick_check``, use
        no reserved ``_facets`` names, and fit the facet's storage quota (what is
        copied, its ``-wal`` included). A killed import leaves nothing registered.
        Returns the imported table names.
        """
        self._refuse_if_readonly("import")
        app, facet = parse_facet_target(target)
        tables = self.transfer.import_(path, app, facet)
        self.residency.touch((app, facet))
        return tables

    def db_path(self, target: str) -> Path:
        return self.registry.db_path(*self._known(target))

    # -- requests ---------------------------------------------------------------
    def call(self, target: str, body: bytes | str = b"") -> CallResult:
        """Send one request to ``APP/FACET`` and wait for its committed result. Never raises
        for a failed request: the result carries the error code."""
        request_id = f"{self._id_prefix}-{next(self._ids):x}"
        if self._closed:
            return CallResult.failure(ErrorCode.OVERLOADED, "the supervisor is shut down", request_id)
        if self.readonly:  # a request writes the facet's database
            return CallResult.failure(
                ErrorCode.REFUSED, "requests are refused: the supervisor was opened read-only", request_id
            )
        try:
            parsed = self._targets.get(target)
            if parsed is None:
                parsed = parse_facet_target(target)
                if len(self._targets) > 100_000:
                    self._targets.clear()
                self._targets[target] = parsed
            app, facet = parsed
            if isinstance(body, str):
                body = body.encode("utf-8")
            elif type(body) is not bytes:
                if not isinstance(body, (bytes, bytearray, memoryview)):
                    raise BadRequest(f"body must be bytes or str, not {type(body).__name__}")
                body = bytes(body)
        except BadRequest as exc:
            return CallResult.failure(exc.code, exc.message, request_id)
        if not self.apps.has(app):
            return CallResult.failure(ErrorCode.NOT_FOUND, f"no app named {app!r}", request_id)
        registry = self.registry
        if parsed not in registry.created:
            refused = registry.create(app, facet)
            if refused is not None:
                refused.request_id = request_id
                self._supervisor_log(app, facet, "warn", f"facet creation refused: {refused.message}")
                return refused
        quotas = self.quota_book.effective(app, facet)
        refusal = self.policy.admit_request(app, facet, quotas)
        if refusal is not None:
            return self._refused(app, facet, CallResult.failure(refusal.code, refusal.message, request_id))
        slot = registry.slots.get(parsed) or registry.slot(app, facet)
        # The input gate (gate.py): one thread at a time runs a facet's requests; at most
        # `queue` wait behind it, and they then run together as one commit group.
        waiting = slot.gate.waiting
        if quotas.queue and waiting >= quotas.queue:
            return self._refused(
                app,
                facet,
                CallResult.failure(
                    ErrorCode.OVERLOADED,
                    f"{target} already has {waiting} requests waiting (queue={quotas.queue})",
                    request_id,
                ),
            )
        request = Request(body, request_id, quotas)
        gave_up = pass_gate(slot.gate, request, self._run, slot, groups=self.commit_groups)
        if gave_up is not None:
            return self._refused(
                app,
                facet,
                CallResult.failure(ErrorCode.OVERLOADED, f"{target} stayed busy for {gave_up:g} s", request_id),
            )
        result = request.result
        assert result is not None
        self.residency.used(slot)
        self.meters.record(app, facet, result.usage, result.error, request.storage)
        if request.logs:
            self.log_sink.add(request.logs)
        if self._observes:
            try:
                self.policy.observe(app, facet, result)
            except Exception as exc:  # a broken custom policy must not fail the request after COMMIT
                self._supervisor_log(app, facet, "error", f"policy.observe failed: {exc!r}")
        return result

    def _run(self, slot: FacetSlot, group: list[Request]) -> None:
        """Run ``group`` on ``slot`` (its gate held): every request gets its ``result``."""
        if slot.deleted:
            fail_all(group, ErrorCode.NOT_FOUND, f"facet {slot.app}/{slot.name} was deleted")
            return
        try:
            module = self.apps.module(slot.app)
        except FacetsError as exc:
            fail_all(group, exc.code, exc.message)
            return
        if slot.db is None:
            self.residency.open_db(slot, group[-1].quotas)
        slot.run(self.wasm, module, group)

    def submit(self, target: str, body: bytes | str = b"") -> Future[CallResult]:
        """Run ``call`` on the worker pool; different facets run in parallel."""
        return self._pool.submit(self.call, target, body)

    def _refused(self, app: str, facet: str, result: CallResult) -> CallResult:
        """Count a request refused before it reached the facet (policy, queue) and log a
        breach at most once a second per facet and code, so an overloaded facet does not
        flood the logs it is judged by."""
        self.meters.record(app, facet, result.usage, result.error, None)
        self.residency.touch((app, facet))
        if result.error in (ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED):
            suppressed = self._breaches.due((app, facet, result.error))
            if suppressed is not None:
                more = f" (and {suppressed} more since the last report)" if suppressed else ""
                self._supervisor_log(
                    app, facet, "warn", f"quota breached ({result.error}): {result.message}{more}", result.request_id
                )
        return result

    # -- housekeeping ---------------------------------------------------------------
    def flush_usage(self) -> None:
        """Persist usage counters and series changed since the last flush."""
        if self.readonly:
            return
        with self._flush_lock:  # two flushes writing out of order would store older values
            rows, series = self.meters.collect_dirty()
            if rows or series:
                self.control.save_usage(rows, series)

    def _prune(self) -> None:
        self.control.prune_logs(keep_per_facet=self.log_retention_count, max_age_s=self.log_retention_age)
        self.control.prune_series({res: kept for res, kept in RESOLUTIONS if res != 1})

    @property
    def warm_count(self) -> int:
        return self.residency.warm_count

    @property
    def max_open_dbs(self) -> int:
        return self.residency.max_open_dbs

    @property
    def _open_dbs(self) -> dict[tuple[str, str], FacetSlot]:
        """The open databases (bench/run.py counts them)."""
        return self.residency.open_dbs

    # -- quotas -------------------------------------------------------------------
    def quotas(self, target: str = "*") -> Quotas:
        """Effective quotas at ``*``, ``APP`` or ``APP/FACET``."""
        return self.quota_book.effective(*parse_target(target))

    def explicit_quotas(self, target: str = "*") -> dict[str, Any]:
        return self.quota_book.explicit(scope_of(*parse_target(target)))

    def set_quotas(self, target: str, changes: dict[str, Any] | None = None, **kwargs: Any) -> Quotas:
        """Change quotas at one level; every value is validated before any is applied.

        Takes effect at the next request of a running facet. Returns the
        effective quotas at ``target`` after the change.
        """
        self._refuse_if_readonly("changing quotas")
        scope, sets, unsets = self.quota_book.plan(target, {**(changes or {}), **kwargs})
        with self.registry.lock:
            self.control.save_quotas(scope, sets, unsets)
            self.quota_book.apply(scope, sets, unsets)
        self.residency.touch_everything()  # a storage quota shows on every row of its scope
        app, _, facet = scope.partition("/")
        described = ", ".join([f"{k}={v}" for k, v in sets.items()] + [f"{k}=default" for k in unsets])
        self._supervisor_log(app if scope != "*" else "", facet, "info", f"quota changed at {scope}: {described}")
        return self.quotas(target)

    # -- usage and logs (see reports.py) ----------------------------------------------
    def usage(self, target: str | None = None) -> dict[str, Any]:
        """Accumulated usage of the fleet, an ``APP`` or an ``APP/FACET``."""
        return self.reports.usage(target)

    def series(self, target: str | None, field: str, *, resolution: int = 1, points: int = 60) -> list[float]:
        """Recent values of ``field`` (a ``metering.SERIES_FIELDS`` name) per bucket, oldest first,
        for the fleet (None or ``*``), an ``APP`` or an ``APP/FACET``."""
        return self.reports.series(target, field, resolution=resolution, points=points)

    def bill(
        self, target: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> dict[str, Any]:
        """Cost per facet and per app over ``[since, until)`` (epoch seconds; default: this
        calendar month so far, UTC). See ``runtime.billing`` for what is counted."""
        return self.reports.bill(target, since=since, until=until)

    def prometheus(self) -> str:
        """Usage of every facet as Prometheus text exposition format."""
        return self.reports.prometheus()

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
        """Stored log records, newest ``limit`` (oldest first), filtered."""
        return self.reports.logs(target, level=level, limit=limit, since=since, until=until, search=search)

    def subscribe_logs(self, callback: Callable[[list[LogRecord]], None]) -> Callable[[], None]:
        """Stream new log batches to ``callback`` (called on the log thread); returns unsubscribe."""
        return self.log_sink.subscribe(callback)

    def _supervisor_log(self, app: str, facet: str, level: str, message: str, request_id: str = "") -> None:
        """The supervisor's own log record (``source="supervisor"``)."""
        self.log_sink.add(
            [
                LogRecord(
                    time=time.time(),
                    app=app,
                    facet=facet,
                    request_id=request_id,
                    level=level,
                    message=message,
                    source="supervisor",
                )
            ]
        )

    # -- browsing (read-only) --------------------------------------------------------
    def reader(self, target: str) -> FacetReader:
        """A read-only connection to the facet's database; close it when done."""
        return FacetReader(str(self.db_path(target)))

    def tables(self, target: str) -> list[dict[str, Any]]:
        with self.reader(target) as reader:
            return reader.tables()

    def rows(
        self, target: str, table: str, *, limit: int = 100, offset: int = 0, where: str | None = None
    ) -> dict[str, Any]:
        with self.reader(target) as reader:
            return reader.rows(table, limit=limit, offset=offset, where=where)

    def query(self, target: str, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """Run a read-only operator query on the facet's database."""
        with self.reader(target) as reader:
            return reader.query(sql, params)


def _discard(batch: list[LogRecord]) -> None:
    """The log writer of a read-only supervisor: nothing is stored."""


def default_data_dir() -> Path:
    """``$FACETS_DATA`` or ``.facets-data`` in the current directory."""
    return Path(os.environ.get("FACETS_DATA") or ".facets-data")
