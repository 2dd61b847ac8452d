"""Showing a ``load``'s build and compile progress (``runtime.BuildProgress``) outside the TUI.

A first load of a JS or Python app takes 10-30 s (the toolchain, then wasmtime's compiler),
so the CLI shows it: a progress bar when stderr is a terminal, else one JSON line per
report on stderr (at most one a second per step, and every step's last), so a script can
follow it and its stdout stays the one result.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from runtime import BuildProgress, neutralize

from .format import dumps

#: Seconds between two JSON lines of one step (the bar redraws as often as it likes).
JSON_PERIOD = 1.0


def _label(report: BuildProgress) -> str:
    what = "building" if report.step == "build" else "compiling"
    cached = " (cached)" if report.cached else ""
    return neutralize(f"{what} {report.detail}{cached}")


class JsonProgress:
    """Reports as JSON Lines: ``{"progress": {"step", "detail", "fraction", "elapsed", "cached"}}``."""

    def __init__(self, out: IO[str] | None = None, *, line: str | None = None) -> None:
        self._out = out if out is not None else sys.stderr
        self._line = line
        self._last: dict[str, float] = {}

    def __call__(self, report: BuildProgress) -> None:
        now = time.monotonic()
        final = report.fraction == 1.0
        if not final and now - self._last.get(report.step, float("-inf")) < JSON_PERIOD:
            return
        self._last[report.step] = now
        payload: dict[str, object] = {"progress": report.as_dict()}
        if self._line is not None:
            payload["cmd"] = self._line
        self._out.write(dumps(payload, ensure_ascii=True) + "\n")
        self._out.flush()


class BarProgress:
    """A rich progress bar on stderr, one task per step; use as a context manager."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BarProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, report: BuildProgress) -> None:
        task = self._tasks.get(report.step)
        if task is None:
            task = self._tasks[report.step] = self._progress.add_task(_label(report), total=1.0)
        self._progress.update(task, completed=report.fraction or 0.0, description=_label(report))


def for_terminal() -> BarProgress | JsonProgress:
    """The bar on a terminal, JSON lines elsewhere."""
    return BarProgress() if sys.stderr.isatty() else JsonProgress()
