"""The facet registry: which facets exist, their slots, creation and removal, and the
adoption of orphan databases at startup.

A facet exists once it is registered: a row in the control database and an entry
in ``created``. Creation asks the policy first (``admit_facet``), outside the lock,
so a slow custom policy cannot stall other apps' creations and listings; each
creation in flight holds a reservation that racing creations of the same app count
as an existing facet, so ``max_facets`` is never exceeded, and racing first calls
to one facet wait for the first. An import installs its complete copy and
registers it in one step under the lock (``create(move_from=...)``), so a call
either sees the imported facet or created it first, and the import then fails.

Thread-safety rules:

* ``lock`` (re-entrant) guards ``created``, ``counts``, the reservations and
  additions to ``slots``; it is held for dictionary updates and the control
  database's ``add_facet``/``remove_facet`` (whose own lock is taken inside it),
  never while calling the policy or waiting for a gate. It may be taken with a
  facet's gate held (``remove``, during a deletion), never the other way round,
  and never while residency's lock is held.
* ``created`` and ``slots`` are read without the lock on every request (a dict
  lookup is atomic under the GIL): a request that misses a facet being created
  goes through ``create``, which looks again under the lock.
* ``TargetCache`` takes no lock: each of its dict operations is atomic under the
  GIL, and two threads missing one address at once both store the same key.
* Runs on: request threads (``create`` on a first call, ``TargetCache``), operator
  calls, the constructor's thread at startup (``load``, ``adopt_orphans``) and the
  closing thread at shutdown (``close_all``, which waits for each gate with the lock
  released).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import transfer
from .abi import is_valid_name
from .archive import Archiver
from .control import ControlDB
from .errors import BadRequest, ErrorCode, NotFound
from .facet import FacetSlot
from .faults import failure_code
from .hostcalls import AlarmStore
from .policy import Policy
from .quotas import QuotaBook
from .types import CallResult

Key = tuple[str, str]

#: ``log(app, facet, level, message)``: the supervisor's own log.
Log = Callable[[str, str, str, str], None]


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


class TargetCache(dict[str, Key]):
    """``APP/FACET`` -> its parsed, checked key: each address is checked once
    (``parse_facet_target`` raises ``BadRequest``, and nothing is cached). A hit is a
    plain dict lookup, on every request; a miss calls ``__missing__``."""

    #: Bound on the cached addresses, so a scan over many names cannot grow it forever.
    LIMIT = 100_000

    def __missing__(self, target: str) -> Key:
        key = parse_facet_target(target)
        if len(self) > self.LIMIT:
            self.clear()
        self[target] = key
        return key


class FacetRegistry:
    def __init__(
        self, data_dir: Path, control: ControlDB, quota_book: QuotaBook, policy: Policy, log: Log, *, durability: str
    ) -> None:
        self.root = data_dir / "facets"
        self._control = control
        self._durability = durability
        self._policy = policy
        self._quota_book = quota_book
        self._log = log
        self.lock = threading.RLock()
        self.slots: dict[Key, FacetSlot] = {}
        #: Registered facets and when they were created (epoch seconds).
        self.created: dict[Key, float] = {}
        self.counts: dict[str, int] = {}
        #: Creations in flight (their policy call runs outside the lock), per facet and per app.
        self._creating: dict[Key, threading.Event] = {}
        self._reserved: dict[str, int] = {}
        for row in control.facet_rows():
            self._register(row["app"], row["name"], row["created_at"])
        #: The version each facet last migrated to, for its slot when it is made.
        self._versions = control.facet_versions()
        #: The alarm scheduler, handed to each slot (the supervisor sets it before any slot exists).
        self.alarms: AlarmStore | None = None
        #: The WAL archive, likewise (None: history is off).
        self.archiver: Archiver | None = None

    def db_path(self, app: str, facet: str) -> Path:
        return self.root / app / f"{facet}.sqlite3"

    def known(self, target: str) -> Key:
        """``target`` parsed, if that facet exists; else ``NotFound``."""
        key = parse_facet_target(target)
        if key not in self.created:
            raise NotFound(f"no facet {target}")
        return key

    def listed(self, app: str | None = None) -> list[Key]:
        """The registered facets (of one app, or all), sorted."""
        with self.lock:
            return sorted(k for k in self.created if app is None or k[0] == app)

    def app_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def slot(self, app: str, facet: str) -> FacetSlot:
        """The facet's slot, made on first use."""
        key = (app, facet)
        slot = self.slots.get(key)
        if slot is None:
            with self.lock:
                slot = self.slots.get(key)
                if slot is None:
                    slot = FacetSlot(app, facet, self.db_path(app, facet), durability=self._durability)
                    slot.migrated = self._versions.get(key)
                    slot.alarms = self.alarms
                    if self.archiver is not None:
                        slot.archive = self.archiver.archive(app, facet, slot.db_path)
                        slot.archive.durable = self._durability == "full"
                        slot.snapshot_bytes = self.archiver.snapshot_bytes(app, facet)
                    self.slots[key] = slot
        return slot

    def close_all(self) -> None:
        """Close every slot, each under its gate (at shutdown, once requests are done)."""
        with self.lock:
            slots = list(self.slots.values())
        for slot in slots:
            with slot.gate.held():
                slot.close()

    def _register(self, app: str, facet: str, created_at: float) -> None:
        if (app, facet) not in self.created:
            self.counts[app] = self.counts.get(app, 0) + 1
        self.created[(app, facet)] = created_at

    def remove(self, slot: FacetSlot) -> None:
        """Delete a facet whose slot was closed (its gate held): mark the slot deleted,
        remove its database files, unregister it and forget its quotas."""
        app, facet = slot.app, slot.name
        slot.deleted = True
        if self.archiver is not None:  # its history stays for undelete (runtime.history)
            self.archiver.retire(app, facet)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{slot.db_path}{suffix}").unlink(missing_ok=True)
        with self.lock:
            self.slots.pop((app, facet), None)
            self._versions.pop((app, facet), None)
            if self.created.pop((app, facet), None) is not None:
                self.counts[app] -= 1
                if not self.counts[app]:
                    del self.counts[app]
            self._control.remove_facet(app, facet)
            self._quota_book.forget(f"{app}/{facet}")

    def adopt_orphans(self) -> None:
        """Register facet databases the control database does not know (its last changes
        can be lost in a power cut, the facet's committed data cannot); remove the
        temporary copies of killed imports and exports, which are never facets."""
        for path in transfer.remove_temps(self.root):
            self._log(path.parent.name, "", "warn", f"removed {path.name}, left by an import or export that was killed")
        for path in self.root.glob("*/*.sqlite3"):
            app, facet = path.parent.name, path.name[: -len(".sqlite3")]
            if is_valid_name(app) and is_valid_name(facet) and (app, facet) not in self.created:
                created_at = path.stat().st_mtime
                self._control.add_facet(app, facet, created_at)
                self._register(app, facet, created_at)

    def create(
        self,
        app: str,
        facet: str,
        *,
        move_from: Path | None = None,
        request_id: str = "",
        keep_history: bool = False,
    ) -> CallResult | None:
        """Create the facet on its first call (``request_id``); a ``CallResult`` when the
        policy refuses or the disk does, logged (never raises for a call: it reports a
        code and keeps serving).

        ``move_from`` (an import): the complete database to install as the facet's; the
        facet must not exist or be being created, else ``BadRequest``.
        """
        key = (app, facet)
        while True:
            with self.lock:
                if key in self.created:
                    if move_from is not None:
                        raise BadRequest(
                            f"facet {app}/{facet} came to exist meanwhile (a call created it); nothing was imported"
                        )
                    return None
                pending = self._creating.get(key)
                if pending is None:
                    pending = self._creating[key] = threading.Event()
                    existing = self.counts.get(app, 0) + self._reserved.get(app, 0)
                    self._reserved[app] = self._reserved.get(app, 0) + 1
                    break
            if move_from is not None:
                raise BadRequest(f"facet {app}/{facet} is being created by a call; nothing was imported")
            pending.wait()  # the first creation decides; then look again
        refused: CallResult | None
        try:
            try:
                refusal = self._policy.admit_facet(app, facet, existing, self._quota_book.effective(app))
            except Exception as exc:  # a broken custom policy refuses, it does not crash the call
                self._log(app, facet, "error", f"policy.admit_facet failed: {exc!r}")
                refused = CallResult.failure(ErrorCode.INTERNAL, f"policy.admit_facet failed: {exc!r}")
            else:
                refused = CallResult.failure(refusal.code, refusal.message) if refusal is not None else None
                if refused is None:
                    refused = self._install(app, facet, move_from, keep_history)
        finally:
            with self.lock:
                del self._creating[key]
                left = self._reserved[app] - 1
                if left:
                    self._reserved[app] = left
                else:
                    del self._reserved[app]
            pending.set()
        if refused is not None:
            if move_from is None:  # an import reports its own failure
                refused.request_id = request_id
                self._log(app, facet, "warn", f"facet creation refused: {refused.message}")
            return refused
        self._log(app, facet, "info", f"facet {app}/{facet} created")
        return None

    def _install(self, app: str, facet: str, move_from: Path | None, keep_history: bool = False) -> CallResult | None:
        """Make the facet's directory, give an import's copy its name, register: a
        ``CallResult`` if the disk refused (then nothing is registered)."""
        dest = self.db_path(app, facet)
        installed = False
        try:
            dest.parent.mkdir(exist_ok=True)
            if self.archiver is not None and not keep_history:  # another facet's history stays its own
                self.archiver.retire(app, facet)
            created_at = time.time()
            with self.lock:
                if move_from is not None:
                    try:
                        transfer.publish(move_from, dest)
                    except FileExistsError:
                        raise BadRequest(
                            f"a database file {dest} exists for no facet; move it "
                            f"aside (a restart adopts it as {app}/{facet})"
                        ) from None
                    installed = True
                self._control.add_facet(app, facet, created_at)
                self._register(app, facet, created_at)
        except (sqlite3.Error, OSError) as exc:  # a full disk, a read-only file system
            if installed and move_from is not None:  # unregistered: back to being the import's copy
                os.replace(dest, move_from)
            code = failure_code(exc)
            self._log(app, facet, "error", f"facet {app}/{facet} not created ({code}): {exc}")
            return CallResult.failure(code, f"cannot create facet {app}/{facet}: {type(exc).__name__}: {exc}")
        return None
