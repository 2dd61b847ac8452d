"""Crash-loop supervision: a facet whose requests fault again and again is backed off,
then quarantined, instead of paying a cold start per request to fail once more.

States (``Health.state``), per facet:

* ``ok`` — no record at all (``FacetSlot.health`` is None): the healthy path pays one
  attribute test when a request is admitted and one when it is settled (bench:
  "supervision").
* counting — a record with ``state == "ok"``: 1 .. ``crash_faults - 1`` consecutive faults.
* ``backoff`` — ``crash_faults`` consecutive faults: requests are refused at once with
  ``backoff`` (HTTP 503, ``Retry-After``) until ``retry_at``; the first request after it is
  the probe (one at a time: the others keep being refused while it runs). A probe that
  faults doubles the delay, capped at ``backoff_max_ms``; one that succeeds ends it.
* ``quarantined`` — ``quarantine_faults`` consecutive faults: refused with ``quarantined``
  until an operator resets it (``Supervisor.reset``). Alarms wait too.

A success (an ok result) clears the record (``recovered`` when it was in backoff); an
outcome that is neither (``storage_full``, a host failure) leaves it as it is: faults count only in
a row, as Kubernetes' CrashLoopBackOff restarts do. Faults are the codes of
``FAULT_CODES``: the guest trapped, ran out of fuel, time or memory, answered badly or
misused a host call, in a request, its ``facet_init`` or a migration. A guest's own error
response (an HTTP 500 it chose to send) is a success here, and so are refusals by quota
(``storage_full``, ``rate_limited``...): the facet did not crash.

The thresholds are quotas (``crash_faults``, ``backoff_ms``, ``backoff_max_ms``,
``quarantine_faults``), read at each fault, so a change applies to the next one. The
defaults (3 faults, 1 s doubling to 5 min, quarantine at 10) give a looping facet about
4 minutes of retries (1+2+...+64 s) before an operator must look, and a facet that faults
twice in a burst and then recovers is never refused.

Every transition is logged (``supervisor`` source) and counted in the facet's meters
(``faults``, ``backoffs``, ``quarantines``, ``recoveries``); records are persisted in the
control database on each transition, so a restart keeps a quarantine (and a backoff's
``retry_at``).

Thread-safety: ``_lock`` guards every record's changes and their control-database rows
(taken before the control database's own lock, so the stored row is the newest verdict;
log records and meters are written after it is released). Verdicts are given in
``Serving.run``, with the facet's gate held, in the group's order.
``FacetSlot.health`` is read without it on the request path: a stale read admits or
refuses one request on the state of a moment before, which the next one corrects.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode
from .types import CallResult

if TYPE_CHECKING:
    from .control import ControlDB
    from .events import SupervisorLog
    from .facet import FacetSlot
    from .metering import Meters
    from .quotas import QuotaBook, Quotas

#: The outcomes that count as a fault (the guest's, not the request's or the host's).
FAULT_CODES = frozenset(
    {
        ErrorCode.TRAP,
        ErrorCode.TIMEOUT,
        ErrorCode.FUEL_EXHAUSTED,
        ErrorCode.MEMORY_LIMIT,
        ErrorCode.STACK_OVERFLOW,
        ErrorCode.BAD_RESPONSE,
        ErrorCode.BAD_REQUEST,  # in _settle only from a host call the guest misused
    }
)
#: Faults remembered per facet, for the console's detail view.
KEEP_FAULTS = 5
#: A probe that has not settled after this many of its timeouts is taken as lost (its
#: thread gave up at the gate, say) and another request may probe.
PROBE_TIMEOUTS = 3


@dataclass(frozen=True)
class Fault:
    time: float
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "code": self.code, "message": self.message}


@dataclass
class Health:
    """One faulting facet's record (none exists for a healthy facet)."""

    state: str = "ok"
    #: Consecutive faults.
    faults: int = 0
    #: Epoch seconds of the first fault in the row.
    since: float = 0.0
    #: Epoch seconds after which a probe may run (backoff only).
    retry_at: float = 0.0
    #: Monotonic deadline of the probe in flight (0: none).
    probing: float = 0.0
    last: deque[Fault] = field(default_factory=lambda: deque(maxlen=KEEP_FAULTS))


@dataclass(frozen=True)
class HealthInfo:
    """A facet's supervision state, as listed (``Supervisor.health``)."""

    target: str
    state: str
    faults: int
    since: float
    retry_at: float | None
    last_faults: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "state": self.state,
            "faults": self.faults,
            "since": self.since,
            "retry_at": self.retry_at,
            "last_faults": self.last_faults,
        }


def backoff_delay(quotas: Quotas, faults: int) -> float:
    """Seconds of backoff after ``faults`` consecutive faults (``faults >= crash_faults``)."""
    doublings = faults - quotas.crash_faults
    if doublings >= 40:  # 2**40 ms is 35 years: past any cap, and no float overflow
        return quotas.backoff_max_ms / 1000
    return min(quotas.backoff_max_ms, quotas.backoff_ms * 2**doublings) / 1000


