"""The alarm scheduler on its own: persistence, replacement, retries, abandonment, cost."""

from __future__ import annotations

import threading
import time

from runtime.alarms import RETRY_DELAYS_S, Alarm, AlarmScheduler
from runtime.control import ControlDB


class Deliveries:
    """The scheduler's dispatch: records each due alarm and ends it as told."""

    def __init__(self) -> None:
        self.seen: list[Alarm] = []
        self.event = threading.Event()

    def __call__(self, alarm: Alarm) -> None:
        self.seen.append(alarm)
        self.event.set()


def _scheduler(tmp_path, deliveries):
    control = ControlDB(str(tmp_path / "control.sqlite3"))
    logs: list[tuple[str, str, str, str]] = []
    scheduler = AlarmScheduler(
        control, deliveries, lambda app, facet, level, message, *rest: logs.append((app, facet, level, message))
    )
    return control, scheduler, logs


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_one_alarm_per_facet_a_new_one_replaces_it(tmp_path):
    control, scheduler, _ = _scheduler(tmp_path, Deliveries())
    far = int(time.time() * 1000) + 3_600_000
    scheduler.set("a", "x", far)
    scheduler.set("a", "x", far + 5)
    assert scheduler.get("a", "x") == far + 5
    assert control.alarm_rows() == [("a", "x", far + 5, far + 5, 0)]
    assert scheduler.delete("a", "x") and not scheduler.delete("a", "x")
    assert scheduler.get("a", "x") is None and control.alarm_rows() == []


def test_a_due_alarm_is_delivered_once_and_removed_after_success(tmp_path):
    deliveries = Deliveries()
    control, scheduler, _ = _scheduler(tmp_path, deliveries)
    scheduler.start()
    try:
        scheduler.set("a", "x", int(time.time() * 1000) + 30)
        scheduler.set("a", "y", int(time.time() * 1000) + 3_600_000)
        assert deliveries.event.wait(5)
        [alarm] = deliveries.seen
        assert alarm.target == "a/x"
        scheduler.finished(alarm, ok=True)
        assert scheduler.get("a", "x") is None
        assert [row[:2] for row in control.alarm_rows()] == [("a", "y")]
        time.sleep(0.05)
        assert len(deliveries.seen) == 1  # delivered once
    finally:
        scheduler.stop()


def test_a_replaced_alarm_is_not_deleted_by_its_delivery(tmp_path):
    deliveries = Deliveries()
    control, scheduler, _ = _scheduler(tmp_path, deliveries)
    scheduler.start()
    try:
        scheduler.set("a", "x", 0)
        assert deliveries.event.wait(5)
        later = int(time.time() * 1000) + 3_600_000
        scheduler.set("a", "x", later)  # the handler set the next one
        scheduler.finished(deliveries.seen[0], ok=True)
        assert scheduler.get("a", "x") == later
        assert control.alarm_rows() == [("a", "x", later, later, 0)]
    finally:
        scheduler.stop()


def test_a_failed_delivery_is_retried_with_backoff_then_abandoned(tmp_path):
    deliveries = Deliveries()
    control, scheduler, logs = _scheduler(tmp_path, deliveries)
    scheduler.set("a", "x", 1000)
    alarm = scheduler.alarm("a", "x")
    assert alarm is not None
    for attempt, delay in enumerate(RETRY_DELAYS_S):
        scheduler._in_flight += 1  # as the thread counts a delivery it hands out
        before = int(time.time() * 1000)
        scheduler.finished(alarm, ok=False, reason="trap")
        alarm = scheduler.alarm("a", "x")
        assert alarm is not None and alarm.attempt == attempt + 1
        assert before + delay * 1000 <= alarm.due_ms <= time.time() * 1000 + delay * 1000
        assert control.alarm_rows() == [("a", "x", 1000, alarm.due_ms, attempt + 1)]
    scheduler._in_flight += 1
    scheduler.finished(alarm, ok=False, reason="trap")
    assert scheduler.get("a", "x") is None and control.alarm_rows() == []
    assert logs[-1][2] == "error" and "abandoned after 7 failed deliveries" in logs[-1][3]


def test_pending_alarms_survive_a_restart_and_overdue_ones_run_at_start(tmp_path):
    deliveries = Deliveries()
    control, scheduler, _ = _scheduler(tmp_path, deliveries)
    now = int(time.time() * 1000)
    scheduler.set("a", "overdue", now - 60_000)
    scheduler.set("a", "later", now + 3_600_000)
    control.close()
    control, scheduler, _ = _scheduler(tmp_path, deliveries)
    assert scheduler.get("a", "later") == now + 3_600_000
    scheduler.start()
    try:
        assert deliveries.event.wait(5)
        assert [a.target for a in deliveries.seen] == ["a/overdue"]
    finally:
        scheduler.stop()


def test_listing_is_soonest_first(tmp_path):
    _, scheduler, _ = _scheduler(tmp_path, Deliveries())
    base = int(time.time() * 1000) + 3_600_000
    scheduler.set_many([("a", f"f{i}", base + (i * 7919) % 1000) for i in range(1000)])
    scheduler.set("b", "z", base - 1)
    listed = scheduler.pending(limit=5)
    assert [a.due_ms for a in listed] == sorted(a.due_ms for a in listed)
    assert listed[0].target == "b/z"
    assert [a.app for a in scheduler.pending("a", limit=3)] == ["a"] * 3
    assert scheduler.count == 1001


def test_a_hundred_thousand_pending_alarms_keep_the_thread_asleep(tmp_path):
    deliveries = Deliveries()
    _, scheduler, _ = _scheduler(tmp_path, deliveries)
    far = int(time.time() * 1000) + 3_600_000
    scheduler.set_many([("a", f"f{i}", far + i) for i in range(100_000)])
    wakeups = []
    original = scheduler._next_wait

    def counted():
        wakeups.append(1)
        return original()

    scheduler._next_wait = counted  # type: ignore[method-assign]
    scheduler.start()
    try:
        _wait(lambda: wakeups == [1])  # it looked once at start, and went to sleep
        scheduler.set("b", "later", far + 200_000)  # not the first: no wake-up
        time.sleep(0.3)
        assert wakeups == [1] and deliveries.seen == []  # asleep: nothing scanned, nothing due
        scheduler.set("b", "now", 0)  # the new first: the thread wakes and delivers only it
        assert deliveries.event.wait(5)
        assert [a.target for a in deliveries.seen] == ["b/now"]
    finally:
        scheduler.stop()


def test_setting_the_same_alarm_again_changes_nothing_and_the_heap_stays_bounded(tmp_path):
    control, scheduler, _ = _scheduler(tmp_path, Deliveries())
    far = int(time.time() * 1000) + 3_600_000
    first = scheduler.set("a", "x", far)
    assert scheduler.set("a", "x", far) is first  # no new row, no new heap entry
    for i in range(5000):  # re-armed to ever new times: replaced entries pile up ...
        scheduler.set("a", "x", far + i + 1)
    assert len(scheduler._heap) <= 2 * scheduler.count + 1024  # ... until it is rebuilt
    assert scheduler.get("a", "x") == far + 5000
    assert control.alarm_rows() == [("a", "x", far + 5000, far + 5000, 0)]
