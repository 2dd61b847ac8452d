"""Alarms: a facet's own wake-up, as Durable Objects have them.

A guest sets at most one pending alarm (``set_alarm(at_ms)``; a new one replaces it,
``delete_alarm`` removes it) through a host call. The change is staged on the request
(``RequestContext.alarm_change``) and applied here only after the request's COMMIT, so a
request that fails takes its alarm change with it. At or after ``at_ms`` the supervisor
runs the guest's handler (``facet_alarm``, or a component's ``alarm`` export) as a request
of its own: through the facet's input gate, in its own transaction, under its quotas,
metered and billed as a request (``Supervisor._deliver``).

Delivery is at least once. An alarm's row leaves the control database only after a
delivery that committed (or after the last retry), so a supervisor killed mid-delivery
delivers it again at its next start; a delivery that fails is retried after 2, 4, 8, 16,
32 and 64 s (``RETRY_DELAYS_S``: Durable Objects' "exponential backoff from 2 s, at most 6
retries"), then abandoned and logged. A handler that sets a new alarm replaces the one it
is delivering, which is then not deleted.

The scheduler is a binary heap of ``(due_ms, seq, key)`` with lazy deletion (a replaced
or deleted alarm's entry stays in the heap until it reaches the top, where its stale
``seq`` drops it) and one dict of the current alarm per facet. One thread sleeps on a
condition until the earliest due time: 100,000 pending alarms cost nothing while none is
due but their memory (``make bench``: "alarms"). Setting one is O(log n).

Thread-safety: ``_write`` serialises every change (check the current alarm, write its
row, change memory: the stored row and memory never diverge), taken before the control
database's lock; ``_cond`` (its lock a leaf, held for heap and dict operations only,
never while the control database is written or a delivery runs) guards ``_heap``,
``_current`` and ``_in_flight``. ``get`` reads ``_current`` without either (one dict
lookup, atomic under the GIL: the request path's ``get_alarm``). Runs on: request
threads (``apply``, from ``Serving.run`` with the facet's gate held), the scheduler
thread (``_run``), pool workers (``finished``, ``postpone``), operators.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .control import ControlDB
    from .events import SupervisorLog

#: Seconds before each retry of a failed delivery; after the last, it is abandoned.
RETRY_DELAYS_S = (2, 4, 8, 16, 32, 64)
#: The latest time an alarm may be set to: year 9999, as ABI.md says.
MAX_AT_MS = 253_402_300_799_999
#: Deliveries running at once. More would only queue at the worker pool: 100,000 alarms due
#: together after a long stop would otherwise be 100,000 futures held in memory.
MAX_IN_FLIGHT = 16
#: The scheduler thread wakes at least this often (seconds), so a wall clock set back
#: cannot leave it asleep far past a due alarm.
MAX_SLEEP_S = 60.0

Key = tuple[str, str]


@dataclass(slots=True)
class Alarm:
    """One facet's pending alarm."""

    app: str
    facet: str
    #: When the guest asked to be woken (ms since the epoch).
    at_ms: int
    #: When it is delivered next: ``at_ms``, or the time of a retry.
    due_ms: int
    #: Failed deliveries so far.
    attempt: int
    #: Which ``set`` made it (a replaced alarm's heap entry is dropped by its seq).
    seq: int

    @property
    def target(self) -> str:
        return f"{self.app}/{self.facet}"

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "at_ms": self.at_ms, "due_ms": self.due_ms, "attempt": self.attempt}


