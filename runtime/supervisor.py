"""The supervisor: a façade over the parts that host apps and their facets (the
package's docstring lists them, ``runtime/__init__.py``).

A request's path (see ``call``): name check -> app lookup -> facet creation
(``registry``, policy) -> policy admission (rate) -> the facet's input gate (``gate``,
queue quota) -> ``FacetSlot.run`` (instance, transaction, guest, COMMIT) ->
residency, meters, logs, policy observation -> ``CallResult``.

Thread-safety rules: the supervisor has no lock of its own. Lock order, outermost first:
a facet's gate (``Gate.lock``) -> the registry's lock -> residency's lock -> the leaf
locks inside ``ControlDB``, ``Meters``, ``LogSink``, ``QuotaBook`` and the policy; the
housekeeper's flush lock is taken with none held, before ``Meters``'s and
``ControlDB``'s; ``Gate.queue_lock`` is innermost of all. Nobody waits for a gate while
holding any of these (evictions only try a gate). Each module states which of its reads
are safe without its lock. Threads: ``call`` runs on the caller's thread (``submit``: a
pool worker), the housekeeper and the log writer on their own; operator methods on the
caller's.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .admin import Admin
from .alarms import RETRY_DELAYS_S, Alarm, AlarmScheduler
from .apps import AppStore, AppVersion
from .archive import Archiver
from .browse import Browser
from .control import ControlDB
from .errors import BadRequest, ErrorCode, NotFound
from .events import SupervisorLog, discard
from .facet import FacetSlot
from .gate import Request, as_body, pass_batch, pass_gate
from .history import History
from .housekeeper import Housekeeper
from .http import HttpRequest, status_for
from .logs import LogRecord, LogSink
from .metering import Meters
from .owner import OwnerLock
from .policy import Policy, QuotaPolicy
from .quotas import QuotaBook, Quotas, parse_target, scope_of
from .registry import FacetRegistry, TargetCache, parse_facet_target
from .reports import Reports
from .residency import Residency
from .rollout import Rollout, Rollouts, parse_percent
from .serving import Serving
from .settings import SupervisorSettings
from .storage import FacetReader
from .supervision import HealthInfo, Supervision
from .toolchain import Progress
from .types import AppInfo, CallResult, FacetChanges, FacetInfo, HistoryInfo, RestoreInfo, SnapshotInfo
from .wasm import WasmRuntime

#: How often an alarm of a quarantined facet looks again (``reset`` wakes it at once).
QUARANTINE_RECHECK_MS = 60_000


class Supervisor:
    """Hosts apps and their facets from one data directory.

    Args:
        data_dir: holds ``control.sqlite3``, ``modules/`` and ``facets/``; created if missing
            (unless ``readonly``).
        settings: a ``SupervisorSettings``; keywords override its fields (each keyword
            of ``SupervisorSettings`` works on its own too: ``Supervisor(d, max_warm=3)``).

    Raises ``DataDirBusy`` (code ``refused``) when another supervisor, here or in another
    process, owns ``data_dir`` (``runtime.owner``); a read-only open takes no lock.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], settings: SupervisorSettings | None = None, **overrides: Any
    ) -> None:
        settings = dataclasses.replace(settings or SupervisorSettings(), **overrides)
        settings.validate()
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.readonly = readonly = settings.readonly
        settings.prepare_data_dir(self.data_dir)
        #: The data directory's owner lock (owner.py): one writer per directory, else usage
        #: and quotas diverge between processes. None read-only (a reader writes nothing).
        self.owner = None if readonly else OwnerLock.acquire(self.data_dir, settings.role)
        try:
            self._open(settings, readonly)
        except BaseException:  # a damaged control database...: the directory is not kept locked
            if self.owner is not None:
                self.owner.release()
            raise

    def _open(self, settings: SupervisorSettings, readonly: bool) -> None:
        self.durability = settings.durability
        self.commit_groups = settings.groups_commits()
        self.policy = settings.policy or QuotaPolicy()
        self.control = ControlDB(str(self.data_dir / "control.sqlite3"), readonly=readonly)
        self.wasm = WasmRuntime(settings.engine)
        self.apps = AppStore(self.data_dir, self.control, self.wasm, readonly=readonly)
        self.quota_book = QuotaBook(self.control.quota_settings())
        self.meters = Meters(self.control.load_usage(), self.control.version_usage())
        self.log_sink = LogSink(discard if readonly else self.control.write_logs)
        self._log = log = SupervisorLog(self.log_sink)
        for rejected in self.quota_book.rejected:
            log("", "", "warn", f"stored quota ignored: {rejected}")
        self.registry = registry = FacetRegistry(
            self.data_dir, self.control, self.quota_book, self.policy, log, durability=self.durability
        )
        self.alarms = AlarmScheduler(self.control, self._dispatch_alarm, log)
        registry.alarms = self.alarms  # before any slot is made: each reads it
        quota_book = self.quota_book
        self.archiver: Archiver | None = None
        if settings.history and not readonly:
            self.archiver = Archiver(
                self.data_dir / "archive", log, lambda app, facet: quota_book.effective(app, facet).history_ms / 1000
            )
        registry.archiver = self.archiver  # likewise
        if not readonly:
            registry.adopt_orphans()
        self.rollouts = Rollouts(self.control, {name: self.apps.current(name).version for name in self.apps.names()})
        self.supervision = Supervision(control=self.control, quota_book=self.quota_book, meters=self.meters, log=log)
        for key, health in self.supervision.records.items():
            if key in registry.created:  # the request path reads the record off the slot
                registry.slot(*key).health = health
        self.residency = Residency(settings, log=log)
        self.browser = Browser(registry)
        self.admin = Admin(
            readonly=readonly,
            apps=self.apps,
            registry=registry,
            residency=self.residency,
            reader=self.browser.reader,
            meters=self.meters,
            policy=self.policy,
            quota_book=self.quota_book,
            control=self.control,
            log=log,
        )
        self.history_ops = History(
            self.data_dir / "archive",
            registry,
            self.residency,
            self.quota_book,
            self.archiver,
            self.browser.reader,
            log,
        )
        self._housekeeper = Housekeeper(
            settings, meters=self.meters, control=self.control, evict_idle=self.residency.evict_idle, log=log
        )
        self.reports = Reports(
            meters=self.meters,
            control=self.control,
            apps=self.apps,
            registry=registry,
            residency=self.residency,
            log_sink=self.log_sink,
            prices=settings.price_sheet(self.data_dir),
            flush_usage=self._housekeeper.flush_usage,
            rollouts=self.rollouts,
            alarms=self.alarms,
        )
        serving = Serving(
            apps=self.apps,
            rollouts=self.rollouts,
            control=self.control,
            residency=self.residency,
            meters=self.meters,
            log=log,
            alarms=self.alarms,
            supervision=self.supervision,
        )
        self._run, self._refuse = serving.run, serving.refuse  # bound once: no lookups per request
        self._targets = TargetCache()  # "app/facet" -> parsed, checked once
        self._observes = type(self.policy).observe is not Policy.observe
        self._supervision = self.supervision
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.workers or max(4, (os.cpu_count() or 2) * 2), thread_name_prefix="facets-worker"
        )
        self._closed = False
        #: Why ``call`` refuses every request, if it does: one check on the request path.
        self._refusing: tuple[ErrorCode, str] | None = None
        if readonly:  # a request writes the facet's database; so nothing to flush, prune or evict
            self._refusing = (ErrorCode.REFUSED, "requests are refused: the supervisor was opened read-only")
        else:
            self._housekeeper.start()
            self.alarms.start()  # after everything it delivers through exists
            if self.archiver is not None:
                self.archiver.start()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish in-flight requests, flush usage and logs, release every file."""
        if self._closed:
            return
        self.alarms.stop()  # first: no new deliveries (one dispatched later would count as failed)
        self._closed = True
        self._refusing = (ErrorCode.OVERLOADED, "the supervisor is shut down")
        self._pool.shutdown(wait=True)  # the deliveries handed out finish here
        self._housekeeper.stop()
        self.registry.close_all()
        if self.archiver is not None:  # after every database closed: each archive is drained
            self.archiver.stop()
        self.flush_usage()
        self.log_sink.close()
        self.wasm.close()
        self.control.close()
        if self.owner is not None:  # last: the next owner finds everything flushed
            self.owner.release()

    # -- apps (loading them: admin.py) ------------------------------------------------
    def load_app(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        progress: Progress | None = None,
        canary: float | str | None = None,
    ) -> AppVersion:
        """Load a file as a new version of app ``name`` (default: the file's stem): a ``.wasm``
        module or component, ``.wat`` text, or a JavaScript (``.js``, ``.mjs``), TypeScript
        (``.ts``) or Python (``.py``) source, built into a component first (cached by
        content; ``progress`` receives ``BuildProgress`` reports while it builds and compiles).

        The new version becomes active for every facet (unless the app is pinned), or with
        ``canary`` (a percentage, ``10`` or ``"10%"``) only for that share of facets, chosen
        by a hash of their names; ``promote`` or ``rollback`` settles it (``runtime.rollout``)."""
        percent = self._canary_percent(name or self.apps.default_name(path), canary)
        version = self.admin.load_app(path, name, progress=progress)
        self._loaded(version, percent)
        return version

    def load_app_bytes(
        self, data: bytes | str, name: str, source: str = "", *, canary: float | str | None = None
    ) -> AppVersion:
        percent = self._canary_percent(name, canary)
        version = self.admin.load_app_bytes(data, name, source)
        self._loaded(version, percent)
        return version

    def _canary_percent(self, app: str, canary: float | str | None) -> float | None:
        """``canary`` checked before anything is stored."""
        if canary is None:
            return None
        percent = parse_percent(canary)
        if not self.apps.has(app):
            raise BadRequest(f"{app} has no version yet: its first version cannot be a canary")
        return percent

    def _loaded(self, version: AppVersion, canary_percent: float | None) -> None:
        rollout = self.rollouts.get(version.app)
        if canary_percent is not None and self.rollouts.active(version.app) == version.version:
            raise BadRequest(
                f"these bytes already are {version.app} version {version.version}, the active one: "
                "load a different version as the canary"
            )
        if rollout.canary == version.version and canary_percent is None:
            return  # the canary's bytes loaded again: it stays a canary (promote settles it)
        self.rollouts.loaded(version.app, version.version, canary_percent)
        self._note_rollout(version.app)

    # -- rollouts (runtime.rollout) ----------------------------------------------------
    def rollout(self, app: str) -> dict[str, Any]:
        """Which version each facet of ``app`` runs, and requests and errors per version
        (kept in the control database): what the operator judges a canary by."""
        versions = [v.version for v in self.apps.versions(app)]
        described = self.rollouts.describe(app)
        runs: dict[int, int] = {}
        warm: dict[int, int] = {}
        for key in self.registry.listed(app):
            assigned = self.rollouts.version_for(*key)
            slot = self.registry.slots.get(key)
            if slot is not None:
                assigned = slot.runs_version(assigned)
            runs[assigned] = runs.get(assigned, 0) + 1
            if slot is not None and slot.guest is not None:
                warm[slot.guest_version] = warm.get(slot.guest_version, 0) + 1
        counts = self.meters.by_version(app)
        described["versions"] = [
            {
                "version": v,
                "facets": runs.get(v, 0),
                "warm": warm.get(v, 0),
                "requests": counts.get(v, (0, 0))[0],
                "errors": counts.get(v, (0, 0))[1],
            }
            for v in versions
        ]
        return described

    def pin(self, target: str, version: int | str) -> dict[str, Any]:
        """Pin ``APP`` (every facet not pinned on its own) or ``APP/FACET`` to ``version``."""
        self.admin.refuse_if_readonly("pin")
        app, facet = self._rollout_target(target)
        version = _version_number(version)
        self.rollouts.pin(app, facet, version, [v.version for v in self.apps.versions(app)])
        self._log(app, facet or "", "info", f"pinned {target} to version {version}")
        self._note_rollout(app)
        return self.rollout(app)

    def unpin(self, target: str) -> bool:
        """Remove a pin; an unpinned app runs its latest version again. False if none was set."""
        self.admin.refuse_if_readonly("unpin")
        app, facet = self._rollout_target(target)
        removed = self.rollouts.unpin(app, facet)
        if removed:
            self._log(app, facet or "", "info", f"unpinned {target}")
            self._note_rollout(app)
        return removed

    def promote(self, app: str) -> dict[str, Any]:
        """Move every facet (but those pinned on their own) to the canary version."""
        self.admin.refuse_if_readonly("promote")
        self.apps.current(app)
        canary = self.rollouts.get(app).canary
        self.rollouts.promote(app)
        self._log(app, "", "info", f"promoted version {canary} to every facet")
        self._note_rollout(app)
        return self.rollout(app)

    def rollback(self, app: str, version: int | str | None = None) -> dict[str, Any]:
        """Return the canaries to the active version; with no canary (or ``version``
        named), make an older version active (the one before, or ``version``)."""
        self.admin.refuse_if_readonly("rollback")
        known = [v.version for v in self.apps.versions(app)]
        before: Rollout = self.rollouts.get(app)
        after = self.rollouts.rollback(app, None if version is None else _version_number(version), known)
        if before.canary is not None and after.canary is None and version is None:
            self._log(app, "", "warn", f"rolled back the canary version {before.canary}")
        else:
            self._log(app, "", "warn", f"rolled back to version {after.active}")
        self._note_rollout(app)
        return self.rollout(app)

    def _rollout_target(self, target: str) -> tuple[str, str | None]:
        app, sep, facet = target.partition("/")
        if sep:
            app, facet = parse_facet_target(target)
            self.registry.known(target)
            return app, facet
        self.apps.current(app)
        return app, None

    def _note_rollout(self, app: str) -> None:
        """Listings show versions: a rollout change is a change of every facet of ``app``."""
        for key in self.registry.listed(app):
            self.residency.touch(key)

    # -- alarms (runtime.alarms) ------------------------------------------------------
    def alarm_list(self, target: str | None = None, *, limit: int = 100) -> list[dict[str, Any]]:
        """Pending alarms, soonest first: the fleet's (``None`` or ``*``), an ``APP``'s or
        one ``APP/FACET``'s. Each: target, at_ms (asked for), due_ms (next delivery: later
        for a retry or a facet backing off), attempt (failed deliveries so far)."""
        app = facet = None
        if target and target != "*":
            if "/" in target:
                app, facet = self.registry.known(target)
            else:
                self.apps.current(target)
                app = target
        if type(limit) is not int or limit < 1:
            raise BadRequest(f"limit must be a whole number of at least 1, not {limit!r}")
        return [alarm.as_dict() for alarm in self.alarms.pending(app, facet, limit=limit)]

    def _dispatch_alarm(self, alarm: Alarm) -> None:
        """On the scheduler's thread: hand a due alarm to the worker pool."""
        if self._closed:
            raise RuntimeError("the supervisor is shut down")
        self._pool.submit(self._deliver, alarm)

    def _deliver(self, alarm: Alarm) -> None:
        """Run a due alarm's handler as a request of the facet's: its gate, its quotas, its
        own transaction, metered and billed as a request; then tell the scheduler, exactly
        once (``finished`` or ``postpone``: each balances the dispatch)."""
        app, facet = (alarm.app, alarm.facet)
        scheduler = self.alarms
        try:
            outcome = self._deliver_once(alarm)
        except Exception as exc:  # a bug here must not lose the alarm: it is retried
            self._log(app, facet, "error", f"alarm delivery failed: {exc!r}")
            outcome = (False, repr(exc))
        if isinstance(outcome, int):
            scheduler.postpone(alarm, outcome)
        else:
            scheduler.finished(alarm, ok=outcome[0], reason=outcome[1])
        self.residency.touch((app, facet))  # its next alarm changed: what listings show

    def _deliver_once(self, alarm: Alarm) -> tuple[bool, str] | int:
        """(delivered?, why not), or the time to postpone it to."""
        app, facet = key = (alarm.app, alarm.facet)
        if key not in self.registry.created or not self.apps.has(app):
            return True, "its facet is gone"  # nothing to wake
        if self.alarms.alarm(app, facet) is not alarm:
            return True, "replaced"  # replaced or deleted since it came due: finished ignores it
        slot = self.registry.slot(app, facet)
        health = slot.health
        if health is not None and health.state == "quarantined":
            return int(time.time() * 1000) + QUARANTINE_RECHECK_MS
        if health is not None and health.state == "backoff" and health.retry_at > time.time():
            return int(health.retry_at * 1000) + 1
        request_id = f"{self._id_prefix}-{next(self._ids):x}"
        request = Request(b"", request_id, self.quota_book.effective(app, facet), alarm=True)
        gave_up = pass_gate(slot.gate, request, self._run, slot, groups=self.commit_groups)
        if gave_up is not None:
            result = self._overloaded(slot, request, f"{app}/{facet} stayed busy for {gave_up:g} s")
        else:
            result = self._settle(slot, request)
        self.meters.count(app, facet, "alarms")
        if not result.ok:
            self.meters.count(app, facet, "alarm_failures")
            if alarm.attempt >= len(RETRY_DELAYS_S):
                self.meters.count(app, facet, "alarms_abandoned")
        return result.ok, f"{result.error}: {result.message}"

    # -- supervision (runtime.supervision) ---------------------------------------------
    def health(self, target: str) -> HealthInfo | None:
        """The facet's supervision record (None: healthy)."""
        key = self.registry.known(target)
        slot = self.registry.slots.get(key)
        return self.supervision.info(slot) if slot is not None else None

    def faulting(self) -> list[HealthInfo]:
        """Every facet with a supervision record, the worst first."""
        order = {"quarantined": 0, "backoff": 1, "ok": 2}
        infos = []
        for key in list(self.supervision.records):
            slot = self.registry.slots.get(key)
            info = self.supervision.info(slot) if slot is not None else None
            if info is not None:
                infos.append(info)
        return sorted(infos, key=lambda i: (order.get(i.state, 3), -i.faults, i.target))

    def reset(self, target: str) -> HealthInfo | None:
        """Clear the facet's supervision record (backoff, quarantine, a failed migration):
        its next request runs. Returns what was cleared (None: it was healthy)."""
        self.admin.refuse_if_readonly("reset")
        key = self.registry.known(target)
        slot = self.registry.slot(*key)
        slot.blocked = None
        cleared = self.supervision.reset(slot)
        self.alarms.wake(*key)  # an alarm held back by the quarantine runs now
        self.residency.touch(key)
        return cleared

    def app_list(self) -> list[AppInfo]:
        return self.reports.app_list()

    def app_versions(self, app: str) -> list[AppVersion]:
        return self.apps.versions(app)

    # -- facets (listings: reports.py; changes: admin.py) -------------------------------
    def facet_list(self, app: str | None = None) -> list[FacetInfo]:
        return self.reports.facet_list(app)

    def facet_changes(self, cursor: float | None = None) -> FacetChanges:
        """The facets whose listed state or usage may have changed since the call that
        returned ``cursor`` (all of them when None): what a live view refreshes, at a
        cost that follows the traffic, not the number of facets."""
        return self.reports.facet_changes(cursor)

    def facet_info(self, target: str) -> FacetInfo:
        """One facet as ``facet_list`` lists it (``NotFound`` if it does not exist)."""
        key = self.registry.known(target)
        infos = self.reports.facet_infos([key])
        if not infos:
            raise NotFound(f"no facet {target}")
        return infos[0]

    def facet_exists(self, target: str) -> bool:
        return parse_facet_target(target) in self.registry.created

    def _slot(self, app: str, facet: str) -> FacetSlot:
        return self.registry.slot(app, facet)

    def evict(self, target: str) -> bool:
        """Drop the facet's warm instance and close its database; True if it was warm."""
        return self.admin.evict(target)

    def delete(self, target: str) -> None:
        """Delete a facet: its instance, its database files, its quotas, usage rows,
        supervision record, pin and pending alarm."""
        self.admin.delete(target)
        key = parse_facet_target(target)
        self.supervision.forget(*key)
        self.rollouts.forget_facet(*key)
        self.alarms.forget(*key)

    def export_facet(self, target: str, path: str | os.PathLike[str]) -> int:
        """Copy the facet's database to ``path``, atomically, while it serves; never
        overwrites (``Transfer.export``). Returns the copy's size."""
        return self.admin.export_facet(target, path)

    def import_facet(self, path: str | os.PathLike[str], target: str) -> list[str]:
        """Create the new facet ``target`` from a copy of a checked SQLite database file
        (``Transfer.import_`` says what is checked). Returns the imported table names."""
        return self.admin.import_facet(path, target)

    # -- getting data back (history.py; the WAL archive: archive.py) ---------------------
    def snapshot(self, target: str, name: str | None = None) -> SnapshotInfo:
        """A consistent copy of the facet's data, taken online (no request waits)."""
        self.admin.refuse_if_readonly("snapshot")
        return self.history_ops.snapshot(target, name)

    def snapshots(self, target: str) -> list[SnapshotInfo]:
        """The facet's snapshots (a deleted facet's too), newest first."""
        return self.history_ops.snapshots(target)

    def delete_snapshot(self, target: str, name: str) -> None:
        self.admin.refuse_if_readonly("deleting a snapshot")
        self.history_ops.delete_snapshot(target, name)

    def restore(self, target: str, *, snapshot: str | None = None, at: str | float | None = None) -> RestoreInfo:
        """Replace the facet's data with a snapshot, or with its state after its last
        commit at or before ``at`` (``parse_when``), checked first; the state replaced is
        snapshotted (``undo_snapshot``). Requests wait at the gate meanwhile."""
        self.admin.refuse_if_readonly("restore")
        return self.history_ops.restore(target, snapshot=snapshot, at=at)

    def fork(
        self, target: str, new_target: str, *, snapshot: str | None = None, at: str | float | None = None
    ) -> RestoreInfo:
        """Create ``new_target`` (same app) from the facet's current data, a snapshot or a
        moment; the app's policy and the new facet's quotas apply."""
        self.admin.refuse_if_readonly("fork")
        return self.history_ops.fork(target, new_target, snapshot=snapshot, at=at)

    def undelete(self, target: str) -> RestoreInfo:
        """Bring back a deleted facet as it was when deleted, from the history kept."""
        self.admin.refuse_if_readonly("undelete")
        return self.history_ops.undelete(target)

    def history(self, target: str) -> HistoryInfo:
        """The restorable window, the archive's size and the snapshots of a facet (live or deleted)."""
        return self.history_ops.info(target)

    def db_path(self, target: str) -> Path:
        return self.registry.db_path(*self.registry.known(target))

    # -- requests (the gate: gate.py; running and refusing: serving.py) ----------------
    def call(self, target: str, body: bytes | str = b"") -> CallResult:
        """Send one request to ``APP/FACET`` and wait for its committed result. Never raises
        for a failed request: the result carries the error code."""
        return self._request(target, body, None)

    def fetch(self, target: str, request: HttpRequest) -> CallResult:
        """Send one HTTP request to ``APP/FACET`` (``runtime.http``): as ``call``, and the
        result's ``http`` is the response for the wire when ok. An app that exports
        ``facet_http`` gets the whole request; a body-only app gets its body (ABI.md, HTTP).
        ``status`` is the HTTP status the request was counted with, failures included."""
        if not isinstance(request, HttpRequest):
            raise TypeError(f"fetch takes an HttpRequest, not {type(request).__name__}")
        return self._request(target, request.body, request)

    def fetch_many(self, target: str, requests: Sequence[HttpRequest]) -> list[CallResult]:
        """Several HTTP requests to one facet, answered in order: as ``fetch`` each (each is
        admitted, counted and logged on its own), but this thread waits for the facet's gate
        once and runs them all before it leaves (``gate.pass_batch``): with commit groups
        they share COMMITs. What a server that queues each facet's requests on its own side
        hands over (``server``): one thread hand-off and one gate pass per batch instead of
        one per request."""
        for http in requests:
            if not isinstance(http, HttpRequest):
                raise TypeError(f"fetch_many takes HttpRequests, not {type(http).__name__}")
        admitted = [self._admit(target, http.body, http) for http in requests]
        ready = [entry for entry in admitted if not isinstance(entry, CallResult)]
        gave_up = None
        if ready:
            slot = ready[0][1]  # one target: one slot
            gave_up = pass_batch(
                slot.gate, [request for request, _ in ready], self._run, slot, groups=self.commit_groups
            )
        results = []
        for entry in admitted:
            if isinstance(entry, CallResult):
                results.append(entry)
            elif gave_up is not None:
                results.append(self._overloaded(entry[1], entry[0], f"{target} stayed busy for {gave_up:g} s"))
            else:
                results.append(self._settle(entry[1], entry[0]))
        return results

    def count_refused(self, target: str, code: ErrorCode, message: str, request_id: str, status: int = 0) -> bool:
        """Count and log an HTTP request that a server answered itself before handing it
        over (a body over ``max_body`` found while streaming it, a body too slow, the
        facet's queue full on the server's side), as this supervisor's own refusals are:
        metered with its status, a breach logged at most once a second. It touches only
        in-memory meters and the log queue (leaf locks, no SQLite), so a server may call
        it on its event loop. ``status`` is the one answered when it is not ``code``'s own
        (408 for a slow body: ``timeout`` is 504 for a slow guest). Counts nothing, and
        returns False, for a facet that does not exist: a client must not grow the meters
        by naming facets."""
        try:
            app, facet = parsed = self._targets[target]
        except BadRequest:
            return False
        if parsed not in self.registry.created:
            return False
        self._refuse(app, facet, code, message, request_id, True, status)
        return True

    def _request(self, target: str, body: bytes | str, http: HttpRequest | None) -> CallResult:
        admitted = self._admit(target, body, http)
        if isinstance(admitted, CallResult):
            return admitted
        request, slot = admitted
        gave_up = pass_gate(slot.gate, request, self._run, slot, groups=self.commit_groups)
        if gave_up is not None:
            return self._overloaded(slot, request, f"{target} stayed busy for {gave_up:g} s")
        return self._settle(slot, request)

    def _admit(
        self, target: str, body: bytes | str, http: HttpRequest | None
    ) -> CallResult | tuple[Request, FacetSlot]:
        """A request ready for its facet's gate, or the answer refusing it (name, app,
        creation under the policy, max_body, rate, the queue quota)."""
        request_id = f"{self._id_prefix}-{next(self._ids):x}"
        if self._refusing is not None:  # read-only, or shut down
            return _counted(CallResult.failure(*self._refusing, request_id), http)
        try:
            parsed = self._targets[target]  # parsed once (BadRequest for a bad address)
            app, facet = parsed
            if isinstance(body, str):
                body = body.encode("utf-8")
            elif type(body) is not bytes:
                body = as_body(body)  # bytearray, memoryview; BadRequest for anything else
        except BadRequest as exc:
            return _counted(CallResult.failure(exc.code, exc.message, request_id), http)
        if not self.apps.has(app):
            return _counted(CallResult.failure(ErrorCode.NOT_FOUND, f"no app named {app!r}", request_id), http)
        registry = self.registry
        if parsed not in registry.created:  # its first call: create it (or say why not)
            refused = registry.create(app, facet, request_id=request_id)
            if refused is not None:
                return _counted(refused, http)
        quotas = self.quota_book.effective(app, facet)
        if http is not None and len(body) > quotas.max_body:
            message = f"the request body of {len(body)} bytes is over the max_body quota of {quotas.max_body} bytes"
            return self._refuse(app, facet, ErrorCode.TOO_BIG, message, request_id, True)
        refusal = self.policy.admit_request(app, facet, quotas)
        if refusal is not None:
            return self._refuse(app, facet, refusal.code, refusal.message, request_id, http is not None)
        slot = registry.slots.get(parsed) or registry.slot(app, facet)
        if slot.health is not None:  # faulting (runtime.supervision): backoff refuses at once
            supervised = self._supervision.admit(slot, request_id)
            if supervised is not None:
                assert supervised.error is not None
                refused = self._refuse(app, facet, supervised.error, supervised.message, request_id, http is not None)
                refused.retry_after = supervised.retry_after
                return refused
        # The input gate (gate.py): one thread at a time runs a facet's requests; at most
        # `queue` wait behind it, and they then run together as one commit group.
        waiting = slot.gate.waiting
        if quotas.queue and waiting >= quotas.queue:
            if slot.health is not None:
                self._supervision.probe_lost(slot)  # it may have been admitted as the probe
            message = f"{target} already has {waiting} requests waiting (queue={quotas.queue})"
            return self._refuse(app, facet, ErrorCode.OVERLOADED, message, request_id, http is not None)
        return Request(body, request_id, quotas, http), slot

    def _overloaded(self, slot: FacetSlot, request: Request, message: str) -> CallResult:
        """The answer to a request that gave up waiting at its facet's gate."""
        http = request.http is not None
        if slot.health is not None:
            self._supervision.probe_lost(slot)
        return self._refuse(slot.app, slot.name, ErrorCode.OVERLOADED, message, request.request_id, http)

    def _settle(self, slot: FacetSlot, request: Request) -> CallResult:
        """Count, log and hand out an answered request (after its COMMIT)."""
        result = request.result
        assert result is not None
        app, facet = slot.app, slot.name
        if request.http is not None:
            result.status = result.http.status if result.http is not None else status_for(result.error)
        self.residency.used(slot)
        self.meters.record(app, facet, result.usage, result.error, request.storage, result.status, result.version)
        if request.logs:
            self.log_sink.add(request.logs)
        if self._observes:
            try:
                self.policy.observe(app, facet, result)
            except Exception as exc:  # a broken custom policy must not fail the request after COMMIT
                self._log(app, facet, "error", f"policy.observe failed: {exc!r}")
        return result

    def submit(self, target: str, body: bytes | str = b"") -> Future[CallResult]:
        """Run ``call`` on the worker pool; different facets run in parallel."""
        return self._pool.submit(self.call, target, body)

    # -- housekeeping (housekeeper.py) -------------------------------------------------
    def flush_usage(self) -> None:
        """Persist usage counters and series changed since the last flush."""
        self._housekeeper.flush_usage()

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

    # -- quotas (changing them: admin.py) ------------------------------------------------
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
        self.admin.set_quotas(target, {**(changes or {}), **kwargs})
        return self.quotas(target)

    # -- usage and logs (reports.py) --------------------------------------------------
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

    # -- browsing, read-only (browse.py) -----------------------------------------------
    def reader(self, target: str) -> FacetReader:
        """A read-only connection to the facet's database; close it when done."""
        return self.browser.reader(target)

    def tables(self, target: str) -> list[dict[str, Any]]:
        return self.browser.tables(target)

    def rows(
        self, target: str, table: str, *, limit: int = 100, offset: int = 0, where: str | None = None
    ) -> dict[str, Any]:
        return self.browser.rows(target, table, limit=limit, offset=offset, where=where)

    def query(self, target: str, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """Run a read-only operator query on the facet's database."""
        return self.browser.query(target, sql, params)


def _version_number(version: object) -> int:
    """An app version number as an operator gives it (``3`` or ``"3"``), else ``BadRequest``."""
    if type(version) is int and version >= 1:
        return version
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) <= 12:
        return int(version)
    raise BadRequest(f"bad version {str(version)[:40]!r}: expected a version number such as 3")


def _counted(result: CallResult, http: HttpRequest | None) -> CallResult:
    """``result`` (refused before it reached a facet's meters) with the status a ``fetch`` answers."""
    if http is not None:
        result.status = status_for(result.error)
    return result
