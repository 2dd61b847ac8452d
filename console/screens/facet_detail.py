"""FacetDetailScreen: one facet in tabs: Data, Logs, Usage, Quotas, Call, Health, History.

Above the tabs, one line says how the facet is doing: its supervision state (with the
faults in a row and the next retry), the version it runs (and why: a canary, a pin) and
its next alarm; the Health tab (h) adds the last faults and the alarm's delivery; ``R``
resets its supervision. They are read once a second (``HEALTH_INTERVAL``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, TabbedContent, TabPane

from runtime import FacetInfo, FacetsError, neutralize
from runtime.storage import FacetReader
from runtime.supervision import HealthInfo

from ..format import STATE_STYLES, iso_utc, plain, relative
from ..widgets.call_panel import CallPanel
from ..widgets.console_table import ConsoleTable
from ..widgets.history_panel import HistoryPanel
from ..widgets.log_view import LogView
from ..widgets.quota_form import QuotaForm
from ..widgets.table_browser import TableBrowser
from ..widgets.usage_panel import UsagePanel
from .base import ConsoleScreen

W = TypeVar("W", bound=Widget)

TABS = (
    ("data", "Data"),
    ("logs", "Logs"),
    ("usage", "Usage"),
    ("quotas", "Quotas"),
    ("call", "Call"),
    ("health", "Health"),
)


@dataclass(frozen=True)
class FacetStatus:
    """What the summary line and the Health tab show, read in one worker pass."""

    health: HealthInfo | None
    alarm: dict[str, Any] | None
    info: FacetInfo | None
    rollout: dict[str, Any] | None

    @property
    def pinned(self) -> bool:
        if self.info is None or self.rollout is None:
            return False
        return self.info.name in self.rollout["facet_pins"]

    def role(self) -> str:
        """Why the facet runs its version: ``pinned``, ``app pinned``, ``canary 10%``, or ""."""
        r, info = self.rollout, self.info
        if r is None or info is None:
            return ""
        if self.pinned:
            return "pinned"
        if r["canary"] is not None and info.assigned == r["canary"]:
            return f"canary {r['canary_percent']:g}%"
        if r["pinned"] and info.assigned == r["active"]:
            return "app pinned"
        return ""

    def summary(self, now: float) -> Text:
        line = Text()
        h = self.health
        if h is None or (h.state == "ok" and not h.faults):
            line.append("healthy", style="green")
        else:
            line.append(f" {h.state} ", style=STATE_STYLES.get(h.state, "bold yellow"))
            line.append(f" {h.faults} faults in a row")
            if h.retry_at is not None:
                line.append(f" · next retry {relative(h.retry_at, now)}" if h.retry_at > now else " · retry due")
            if h.state == "quarantined":
                line.append(" · until reset (R)", style="bold")
        info = self.info
        if info is not None:
            shown = info.assigned if info.assigned is not None else info.version
            line.append(f" · runs version {shown if shown is not None else '-'}")
            role = self.role()
            if role:
                line.append(f" ({role})", style="bold yellow" if role.startswith("canary") else "magenta")
            if info.version is not None and info.version != shown:
                line.append(f" · warm on {info.version}")
        if self.alarm is not None:
            at = self.alarm["at_ms"] / 1000
            when = relative(at, now) if at > now else "due"
            line.append(f" · alarm {when} ({iso_utc(at)})", style="cyan")
            if self.alarm["attempt"]:
                line.append(f", {self.alarm['attempt']} failed deliveries", style="red")
        else:
            line.append(" · no alarm", style="dim")
        return line


class FacetDetailScreen(ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("d", "tab('data')", "Data"),
        Binding("l", "tab('logs')", "Logs"),
        Binding("u", "tab('usage')", "Usage"),
        Binding("o", "tab('quotas')", "Quotas"),
        Binding("c", "tab('call')", "Call"),
        Binding("h", "tab('health')", "Health"),
        Binding("i", "tab('history')", "History"),
        Binding("x", "sql", "SQL"),
        Binding("R", "reset", "Reset"),
    ]
    WRITE_ACTIONS = frozenset({"reset"})

    DEFAULT_CSS = """
    FacetDetailScreen #data-split { height: 1fr; }
    FacetDetailScreen #tables-list { width: 32; height: 1fr; border-right: vkey $primary-background; }
    FacetDetailScreen #data-main { width: 1fr; }
    FacetDetailScreen #browser-slot { height: 1fr; }
    FacetDetailScreen #sql-box { height: 1; border: none; padding: 0 1; background: $boost; }
    FacetDetailScreen #sql-result { height: 12; display: none; }
    FacetDetailScreen #sql-result.-shown { display: block; }
    FacetDetailScreen #sql-status { height: 1; padding: 0 1; }
    FacetDetailScreen #facet-summary { height: 1; padding: 0 1; }
    FacetDetailScreen #health-state { height: auto; padding: 0 1; }
    FacetDetailScreen #health-faults { height: 1fr; }
    """

    #: Seconds between two reads of the facet's supervision, alarm and version.
    HEALTH_INTERVAL = 1.0

    #: Seconds between checks of the facet's data version: how soon the table list follows a
    #: commit (the table browser checks as often).
    WATCH_INTERVAL = 0.5

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self._reader: FacetReader | None = None
        #: The data version the table list was read at (None: not read yet).
        self._tables_version: int | None = None
        self._tables_busy = False
        self._status_busy = False
        #: The faults the Health tab shows (redrawn only when they change).
        self._faults_shown: list[tuple[float, str, str]] = []

    def compose_body(self) -> ComposeResult:
        yield Static("", id="facet-summary")
        with TabbedContent(id="facet-tabs"):
            with TabPane("Data (d)", id="data"), Horizontal(id="data-split"):
                yield ConsoleTable(cursor_type="row", id="tables-list")
                with Vertical(id="data-main"):
                    yield Vertical(Static("select a table (Enter)", id="browser-hint"), id="browser-slot")
                    yield Input(placeholder="read-only SQL (x), e.g. SELECT count(*) FROM items", id="sql-box")
                    yield Static("", id="sql-status")
                    yield ConsoleTable(id="sql-result")
            with TabPane("Logs (l)", id="logs"):
                app_name, _, facet = self.target.partition("/")
                yield LogView(self.sup, app_name=app_name, facet=facet)
            with TabPane("Usage (u)", id="usage"):
                yield UsagePanel(self.sup, self.target)
            with TabPane("Quotas (o)", id="quotas"):
                yield QuotaForm(self.sup, self.target, readonly=self.readonly)
            with TabPane("Call (c)", id="call"):
                yield CallPanel(self.sup, self.target, readonly=self.readonly)
            with TabPane("Health (h)", id="health"):
                yield Static("", id="health-state")
                yield ConsoleTable(cursor_type="row", id="health-faults")
            with TabPane("History (i)", id="history"):
                yield HistoryPanel(self.sup, self.target, readonly=self.readonly)

    def on_mount(self) -> None:
        self.sub_title = self.target
        tables = self.query_one("#tables-list", DataTable)
        tables.add_column("table", key="name")
        tables.add_column("rows", key="count")
        self._refresh_tables()
        self.set_interval(self.WATCH_INTERVAL, self._refresh_tables)
        faults = self.query_one("#health-faults", DataTable)
        for title in ("time (UTC)", "code", "message"):
            faults.add_column(title)
        self._refresh_status()
        self.set_interval(self.HEALTH_INTERVAL, self._refresh_status)
        tables.focus()

    def on_unmount(self) -> None:
        self._close_reader()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()  # interrupts a count still running in the worker
            self._reader = None

    def _refresh_tables(self) -> None:
        if not self._tables_busy:  # a count over a big table may outlast one tick
            self._tables_busy = True
            self._load_tables()

    @work(thread=True, group="detail-tables")
    def _load_tables(self) -> None:
        """Read the table list (names and row counts) when the facet has committed since."""
        try:
            if self._reader is None:
                self._reader = self.sup.reader(self.target)
            version = self._reader.data_version()
            found = self._reader.tables() if version != self._tables_version else None
        except FacetsError as exc:  # no database yet, or the view closed meanwhile
            self.app.call_from_thread(self._tables_failed, exc.message)
            return
        self.app.call_from_thread(self._show_tables, version, found)

    def _tables_failed(self, message: str) -> None:
        self._tables_busy = False
        if self.is_attached:
            self._hint(plain(message))

    def _hint(self, text: Text) -> None:
        for hint in self.query("#browser-hint").results(Static):  # gone once a table is open
            hint.update(text)

    def _show_tables(self, version: int, found: list[dict[str, Any]] | None) -> None:
        self._tables_busy = False
        if not self.is_attached:
            self._close_reader()  # opened by a worker that outlived the view
            return
        if found is None:
            return
        tables = self._still_shown("#tables-list", DataTable)
        if tables is None:
            return
        self._tables_version = version
        selected = tables.coordinate_to_cell_key(tables.cursor_coordinate).row_key.value if tables.row_count else None
        tables.clear()
        for t in found:
            tables.add_row(plain(t["name"]), t["count"], key=t["name"])
        if selected is not None and selected in tables.rows:
            tables.move_cursor(row=tables.get_row_index(selected), scroll=False)
        self._hint(Text("select a table (Enter)" if found else "this facet has no tables yet"))

    @on(DataTable.RowSelected, "#tables-list")
    def _open_table(self, event: DataTable.RowSelected) -> None:
        self.open_table(str(event.row_key.value))

    def open_table(self, name: str) -> None:
        slot = self.query_one("#browser-slot", Vertical)
        slot.remove_children()
        browser = TableBrowser(self.sup, self.target, name, id="table-browser")
        slot.mount(browser)  # the browser focuses its grid once mounted

    # -- supervision, alarm, version ----------------------------------------------------
    def _refresh_status(self) -> None:
        if not self._status_busy:
            self._status_busy = True
            self._load_status()

    @work(thread=True, group="detail-status")
    def _load_status(self) -> None:
        app_name = self.target.partition("/")[0]
        try:
            health = self.sup.health(self.target)
            alarms = self.sup.alarm_list(self.target, limit=1)
            info = self.sup.facet_info(self.target)
            rollout = self.sup.rollout(app_name)  # pins and the canary: what the summary names
        except FacetsError:  # deleted meanwhile, or an attached console's owner is away
            self.app.call_from_thread(self._status_failed)
            return
        status = FacetStatus(health, alarms[0] if alarms else None, info, rollout)
        self.app.call_from_thread(self._show_status, status, time.time())

    def _status_failed(self) -> None:
        self._status_busy = False

    def _show_status(self, status: FacetStatus, now: float) -> None:
        self._status_busy = False
        summary = self._still_shown("#facet-summary", Static)
        state = self._still_shown("#health-state", Static)
        faults = self._still_shown("#health-faults", DataTable)
        if summary is None or state is None or faults is None:
            return
        summary.update(status.summary(now))
        h = status.health
        lines = Text()
        if h is None:
            lines.append("supervision: healthy (no fault in a row)\n", style="green")
        else:
            lines.append(f"supervision: {h.state}, {h.faults} faults in a row since {iso_utc(h.since)}\n")
            if h.retry_at is not None:
                lines.append(f"next retry: {iso_utc(h.retry_at)} ({relative(h.retry_at, now)})\n")
            lines.append("R resets it: its next request runs\n" if not self.readonly else "", style="dim")
        a = status.alarm
        if a is None:
            lines.append("alarm: none pending")
        else:
            lines.append(f"alarm: {iso_utc(a['at_ms'] / 1000)} ({relative(a['at_ms'] / 1000, now)})")
            if a["attempt"]:
                lines.append(f", {a['attempt']} failed deliveries; next {iso_utc(a['due_ms'] / 1000)}", style="red")
        state.update(lines)
        shown = [(f["time"], f["code"], f["message"]) for f in reversed(h.last_faults)] if h is not None else []
        if shown != self._faults_shown:
            self._faults_shown = shown
            faults.clear()
            for when, code, message in shown:  # the newest first; the guest's text stays text
                faults.add_row(iso_utc(when), plain(code, style="red"), plain(message))

    def action_reset(self) -> None:
        self._reset()

    @work(thread=True, group="detail-reset")
    def _reset(self) -> None:
        try:
            cleared = self.sup.reset(self.target)
        except FacetsError as exc:
            self.app.call_from_thread(
                partial(self.notify, neutralize(f"{exc.message} ({exc.code})"), severity="error", markup=False)
            )
            return
        if cleared is None:
            message = f"{neutralize(self.target)} was healthy: nothing to reset"
        else:
            message = f"{neutralize(self.target)} reset: was {cleared.state} after {cleared.faults} faults in a row"
        self.app.call_from_thread(partial(self.notify, message, markup=False))
        self.app.call_from_thread(self._refresh_status)

    # -- SQL box ----------------------------------------------------------------------
    def action_sql(self) -> None:
        self.action_tab("data")
        self.query_one("#sql-box", Input).focus()

    @on(Input.Submitted, "#sql-box")
    def _run_sql(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.query_one("#sql-status", Static).update(Text("running…"))
            self._query(event.value)

    @work(thread=True, exclusive=True, group="detail-sql")
    def _query(self, sql: str) -> None:
        try:
            result = self.sup.query(self.target, sql)
        except FacetsError as exc:
            self.app.call_from_thread(self._sql_failed, exc.message)
            return
        self.app.call_from_thread(self._sql_done, result)

    def _still_shown(self, selector: str, kind: type[W]) -> W | None:
        """The widget a worker's result goes to, or None when it is gone. ``is_attached`` is
        not enough for a screen: while it is torn down its children are removed before it
        detaches, and a late result then failed its worker with NoMatches (seen once in a
        fresh clone's run)."""
        if not self.is_attached:
            return None
        return next(iter(self.query(selector).results(kind)), None)

    def _sql_failed(self, message: str) -> None:
        status = self._still_shown("#sql-status", Static)
        if status is not None:
            status.update(plain(message))

    def _sql_done(self, result: dict) -> None:
        grid = self._still_shown("#sql-result", DataTable)
        status = self._still_shown("#sql-status", Static)
        if grid is None or status is None:
            return
        grid.clear(columns=True)
        for column in result["columns"]:
            grid.add_column(plain(column))
        shown = result["rows"][:1000]
        grid.add_rows([[plain(v) for v in row] for row in shown])
        grid.add_class("-shown")
        more = f" (first {len(shown)} shown)" if len(result["rows"]) > len(shown) else ""
        status.update(Text(f"{len(result['rows'])} rows{more}"))

    # -- navigation -------------------------------------------------------------------
    #: What gets the focus when a tab opens, so its keys work at once.
    FOCUS_ON_TAB: ClassVar[dict[str, str | None]] = {
        "data": "#tables-list",
        "logs": "LogView RichLog",
        "usage": None,
        "quotas": "#quota-fuel",
        "call": "#call-body",
        "health": "#health-faults",
        "history": "#history-snapshots",
    }

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "history":  # read when shown: it reads the archive's logs
            self.query_one(HistoryPanel).refresh_history()
        selector = self.FOCUS_ON_TAB.get(event.pane.id or "")
        if selector:
            widget = self.query_one(selector)
            if widget.focusable:
                widget.focus()

    def action_back(self) -> None:
        self.app.pop_screen()
