"""facet_changes: a live view reads only the facets that changed since its last look."""

from __future__ import annotations

import time

from runtime import Supervisor
from runtime.changes import RATE_WINDOW, ChangeTracker
from tests.conftest import COUNTER_WAT


def targets(changes) -> set[str]:
    return {info.target for info in changes.facets}


def make(sup: Supervisor, *names: str) -> None:
    sup.load_app(COUNTER_WAT)
    for name in names:
        assert sup.call(f"counter/{name}").ok


def test_first_look_is_complete_then_only_what_changed(sup):
    make(sup, "a", "b", "c")
    first = sup.facet_changes()
    assert first.complete and targets(first) == {"counter/a", "counter/b", "counter/c"}
    time.sleep(RATE_WINDOW + 0.1)  # until a, b and c show their final requests per second
    settled = sup.facet_changes(first.cursor)
    assert not settled.complete and targets(settled) == {"counter/a", "counter/b", "counter/c"}
    assert all(info.usage["rps"] == 0 for info in settled.facets)
    assert sup.call("counter/b").ok
    second = sup.facet_changes(settled.cursor)
    assert not second.complete and targets(second) == {"counter/b"}
    assert second.facets[0].usage["requests"] == 2 and second.facets[0].state == "warm"
    assert sup.facet_changes(second.cursor).facets[0].target == "counter/b"  # its rate still moves


def test_a_facet_created_evicted_or_refused_since_is_listed(sup):
    make(sup, "a", "b", "idle")
    sup.set_quotas("counter/b", {"rate": "1"})
    time.sleep(RATE_WINDOW + 0.1)  # a and b settled: listed again only if something happens
    cursor = sup.facet_changes(sup.facet_changes().cursor).cursor
    assert sup.call("counter/new").ok
    sup.evict("counter/a")
    refused = [sup.call("counter/b") for _ in range(3)]
    assert any(r.error == "rate_limited" for r in refused)
    changes = sup.facet_changes(cursor)
    assert not changes.complete
    listed = {info.target: info for info in changes.facets}
    assert set(listed) == {"counter/new", "counter/a", "counter/b"}
    assert listed["counter/a"].state == "cold"
    assert listed["counter/b"].usage["errors"].get("rate_limited", 0) >= 1


def test_deleted_facets_are_reported_removed_and_recreated_ones_listed(sup):
    make(sup, "a", "b")
    cursor = sup.facet_changes().cursor
    sup.delete("counter/a")
    sup.delete("counter/b")
    assert sup.call("counter/b").ok  # created again
    changes = sup.facet_changes(cursor)
    assert sorted(changes.removed) == ["counter/a", "counter/b"]
    assert "counter/b" in targets(changes) and "counter/a" not in targets(changes)
    assert sup.facet_changes(changes.cursor).removed == []  # reported once


def test_a_quota_change_makes_the_next_look_complete(sup):
    make(sup, "a", "b")
    cursor = sup.facet_changes().cursor
    sup.set_quotas("counter", {"storage": "2MiB"})
    changes = sup.facet_changes(cursor)
    assert changes.complete and targets(changes) == {"counter/a", "counter/b"}


def test_tracker_keeps_a_facet_listed_while_its_rate_can_still_change():
    tracker = ChangeTracker(horizon=60.0)
    tracker.touch(("app", "recent"), 100.0)
    tracker.touch(("app", "old"), 101.0)
    tracker.touch(("app", "recent"), 109.5)  # touched again: moves, is not listed twice
    # looking at 110.5 after a look at 110: "recent" had a request 0.5 s before it, so
    # its requests-per-second figure still moves; "old" is settled
    assert tracker.since(110.0, 110.5) == (False, [("app", "recent")], [])
    assert tracker.since(102.0, 110.5) == (False, [("app", "recent"), ("app", "old")], [])


def test_tracker_asks_for_everything_after_its_horizon_or_a_global_change():
    tracker = ChangeTracker(horizon=60.0)
    tracker.remove(("app", "gone"), 10.0)
    assert tracker.since(5.0, 20.0) == (False, [], [("app", "gone")])
    assert tracker.since(None, 20.0)[0] is True
    assert tracker.since(5.0, 70.0)[0] is True  # older than the horizon: removals forgotten
    tracker.touch_everything(80.0)
    assert tracker.since(79.0, 81.0)[0] is True
    assert tracker.since(80.5, 81.0) == (False, [], [])
