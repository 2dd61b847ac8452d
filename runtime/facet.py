"""``FacetSlot``: one facet's warm instance, its database and the request transactions.

Who runs on a facet, and when, is the gate's business (``gate.py``): a slot's methods
run with its ``gate`` held. ``run`` takes a group of requests: one request is one
transaction; several form a commit group: one ``BEGIN IMMEDIATE``, each request in
its own ``SAVEPOINT``, one ``COMMIT``. A request that fails rolls back to its
savepoint and only its own writes are undone; the others commit.

``run`` is the output gate: a response is handed out only after the ``COMMIT``
that made its writes durable, and any failure drops the instance, so the next
request starts from a fresh instantiation on a database without the failed
writes.

Thread-safety: a slot has no lock of its own. Every method except ``state`` and
``memory_bytes`` needs ``gate`` held; those two, and the attributes a listing reads
(``busy``, ``failed``, ``guest``, ``memory``), are plain attribute reads, safe from any
thread under the GIL (a listing may show a state one request old). ``counted_memory``
belongs to the residency and is guarded by its lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .apps import LoadedModule
from .archive import ArchiveCorrupt, FacetArchive
from .errors import ErrorCode
from .faults import failure_code
from .gate import Gate, Request, fail_all
from .hostcalls import UNCHANGED, AlarmStore, RequestContext
from .http import BadHttpResponse, HttpResponse, body_only_response, decode_response
from .logs import LogRecord
from .quotas import Quotas
from .storage import FacetDB
from .supervision import Health
from .types import CallResult, Usage
from .wasm import GuestFault, GuestInstance

#: ``(app, version) -> LoadedModule``: ``AppStore.module``.
Modules = Callable[[str, int], LoadedModule]

#: Seconds between two measurements of a busy facet's database size. A gauge for the
#: console and the meters; the quota itself is enforced by SQLite on every write.
STORAGE_GAUGE_PERIOD = 1.0


class FacetSlot:
    """Runtime state of one facet: its instance, its database, their transaction. Every
    method except ``state`` and ``memory_bytes`` needs ``gate`` held."""

    def __init__(self, app: str, name: str, db_path: Path, *, durability: str) -> None:
        self.app = app
        self.name = name
        self.db_path = db_path
        self.durability = durability
        self.gate = Gate()
        self.busy = False
        self.failed = False
        self.deleted = False
        self.last_used = 0.0
        self.last_error: str | None = None
        self.db: FacetDB | None = None
        self.guest: GuestInstance | None = None
        self.guest_version = 0
        self._storage_limit_applied: int | None = None
        #: Database size in bytes as of the last committed write (None: not measured yet).
        self.storage: int | None = None
        self.memory = 0
        #: ``memory`` as counted in the supervisor's memory budget (guarded by its warm lock).
        self.counted_memory = 0
        self._storage_measured = float("-inf")
        #: The supervision record while the facet faults (``runtime.supervision``); None
        #: when healthy, the one test the request path makes.
        self.health: Health | None = None
        #: The version this facet runs (``runtime.rollout``), as of rollout ``assigned_epoch``.
        self.assigned = 0
        self.assigned_epoch = 0
        #: The version whose ``facet_init`` last committed on this database (None: never,
        #: as far as the control database knows), and a version whose migration failed
        #: (the facet stays on ``migrated`` while that is its version).
        self.migrated: int | None = None
        self.blocked: int | None = None
        #: ``migrated`` changed and is not stored yet (``Serving`` stores it).
        self.migrated_changed = False
        #: Where ``get_alarm`` reads the facet's pending alarm (the scheduler; set by the registry).
        self.alarms: AlarmStore | None = None
        #: Bytes of its snapshots (``runtime.history``): billed as storage with the database.
        self.snapshot_bytes = 0
        #: Its WAL archive (``runtime.archive``), or None when history is off.
        self.archive: FacetArchive | None = None
        #: A request of the group just run staged an alarm change (``Serving`` applies it).
        self.alarm_changed = False
        #: A migration failed in the group just run, ``(code, message)`` (``Serving`` counts it).
        self.migration_fault: tuple[str, str] | None = None
        #: The version the last instantiation tried (what a failure is attributed to).
        self.attempted = 0

    @property
    def lock(self) -> threading.Lock:
        """The gate's lock (held: the facet is busy)."""
        return self.gate.lock

    @property
    def waiting(self) -> int:
        """Requests queued at the gate."""
        return self.gate.waiting

    @property
    def state(self) -> str:
        health = self.health
        if health is not None and health.state != "ok":
            return health.state  # backoff, quarantined
        if self.busy:
            return "busy"
        if self.failed:
            return "failed"
        return "warm" if self.guest is not None else "cold"

    def memory_bytes(self) -> int:
        """Linear memory of the warm instance as of its last request. Safe from any thread:
        a wasmtime store must not be touched while another thread runs in it."""
        return self.memory if self.guest is not None else 0

    def runs_version(self, assigned: int) -> int:
        """The version this facet runs when its rollout assigns ``assigned``: the one it
        stayed on if its migration to ``assigned`` failed (``blocked``), else ``assigned``."""
        if assigned == self.blocked and self.migrated is not None:
            return self.migrated
        return assigned

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        """Evict: drop the instance and close the database connection."""
        self.guest = None
        self.close_db()

    def close_db(self) -> None:
        """Close the database connection (the warm instance, if any, stays)."""
        if self.db is not None:
            tap = self.db.tap
            self.db.close()
            self.db = None
            self._storage_limit_applied = None
            if tap is not None:
                tap.detach()  # after the close: no commit can follow what it copies

    def _event(self, events: list[LogRecord], request_id: str, level: str, message: str) -> None:
        """A supervisor event (instantiated, trapped...): it returns with the request's logs."""
        events.append(
            LogRecord(
                time=time.time(),
                app=self.app,
                facet=self.name,
                request_id=request_id,
                level=level,
                message=message,
                source="supervisor",
            )
        )

    def _steps(self, nested: bool) -> tuple[Callable[[float], None], Callable[[], None], Callable[[], None]]:
        """``(begin, end, undo)`` of one request's (or init's) transaction: its own
        BEGIN/COMMIT/ROLLBACK, or in a commit group SAVEPOINT/RELEASE/ROLLBACK TO."""
        db = self.db
        assert db is not None
        return (db.savepoint, db.release, db.rollback_to) if nested else (db.begin, db.commit, db.rollback)

    def open_db(self, quotas: Quotas) -> FacetDB:
        """Open the database if it is not (raises what opening raises)."""
        return self._ensure_db(quotas)

    def _ensure_db(self, quotas: Quotas) -> FacetDB:
        if self.db is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = (
                self._open_archived(self.archive)
                if self.archive is not None
                else FacetDB(str(self.db_path), durability=self.durability)
            )
        if self._storage_limit_applied != quotas.storage:
            self.db.set_storage_limit(quotas.storage)
            self._storage_limit_applied = quotas.storage
        return self.db

    def _open_archived(self, archive: FacetArchive) -> FacetDB:
        """Open the database with its WAL archived (``runtime.archive``); if the archive
        cannot start, the facet serves anyway, with SQLite checkpointing as it would."""
        db = FacetDB(str(self.db_path), durability=self.durability, checkpoints=False)
        try:
            if not db.keeps_wal_on_close:
                raise OSError("this SQLite cannot keep the WAL on close")
            archive.attach(db)
        except (OSError, sqlite3.Error, ArchiveCorrupt) as exc:
            archive.log("error", f"archive not started: {type(exc).__name__}: {exc}")
            db.query_platform("PRAGMA wal_autocheckpoint=1000")
            return db
        if not archive.broken:
            db.tap = archive
        else:
            db.query_platform("PRAGMA wal_autocheckpoint=1000")
        return db

    def _context(self, request_id: str, quotas: Quotas) -> RequestContext:
        assert self.db is not None  # opened by run() before any request
        return RequestContext(
            app=self.app,
            facet=self.name,
            request_id=request_id,
            db=self.db,
            log_limit=quotas.log_bytes,
            max_result_bytes=max(4096, quotas.memory // 4),
            alarms=self.alarms,
        )

    def _ensure_instance(
        self,
        module: LoadedModule,
        quotas: Quotas,
        request_id: str,
        usage: Usage,
        nested: bool,
        events: list[LogRecord],
    ) -> RequestContext | None:
        """Instantiate if needed, then run ``facet_init`` in its own transaction (or, in a
        commit group, its own savepoint).

        ``module`` is the version the facet should run. Moving to it from the version it
        ran before is a migration: if the new version's instantiation or ``facet_init``
        fails, its transaction is rolled back, the reason logged, and the facet stays on
        (and this request runs on) the version before, until its version changes again or
        an operator resets it (``blocked``). Returns the init's context (for its logs) or
        None when the warm instance was reused. Raises ``GuestFault``.
        """
        target = module.version.version
        previous = self.migrated
        if self.blocked is not None and target != self.blocked:
            self.blocked = None  # its version changed again (a rollback, a new load): try that
        if self.runs_version(target) != target:
            module = self._modules(self.app, self.runs_version(target))  # its migration failed: stay put
        version = module.version.version
        guest = self.guest
        if guest is not None:
            if guest.memory_size > quotas.memory:
                # A memory quota shrunk below what the instance already holds is
                # applied at the next instantiation, i.e. now.
                self._event(events, request_id, "info", "memory quota below current memory: re-instantiating")
                self.guest = guest = None
            elif self.guest_version != version:
                self._event(events, request_id, "info", f"moving from version {self.guest_version} to {version}")
                self.guest = guest = None
            elif guest.memory_limit != quotas.memory:
                guest.set_memory_limit(quotas.memory)
        if guest is not None:
            return None
        usage.cold_start = True
        try:
            return self._start(module, quotas, request_id, usage, nested, events)
        except GuestFault as exc:
            # The guest's own failure (not a transient host error, which fails the request
            # and is tried again next time): a migration stays blocked on this version.
            if previous is None or previous == version:  # not a migration: the facet fails
                raise
            code, message = exc.code, exc.message
            self.blocked = version
            self.migration_fault = (str(code), message)
            self._event(
                events,
                request_id,
                "error",
                f"migration from version {previous} to {version} failed ({code}): {message}; "
                f"rolled back, the facet stays on version {previous}",
            )
        return self._start(self._modules(self.app, previous), quotas, request_id, usage, nested, events)

    def _start(
        self,
        module: LoadedModule,
        quotas: Quotas,
        request_id: str,
        usage: Usage,
        nested: bool,
        events: list[LogRecord],
    ) -> RequestContext:
        """Instantiate ``module`` and run its ``facet_init`` in a transaction of its own."""
        self.attempted = module.version.version
        guest = module.instantiate(fuel=quotas.fuel, memory_limit=quotas.memory, timeout_ms=quotas.timeout_ms)
        usage.fuel += guest.fuel_used
        ctx = self._context(request_id, quotas)
        begin, end, undo = self._steps(nested)
        begin(time.monotonic() + quotas.timeout_ms / 1000)
        try:
            try:
                guest.call_init(fuel=quotas.fuel, timeout_ms=quotas.timeout_ms, host=ctx)
            finally:
                usage.fuel += guest.fuel_used
            if ctx.poison is not None:
                raise GuestFault(*ctx.poison)
            end()
        except BaseException:
            undo()
            events.extend(ctx.logs)  # what the failed init logged is the operator's best clue
            raise
        finally:
            usage.rows_read += ctx.counters.rows_read
            usage.rows_written += ctx.counters.rows_written
        version = module.version.version
        self.guest = guest
        self.guest_version = version
        if self.migrated != version:
            self.migrated = version
            self.migrated_changed = True
        self._event(events, request_id, "info", f"instantiated version {version}")
        return ctx

    def run(self, module: LoadedModule, group: list[Request], modules: Modules) -> None:
        """Run ``group`` (oldest first) and set each request's ``result`` and ``logs``.

        One request is one transaction. Several form a commit group: one transaction,
        a savepoint per request, one COMMIT, and no result is final before it.
        ``module`` is the version the facet should run; ``modules(app, version)`` gives
        the one it ran before, should its migration fail.
        """
        self._modules = modules
        self.busy = True
        try:
            try:
                db = self._ensure_db(group[-1].quotas)
            except Exception as exc:  # unreadable file, disk full: this facet fails, others go on
                fail_all(group, ErrorCode.INTERNAL, f"cannot open database: {exc}")
                return
            if len(group) == 1:
                self._run_one(module, group[0], db, nested=False)
            else:
                self._run_group(module, group, db)
        finally:
            self.busy = False
            self.last_used = time.monotonic()

    def _run_group(self, module: LoadedModule, group: list[Request], db: FacetDB) -> None:
        try:
            db.begin()
        except Exception as exc:  # e.g. the database is locked or unreadable
            fail_all(group, ErrorCode.INTERNAL, f"BEGIN failed: {exc}")
            return
        released: list[Request] = []  # answered by the guest; durable at the COMMIT
        for index, request in enumerate(group):
            self._run_one(module, request, db, nested=True)
            if not db.in_transaction:
                # The request's statement rolled back the whole transaction (see
                # FacetDB.execute_guest): the requests before it lost their writes. None of
                # them was answered yet, so each runs again, alone, on a fresh instance.
                self.guest = None
                for again in released + group[index + 1 :]:
                    self._run_one(module, again, db, nested=False)
                return
            if request.result is not None and request.result.ok:
                released.append(request)
        started = time.perf_counter()
        try:
            db.commit()
        except Exception as exc:
            db.rollback()
            self.guest = None
            self.failed = True
            code = failure_code(exc)
            self.last_error = str(code)
            for request in released:
                self._event(request.logs, request.request_id, "error", f"request failed ({code}): COMMIT: {exc}")
                assert request.result is not None
                request.result = CallResult.failure(
                    code, f"COMMIT failed: {type(exc).__name__}: {exc}", request.request_id, request.result.usage
                )
                request.result.usage.rows_written = 0
            return
        share = (time.perf_counter() - started) * 1000 / max(1, len(released))
        for request in released:
            assert request.result is not None
            usage = request.result.usage
            usage.wall_ms += share  # the COMMIT, shared by those it made durable
            usage.commit_group = len(released)

    def _run_one(self, module: LoadedModule, request: Request, db: FacetDB, nested: bool) -> None:
        """Run one request in a transaction of its own or (``nested``) in a savepoint of the
        open one; set its ``result`` and ``logs``."""
        started = time.perf_counter()
        usage = Usage()
        logs: list[LogRecord] = []
        events: list[LogRecord] = []  # after the guest's own logs, as they always were
        request.logs = logs
        request.alarm_change = UNCHANGED  # a request run again (a commit group's retry) starts afresh
        target_version = module.version.version
        self.attempted = 0
        quotas, request_id = request.quotas, request.request_id
        ctx = init_ctx = None
        try:
            init_ctx = self._ensure_instance(module, quotas, request_id, usage, nested, events)
            if init_ctx is not None:
                logs.extend(init_ctx.logs)
                usage.log_bytes += init_ctx.counters.log_bytes
            ctx = self._context(request_id, quotas)
            if request.alarm:
                # The alarm being delivered is consumed (as in Durable Objects): the handler's
                # get_alarm answers none unless it (or a facet_init that just ran) set the
                # next one, and a delivery that commits deletes it (runtime.alarms).
                staged = init_ctx.alarm_change if init_ctx is not None else UNCHANGED
                ctx.alarm_change = None if staged is UNCHANGED else staged
            begin, end, undo = self._steps(nested)
            begin(time.monotonic() + quotas.timeout_ms / 1000)
            done = False
            guest = self.guest
            assert guest is not None  # _ensure_instance made one or raised
            self.attempted = self.guest_version  # what a failure from here is counted against
            try:
                http = request.http
                whole = http is not None and guest.serves_http  # facet_http gets the whole request
                answer: HttpResponse | None = None
                if request.alarm:  # an alarm's delivery (runtime.alarms): the handler, no body
                    if guest.has_alarm:
                        guest.alarm(fuel=quotas.fuel, timeout_ms=quotas.timeout_ms, host=ctx)
                    else:  # set under a version that had one: retrying could never help
                        message = f"alarm dropped: version {self.guest_version} has no alarm handler"
                        self._event(events, request_id, "warn", message)
                    response = b""
                else:
                    body = http.envelope() if whole and http is not None else request.body
                    response = guest.handle(body, fuel=quotas.fuel, timeout_ms=quotas.timeout_ms, host=ctx, http=whole)
                if ctx.poison is not None:
                    raise GuestFault(*ctx.poison)
                if whole:
                    try:  # checked before COMMIT: a bad answer rolls back like a trap
                        answer = decode_response(response)
                    except BadHttpResponse as exc:
                        raise GuestFault(ErrorCode.BAD_RESPONSE, f"facet_http answered badly: {exc}") from None
                    response = answer.body
                elif http is not None:
                    answer = body_only_response(response)
                if usage.cold_start or (
                    ctx.counters.rows_written and started - self._storage_measured > STORAGE_GAUGE_PERIOD
                ):
                    # Read inside the write transaction (cheap here; a fresh read lock after
                    # COMMIT), at most every STORAGE_GAUGE_PERIOD.
                    self.storage = request.storage = db.storage_bytes() + self.snapshot_bytes
                    self._storage_measured = started
                end()
                done = True
                change = ctx.alarm_change
                if change is UNCHANGED and init_ctx is not None:
                    change = init_ctx.alarm_change  # set in facet_init: it stands with this request
                request.alarm_change = change  # applied after the COMMIT, gate still held (Serving.run)
                if change is not UNCHANGED:
                    self.alarm_changed = True
            finally:
                if self.guest is not None:
                    usage.fuel += self.guest.fuel_used
                    usage.memory = self.guest.memory_size
                if not done:
                    undo()
        except GuestFault as fault:
            if ctx is not None and ctx.poison is not None and fault.code == ErrorCode.TRAP:
                # A host call decided the request's fate (storage_full, timeout inside SQL...)
                # and the guest then failed on its answer (an SDK raises it as an exception):
                # the decision is the cause (hostcalls.py: "however the guest goes on").
                fault = GuestFault(*ctx.poison)
            self.guest = None  # the instance's state is suspect: start fresh next time
            self.failed = True
            self.last_error = fault.code
            self._event(events, request_id, "warn", f"request failed ({fault.code}): {fault.message}")
            request.result = CallResult.failure(fault.code, fault.message, request_id, usage)
        except Exception as exc:  # sqlite3 errors on BEGIN/COMMIT and host bugs
            self.guest = None
            self.failed = True
            code = failure_code(exc)
            self.last_error = str(code)
            self._event(events, request_id, "error", f"request failed ({code}): {exc}")
            request.result = CallResult.failure(code, f"{type(exc).__name__}: {exc}", request_id, usage)
        else:
            self.failed = False
            request.result = CallResult(ok=True, response=response, request_id=request_id, usage=usage, http=answer)
        # The version that ran it (after a failed migration, the one the facet stayed on).
        request.result.version = self.guest_version if self.guest is not None else (self.attempted or target_version)
        self._finish(request.result, ctx, logs, events, started)

    def _finish(
        self,
        result: CallResult,
        ctx: RequestContext | None,
        logs: list[LogRecord],
        events: list[LogRecord],
        started: float,
    ) -> None:
        usage = result.usage
        if ctx is not None:
            logs.extend(ctx.logs)
            usage.rows_read += ctx.counters.rows_read
            usage.rows_written += ctx.counters.rows_written if result.ok else 0
            usage.log_bytes += ctx.counters.log_bytes
            usage.logs_truncated += ctx.counters.logs_truncated
            usage.sql_calls += ctx.counters.sql_calls
        if not result.ok:
            usage.rows_written = 0  # rolled back: nothing was written
        usage.wall_ms = (time.perf_counter() - started) * 1000
        if self.guest is not None:
            self.memory = usage.memory  # measured when the guest returned (handle's finally)
        if events:
            logs.extend(events)