class Supervision:
    def __init__(self, *, control: ControlDB, quota_book: QuotaBook, meters: Meters, log: SupervisorLog) -> None:
        self._control = control
        self._quota_book = quota_book
        self._meters = meters
        self._log = log
        self._lock = threading.Lock()
        self.records: dict[tuple[str, str], Health] = {}
        for row in control.health_rows():
            health = Health(
                state=row["state"], faults=row["faults"], since=row["since"], retry_at=row["retry_at"] or 0.0
            )
            for fault in row["last_faults"]:
                health.last.append(Fault(fault["time"], fault["code"], fault["message"]))
            self.records[(row["app"], row["facet"])] = health

    # -- the request path ---------------------------------------------------------------
    def admit(self, slot: FacetSlot, request_id: str) -> CallResult | None:
        """The refusal of a request to a facet with a record (``slot.health``), or None to
        let it through (counting, or the probe after a backoff)."""
        health = slot.health
        if health is None or health.state == "ok":
            return None
        target = f"{slot.app}/{slot.name}"
        if health.state == "quarantined":
            return CallResult.failure(
                ErrorCode.QUARANTINED,
                f"{target} is quarantined after {health.faults} faults in a row; an operator must reset it",
                request_id,
            )
        now = time.time()
        wait = health.retry_at - now
        if wait <= 0:
            with self._lock:
                monotonic = time.monotonic()
                if health.probing < monotonic:  # no probe out (or it was lost): this is it
                    quotas = self._quota_book.effective(slot.app, slot.name)
                    health.probing = monotonic + PROBE_TIMEOUTS * quotas.timeout_ms / 1000
                    return None
            wait = 1.0  # a probe is running: ask again when it has likely settled
        refused = CallResult.failure(
            ErrorCode.BACKOFF,
            f"{target} is backing off after {health.faults} faults in a row; retry in {math.ceil(wait)} s",
            request_id,
        )
        refused.retry_after = wait
        return refused

    def settled(self, slot: FacetSlot, result: CallResult) -> None:
        """After a request that reached the facet: count a fault, or clear the record."""
        error = result.error
        if error is not None and error in FAULT_CODES:
            self.fault(slot, str(error), result.message)
        elif slot.health is not None:
            if result.ok:
                self._succeeded(slot)
            else:  # refused by a quota, the host failed: no verdict on the guest
                self.probe_lost(slot)

    def fault(self, slot: FacetSlot, code: str, message: str) -> None:
        """Count one fault of ``slot``'s facet (a request, an alarm, a migration)."""
        app, facet = slot.app, slot.name
        quotas = self._quota_book.effective(app, facet)
        now = time.time()
        with self._lock:
            if slot.deleted:  # settled after its facet was deleted: no record for the name
                return
            health = slot.health
            if health is None:
                health = slot.health = self.records[(app, facet)] = Health(since=now)
            health.faults += 1
            health.probing = 0.0
            health.last.append(Fault(now, code, message[:500]))
            before = health.state
            if before == "quarantined" or (quotas.quarantine_faults and health.faults >= quotas.quarantine_faults):
                health.state = "quarantined"
            elif quotas.crash_faults and health.faults >= quotas.crash_faults:
                health.state = "backoff"
                health.retry_at = now + backoff_delay(quotas, health.faults)
            else:  # the thresholds were raised (or turned off) since: counting again
                health.state = "ok"
                health.retry_at = 0.0
            snapshot = _row(health)
            # Stored under the lock: two verdicts racing must not store the older one last.
            self._control.save_health(app, facet, snapshot)
        self._meters.count(app, facet, "faults")
        if snapshot["state"] == "quarantined" and before != "quarantined":
            self._meters.count(app, facet, "quarantines")
            self._log(
                app,
                facet,
                "error",
                f"quarantined after {snapshot['faults']} faults in a row (last: {code}); "
                f"requests are refused until an operator runs: reset {app}/{facet}",
            )
        elif snapshot["state"] == "backoff":
            self._meters.count(app, facet, "backoffs")
            delay = snapshot["retry_at"] - now
            self._log(
                app,
                facet,
                "warn",
                f"backing off for {delay:.3g} s after {snapshot['faults']} faults in a row (last: {code})",
            )

    def _succeeded(self, slot: FacetSlot) -> None:
        app, facet = slot.app, slot.name
        with self._lock:
            health = slot.health
            if health is None or health.state == "quarantined" or slot.deleted:  # an operator's call
                return
            slot.health = None
            self.records.pop((app, facet), None)
            self._control.save_health(app, facet, None)
        if health.state == "backoff":
            self._meters.count(app, facet, "recoveries")
            self._log(app, facet, "info", f"recovered: a request succeeded after {health.faults} faults in a row")

    def probe_lost(self, slot: FacetSlot) -> None:
        """The admitted probe never ran (it gave up at the gate): let another one probe."""
        health = slot.health
        if health is not None:
            health.probing = 0.0

    # -- operators ----------------------------------------------------------------------
    def reset(self, slot: FacetSlot, who: str = "an operator") -> HealthInfo | None:
        """Clear the facet's record: requests run again. Returns what was cleared."""
        app, facet = slot.app, slot.name
        with self._lock:
            health = slot.health
            slot.health = None
            self.records.pop((app, facet), None)
            if health is not None:
                self._control.save_health(app, facet, None)
        if health is None:
            return None
        self._meters.count(app, facet, "resets")
        self._log(app, facet, "info", f"supervision reset by {who} (was {health.state}, {health.faults} faults)")
        return info(app, facet, health)

    def forget(self, app: str, facet: str) -> None:
        """A deleted facet: its record goes with it."""
        with self._lock:
            self.records.pop((app, facet), None)

    def info(self, slot: FacetSlot) -> HealthInfo | None:
        health = slot.health
        return None if health is None else info(slot.app, slot.name, health)


def info(app: str, facet: str, health: Health) -> HealthInfo:
    return HealthInfo(
        target=f"{app}/{facet}",
        state=health.state,
        faults=health.faults,
        since=health.since,
        retry_at=health.retry_at if health.state == "backoff" else None,
        last_faults=[fault.as_dict() for fault in list(health.last)],
    )


def _row(health: Health) -> dict[str, Any]:
    return {
        "state": health.state,
        "faults": health.faults,
        "since": health.since,
        "retry_at": health.retry_at,
        "last_faults": [fault.as_dict() for fault in health.last],
    }
