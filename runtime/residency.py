"""Residency: which facets stay warm and which keep their database open.

Two LRUs, least recently used first: warm instances (at most ``max_warm``, and
together at most ``memory_budget`` bytes of linear memory) and open databases
(at most ``max_open_dbs``, from the descriptor limit; see ``settings``). An open
facet database costs ~140 KiB (SQLite preallocates ~87 KiB of page cache per
connection, plus the 32 KiB WAL index) and three file descriptors, against
~11 KiB for a warm wasm instance's bookkeeping; so there are fewer open databases
than warm instances, and a facet whose database was closed reopens it (not a
cold start) at its next request. Idle instances go after ``idle_timeout``.

Every way a facet leaves residency (operator eviction, LRU, memory budget,
idle, deletion, its database closed) goes through ``close``: under the facet's
gate, close it, then drop it from the LRUs and the memory count and mark it
changed (``ChangeTracker``, for live views).

Thread-safety rules:

* ``_lock`` guards both LRUs, ``warm_memory``, every slot's ``counted_memory``
  and the change tracker. It is taken after a facet's gate (``close`` holds the
  gate, then takes it) and before nothing but the change tracker (no lock of its
  own): no code waits for a gate or another lock while holding it. Evictions copy
  the candidates under it, then try each gate without it.
* A busy facet (its gate held) is never closed: candidates are tried with
  ``Gate.try_enter``; only an operator's ``evict`` and ``delete`` wait.
* ``warm_count`` and ``warm_memory`` are read without the lock (one attribute or
  ``len`` read under the GIL: a figure for listings, one request old at worst).
* Runs on: request threads (``used`` after each request, and the evictions it
  triggers), the housekeeper thread (``evict_idle``), operator calls.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .changes import ChangeTracker
from .facet import FacetSlot
from .faults import out_of_descriptors
from .quotas import Quotas
from .settings import SupervisorSettings

Key = tuple[str, str]
#: ``log(app, facet, level, message)``: the supervisor's own log.
Log = Callable[[str, str, str, str], None]


class Residency:
    def __init__(self, settings: SupervisorSettings, *, log: Log) -> None:
        self.max_warm = settings.max_warm
        self.max_open_dbs = settings.open_db_limit()
        self.memory_budget = settings.memory_limit()
        self.idle_timeout = settings.idle_timeout
        self._log = log
        self._lock = threading.Lock()
        self.warm: OrderedDict[Key, FacetSlot] = OrderedDict()
        self.open_dbs: OrderedDict[Key, FacetSlot] = OrderedDict()
        #: Linear memory of the warm instances, as of their last requests (``counted_memory``).
        self.warm_memory = 0
        self.changes = ChangeTracker()

    @property
    def warm_count(self) -> int:
        return len(self.warm)

    # -- after every request ---------------------------------------------------------
    def used(self, slot: FacetSlot) -> None:
        """``slot`` just served (its gate is released): most recently used in both LRUs;
        then evict what no longer fits. On every request's path: keep it flat."""
        key = (slot.app, slot.name)
        warm, open_dbs = self.warm, self.open_dbs
        with self._lock:
            if slot.db is not None:
                if key in open_dbs:
                    open_dbs.move_to_end(key)
                else:
                    open_dbs[key] = slot
            if slot.guest is not None:
                if key in warm:
                    warm.move_to_end(key)
                else:
                    warm[key] = slot
                memory = slot.memory
            else:
                if key in warm:
                    del warm[key]
                memory = 0
            self.warm_memory += memory - slot.counted_memory
            slot.counted_memory = memory
            self.changes.touch(key, time.monotonic())
            db_overflow = len(open_dbs) - self.max_open_dbs
            warm_overflow = len(warm) - self.max_warm
            over_budget = self.warm_memory > self.memory_budget
        if db_overflow > 0:
            self.close_lru_dbs(db_overflow)
        if warm_overflow > 0:
            self.evict_lru(warm_overflow)
        if over_budget:
            self.evict_over_budget()

    # -- change tracking -------------------------------------------------------------
    def touch(self, key: Key) -> None:
        with self._lock:
            self.changes.touch(key, time.monotonic())

    def touch_everything(self) -> None:
        with self._lock:
            self.changes.touch_everything(time.monotonic())

    def changes_since(self, cursor: float | None) -> tuple[float, bool, list[Key], list[Key]]:
        """``(now, complete, changed, removed)``: see ``ChangeTracker.since``."""
        with self._lock:
            now = time.monotonic()
            complete, changed, removed = self.changes.since(cursor, now)
        return now, complete, changed, removed

    # -- leaving residency: the one way ------------------------------------------------
    def close(
        self,
        slot: FacetSlot,
        *,
        close: Callable[[FacetSlot], None] | None = None,
        wait: bool = True,
        only_if: Callable[[FacetSlot], bool] | None = None,
        then: Callable[[], None] | None = None,
        deleted: bool = False,
    ) -> bool:
        """Under ``slot``'s gate: ``close(slot)`` (the instance and database by default),
        run ``then``, drop the slot from the LRUs it no longer belongs to and from the
        memory count, and mark it changed (or removed, if ``deleted``). Without ``wait``
        a busy facet is skipped; ``only_if`` re-checks a condition under the gate.
        Returns whether it was closed."""
        gate = slot.gate
        if wait:
            gate.lock.acquire()
        elif not gate.try_enter():
            return False
        try:
            if only_if is not None and not only_if(slot):
                return False
            if close is None:
                slot.close()
            else:
                close(slot)
            if then is not None:
                then()
            key = (slot.app, slot.name)
            with self._lock:
                if slot.guest is None:
                    self.warm.pop(key, None)
                    self.warm_memory -= slot.counted_memory
                    slot.counted_memory = 0
                if slot.db is None:
                    self.open_dbs.pop(key, None)
                if deleted:
                    self.changes.remove(key, time.monotonic())
                else:
                    self.changes.touch(key, time.monotonic())
            return True
        finally:
            gate.leave()  # wakes a request that queued meanwhile

    def evict(self, slot: FacetSlot) -> bool:
        """An operator's eviction: wait for the gate, close; whether it was warm."""
        was_warm: list[bool] = []

        def close(slot: FacetSlot) -> None:
            was_warm.append(slot.guest is not None)
            slot.close()

        self.close(slot, close=close)
        return was_warm[0]

    def open_db(self, slot: FacetSlot, quotas: Quotas) -> None:
        """Open ``slot``'s database (its gate held) before its requests run. Out of file
        descriptors, close the least recently used databases and leave the retry to
        ``FacetSlot.run``, which reports a failure that remains."""
        try:
            slot.open_db(quotas)
        except (sqlite3.Error, OSError) as exc:
            if out_of_descriptors(exc):
                self.close_lru_dbs(2)  # 6 descriptors: room for this one, and a reader

    def _close_least_recent(
        self, lru: OrderedDict[Key, FacetSlot], enough: Callable[[int], bool], close: Callable[[FacetSlot], None]
    ) -> list[Key]:
        """Close facets from ``lru``, least recently used first, until ``enough(closed so
        far)``; busy ones are skipped."""
        with self._lock:
            candidates = list(lru.items())
        closed: list[Key] = []
        for key, slot in candidates:
            if enough(len(closed)):
                break
            if self.close(slot, close=close, wait=False):
                closed.append(key)
        return closed

    def evict_lru(self, count: int) -> None:
        """Evict the ``count`` least recently used warm facets."""
        for app, facet in self._close_least_recent(self.warm, lambda closed: closed >= count, FacetSlot.close):
            self._log(app, facet, "debug", "evicted (least recently used)")

    def evict_over_budget(self) -> None:
        """Evict least recently used warm facets until their memory fits the budget again."""
        budget = self.memory_budget
        for app, facet in self._close_least_recent(self.warm, lambda _: self.warm_memory <= budget, FacetSlot.close):
            self._log(app, facet, "debug", f"evicted (warm instances over the memory budget of {budget / 2**20:g} MiB)")

    def close_lru_dbs(self, count: int) -> None:
        """Close the databases of the ``count`` least recently used facets (instances stay)."""
        self._close_least_recent(self.open_dbs, lambda closed: closed >= count, FacetSlot.close_db)

    def evict_idle(self) -> None:
        """Evict warm facets unused for ``idle_timeout`` seconds (the housekeeper's round)."""
        cutoff = time.monotonic() - self.idle_timeout
        with self._lock:
            idle = [slot for slot in self.warm.values() if slot.last_used < cutoff]
        for slot in idle:
            if self.close(slot, wait=False, only_if=lambda s: s.last_used < cutoff):
                self._log(slot.app, slot.name, "debug", "evicted (idle)")

    def memory_of(self, app: str | None) -> int:
        """Linear memory held by warm instances (of one app, or all)."""
        with self._lock:
            warm = [s for (a, _), s in self.warm.items() if app is None or a == app]
        return sum(s.memory_bytes() for s in warm)
