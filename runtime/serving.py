"""The request path's two ends beside ``Supervisor.call``: ``run``, what the holder of a
facet's gate does with a group of requests (``gate.pass_gate`` calls it), and
``refuse``, how a request refused before it reached its facet is answered, counted
and logged.

Thread-safety: ``Serving`` has no lock of its own. ``run`` runs with the facet's gate
held (then ``Residency.open_db`` may take residency's lock, and try other gates
without waiting); ``refuse`` runs with no lock held and takes the leaf locks of
``Meters`` and ``LogSink``, and residency's. ``Throttle`` is unlocked on purpose (see
``logs``). Both run on the calling thread (``Supervisor.call``, or a pool worker for
``submit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ErrorCode, FacetsError
from .gate import Request, fail_all
from .hostcalls import UNCHANGED
from .http import status_for
from .logs import Throttle
from .types import CallResult

if TYPE_CHECKING:
    from .alarms import AlarmScheduler
    from .apps import AppStore
    from .control import ControlDB
    from .events import SupervisorLog
    from .facet import FacetSlot
    from .metering import Meters
    from .residency import Residency
    from .rollout import Rollouts
    from .supervision import Supervision


class Serving:
    def __init__(
        self,
        *,
        apps: AppStore,
        rollouts: Rollouts,
        control: ControlDB,
        residency: Residency,
        meters: Meters,
        log: SupervisorLog,
        alarms: AlarmScheduler,
        supervision: Supervision,
    ) -> None:
        self._alarms = alarms
        self._supervision = supervision
        self._apps = apps
        self._module = apps.module  # bound once: on every group's path
        self._rollouts = rollouts
        self._control = control
        self._residency = residency
        self._meters = meters
        self._log = log
        #: Breaches reported at most once a second per facet and code.
        self._breaches = Throttle(1.0)

    def run(self, slot: FacetSlot, group: list[Request]) -> None:
        """Run ``group`` on ``slot`` (its gate held): every request gets its ``result``."""
        if slot.deleted:
            fail_all(group, ErrorCode.NOT_FOUND, f"facet {slot.app}/{slot.name} was deleted")
            return
        rollouts = self._rollouts
        epoch = rollouts.epoch  # read once: a change published meanwhile bumps it again
        if slot.assigned_epoch != epoch:  # a rollout changed: which version is this facet's?
            slot.assigned = rollouts.version_for(slot.app, slot.name)
            slot.assigned_epoch = epoch
        try:
            module = self._module(slot.app, slot.assigned)
        except FacetsError as exc:
            fail_all(group, exc.code, exc.message)
            return
        if slot.db is None:
            self._residency.open_db(slot, group[-1].quotas)
        slot.run(module, group, self._module)
        # Before the gate opens, in the group's order: the next request sees the verdicts
        # and alarm changes of those before it.
        if slot.migration_fault is not None:  # it serves on its old version: counted, not backed off
            slot.migration_fault = None
            self._meters.count(slot.app, slot.name, "faults")
        supervision = self._supervision
        for request in group:
            result = request.result
            if result is not None and (result.error is not None or slot.health is not None):
                supervision.settled(slot, result)  # the healthy path: two tests per request
        if slot.alarm_changed:
            slot.alarm_changed = False
            self._apply_alarms(slot, group)
        if slot.migrated_changed and slot.migrated is not None:
            slot.migrated_changed = False
            try:
                self._control.set_facet_version(slot.app, slot.name, slot.migrated)
            except Exception as exc:  # the facet runs on; the next start re-runs its facet_init
                self._log(slot.app, slot.name, "error", f"cannot store the facet's version: {exc!r}")

    def _apply_alarms(self, slot: FacetSlot, group: list[Request]) -> None:
        """Store the alarm changes of the group's committed requests (``runtime.alarms``)."""
        for request in group:
            change = request.alarm_change
            result = request.result
            if change is UNCHANGED or result is None or not result.ok:
                continue  # rolled back: its change goes with its writes
            if request.alarm and change is None:
                continue  # a delivery's own "consumed": the scheduler's, if nobody replaced it
            try:
                self._alarms.apply(slot.app, slot.name, change if isinstance(change, int) else None)
                self._residency.touch((slot.app, slot.name))  # listings show the next alarm
            except Exception as exc:  # the control database failed: the request's data stands
                self._log(slot.app, slot.name, "error", f"the alarm change was not stored: {exc!r}", request.request_id)

    def refuse(
        self,
        app: str,
        facet: str,
        code: ErrorCode,
        message: str,
        request_id: str,
        http: bool = False,
        status: int = 0,
    ) -> CallResult:
        """Answer a request refused before it reached the facet (policy, queue), count it,
        and log a breach at most once a second per facet and code, so an overloaded
        facet does not flood the logs it is judged by."""
        result = CallResult.failure(code, message, request_id)
        error = result.error  # an ErrorCode: a custom policy's code may be a plain str
        if http:  # an HTTP request: counted with the status it is answered (``status``, if given)
            result.status = status or status_for(error)
        self._meters.record(app, facet, result.usage, error, None, result.status)
        self._residency.touch((app, facet))
        if error in (ErrorCode.RATE_LIMITED, ErrorCode.OVERLOADED, ErrorCode.TOO_BIG):
            suppressed = self._breaches.due((app, facet, error))
            if suppressed is not None:
                more = f" (and {suppressed} more since the last report)" if suppressed else ""
                self._log(app, facet, "warn", f"quota breached ({error}): {message}{more}", request_id)
        return result
