"""Structured log records, neutralising guest text, and the batched log sink.

Guest ``log`` calls and the supervisor's own events become ``LogRecord``s.
The sink hands batches to a writer (the control database) off the request
path, and fans each batch out to subscribers such as the console's live tail,
so nothing polls a database. Reads go to the control database.

Thread-safety: ``LogSink._lock`` guards the pending batch and the subscribers; it is
a leaf (held for a list operation; the batch is written and fanned out after it is
released). ``add`` is called from any thread; the writer and the subscribers run on
the sink's own thread (``facets-log-writer``), or on the caller's in ``flush``.
``Throttle`` is unlocked on purpose (see its docstring).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

LEVELS = ("debug", "info", "warn", "error")
LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}

# C0 controls (ESC included), DEL, C1 controls, and the Unicode bidi/line
# overrides that can make a terminal line read differently than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def neutralize(text: str) -> str:
    """Make untrusted text safe to print: every control character becomes a visible escape.

    ``"\\x1b[2J"`` shows as the literal characters ``\\x1b[2J``; a newline as ``\\n``
    (so a guest cannot forge a second log line). Printable text is untouched.
    """
    return _UNSAFE.sub(
        lambda m: _ESCAPES.get(
            m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True)
class LogRecord:
    time: float
    app: str
    facet: str
    request_id: str
    level: str
    message: str
    #: "guest" for the app's own log calls, "supervisor" for platform events.
    source: str = "guest"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Throttle:
    """At most one report per key every ``period`` seconds: ``due(key)`` is None while a
    report is suppressed, else how many were suppressed since the last one. Unlocked: a
    race between two threads can let one extra report through, never lose a request."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[Hashable, tuple[float, int]] = {}

    def due(self, key: Hashable) -> int | None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.period:
            self._last[key] = (last, suppressed + 1)
            return None
        self._last[key] = (now, 0)
        return suppressed


Subscriber = Callable[[list[LogRecord]], None]


class LogSink:
    """Collects records, writes them in batches on a background thread, streams them out.

    Args:
        write_batch: persists a batch (called on the sink's thread, never on a request path).
        flush_interval: seconds between batches; also the worst-case delay to subscribers.
    """

    def __init__(self, write_batch: Callable[[list[LogRecord]], None], *, flush_interval: float = 0.1) -> None:
        self._write_batch = write_batch
        self._pending: list[LogRecord] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._subscribers: list[Subscriber] = []
        self._flush_interval = flush_interval
        self.dropped_by_subscribers = 0
        self._thread = threading.Thread(target=self._run, name="facets-log-writer", daemon=True)
        self._thread.start()

    def add(self, records: Iterable[LogRecord]) -> None:
        records = list(records)
        if not records:
            return
        with self._lock:
            self._pending.extend(records)
        self._wake.set()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(batch)`` for every new batch; returns an unsubscribe function."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def flush(self) -> None:
        """Write everything pending now (used on shutdown and by tests)."""
        with self._lock:
            batch, self._pending = self._pending, []
            subscribers = list(self._subscribers)
        if not batch:
            return
        try:
            self._write_batch(batch)
        except Exception:
            with self._lock:  # keep the batch for the next attempt, in order
                self._pending[:0] = batch
            raise
        for subscriber in subscribers:
            try:
                subscriber(batch)
            except Exception:  # a broken subscriber must not stop logging for everyone
                self.dropped_by_subscribers += 1

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            if not self._stopping:
                time.sleep(self._flush_interval)  # let a batch build up
            try:
                self.flush()
            except Exception:
                # The control database refused the batch (disk full, busy): it stays
                # pending and goes out with the next attempt.
                time.sleep(self._flush_interval)
                self._wake.set()

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
