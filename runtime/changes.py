"""``ChangeTracker``: which facets' listed rows may have changed, and since when.

A view that refreshes every second over 10,000 facets (the console's home
table) should not rebuild 10,000 rows to find the twenty that moved: reading
every facet took ~100 ms of the GIL per refresh, and the objects it made
pushed Python into full garbage collections of ~0.5 s that stall every
request. So the supervisor notes when each facet last changed (a request, a
refusal, an eviction), and ``Supervisor.facet_changes`` lists only those.

Not thread-safe by itself: ``Residency`` holds its lock around every call.
"""

from __future__ import annotations

from collections import OrderedDict, deque

Key = tuple[str, str]

#: A facet's requests-per-second figure is the last complete second, so it keeps
#: changing for up to two seconds after its last request.
RATE_WINDOW = 2.0


class ChangeTracker:
    """When each facet last changed (``time.monotonic()``), and which were removed.

    Args:
        horizon: seconds of removals remembered; a caller whose last look is
            older than that gets the complete list again.
    """

    def __init__(self, horizon: float = 60.0) -> None:
        self.horizon = horizon
        self._touched: OrderedDict[Key, float] = OrderedDict()  # least recently changed first
        self._removed: deque[tuple[float, Key]] = deque()
        self._everything_at = float("-inf")

    def touch(self, key: Key, now: float) -> None:
        """The facet's row changed at ``now``. On every request: two dict operations."""
        touched = self._touched
        touched[key] = now
        touched.move_to_end(key)

    def touch_everything(self, now: float) -> None:
        """A change that can show on every row (a quota): the next look gets them all."""
        self._everything_at = now

    def remove(self, key: Key, now: float) -> None:
        self._touched.pop(key, None)
        self._removed.append((now, key))

    def since(self, since: float | None, now: float) -> tuple[bool, list[Key], list[Key]]:
        """``(complete, changed, removed)`` since ``since``. ``complete`` means the caller
        must read every facet: its first look, a change to all of them, or a look older
        than ``horizon``. A key can be both removed and changed (deleted, then created
        again): apply the removals first."""
        removed = self._removed
        while removed and removed[0][0] < now - self.horizon:
            removed.popleft()
        if since is None or since <= self._everything_at or since < now - self.horizon:
            return True, [], []
        threshold = since - RATE_WINDOW
        changed: list[Key] = []
        for key, at in reversed(self._touched.items()):
            if at < threshold:
                break
            changed.append(key)
        return False, changed, [key for at, key in removed if at >= since]
