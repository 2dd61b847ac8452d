"""Supervisor policy: human-written decisions in front of generated code.

A policy is consulted at three points of every request's life:

* ``admit_facet`` before a facet is created on its first call,
* ``admit_request`` before a request runs (after the name check),
* ``observe`` after it finished, with its result and usage.

``admit_*`` return None to admit, or a ``Refusal`` carrying a stable error
code and a message for the caller. ``QuotaPolicy`` (the default) enforces the
``rate`` and ``max_facets`` quotas; the ``queue`` quota is enforced by the
supervisor's input gate itself. A custom policy usually subclasses
``QuotaPolicy`` and calls ``super()`` first, for example a daily budget::

    class DailyBudget(QuotaPolicy):
        def __init__(self, per_app: dict[str, int]):
            super().__init__()
            self.per_app, self.used, self.day = per_app, {}, None

        def admit_request(self, app, facet, quotas):
            refusal = super().admit_request(app, facet, quotas)
            if refusal:
                return refusal
            today = time.strftime("%Y-%m-%d")
            if today != self.day:
                self.day, self.used = today, {}
            if self.used.get(app, 0) >= self.per_app.get(app, float("inf")):
                return Refusal(ErrorCode.RATE_LIMITED, f"{app} used its daily budget")
            self.used[app] = self.used.get(app, 0) + 1
            return None

Thread-safety: the hooks are called from request threads, several at once, and
with no supervisor lock held (``admit_facet`` included: a slow one stalls only the
facet being created). A policy guards its own state: ``QuotaPolicy`` has one lock,
a leaf, around its token buckets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import ErrorCode
from .quotas import Quotas
from .types import CallResult


@dataclass(frozen=True)
class Refusal:
    code: ErrorCode
    message: str


class Policy:
    """The interface; every hook admits by default."""

    def admit_facet(self, app: str, facet: str, existing_facets: int, quotas: Quotas) -> Refusal | None:
        return None

    def admit_request(self, app: str, facet: str, quotas: Quotas) -> Refusal | None:
        return None

    def observe(self, app: str, facet: str, result: CallResult) -> None:
        return None

    def forget(self, app: str, facet: str) -> None:
        """The facet was deleted: drop any state kept for it."""


class _TokenBucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, capacity: float) -> None:
        self.tokens = capacity
        self.stamp = time.monotonic()


class QuotaPolicy(Policy):
    """Enforces ``max_facets`` on creation and ``rate`` (a token bucket per facet).

    The bucket holds one second of requests (``rate`` tokens, at least 1) and
    refills continuously, so short bursts up to the rate pass and a sustained
    excess is refused with ``rate_limited``.
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], _TokenBucket] = {}
        self._lock = threading.Lock()

    def admit_facet(self, app: str, facet: str, existing_facets: int, quotas: Quotas) -> Refusal | None:
        if quotas.max_facets and existing_facets >= quotas.max_facets:
            return Refusal(
                ErrorCode.FACET_LIMIT,
                f"app {app} already has {existing_facets} facets (max_facets={quotas.max_facets})",
            )
        return None

    def admit_request(self, app: str, facet: str, quotas: Quotas) -> Refusal | None:
        rate = quotas.rate
        if not rate:
            return None
        capacity = max(1.0, rate)
        key = (app, facet)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _TokenBucket(capacity)
            now = time.monotonic()
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                return Refusal(ErrorCode.RATE_LIMITED, f"{app}/{facet} is over its rate of {rate:g} requests/s")
            bucket.tokens -= 1.0
        return None

    def forget(self, app: str, facet: str) -> None:
        with self._lock:
            self._buckets.pop((app, facet), None)
