"""The housekeeper: one background thread that, every ``interval`` seconds, flushes usage
counters to the control database and evicts idle instances, and every minute applies
log and series retention. ``flush_usage`` is also called directly (reports flush before
they read stored series; ``Supervisor.close`` flushes last).

Thread-safety: ``_flush_lock`` makes flushes one at a time (two flushes writing out of
order would store older values). It is taken with no other lock held, and the leaf locks
of ``Meters`` and ``ControlDB`` are taken inside it. Every other job takes the locks it
needs (``evict_idle`` the residency lock and, one at a time, facets' gates without
waiting). A job that raises is reported through the log and the thread goes on. Runs on
its own daemon thread, ``facets-housekeeper``; ``stop`` joins it. ``flush_usage`` runs
on the housekeeper's thread and on callers' (reports, ``close``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .metering import RESOLUTIONS

if TYPE_CHECKING:
    from .control import ControlDB
    from .metering import Meters
    from .registry import Log
    from .settings import SupervisorSettings

Job = Callable[[], None]


class Housekeeper:
    #: Seconds between two retention passes over logs and series (each is a DELETE over
    #: an indexed range: cheap, but not worth doing every second).
    PRUNE_PERIOD = 60.0

    def __init__(
        self,
        settings: SupervisorSettings,
        *,
        meters: Meters,
        control: ControlDB,
        evict_idle: Job,
        log: Log,
    ) -> None:
        self._interval = settings.usage_flush_interval
        self._readonly = settings.readonly
        self._log_retention = (settings.log_retention_count, settings.log_retention_age)
        self._meters = meters
        self._control = control
        self._evict_idle = evict_idle
        self._log = log
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facets-housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def flush_usage(self) -> None:
        """Persist usage counters and series changed since the last flush (read-only: none)."""
        if self._readonly:
            return
        with self._flush_lock:  # two flushes writing out of order would store older values
            rows, series = self._meters.collect_dirty()
            versions = self._meters.collect_versions()
            if rows or series or versions:
                self._control.save_usage(rows, series, versions)

    def prune(self) -> None:
        """Apply retention: old log records, and series beyond what each resolution keeps."""
        keep_per_facet, max_age_s = self._log_retention
        self._control.prune_logs(keep_per_facet=keep_per_facet, max_age_s=max_age_s)
        self._control.prune_series({res: kept for res, kept in RESOLUTIONS if res != 1})

    def _run(self) -> None:
        last_prune = 0.0
        while not self._stop.wait(self._interval):
            try:
                self.flush_usage()
                self._evict_idle()
                if time.monotonic() - last_prune > self.PRUNE_PERIOD:
                    last_prune = time.monotonic()
                    self.prune()
            except Exception as exc:  # keep housekeeping alive; report through the logs
                self._log("", "", "error", f"housekeeping failed: {exc!r}")
