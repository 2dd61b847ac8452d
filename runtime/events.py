"""The supervisor's own log records (``source="supervisor"``): a facet created or
deleted, an eviction, a breached quota, a failed housekeeping round. Every part
reports through one ``SupervisorLog``, which adds them to the ``LogSink`` with the
guests' records.

Thread-safety: no state of its own (``LogSink.add`` locks inside, a leaf); called
from any thread: requests, the housekeeper, operator calls.
"""

from __future__ import annotations

import time

from .logs import LogRecord, LogSink


class SupervisorLog:
    """``log(app, facet, level, message, request_id="")``: one supervisor record, now."""

    __slots__ = ("_sink",)

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def __call__(self, app: str, facet: str, level: str, message: str, request_id: str = "") -> None:
        record = LogRecord(
            time=time.time(),
            app=app,
            facet=facet,
            request_id=request_id,
            level=level,
            message=message,
            source="supervisor",
        )
        self._sink.add([record])


def discard(batch: list[LogRecord]) -> None:
    """The log writer of a read-only supervisor: nothing is stored (its own events
    still reach subscribers)."""
