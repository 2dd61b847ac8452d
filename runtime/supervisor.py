"""The supervisor: routing, facet lifecycle, the worker pool and housekeeping.

A request's path (see ``call``): name check -> app lookup -> facet creation
(policy) -> policy admission (rate) -> the facet's input gate (queue quota) ->
``FacetSlot.handle`` (instance, transaction, guest, COMMIT) -> meters, logs,
policy observation -> ``CallResult``.
"""

from __future__ import annotations

import calendar
import dataclasses
import errno
import itertools
import os
import secrets
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from . import transfer
from .abi import is_valid_name
from .apps import AppStore, AppVersion
from .billing import PriceSheet, compute_bill, prometheus_text
from .control import ControlDB
from .errors import BadRequest, ErrorCode, FacetsError, NotFound
from .facet import FacetSlot
from .residency import Residency
from .gate import Request, fail_all, pass_gate
from .logs import LEVEL_RANK, LogRecord, LogSink
from .metering import RESOLUTIONS, SERIES_FIELDS, Meters
from .policy import Policy, QuotaPolicy
from .settings import (DURABILITIES, SupervisorSettings, default_memory_budget,  # noqa: F401
                       open_db_budget, open_descriptors, raise_fd_limit)
from .quotas import QuotaBook, Quotas, parse_target, scope_of
from .storage import RESERVED_PREFIX, FacetReader
from .types import AppInfo, CallResult, FacetChanges, FacetInfo
from .wasm import WasmRuntime

#: The code of a write refused by a read-only supervisor. ``ErrorCode.REFUSED`` is being
#: added to errors.py by another change; until it lands, ``bad_request``.
REFUSED: ErrorCode = getattr(ErrorCode, "REFUSED", ErrorCode.BAD_REQUEST)
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14


def parse_facet_target(target: str) -> tuple[str, str]:
    """Split ``APP/FACET``; raise ``BadRequest`` before anything touches the disk."""
    if not isinstance(target, str):
        raise BadRequest("a facet is addressed as 'APP/FACET'")
    app, sep, facet = target.partition("/")
    if not sep:
        raise BadRequest(f"bad facet address {target!r}: expected APP/FACET")
    for part, what in ((app, "app"), (facet, "facet")):
        if not is_valid_name(part):
            raise BadRequest(f"bad {what} name {part!r}: names match [a-z0-9][a-z0-9_-]{{0,62}}")
    return app, facet


