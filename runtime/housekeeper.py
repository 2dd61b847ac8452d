"""The housekeeper: one background thread that, every ``interval`` seconds, flushes usage
counters to the control database and evicts idle instances, and every minute applies
log and series retention.

Thread-safety: it shares nothing of its own; each job it calls takes the locks it
needs (``Supervisor.flush_usage`` its flush lock, ``Residency.evict_idle`` the
residency lock and, one at a time, facets' gates without waiting). A job that
raises is reported through the log and the thread goes on. Runs on its own daemon
thread, ``facets-housekeeper``; ``stop`` joins it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Job = Callable[[], None]


class Housekeeper:
    #: Seconds between two retention passes over logs and series (each is a DELETE over
    #: an indexed range: cheap, but not worth doing every second).
    PRUNE_PERIOD = 60.0

    def __init__(
        self, *, interval: float, every_round: list[Job], prune: Job, report: Callable[[Exception], None]
    ) -> None:
        self._interval = interval
        self._every_round = every_round
        self._prune = prune
        self._report = report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facets-housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        last_prune = 0.0
        while not self._stop.wait(self._interval):
            try:
                for job in self._every_round:
                    job()
                if time.monotonic() - last_prune > self.PRUNE_PERIOD:
                    last_prune = time.monotonic()
                    self._prune()
            except Exception as exc:  # keep housekeeping alive; report through the logs
                self._report(exc)
