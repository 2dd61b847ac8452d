"""HistoryPanel: what can be got back of one facet — the restorable window, the archive's
size, the snapshots — and "restore to..." a snapshot (Enter, with a confirmation).

A restore to a moment and a fork take their arguments on the ``:`` bar (``restore
APP/FACET at=WHEN --yes``, ``fork APP/FACET as APP/NEW [at=WHEN|SNAPSHOT]``), which the
panel's hint line names. Reads run in a worker (``Supervisor.history`` copies the facet's
pending commits into its archive first), results come back with ``call_from_thread``.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from runtime import FacetsError, HistoryInfo, neutralize

from ..format import human_bytes, iso_utc, plain, relative
from ..screens.confirm import ConfirmScreen
from .console_table import ConsoleTable


class HistoryPanel(Vertical):
    DEFAULT_CSS = """
    HistoryPanel #history-window { height: auto; padding: 0 1; }
    HistoryPanel #history-snapshots { height: 1fr; }
    """

    def __init__(self, sup: Any, target: str, *, readonly: bool = False) -> None:
        super().__init__()
        self.sup = sup
        self.target = target
        self.readonly = readonly
        #: Snapshot names by row, as shown (the newest first).
        self._names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("reading the history…", id="history-window")
        yield ConsoleTable(cursor_type="row", id="history-snapshots")

    def on_mount(self) -> None:
        table = self.query_one("#history-snapshots", DataTable)
        for title in ("snapshot", "taken (UTC)", "size", "reason"):
            table.add_column(title)

    def refresh_history(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="history-load")
    def _load(self) -> None:
        try:
            info = self.sup.history(self.target)
        except FacetsError as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._show, info, time.time())

    def _failed(self, exc: FacetsError) -> None:
        self.query_one("#history-window", Static).update(plain(f"history: {exc.message} ({exc.code})"))

    def _show(self, info: HistoryInfo, now: float) -> None:
        lines = Text()
        if info.window_start is None or info.window_end is None:
            lines.append("restorable: nothing archived yet\n")
        else:
            lines.append(f"restorable from {iso_utc(info.window_start)} ({relative(info.window_start, now)})")
            lines.append(f" to {iso_utc(info.window_end)} ({relative(info.window_end, now)})\n")
        days = info.retention_s / 86400
        lines.append(
            f"archive {human_bytes(info.archive_bytes)}, snapshots {human_bytes(info.snapshot_bytes)},"
            f" kept {days:g} days (history_ms)\n"
        )
        if not self.readonly:
            lines.append(
                f"Enter: restore to the snapshot · :restore {self.target} at=-15m --yes · "
                f":fork {self.target} as {self.target.partition('/')[0]}/NEW [at=WHEN]",
                style="dim",
            )
        self.query_one("#history-window", Static).update(lines)
        table = self.query_one("#history-snapshots", DataTable)
        table.clear()
        self._names = [s.name for s in info.snapshots]
        for snap in info.snapshots:
            table.add_row(plain(snap.name), iso_utc(snap.created_at), human_bytes(snap.size), plain(snap.reason))

    @on(DataTable.RowSelected, "#history-snapshots")
    def _restore_to(self, event: DataTable.RowSelected) -> None:
        if self.readonly or not (0 <= event.cursor_row < len(self._names)):
            return
        name = self._names[event.cursor_row]
        question = (
            f"Restore {self.target} to snapshot {name}? Requests wait while it is swapped in; "
            "the current state is snapshotted first, so this can be undone."
        )
        self.app.push_screen(ConfirmScreen(question), partial(self._confirmed, name))

    def _confirmed(self, name: str, yes: bool | None) -> None:
        if yes:
            self._restore(name)

    @work(thread=True, group="history-restore")
    def _restore(self, name: str) -> None:
        try:
            info = self.sup.restore(self.target, snapshot=name)
        except FacetsError as exc:
            failed = neutralize(f"restore failed: {exc.message} ({exc.code})")
            self.app.call_from_thread(partial(self.app.notify, failed, severity="error", markup=False))
            return
        done = neutralize(f"{self.target} restored to snapshot {name}; undo: {info.undo_snapshot}")
        self.app.call_from_thread(partial(self.app.notify, done, markup=False))
        self.app.call_from_thread(self._load)
