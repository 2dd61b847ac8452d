"""``FacetSlot``: one facet's warm instance, its database and the request transaction.

The slot's lock is the input gate (one request at a time per facet); the
caller takes it. ``handle`` is the output gate: the response leaves only
after ``COMMIT`` returned, and any failure rolls the whole request back and
drops the instance, so the next request starts from a fresh instantiation on
an untouched database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .apps import LoadedModule
from .errors import ErrorCode
from .hostcalls import RequestContext
from .logs import LogRecord
from .metering import Usage
from .quotas import Quotas
from .storage import FacetDB
from .wasm import GuestFault, GuestInstance, WasmRuntime

#: Seconds between two measurements of a busy facet's database size.
STORAGE_GAUGE_PERIOD = 0.1


@dataclass(slots=True)
class CallResult:
    """The outcome of one request.

    Attributes:
        ok: True when the guest answered and its transaction committed.
        response: the guest's response bytes (empty on failure).
        error: a stable ``ErrorCode`` string, or None when ok.
        message: a human explanation of the error ("" when ok).
        usage: what the request used.
        request_id: identifies the request in logs.
    """

    ok: bool
    response: bytes = b""
    error: str | None = None
    message: str = ""
    usage: Usage = field(default_factory=Usage)
    request_id: str = ""

    @classmethod
    def failure(cls, code: ErrorCode, message: str, request_id: str = "",
                usage: Usage | None = None) -> "CallResult":
        return cls(ok=False, error=str(code), message=message, request_id=request_id,
                   usage=usage or Usage())


class FacetSlot:
    """Runtime state of one facet. Every method except ``state`` needs ``lock`` held."""

    def __init__(self, app: str, name: str, db_path: Path, *, durability: str) -> None:
        self.app = app
        self.name = name
        self.db_path = db_path
        self.durability = durability
        self.lock = threading.Lock()
        self.waiting = 0
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
        self._storage_measured = float("-inf")
        #: Supervisor events produced while handling (instantiated, trapped...).
        self.events: list[LogRecord] = []

    @property
    def state(self) -> str:
        if self.busy:
            return "busy"
        if self.failed:
            return "failed"
        return "warm" if self.guest is not None else "cold"

    def memory_bytes(self) -> int:
        """Linear memory of the warm instance as of its last request. Safe from any thread:
        a wasmtime store must not be touched while another thread runs in it."""
        return self.memory if self.guest is not None else 0

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        """Evict: drop the instance and close the database connection."""
        self.guest = None
        self.close_db()

    def close_db(self) -> None:
        """Close the database connection (the warm instance, if any, stays)."""
        if self.db is not None:
            self.db.close()
            self.db = None
            self._storage_limit_applied = None

    def _event(self, request_id: str, level: str, message: str) -> None:
        self.events.append(LogRecord(time=time.time(), app=self.app, facet=self.name,
                                     request_id=request_id, level=level, message=message,
                                     source="supervisor"))

    def _ensure_db(self, quotas: Quotas) -> FacetDB:
        if self.db is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = FacetDB(str(self.db_path), durability=self.durability)
        if self._storage_limit_applied != quotas.storage:
            self.db.set_storage_limit(quotas.storage)
            self._storage_limit_applied = quotas.storage
        return self.db

    def _context(self, request_id: str, quotas: Quotas) -> RequestContext:
        return RequestContext(app=self.app, facet=self.name, request_id=request_id, db=self.db,
                              log_limit=quotas.log_bytes,
                              max_result_bytes=max(4096, quotas.memory // 4))

    def _ensure_instance(self, wasm: WasmRuntime, module: LoadedModule, quotas: Quotas,
                         request_id: str, usage: Usage) -> RequestContext | None:
        """Instantiate if needed, then run ``facet_init`` in its own transaction.

        Returns the init's context (for its logs) or None when the warm
        instance was reused. Raises ``GuestFault``.
        """
        guest = self.guest
        if guest is not None:
            if guest.memory_size > quotas.memory:
                # A memory quota shrunk below what the instance already holds is
                # applied at the next instantiation, i.e. now.
                self._event(request_id, "info", "memory quota below current memory: re-instantiating")
                self.guest = guest = None
            elif self.guest_version != module.version.version:
                self._event(request_id, "info", f"upgrading to version {module.version.version}")
                self.guest = guest = None
            elif guest.memory_limit != quotas.memory:
                guest.set_memory_limit(quotas.memory)
        if guest is not None:
            return None
        usage.cold_start = True
        guest = wasm.instantiate(module.pre, fuel=quotas.fuel, memory_limit=quotas.memory,
                                 timeout_ms=quotas.timeout_ms)
        usage.fuel += guest.fuel_used
        ctx = self._context(request_id, quotas)
        db = self.db
        db.begin(deadline=time.monotonic() + quotas.timeout_ms / 1000)
        try:
            try:
                guest.call_init(fuel=quotas.fuel, timeout_ms=quotas.timeout_ms, host=ctx)
            finally:
                usage.fuel += guest.fuel_used
            if ctx.poison is not None:
                raise GuestFault(*ctx.poison)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        finally:
            usage.rows_read += ctx.counters.rows_read
            usage.rows_written += ctx.counters.rows_written
        self.guest = guest
        self.guest_version = module.version.version
        self._event(request_id, "info", f"instantiated version {module.version.version}")
        return ctx

    def handle(self, wasm: WasmRuntime, module: LoadedModule, quotas: Quotas,
               body: bytes, request_id: str) -> tuple[CallResult, list[LogRecord]]:
        """Run one request as one transaction. Returns the result and its log records."""
        started = time.perf_counter()
        usage = Usage()
        logs: list[LogRecord] = []
        self.busy = True
        try:
            try:
                db = self._ensure_db(quotas)
            except Exception as exc:  # unreadable file, disk full: this facet fails, others go on
                return CallResult.failure(ErrorCode.INTERNAL, f"cannot open database: {exc}",
                                          request_id, usage), logs
            ctx = None
            try:
                init_ctx = self._ensure_instance(wasm, module, quotas, request_id, usage)
                if init_ctx is not None:
                    logs.extend(init_ctx.logs)
                    usage.log_bytes += init_ctx.counters.log_bytes
                ctx = self._context(request_id, quotas)
                db.begin(deadline=time.monotonic() + quotas.timeout_ms / 1000)
                try:
                    response = self.guest.handle(body, fuel=quotas.fuel, timeout_ms=quotas.timeout_ms,
                                                 host=ctx)
                    if ctx.poison is not None:
                        raise GuestFault(*ctx.poison)
                    if usage.cold_start or (ctx.counters.rows_written
                                            and started - self._storage_measured > STORAGE_GAUGE_PERIOD):
                        # Read inside the write transaction (cheap here; a fresh read lock after
                        # COMMIT), at most every STORAGE_GAUGE_PERIOD: it is a gauge, and the quota
                        # itself is enforced by SQLite's max_page_count on every write.
                        self.storage = db.storage_bytes()
                        self._storage_measured = started
                    db.commit()
                finally:
                    if self.guest is not None:
                        usage.fuel += self.guest.fuel_used
                        usage.memory = self.guest.memory_size
                    if db.in_transaction:
                        db.rollback()
            except GuestFault as fault:
                self.guest = None  # the instance's state is suspect: start fresh next time
                self.failed = True
                self.last_error = fault.code
                self._event(request_id, "warn", f"request failed ({fault.code}): {fault.message}")
                return self._finish(CallResult.failure(fault.code, fault.message, request_id, usage),
                                    ctx, logs, started)
            except Exception as exc:  # sqlite3 errors on BEGIN/COMMIT and host bugs
                self.guest = None
                self.failed = True
                code = ErrorCode.STORAGE_FULL if "full" in str(exc) else ErrorCode.INTERNAL
                self.last_error = str(code)
                self._event(request_id, "error", f"request failed ({code}): {exc}")
                return self._finish(CallResult.failure(code, f"{type(exc).__name__}: {exc}",
                                                       request_id, usage), ctx, logs, started)
            self.failed = False
            return self._finish(CallResult(ok=True, response=response, request_id=request_id,
                                           usage=usage), ctx, logs, started)
        finally:
            self.busy = False
            self.last_used = time.monotonic()

    def _finish(self, result: CallResult, ctx: RequestContext | None, logs: list[LogRecord],
                started: float) -> tuple[CallResult, list[LogRecord]]:
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
            self.memory = usage.memory   # measured when the guest returned (handle's finally)
        if self.events:
            logs.extend(self.events)
            self.events = []
        return result, logs