class Supervisor:
    """Hosts apps and their facets from one data directory.

    Args:
        data_dir: holds ``control.sqlite3``, ``modules/`` and ``facets/``; created if missing
            (unless ``readonly``).
        settings: a ``SupervisorSettings``; keywords override its fields (each keyword
            of ``SupervisorSettings`` works on its own too: ``Supervisor(d, max_warm=3)``).
    """

    def __init__(self, data_dir: str | os.PathLike[str], settings: SupervisorSettings | None = None,
                 **overrides: Any) -> None:
        settings = dataclasses.replace(settings or SupervisorSettings(), **overrides)
        settings.validate()
        self.settings = settings
        durability, readonly, prices = settings.durability, settings.readonly, settings.prices
        self.data_dir = Path(data_dir)
        self.readonly = readonly
        if readonly:
            if not (self.data_dir / "control.sqlite3").is_file():
                raise NotFound(f"no data directory at {self.data_dir} (no control.sqlite3) to open read-only")
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / "facets").mkdir(exist_ok=True)
        self.durability = durability
        self.commit_groups = settings.groups_commits()
        self.log_retention_count = settings.log_retention_count
        self.log_retention_age = settings.log_retention_age
        self.policy = settings.policy or QuotaPolicy()
        if prices is None and (self.data_dir / "prices.json").exists():
            prices = self.data_dir / "prices.json"
        self.prices = prices if isinstance(prices, PriceSheet) else \
            PriceSheet.from_file(prices) if prices is not None else PriceSheet()
        self.control = ControlDB(str(self.data_dir / "control.sqlite3"), readonly=readonly)
        self.wasm = WasmRuntime(settings.engine)
        self.apps = AppStore(self.data_dir, self.control, self.wasm)
        self.quota_book = QuotaBook(self.control.quota_settings())
        self.meters = Meters(self.control.load_usage())
        # Read-only, the supervisor's own events still reach subscribers, and are not stored.
        self.log_sink = LogSink(_discard if readonly else self.control.write_logs)
        self._lock = threading.RLock()
        self._slots: dict[tuple[str, str], FacetSlot] = {}
        self._created: dict[tuple[str, str], float] = {}
        self._facet_counts: dict[str, int] = {}
        #: Creations in flight (their policy call runs outside the lock), per facet and
        #: per app; see ``_create_facet``.
        self._creating: dict[tuple[str, str], threading.Event] = {}
        self._reserved: dict[str, int] = {}
        for row in self.control.facet_rows():
            self._register(row["app"], row["name"], row["created_at"])
        if not readonly:
            self._adopt_orphan_databases()
        self.residency = Residency(
            max_warm=settings.max_warm, idle_timeout=settings.idle_timeout,
            max_open_dbs=settings.max_open_dbs or open_db_budget(raise_fd_limit(), open_descriptors()),
            memory_budget=settings.memory_budget or default_memory_budget(),
            log=lambda app, facet, level, message: self._supervisor_log(app, facet, level, message))
        self._targets: dict[str, tuple[str, str]] = {}   # "app/facet" -> parsed, checked once
        self._observes = type(self.policy).observe is not Policy.observe
        self._breaches: dict[tuple[str, str, str | None], tuple[float, int]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._pool = ThreadPoolExecutor(max_workers=settings.workers or max(4, (os.cpu_count() or 2) * 2),
                                        thread_name_prefix="facets-worker")
        self._closed = threading.Event()
        self._usage_flush_interval = settings.usage_flush_interval
        self._flush_lock = threading.Lock()
        self._housekeeper = threading.Thread(target=self._housekeeping, name="facets-housekeeper",
                                             daemon=True)
        if not readonly:   # nothing to flush, prune or evict: no request runs
            self._housekeeper.start()

    # -- context manager ------------------------------------------------------
    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Finish in-flight requests, flush usage and logs, release every file."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.shutdown(wait=True)
        if self._housekeeper.is_alive():
            self._housekeeper.join(timeout=5)
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.gate.held():
                slot.close()
        self.flush_usage()
        self.log_sink.close()
        self.wasm.close()
        self.control.close()

    def _refuse_if_readonly(self, what: str) -> None:
        if self.readonly:
            raise FacetsError(f"{what} refused: the supervisor was opened read-only", REFUSED)

    # -- apps -------------------------------------------------------------------
    def load_app(self, path: str | os.PathLike, name: str | None = None) -> AppVersion:
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
        counts: dict[str, int] = {}
        with self._lock:
            for app, _ in self._created:
                counts[app] = counts.get(app, 0) + 1
        return [AppInfo(name=n, version=self.apps.current(n), versions=len(self.apps.versions(n)),
                        facets=counts.get(n, 0)) for n in self.apps.names()]

    def app_versions(self, app: str) -> list[AppVersion]:
        return self.apps.versions(app)

    # -- facets -----------------------------------------------------------------
    def facet_list(self, app: str | None = None) -> list[FacetInfo]:
        if app is not None and not self.apps.has(app):
            raise NotFound(f"no app named {app!r}")
        with self._lock:
            keys = sorted(k for k in self._created if app is None or k[0] == app)
            return [self._facet_info(key) for key in keys]

    def facet_changes(self, cursor: float | None = None) -> FacetChanges:
        """The facets whose listed state or usage may have changed since the call that
        returned ``cursor`` (all of them when None): what a live view refreshes, at a
        cost that follows the traffic, not the number of facets."""
        with self._lock:
            now, complete, changed, removed = self.residency.changes_since(cursor)
            if complete:
                return FacetChanges(now, True, self.facet_list(), [])
            return FacetChanges(now, False, [self._facet_info(k) for k in changed if k in self._created],
                                [f"{app}/{facet}" for app, facet in removed])

    def _facet_info(self, key: tuple[str, str]) -> FacetInfo:
        slot = self._slots.get(key)
        warm = slot is not None and slot.guest is not None
        usage = self.meters.snapshot(*key)
        usage["memory"] = slot.memory_bytes() if slot is not None else 0
        return FacetInfo(app=key[0], name=key[1], state=slot.state if slot else "cold",
                         created_at=self._created[key], usage=usage,
                         version=slot.guest_version if warm else None)

    def _touch(self, key: tuple[str, str]) -> None:
        self.residency.touch(key)

    def facet_exists(self, target: str) -> bool:
        return parse_facet_target(target) in self._created

    def _slot(self, app: str, facet: str) -> FacetSlot:
        key = (app, facet)
        slot = self._slots.get(key)
        if slot is None:
            with self._lock:
                slot = self._slots.get(key)
                if slot is None:
                    slot = self._slots[key] = FacetSlot(
                        app, facet, self.data_dir / "facets" / app / f"{facet}.sqlite3",
                        durability=self.durability)
        return slot

    def _register(self, app: str, facet: str, created_at: float) -> None:
        if (app, facet) not in self._created:
            self._facet_counts[app] = self._facet_counts.get(app, 0) + 1
        self._created[(app, facet)] = created_at

    def _unregister(self, app: str, facet: str) -> None:
        if self._created.pop((app, facet), None) is not None:
            self._facet_counts[app] -= 1

    def _adopt_orphan_databases(self) -> None:
        """Register facet databases the control database does not know (its last changes
        can be lost in a power cut, the facet's committed data cannot)."""
        root = self.data_dir / "facets"
        for path in transfer.remove_temps(root):
            self._supervisor_log(path.parent.name, "", "warn",
                                 f"removed {path.name}, left by an import or export that was killed")
        for path in root.glob("*/*.sqlite3"):
            app, facet = path.parent.name, path.name[: -len(".sqlite3")]
            if is_valid_name(app) and is_valid_name(facet) and (app, facet) not in self._created:
                created_at = path.stat().st_mtime
                self.control.add_facet(app, facet, created_at)
                self._register(app, facet, created_at)

    def _create_facet(self, app: str, facet: str, *, move_from: Path | None = None) -> CallResult | None:
        """Create the facet on its first call; a ``CallResult`` when the policy refuses or
        the disk does (never raises for a call: it reports a code and keeps serving).

        ``move_from`` (an import): the complete database to install as the facet's; the
        facet must not exist or be being created, else ``BadRequest``. The file takes its
        name and the facet is registered under ``self._lock``, which every creation takes
        before registering, so a call either sees the imported facet or made it first.

        The policy runs outside ``self._lock`` (a slow custom policy must not stall every
        other app's creations and listings). Two creations racing for the same app cannot
        both pass ``max_facets``: each in-flight creation holds a reservation that the others
        count as an existing facet. Racing creations of the same facet wait for the first.
        """
        key = (app, facet)
        while True:
            with self._lock:
                if key in self._created:
                    if move_from is not None:
                        raise BadRequest(f"facet {app}/{facet} came to exist meanwhile (a call "
                                         f"created it); nothing was imported")
                    return None
                pending = self._creating.get(key)
                if pending is None:
                    pending = self._creating[key] = threading.Event()
                    existing = self._facet_counts.get(app, 0) + self._reserved.get(app, 0)
                    self._reserved[app] = self._reserved.get(app, 0) + 1
                    break
            if move_from is not None:
                raise BadRequest(f"facet {app}/{facet} is being created by a call; nothing was imported")
            pending.wait()   # the first creation decides; then look again
        try:
            try:
                refusal = self.policy.admit_facet(app, facet, existing, self.quota_book.effective(app))
            except Exception as exc:  # a broken custom policy refuses, it does not crash the call
                self._supervisor_log(app, facet, "error", f"policy.admit_facet failed: {exc!r}")
                return CallResult.failure(ErrorCode.INTERNAL, f"policy.admit_facet failed: {exc!r}")
            if refusal is not None:
                return CallResult.failure(refusal.code, refusal.message)
            dest = self.data_dir / "facets" / app / f"{facet}.sqlite3"
            installed = False
            try:
                dest.parent.mkdir(exist_ok=True)
                created_at = time.time()
                with self._lock:
                    if move_from is not None:
                        try:
                            transfer.publish(move_from, dest)
                        except FileExistsError:
                            raise BadRequest(f"a database file {dest} exists for no facet; move it "
                                             f"aside (a restart adopts it as {app}/{facet})") from None
                        installed = True
                    self.control.add_facet(app, facet, created_at)
                    self._register(app, facet, created_at)
            except (sqlite3.Error, OSError) as exc:   # a full disk, a read-only file system
                if installed:   # not registered: the file goes back to being the import's copy
                    os.replace(dest, move_from)
                code = fault_code(exc)
                self._supervisor_log(app, facet, "error", f"facet {app}/{facet} not created ({code}): {exc}")
                return CallResult.failure(code, f"cannot create facet {app}/{facet}: "
                                                f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                del self._creating[key]
                left = self._reserved[app] - 1
                if left:
                    self._reserved[app] = left
                else:
                    del self._reserved[app]
            pending.set()
        self._supervisor_log(app, facet, "info", f"facet {app}/{facet} created")
        return None

    def evict(self, target: str) -> bool:
        """Drop the facet's warm instance and close its database; True if it was warm."""
        self._refuse_if_readonly("evict")
        app, facet = parse_facet_target(target)
        if (app, facet) not in self._created:
            raise NotFound(f"no facet {target}")
        slot = self._slots.get((app, facet))
        if slot is None:
            return False
        warm: list[bool] = []

        def close(slot: FacetSlot) -> None:
            warm.append(slot.guest is not None)
            slot.close()
        self.residency.close(slot, close=close)
        was_warm = warm[0]
        if was_warm:
            self._supervisor_log(app, facet, "info", "evicted by operator")
        return was_warm

    def delete(self, target: str) -> None:
        """Delete a facet: its instance, its database files, its quotas and usage rows."""
        self._refuse_if_readonly("delete")
        app, facet = parse_facet_target(target)
        if (app, facet) not in self._created:
            raise NotFound(f"no facet {target}")
        slot = self._slot(app, facet)

        def remove() -> None:   # under the gate, after closing
            slot.deleted = True
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{slot.db_path}{suffix}").unlink(missing_ok=True)
            with self._lock:
                self._slots.pop((app, facet), None)
                self._unregister(app, facet)
                self.control.remove_facet(app, facet)
                self.quota_book.forget(f"{app}/{facet}")
        self.residency.close(slot, then=remove, deleted=True)
        self.meters.remove(app, facet)
        self.policy.forget(app, facet)
        self._supervisor_log(app, facet, "warn", f"facet {app}/{facet} deleted")

    def export_facet(self, target: str, path: str | os.PathLike) -> int:
        """Write a consistent copy of the facet's database to ``path`` (SQLite's backup API,
        safe while the facet serves). Never overwrites. Returns the copy's size in bytes.

        Atomic: the copy is written under a temporary name beside ``path`` and only a
        complete, fsynced copy takes the name ``path``, so a killed export leaves no
        partial file in the way of a retry."""
        self._refuse_if_readonly("export")
        dest_path = Path(path)
        if dest_path.exists():
            raise BadRequest(f"{dest_path} already exists; export never overwrites")
        if not dest_path.parent.is_dir():
            raise NotFound(f"no directory {str(dest_path.parent)!r}")
        temp = transfer.temp_path(dest_path, "export")
        try:
            with self.reader(target) as reader:
                size = transfer.copy_database(reader.backup, temp, wal=False)
            transfer.publish(temp, dest_path)
        except FileExistsError:
            raise BadRequest(f"{dest_path} already exists; export never overwrites") from None
        except (sqlite3.Error, OSError) as exc:
            raise FacetsError(f"cannot export {target} to {dest_path}: {type(exc).__name__}: {exc}",
                              fault_code(exc)) from None
        finally:
            transfer.discard(temp)
        return size

    def import_facet(self, path: str | os.PathLike, target: str) -> list[str]:
        """Create facet ``target`` from a SQLite database file (copied, never moved).

        The app must be loaded and the facet must not exist yet; the file must
        pass ``PRAGMA quick_check``, use no reserved ``_facets`` names, and fit
        the facet's storage quota (what is copied, its ``-wal`` included). Returns the
        imported table names.

        Only ever creates a brand-new facet: the copy is made under a temporary name,
        and registering it fails if the facet came to exist meanwhile (a call created
        it), so a database a call has written is never overwritten. A killed import
        leaves nothing registered (see ``transfer``).
        """
        self._refuse_if_readonly("import")
        app, facet = parse_facet_target(target)
        if not self.apps.has(app):
            raise NotFound(f"no app named {app!r}")
        if (app, facet) in self._created:
            raise BadRequest(f"facet {target} already exists; delete it first")
        source_path = Path(path)
        if not source_path.is_file():
            raise NotFound(f"no file at {str(source_path)!r}")
        if source_path.stat().st_size > self.quota_book.effective(app, facet).storage:
            raise BadRequest(f"{source_path.name} is larger than the storage quota of "
                             f"{self.quota_book.effective(app, facet).storage} bytes")
        try:
            source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise BadRequest(f"cannot open {source_path.name}: {exc}") from None
        dest = self.data_dir / "facets" / app / f"{facet}.sqlite3"
        temp = transfer.temp_path(dest, "import")
        try:
            try:
                check = source.execute("PRAGMA quick_check").fetchone()[0]
                schema = source.execute(
                    "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'index', 'trigger')"
                ).fetchall()
                names = [name for _, name in schema]
            except sqlite3.DatabaseError as exc:
                raise BadRequest(f"{source_path.name} is not a SQLite database: {exc}") from None
            if check != "ok":
                raise BadRequest(f"{source_path.name} failed its integrity check: {check}")
            reserved = [n for n in names if n.lower().startswith(RESERVED_PREFIX)]
            if reserved:
                raise BadRequest(f"{source_path.name} uses reserved names: {', '.join(reserved)}")
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                size = transfer.copy_database(source.backup, temp, wal=True)
            except (sqlite3.Error, OSError) as exc:
                raise FacetsError(f"cannot import {source_path.name}: {type(exc).__name__}: {exc}",
                                  fault_code(exc)) from None
            quotas = self.quota_book.effective(app, facet)
            if size > quotas.storage:
                raise BadRequest(f"{source_path.name} holds {size} bytes of database (its WAL "
                                 f"included), more than the storage quota of {quotas.storage} bytes")
            refused = self._create_facet(app, facet, move_from=temp)
            if refused is not None:
                raise FacetsError(refused.message, refused.code)
        finally:
            source.close()
            transfer.discard(temp)
        self._touch((app, facet))
        self._supervisor_log(app, facet, "info", f"facet {target} imported from {source_path.name}")
        return sorted(name for kind, name in schema if kind == "table" and not name.startswith("sqlite_"))

    def db_path(self, target: str) -> Path:
        app, facet = parse_facet_target(target)
        if (app, facet) not in self._created:
            raise NotFound(f"no facet {target}")
        return self.data_dir / "facets" / app / f"{facet}.sqlite3"

    # -- requests ---------------------------------------------------------------
    def _next_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):x}"

    def call(self, target: str, body: bytes | str = b"") -> CallResult:
        """Send one request to ``APP/FACET`` and wait for its committed result. Never raises
        for a failed request: the result carries the error code."""
        request_id = self._next_request_id()
        if self._closed.is_set():
            return CallResult.failure(ErrorCode.OVERLOADED, "the supervisor is shut down", request_id)
        if self.readonly:   # a request writes the facet's database
            return CallResult.failure(REFUSED, "requests are refused: the supervisor was opened read-only",
                                      request_id)
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
        if (app, facet) not in self._created:
            refused = self._create_facet(app, facet)
            if refused is not None:
                refused.request_id = request_id
                self._supervisor_log(app, facet, "warn", f"facet creation refused: {refused.message}")
                return refused
        quotas = self.quota_book.effective(app, facet)
        refusal = self.policy.admit_request(app, facet, quotas)
        if refusal is not None:
            result = CallResult.failure(refusal.code, refusal.message, request_id)
            self._record_refusal(app, facet, result)
            return result
        slot = self._slot(app, facet)
        # The input gate (gate.py): one thread at a time runs a facet's requests; at most
        # `queue` wait behind it, and they then run together as one commit group.
        waiting = slot.gate.waiting
        if quotas.queue and waiting >= quotas.queue:
            result = CallResult.failure(ErrorCode.OVERLOADED,
                                        f"{target} already has {waiting} requests waiting "
                                        f"(queue={quotas.queue})", request_id)
            self._record_refusal(app, facet, result)
            return result
        request = Request(body, request_id, quotas)
        gave_up = pass_gate(slot.gate, request, self._run, slot, groups=self.commit_groups)
        if gave_up is not None:
            result = CallResult.failure(ErrorCode.OVERLOADED, f"{target} stayed busy for {gave_up:g} s",
                                        request_id)
            self._record_refusal(app, facet, result)
            return result
        result = request.result
        assert result is not None
        self._after_request(slot, result, request.logs, request.storage)
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
            self._open_db(slot, group[-1].quotas)
        slot.run(self.wasm, module, group)

    def _open_db(self, slot: FacetSlot, quotas: Quotas) -> None:
        """Open the facet's database before its requests run; out of file descriptors,
        close the least recently used databases and leave the retry to ``slot.run``
        (which reports a failure that remains)."""
        try:
            slot.open_db(quotas)
        except (sqlite3.Error, OSError) as exc:
            if out_of_descriptors(exc):
                self.residency.close_lru_dbs(2)   # 6 descriptors: room for this one, and a reader

    def submit(self, target: str, body: bytes | str = b"") -> "Future[CallResult]":
        """Run ``call`` on the worker pool; different facets run in parallel."""
        return self._pool.submit(self.call, target, body)

    def _after_request(self, slot: FacetSlot, result: CallResult, logs: list[LogRecord],
                       storage: int | None) -> None:
        self.residency.used(slot)
        self.meters.record(slot.app, slot.name, result.usage, result.error, storage)
        if logs:
            self.log_sink.add(logs)
        if self._observes:
            try:
                self.policy.observe(slot.app, slot.name, result)
            except Exception as exc:  # a broken custom policy must not fail the request after COMMIT
                self._supervisor_log(slot.app, slot.name, "error", f"policy.observe failed: {exc!r}")

    def _record_refusal(self, app: str, facet: str, result: CallResult) -> None:
        """Count a request refused before it reached the facet (policy, queue)."""
        self.meters.record(app, facet, result.usage, result.error, None)
        self._touch((app, facet))
        if result.error in (ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED):
            self._log_breach(app, facet, result)

    def _log_breach(self, app: str, facet: str, result: CallResult) -> None:
        """Log a refusal (the slot logged nothing: it never ran), at most once a second per
        facet and code, so an overloaded facet does not flood the logs it is judged by."""
        key = (app, facet, result.error)
        now = time.monotonic()
        last, suppressed = self._breaches.get(key, (float("-inf"), 0))
        if now - last < 1.0:
            self._breaches[key] = (last, suppressed + 1)
            return
        self._breaches[key] = (now, 0)
        more = f" (and {suppressed} more since the last report)" if suppressed else ""
        self._supervisor_log(app, facet, "warn", f"quota breached ({result.error}): {result.message}{more}",
                             result.request_id)

    # -- housekeeping -------------------------------------------------------------
    def _housekeeping(self) -> None:
        last_prune = 0.0
        while not self._closed.wait(self._usage_flush_interval):
            try:
                self.flush_usage()
                self.residency.evict_idle()
                if time.monotonic() - last_prune > 60:
                    last_prune = time.monotonic()
                    self.control.prune_logs(keep_per_facet=self.log_retention_count,
                                            max_age_s=self.log_retention_age)
                    self.control.prune_series({res: kept for res, kept in RESOLUTIONS if res != 1})
            except Exception as exc:  # keep housekeeping alive; report through the logs
                self._supervisor_log("", "", "error", f"housekeeping failed: {exc!r}")

    def flush_usage(self) -> None:
        """Persist usage counters and series changed since the last flush."""
        if self.readonly:
            return
        with self._flush_lock:   # two flushes writing out of order would store older values
            rows, series = self.meters.collect_dirty()
            if rows or series:
                self.control.save_usage(rows, series)

    @property
    def warm_count(self) -> int:
        return self.residency.warm_count

    @property
    def max_warm(self) -> int:
        return self.residency.max_warm

    @property
    def max_open_dbs(self) -> int:
        return self.residency.max_open_dbs

    @property
    def memory_budget(self) -> int:
        return self.residency.memory_budget

    @property
    def idle_timeout(self) -> float:
        return self.residency.idle_timeout

    # -- quotas -------------------------------------------------------------------
    def quotas(self, target: str = "*") -> Quotas:
        """Effective quotas at ``*``, ``APP`` or ``APP/FACET``."""
        app, facet = parse_target(target)
        return self.quota_book.effective(app, facet)

    def explicit_quotas(self, target: str = "*") -> dict[str, Any]:
        app, facet = parse_target(target)
        return self.quota_book.explicit(scope_of(app, facet))

    def set_quotas(self, target: str, changes: dict[str, Any] | None = None, **kwargs: Any) -> Quotas:
        """Change quotas at one level; every value is validated before any is applied.

        Takes effect at the next request of a running facet. Returns the
        effective quotas at ``target`` after the change.
        """
        self._refuse_if_readonly("changing quotas")
        changes = {**(changes or {}), **kwargs}
        scope, sets, unsets = self.quota_book.plan(target, changes)
        with self._lock:
            self.control.save_quotas(scope, sets, unsets)
            self.quota_book.apply(scope, sets, unsets)
        self.residency.touch_everything()   # a storage quota shows on every row of its scope
        app, _, facet = scope.partition("/")
        described = ", ".join([f"{k}={v}" for k, v in sets.items()] + [f"{k}=default" for k in unsets])
        self._supervisor_log(app if scope != "*" else "", facet, "info",
                             f"quota changed at {scope}: {described}")
        return self.quotas(target)

    # -- usage and logs --------------------------------------------------------------
    def usage(self, target: str | None = None) -> dict[str, Any]:
        """Accumulated usage of the fleet, an ``APP`` or an ``APP/FACET``."""
        if not target or target == "*":
            snap = self.meters.snapshot()
            snap["memory"] = self.residency.memory_of(None)
            return snap
        if "/" in target:
            app, facet = parse_facet_target(target)
            if (app, facet) not in self._created:
                raise NotFound(f"no facet {target}")
            snap = self.meters.snapshot(app, facet)
            slot = self._slots.get((app, facet))
            if slot is not None:
                snap["memory"] = slot.memory_bytes()
            return snap
        if not self.apps.has(target):
            raise NotFound(f"no app named {target!r}")
        snap = self.meters.snapshot(target)
        snap["memory"] = self.residency.memory_of(target)
        return snap

    def series(self, target: str | None, field: str, *, resolution: int = 1,
               points: int = 60) -> list[float]:
        """Recent values of ``field`` (a ``metering.SERIES_FIELDS`` name) per bucket, oldest first,
        for the fleet (None or ``*``), an ``APP`` or an ``APP/FACET``."""
        if field not in SERIES_FIELDS:
            raise BadRequest(f"unknown series {field!r}; known: {', '.join(SERIES_FIELDS)}")
        if resolution not in {r for r, _ in RESOLUTIONS}:
            raise BadRequest(f"resolution must be one of {[r for r, _ in RESOLUTIONS]} seconds")
        if not target or target == "*":
            app, facet = None, None
        elif "/" in target:
            app, facet = parse_facet_target(target)
        else:
            app, facet = target, None
        if resolution == 1:   # live, in memory
            return self.meters.live_series(app, facet, field, points)
        self.flush_usage()    # minutes and hours are read where they are kept
        current = int(time.time()) // resolution
        totals = self.control.series_totals(app, facet, resolution, current - points + 1)
        index = SERIES_FIELDS.index(field)
        return [totals[b][index] if b in totals else 0.0 for b in range(current - points + 1, current + 1)]

    def bill(self, target: str | None = None, *, since: float | None = None,
             until: float | None = None) -> dict[str, Any]:
        """Cost per facet and per app over ``[since, until)`` (epoch seconds; default: this
        calendar month so far, UTC). See ``runtime.billing`` for what is counted."""
        now = time.time()
        until = now if until is None else until
        if since is None:
            t = time.gmtime(now)
            since = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        if since > until:
            raise BadRequest("since must not be after until")
        app = None
        if target and target != "*":
            if not self.apps.has(target):
                raise NotFound(f"no app named {target!r}")
            app = target
        self.flush_usage()
        with self._lock:
            keys = sorted(k for k in self._created if app is None or k[0] == app)
        per_facet = ((a, f, self.control.load_series(a, f, 3600)) for a, f in keys)
        return compute_bill(per_facet, self.prices, since, until)

    def prometheus(self) -> str:
        """Usage of every facet as Prometheus text exposition format."""
        with self._lock:
            keys = sorted(self._created)
        return prometheus_text((a, f, self.usage(f"{a}/{f}")) for a, f in keys)

    def logs(self, target: str | None = None, *, level: str | None = None, limit: int = 100,
             since: float | None = None, until: float | None = None,
             search: str | None = None) -> list[LogRecord]:
        """Stored log records, newest ``limit`` (oldest first), filtered."""
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
        self.log_sink.flush()
        return self.control.read_logs(app=app, facet=facet, level=level, since=since, until=until,
                                      search=search, limit=limit)

    def subscribe_logs(self, callback: Callable[[list[LogRecord]], None]) -> Callable[[], None]:
        """Stream new log batches to ``callback`` (called on the log thread); returns unsubscribe."""
        return self.log_sink.subscribe(callback)

    def _supervisor_log(self, app: str, facet: str, level: str, message: str,
                        request_id: str = "") -> None:
        self.log_sink.add([LogRecord(time=time.time(), app=app, facet=facet, request_id=request_id,
                                     level=level, message=message, source="supervisor")])

    # -- browsing (read-only) --------------------------------------------------------
    def reader(self, target: str) -> FacetReader:
        """A read-only connection to the facet's database; close it when done."""
        return FacetReader(str(self.db_path(target)))

    def tables(self, target: str) -> list[dict[str, Any]]:
        with self.reader(target) as reader:
            return reader.tables()

    def rows(self, target: str, table: str, *, limit: int = 100, offset: int = 0,
             where: str | None = None) -> dict[str, Any]:
        with self.reader(target) as reader:
            return reader.rows(table, limit=limit, offset=offset, where=where)

    def query(self, target: str, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """Run a read-only operator query on the facet's database."""
        with self.reader(target) as reader:
            return reader.query(sql, params)



def _discard(batch: list[LogRecord]) -> None:
    """The log writer of a read-only supervisor: nothing is stored."""


def fault_code(exc: BaseException) -> ErrorCode:
    """The code of a failed file or database operation, by error number, never by message:
    a full disk (or quota) is ``storage_full``, anything else ``internal``."""
    if isinstance(exc, sqlite3.Error):
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_FULL:
            return ErrorCode.STORAGE_FULL
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ErrorCode.STORAGE_FULL
    return ErrorCode.INTERNAL


def out_of_descriptors(exc: BaseException) -> bool:
    """Whether opening a database failed for want of file descriptors. SQLite reports
    EMFILE as SQLITE_CANTOPEN without the errno, so CANTOPEN counts: closing a few idle
    databases and retrying once is cheap when it was something else."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_CANTOPEN


def default_data_dir() -> Path:
    """``$FACETS_DATA`` or ``.facets-data`` in the current directory."""
    return Path(os.environ.get("FACETS_DATA") or ".facets-data")

