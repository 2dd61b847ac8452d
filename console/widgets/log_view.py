"""LogView: a live tail of log records with level filter, search, follow and pause.

Records stream from the supervisor's log sink (no database polling): the sink
calls us from its writer thread and we ``post_message`` (thread-safe) to
ourselves. Every message is drawn as plain ``Text``; guest text was
neutralised by the runtime and is never parsed as markup.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, RichLog, Static

from runtime import FacetsError, LogRecord, neutralize
from runtime.logs import LEVEL_RANK, LEVELS

from ..format import clock
from ..host import ConsoleSupervisor
from ..messages import LogsArrived

LEVEL_STYLES = {"debug": "dim", "info": "cyan", "warn": "yellow", "error": "bold red"}


def _identity(record: LogRecord) -> tuple[float, str, str, str, str, str]:
    """What tells two records apart (a record read back from the database equals the one streamed)."""
    return (record.time, record.app, record.facet, record.request_id, record.level, record.message)


class LogView(Vertical):
    """Tail of the fleet's logs, or of one app or facet."""

    DEFAULT_CSS = """
    LogView { height: 1fr; }
    LogView #log-controls { height: 1; background: $boost; }
    LogView #log-status { width: 1fr; padding: 0 1; }
    LogView #log-search { width: 30; height: 1; border: none; padding: 0 1; }
    LogView RichLog { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("v", "cycle_level", "Level"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("space", "toggle_pause", "Pause"),
        Binding("s", "search", "Search"),
    ]

    HISTORY = 5000

    level: reactive[str] = reactive("debug")
    """Lowest level shown."""
    follow: reactive[bool] = reactive(True)
    """Scroll to each new line."""
    paused: reactive[bool] = reactive(False)
    """Hold new lines back (counted in ``pending``) until unpaused."""
    pending: reactive[int] = reactive(0)
    """Lines that arrived while paused."""
    search: reactive[str] = reactive("")
    """Only lines containing this text are shown."""

    def __init__(
        self, sup: ConsoleSupervisor, *, app_name: str | None = None, facet: str | None = None, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.sup = sup
        self.app_name = app_name
        self.facet = facet
        self._history: deque[LogRecord] = deque(maxlen=self.HISTORY)
        self._held: list[LogRecord] = []
        self._unsubscribe: Callable[[], None] | None = None
        #: Bumped by every ``set_scope``: a load started for an older scope is stale when it
        #: lands (a worker cannot be stopped mid-query, so its result still arrives).
        self._generation = 0
        #: Loads that arrived after the scope changed and were dropped.
        self.stale_dropped = 0
        #: Records streamed in while the current load runs: the load may have read the
        #: database before they were stored, so they are kept when its result replaces the view.
        self._streamed_during_load: list[LogRecord] | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="log-controls"):
            yield Static("", id="log-status")
            yield Input(placeholder="search (s)", id="log-search")
        yield RichLog(markup=False, highlight=False, wrap=False, max_lines=self.HISTORY, auto_scroll=True)

    def on_mount(self) -> None:
        self._update_status()
        self._unsubscribe = self.sup.subscribe_logs(self._from_sink)
        self._load_recent()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def set_scope(self, app_name: str | None, facet: str | None) -> None:
        """Show another app/facet (None: everything)."""
        self.app_name, self.facet = app_name, facet
        self._generation += 1
        self._history.clear()
        self._held.clear()
        self.pending = 0
        self._redraw()
        self._load_recent()

    @property
    def target(self) -> str | None:
        if self.app_name and self.facet:
            return f"{self.app_name}/{self.facet}"
        return self.app_name

    class Loaded(Message):
        """The recent records of one scope, read by a worker; ``generation`` names the scope."""

        def __init__(self, records: list[LogRecord], generation: int) -> None:
            super().__init__()
            self.records = records
            self.generation = generation

    def _load_recent(self) -> None:
        self._streamed_during_load = []
        self._load(self.target, self._generation)

    @work(thread=True, exclusive=True, group="log-load")
    def _load(self, target: str | None, generation: int) -> None:
        # The scope is read on the UI thread and passed in: this thread never reads the
        # fields ``set_scope`` writes.
        try:
            records = self.sup.logs(target, limit=500)
        except FacetsError:  # an attached console's owner is away (the title says so): keep what is shown
            return
        self.post_message(self.Loaded(records, generation))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        event.stop()
        if event.generation != self._generation:
            self.stale_dropped += 1
            return
        loaded = {_identity(r) for r in event.records}
        streamed = [r for r in self._streamed_during_load or () if _identity(r) not in loaded]
        self._streamed_during_load = None
        self._history.clear()
        self._history.extend(event.records)
        self._history.extend(streamed)
        self._redraw()

    def _from_sink(self, batch: list[LogRecord]) -> None:  # on the log writer thread
        mine = [r for r in batch if self._in_scope(r)]
        if mine:
            self.post_message(LogsArrived(mine))

    def _in_scope(self, record: LogRecord) -> bool:
        return (self.app_name is None or record.app == self.app_name) and (
            self.facet is None or record.facet == self.facet
        )

    @on(LogsArrived)
    def _arrived(self, event: LogsArrived) -> None:
        event.stop()
        records = [r for r in event.records if self._in_scope(r)]
        if self._streamed_during_load is not None:
            self._streamed_during_load.extend(records)
        self._history.extend(records)
        if self.paused:
            self._held.extend(records)
            self.pending = len(self._held)
            return
        self._write(records)

    # -- drawing ---------------------------------------------------------------------
    def _visible(self, record: LogRecord) -> bool:
        if LEVEL_RANK.get(record.level, 1) < LEVEL_RANK[self.level]:
            return False
        return not self.search or self.search.lower() in record.message.lower()

    @staticmethod
    def line(record: LogRecord) -> Text:
        where = f"{record.app}/{record.facet}" if record.facet else (record.app or "supervisor")
        return Text.assemble(
            (clock(record.time), "dim"),
            " ",
            (f"{record.level:<5}", LEVEL_STYLES.get(record.level, "")),
            " ",
            (f"{neutralize(where):<24}", "bold" if record.source == "guest" else "italic"),
            " ",
            neutralize(record.message),
        )

    def _write(self, records: list[LogRecord]) -> None:
        log = self.query_one(RichLog)
        for record in records:
            if self._visible(record):
                log.write(self.line(record), scroll_end=self.follow)

    def _redraw(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        self._write(list(self._history))

    def _update_status(self) -> None:
        parts = [f"level ≥ {self.level}", "follow" if self.follow else "follow off"]
        if self.paused:
            parts.append(f"PAUSED · {self.pending} pending")
        if self.search:
            parts.append(f"search {self.search!r}")
        self.query_one("#log-status", Static).update(Text("  ·  ".join(parts)))

    def watch_level(self) -> None:
        if self.is_mounted:
            self._update_status()
            self._redraw()

    def watch_search(self) -> None:
        if self.is_mounted:
            self._update_status()
            self._redraw()

    def watch_follow(self, follow: bool) -> None:
        if self.is_mounted:
            self.query_one(RichLog).auto_scroll = follow
            self._update_status()

    def watch_paused(self, paused: bool) -> None:
        if not self.is_mounted:
            return
        if not paused and self._held:
            held, self._held = self._held, []
            self._write(held)
            self.pending = 0
        self._update_status()

    def watch_pending(self) -> None:
        if self.is_mounted:
            self._update_status()

    # -- actions ------------------------------------------------------------------------
    def action_cycle_level(self) -> None:
        self.level = LEVELS[(LEVELS.index(self.level) + 1) % len(LEVELS)]

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused

    def action_search(self) -> None:
        self.query_one("#log-search", Input).focus()

    @on(Input.Changed, "#log-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.search = event.value