class AlarmScheduler:
    """Args:
    control: where alarms persist (``alarms`` table).
    dispatch: called on the scheduler thread with each due alarm; it must not block
        (``Supervisor`` hands it to its worker pool) and must end in ``finished``.
    log: the supervisor's log.
    """

    def __init__(self, control: ControlDB, dispatch: Callable[[Alarm], None], log: SupervisorLog) -> None:
        self._control = control
        self._dispatch = dispatch
        self._log = log
        self._cond = threading.Condition(threading.Lock())
        #: Serialises each "look at the current alarm, write its row, change memory" so the
        #: stored row and the one in memory never diverge (taken before the control
        #: database's lock, never while ``_cond`` is held).
        self._write = threading.RLock()
        self._seq = itertools.count(1)
        self._current: dict[Key, Alarm] = {}
        self._heap: list[tuple[int, int, Key]] = []
        self._in_flight = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        for app, facet, at_ms, due_ms, attempt in control.alarm_rows():
            alarm = Alarm(app, facet, at_ms, due_ms, attempt, next(self._seq))
            self._current[(app, facet)] = alarm
            self._heap.append((due_ms, alarm.seq, (app, facet)))
        heapq.heapify(self._heap)  # O(n): 100,000 stored alarms load in well under a second

    # -- the thread -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facets-alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching; deliveries already handed out finish on their own."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                alarm = None
                while alarm is None:
                    if self._stopped:
                        return
                    timeout = self._next_wait()
                    if timeout is None:
                        alarm = self._pop()
                    else:
                        cond.wait(timeout)
                self._in_flight += 1
            try:
                self._dispatch(alarm)
            except Exception as exc:  # a dispatcher that cannot take it: retry as a failure
                self._log(alarm.app, alarm.facet, "error", f"alarm dispatch failed: {exc!r}")
                self.finished(alarm, ok=False, reason=f"dispatch failed: {exc!r}")

    def _next_wait(self) -> float | None:
        """Seconds to sleep (``_cond`` held), or None when the top alarm is due and may run."""
        heap, current = self._heap, self._current
        while heap:
            due_ms, seq, key = heap[0]
            alarm = current.get(key)
            if alarm is None or alarm.seq != seq:
                heapq.heappop(heap)  # replaced or deleted since it was pushed
                continue
            if self._in_flight >= MAX_IN_FLIGHT:
                return MAX_SLEEP_S  # woken by ``finished``
            wait = due_ms / 1000 - time.time()
            return None if wait <= 0 else min(wait, MAX_SLEEP_S)
        return MAX_SLEEP_S

    def _pop(self) -> Alarm:
        _, seq, key = heapq.heappop(self._heap)
        alarm = self._current[key]
        assert alarm.seq == seq
        return alarm

    def _push(self, alarm: Alarm) -> None:
        """Put ``alarm`` in the heap (``_cond`` held); wake the thread if it is the new first."""
        heapq.heappush(self._heap, (alarm.due_ms, alarm.seq, (alarm.app, alarm.facet)))
        if self._heap[0][1] == alarm.seq:
            self._cond.notify()

    # -- what guests and operators change ---------------------------------------------
    def get(self, app: str, facet: str) -> int | None:
        """The facet's pending alarm (ms since the epoch), or None."""
        alarm = self._current.get((app, facet))
        return alarm.at_ms if alarm is not None else None

    def alarm(self, app: str, facet: str) -> Alarm | None:
        return self._current.get((app, facet))

    def apply(self, app: str, facet: str, at_ms: int | None) -> None:
        """A committed request's change: set the alarm at ``at_ms`` (replacing any), or
        delete it (None)."""
        if at_ms is None:
            self.delete(app, facet)
        else:
            self.set(app, facet, at_ms)

    def set(self, app: str, facet: str, at_ms: int) -> Alarm:
        if not 0 <= at_ms <= MAX_AT_MS:
            raise ValueError(f"alarm time {at_ms} ms is outside 0 .. {MAX_AT_MS}")
        with self._write:
            current = self._current.get((app, facet))
            if current is not None and current.at_ms == at_ms and current.attempt == 0:
                return current  # the same alarm set again (an app re-arming): nothing changes
            self._control.save_alarm(app, facet, at_ms, at_ms, 0)
            with self._cond:
                alarm = Alarm(app, facet, at_ms, at_ms, 0, next(self._seq))
                self._current[(app, facet)] = alarm
                self._push(alarm)
                if len(self._heap) > 2 * len(self._current) + 1024:
                    self._compact()
        return alarm

    def _compact(self) -> None:
        """Rebuild the heap from the current alarms (``_cond`` held): replaced alarms' entries
        leave it only at the top, and one facet re-arming far ahead would grow it forever."""
        self._heap = [(a.due_ms, a.seq, (a.app, a.facet)) for a in self._current.values()]
        heapq.heapify(self._heap)
        self._cond.notify()

    def set_many(self, alarms: list[tuple[str, str, int]]) -> None:
        """Set many alarms in one control-database transaction (bench, bulk tests)."""
        for _, _, at_ms in alarms:
            if not 0 <= at_ms <= MAX_AT_MS:
                raise ValueError(f"alarm time {at_ms} ms is outside 0 .. {MAX_AT_MS}")
        with self._write:
            self._control.save_alarms([(app, facet, at_ms, at_ms, 0) for app, facet, at_ms in alarms])
            self._set_all(alarms)

    def _set_all(self, alarms: list[tuple[str, str, int]]) -> None:
        with self._cond:
            for app, facet, at_ms in alarms:
                alarm = Alarm(app, facet, at_ms, at_ms, 0, next(self._seq))
                self._current[(app, facet)] = alarm
                heapq.heappush(self._heap, (at_ms, alarm.seq, (app, facet)))
            self._cond.notify()

    def delete(self, app: str, facet: str) -> bool:
        """Remove the facet's alarm; True if it had one."""
        with self._write:
            if (app, facet) not in self._current:
                return False
            self._control.delete_alarm(app, facet)
            with self._cond:
                return self._current.pop((app, facet), None) is not None

    def forget(self, app: str, facet: str) -> None:
        """A deleted facet (its row went with ``ControlDB.remove_facet``)."""
        with self._write, self._cond:
            self._current.pop((app, facet), None)

    # -- deliveries -------------------------------------------------------------------
    def finished(self, alarm: Alarm, *, ok: bool, reason: str = "") -> None:
        """A delivery of ``alarm`` ended. Delivered: it is removed, unless it was replaced
        meanwhile (the handler set the next one). Failed: retried after the next of
        ``RETRY_DELAYS_S``, or abandoned after the last. Never raises: a control-database
        failure is logged and the alarm is kept (its old row keeps it at least once)."""
        try:
            with self._write:
                if self._current.get((alarm.app, alarm.facet)) is not alarm:
                    return  # replaced or deleted while it ran: the new state stands
                if ok or alarm.attempt >= len(RETRY_DELAYS_S):
                    self._remove(alarm, abandoned=not ok, reason=reason)
                else:
                    delay = RETRY_DELAYS_S[alarm.attempt]
                    self._reschedule(alarm, int(time.time() * 1000) + delay * 1000, alarm.attempt + 1)
                    self._log(
                        alarm.app,
                        alarm.facet,
                        "warn",
                        f"alarm delivery {alarm.attempt + 1} failed ({reason}); retry {alarm.attempt + 1} of "
                        f"{len(RETRY_DELAYS_S)} in {delay} s",
                    )
        finally:
            self._done()

    def postpone(self, alarm: Alarm, due_ms: int) -> None:
        """Hand ``alarm`` back undelivered, to be tried at ``due_ms`` (its facet backs off,
        or is quarantined); the attempt is not counted. Never raises."""
        try:
            with self._write:
                if self._current.get((alarm.app, alarm.facet)) is alarm:
                    self._reschedule(alarm, due_ms, alarm.attempt)
        finally:
            self._done()

    def _done(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    def _remove(self, alarm: Alarm, *, abandoned: bool, reason: str) -> None:
        """Delete a delivered or abandoned alarm (``_write`` held)."""
        try:
            self._control.delete_alarm(alarm.app, alarm.facet, alarm.at_ms)
        except Exception as exc:  # kept: delivered again at the next start, at least once
            self._log(alarm.app, alarm.facet, "error", f"cannot remove a delivered alarm's row: {exc!r}")
        with self._cond:
            if self._current.get((alarm.app, alarm.facet)) is alarm:
                del self._current[(alarm.app, alarm.facet)]
        if abandoned:
            self._log(
                alarm.app,
                alarm.facet,
                "error",
                f"alarm set for {_when(alarm.at_ms)} abandoned after {alarm.attempt + 1} failed "
                f"deliveries (last: {reason})",
            )

    def _reschedule(self, alarm: Alarm, due_ms: int, attempt: int) -> None:
        """Replace ``alarm`` by its next delivery at ``due_ms`` (``_write`` held)."""
        later = Alarm(alarm.app, alarm.facet, alarm.at_ms, due_ms, attempt, 0)
        try:
            self._control.save_alarm(later.app, later.facet, later.at_ms, later.due_ms, later.attempt)
        except Exception as exc:  # memory goes on; the old row still holds the alarm
            self._log(alarm.app, alarm.facet, "error", f"cannot store the alarm's next delivery: {exc!r}")
        with self._cond:
            later.seq = next(self._seq)
            self._current[(alarm.app, alarm.facet)] = later
            self._push(later)

    def wake(self, app: str, facet: str) -> None:
        """Deliver the facet's alarm now if it is due (after ``reset`` ended a quarantine)."""
        with self._write:
            alarm = self._current.get((app, facet))
            if alarm is not None and alarm.due_ms > alarm.at_ms and alarm.due_ms > time.time() * 1000:
                self._reschedule(alarm, alarm.at_ms, alarm.attempt)

    # -- listings ---------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self._current)

    def pending(self, app: str | None = None, facet: str | None = None, limit: int = 100) -> list[Alarm]:
        """The next ``limit`` alarms (of one app, or one facet), soonest first. O(n) in the
        pending alarms: a listing, never on the request path."""
        if facet is not None and app is not None:
            alarm = self._current.get((app, facet))
            return [alarm] if alarm is not None else []
        with self._cond:
            alarms = list(self._current.values())
        if app is not None:
            alarms = [a for a in alarms if a.app == app]
        return heapq.nsmallest(limit, alarms, key=lambda a: (a.due_ms, a.app, a.facet))


def _when(at_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms / 1000))
