"""FacetsScreen (home): every facet, live, with fleet totals above.

The table refreshes once a second from a thread worker. A refresh never
overlaps the previous one and asks the supervisor only for the facets that
changed since the last one (``Supervisor.facet_changes``), and only cells
whose value changed are updated: the cost follows the traffic, not the number
of facets, and the table does not flicker.

The ``ok/4xx/5xx`` column counts the HTTP answers of each facet by class: ``ok`` is 2xx
and 3xx together, because a redirect is a facet's normal success (the shortener answers
302, the todo form's POST 303), so a separate 3xx count would only widen the table (at 130
columns, ``http ok/4xx/5xx`` already made it scroll sideways); 4xx (the client's fault) and
5xx (the facet's or the host's) are what an operator looks for, 4xx yellow, 5xx red. A
facet never fetched over HTTP shows ``-``.

Supervision and rollouts (issue 15): the state column shows ``backoff 12s`` (the seconds to
the next retry) and ``quarantined`` on a background colour of their own, ``ver`` the version
the facet's next request runs (``1→2`` while its warm instance still runs the old one,
``canary`` or ``pinned`` when a rollout put it there), ``alarm`` the time to its pending
alarm (``1h59m``; ``due`` once it is). Those cells depend on the clock: the facets that have them (``_timed``)
are redrawn every tick even when the supervisor reports no change, and the header's
supervision line (faulting facets, the fleet's next alarm) is counted over them only.
``R`` resets the selected facet's supervision (not destructive: no confirmation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from runtime import AppInfo, FacetsError, neutralize

from ..commands import KEPT_FOR_UNDELETE
from ..format import bar, duration, human_bytes, human_count, iso_utc, plain, relative, state_text
from ..messages import OpenFacet
from ..widgets.console_table import ConsoleTable
from ..widgets.fleet_header import FleetHeader
from .base import ConsoleScreen
from .confirm import ConfirmScreen

#: (column key, title, value from a FacetInfo row dict)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("facet", "facet"),
    ("state", "state"),
    ("version", "ver"),
    ("alarm", "alarm"),
    ("requests", "requests"),
    ("errors", "errors"),
    ("http", "ok/4xx/5xx"),
    ("rps", "req/s"),
    ("p50", "p50 ms"),
    ("p99", "p99 ms"),
    ("fuel", "fuel"),
    ("storage", "storage / quota"),
    ("last_error", "last error"),
)
SORTABLE = tuple(key for key, _ in COLUMNS)
#: Cells that change with the clock alone (redrawn each tick for the facets in ``_timed``).
TIMED_COLUMNS = ("state", "alarm")


@dataclass(frozen=True)
class FacetRow:
    """Raw values of one row (what sorting and change detection compare)."""

    facet: str
    state: str
    version: int | None  # what its warm instance runs (None: cold)
    requests: int
    errors: int
    http_ok: int  # 2xx + 3xx (the module docstring says why)
    http_4xx: int
    http_5xx: int
    rps: float
    p50: float
    p99: float
    fuel: int
    storage: int
    storage_quota: int
    last_error: str | None
    assigned: int | None = None  # what its next request runs
    role: str = ""  # "canary" or "pinned": why it runs ``assigned``
    retry_at: float | None = None  # backoff: when a request may probe again (epoch s)
    alarm_at: int | None = None  # its pending alarm (epoch ms)

    @property
    def timed(self) -> bool:
        """Whether a cell of the row changes with the clock, or the header counts it."""
        return self.retry_at is not None or self.alarm_at is not None or self.state in ("backoff", "quarantined")

    def state_cell(self, now: float) -> Text:
        if self.state == "backoff" and self.retry_at is not None:
            wait = self.retry_at - now
            return state_text(self.state, f"backoff {duration(wait + 0.999)}" if wait > 0 else "backoff due")
        return state_text(self.state)

    def alarm_cell(self, now: float) -> Text | str:
        if self.alarm_at is None:
            return "-"
        at = self.alarm_at / 1000
        # the time to it (the column says what it is: no "in " to widen it)
        return Text(duration(at - now + 0.999) if at - now >= 1 else "due", style="cyan")

    def version_cell(self) -> Text | str:
        shown = self.assigned if self.assigned is not None else self.version
        if shown is None:
            return "-"
        text = Text(str(shown))
        if self.version is not None and self.version != shown:
            text = Text(f"{self.version}→{shown}")  # the next request moves it
        if self.role:
            text.append(f" {self.role}", style="bold yellow" if self.role == "canary" else "magenta")
        return text

    def cells(self, now: float) -> dict[str, Any]:
        return {
            "facet": plain(self.facet),
            "state": self.state_cell(now),
            "version": self.version_cell(),
            "alarm": self.alarm_cell(now),
            "requests": self.requests,
            "errors": Text(str(self.errors), style="red" if self.errors else ""),
            "http": self.http_cell(),
            "rps": f"{self.rps:.0f}",
            "p50": f"{self.p50:.2f}",
            "p99": f"{self.p99:.2f}",
            "fuel": human_count(self.fuel),
            "storage": Text.assemble(bar(self.storage, self.storage_quota, width=8), " ", human_bytes(self.storage)),
            "last_error": plain(self.last_error, style="red"),
        }

    def http_cell(self) -> Text | str:
        """``1.2k/3/0``: answers ok (2xx+3xx), 4xx in yellow, 5xx in red when there are any."""
        if not (self.http_ok or self.http_4xx or self.http_5xx):
            return "-"
        return Text.assemble(
            human_count(self.http_ok),
            "/",
            (human_count(self.http_4xx), "yellow" if self.http_4xx else ""),
            "/",
            (human_count(self.http_5xx), "bold red" if self.http_5xx else ""),
        )

    def sort_value(self, column: str) -> Any:
        if column == "http":  # failing facets together: by 5xx, then 4xx, then the answers ok
            return (self.http_5xx, self.http_4xx, self.http_ok)
        if column == "storage":
            return self.storage
        if column == "last_error":
            return self.last_error or ""
        if column == "version":
            return self.assigned or self.version or 0
        if column == "alarm":  # soonest first; none last
            return self.alarm_at if self.alarm_at is not None else 2**63
        return getattr(self, column)


def _role(app: AppInfo | None, assigned: int | None, own_pin: bool = False) -> str:
    """Why a facet runs ``assigned``: ``pinned`` (its own pin, or its app's), ``canary`` (a
    staged canary's version), or "" (the active version)."""
    if own_pin:
        return "pinned"
    if app is None or assigned is None:
        return ""
    if app.canary is not None and assigned == app.canary:
        return "canary"
    if app.pinned and assigned == app.active:
        return "pinned"
    return ""


def plain_message(target: str, exc: FacetsError) -> str:
    """``todo/alice: no facet todo/alice (not_found)``, safe for a terminal."""
    return neutralize(f"{target}: {exc.message} ({exc.code})")


class FacetsScreen(ConsoleScreen):
    """Home: the fleet."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open the facet", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("e", "evict", "Evict"),
        Binding("R", "reset", "Reset"),
        Binding("D", "delete", "Delete"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    WRITE_ACTIONS = frozenset({"evict", "delete", "reset"})
    REFRESH_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, FacetRow] = {}
        self._cursor: float | None = None  # from the last facet_changes applied
        self._refreshing = False
        #: Rows whose cells depend on the clock (``FacetRow.timed``).
        self._timed: set[str] = set()
        #: The clock the shown cells were drawn at.
        self._now = 0.0
        self.filter_text = ""
        self.sort_column = "facet"
        self.sort_reverse = False

    def compose_body(self) -> ComposeResult:
        yield FleetHeader()
        yield Input(placeholder="filter facets (app/facet, state, error)…", id="facet-filter")
        yield Static("", id="supervision-line")
        table = ConsoleTable(cursor_type="row", zebra_stripes=True, id="facets-table")
        for key, title in COLUMNS:
            table.add_column(title, key=key)
        yield table

    def on_mount(self) -> None:
        self.sub_title = "facets"
        self.refresh_fleet()
        self.set_interval(self.REFRESH_SECONDS, self.refresh_fleet)
        self.query_one(DataTable).focus()

    # -- refresh ---------------------------------------------------------------------
    def refresh_fleet(self) -> None:
        if self._refreshing:  # the previous refresh is still running: skip this tick
            return
        self._refreshing = True
        self._collect()

    @work(thread=True, group="facets-refresh")
    def _collect(self) -> None:
        try:
            changes = self.sup.facet_changes(self._cursor)
            apps = self.sup.app_list()
            by_name = {a.name: a for a in apps}
            now = time.time()
            rows = {}
            for info in changes.facets:
                u = info.usage
                rows[info.target] = FacetRow(
                    facet=info.target,
                    state=info.state,
                    version=info.version,
                    requests=u["requests"],
                    errors=u["error_count"],
                    http_ok=u["http_2xx"] + u["http_3xx"],
                    http_4xx=u["http_4xx"],
                    http_5xx=u["http_5xx"],
                    rps=u["rps"],
                    p50=u["p50_ms"],
                    p99=u["p99_ms"],
                    fuel=u["fuel"],
                    storage=u["storage"],
                    storage_quota=self.sup.quotas(info.target).storage,
                    last_error=u["last_error"],
                    assigned=info.assigned,
                    role=_role(by_name.get(info.app), info.assigned, info.pinned),
                    retry_at=info.retry_at,
                    alarm_at=info.alarm_at,
                )
            fleet = self.sup.usage()
            rps_series = self.sup.series(None, "requests", points=60)
            totals = (
                f"{len(apps)} apps · {sum(a.facets for a in apps)} facets · "
                f"{self.sup.warm_count} warm · "
                f"{fleet['requests']:,} requests · {fleet['error_count']:,} errors · "
                f"{human_bytes(fleet['storage'])} stored · {rps_series[-2]:.0f} req/s"
            )
            traffic = self.console.traffic_status()
            # Compare here, in the worker: the UI thread then touches only what changed,
            # which keeps keys answered quickly with thousands of facets.
            previous = self._rows
            if changes.complete:
                removed = [key for key in previous if key not in rows]
            else:
                removed = [key for key in changes.removed if key in previous and key not in rows]
            changed = [key for key, row in rows.items() if previous.get(key) != row]
        except Exception as exc:  # the supervisor is shutting down
            self.app.call_from_thread(self._refresh_failed, exc)
            return
        self.app.call_from_thread(
            self._apply, changes.cursor, rows, changed, removed, totals, rps_series[:-1], traffic, now
        )

    def _refresh_failed(self, exc: Exception) -> None:
        self._refreshing = False

    def _apply(
        self,
        cursor: float,
        rows: dict[str, FacetRow],
        changed: list[str],
        removed: list[str],
        totals: str,
        rps_series: list[float],
        traffic: str,
        now: float,
    ) -> None:
        """Merge a refresh: ``rows`` holds the facets that may have changed, ``changed``
        those that did, ``removed`` the deleted ones; ``now`` is the clock the time-dependent
        cells are drawn at."""
        self._refreshing = False
        if not self.is_attached:
            return
        self._cursor = cursor
        previous_now, self._now = self._now, now
        self.query_one(FleetHeader).show(totals, rps_series, traffic, self.console.ingress_status())
        table = self.query_one(DataTable)
        resort = False
        for key in removed:
            self._rows.pop(key, None)
            self._timed.discard(key)
            if key in table.rows:
                table.remove_row(key)
        changed_set = set(changed)
        for key in changed:
            row = rows[key]
            old = self._rows.get(key)
            self._rows[key] = row
            if row.timed:
                self._timed.add(key)
            else:
                self._timed.discard(key)
            visible = self._matches(row)
            in_table = key in table.rows
            if visible and not in_table:
                cells = row.cells(now)
                table.add_row(*(cells[c] for c, _ in COLUMNS), key=key)
                resort = True
            elif not visible and in_table:
                table.remove_row(key)
            elif in_table:
                new_cells = row.cells(now)
                old_cells = old.cells(previous_now) if old else {}
                for column, _ in COLUMNS:
                    if old_cells.get(column) != new_cells[column]:
                        table.update_cell(key, column, new_cells[column], update_width=True)
                if old is None or old.sort_value(self.sort_column) != row.sort_value(self.sort_column):
                    resort = True
        for key in self._timed - changed_set:  # unchanged, but the clock moved: countdowns
            row = self._rows[key]
            if key in table.rows:
                for column in TIMED_COLUMNS:
                    cell = row.state_cell(now) if column == "state" else row.alarm_cell(now)
                    if cell != (row.state_cell(previous_now) if column == "state" else row.alarm_cell(previous_now)):
                        table.update_cell(key, column, cell, update_width=True)
        self._show_supervision(now)
        if resort:
            self._sort()

    def _show_supervision(self, now: float) -> None:
        """The header's supervision line: faulting facets and the fleet's next alarm
        (hidden while there is neither)."""
        timed = [self._rows[key] for key in self._timed]
        backoff = sum(1 for r in timed if r.state == "backoff")
        quarantined = sum(1 for r in timed if r.state == "quarantined")
        alarms = [r for r in timed if r.alarm_at is not None]
        line = Text()
        if quarantined:
            line.append(f" {quarantined} quarantined ", style="bold white on red")
            line.append("  ")
        if backoff:
            line.append(f" {backoff} in backoff ", style="bold black on yellow")
            line.append("  ")
        if (quarantined or backoff) and not self.readonly:
            line.append("R resets the selected facet · ", style="dim")
        if alarms:
            soonest = min(alarms, key=lambda r: (r.alarm_at or 0, r.facet))
            at = (soonest.alarm_at or 0) / 1000
            line.append(f"{len(alarms)} alarm{'s' if len(alarms) != 1 else ''} pending · next ")
            line.append(neutralize(soonest.facet), style="bold")
            line.append(f" {relative(at, now) if at > now else 'due'} ({iso_utc(at)})", style="cyan")
        widget = self.query_one("#supervision-line", Static)
        widget.update(line)
        widget.set_class(bool(line.plain), "-shown")

    def _matches(self, row: FacetRow) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.lower()
        return needle in row.facet or needle in row.state or needle in (row.last_error or "")

    def _sort(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        current = self._cursor_key()
        column = self.sort_column

        def order(cell: Text) -> tuple[Any, str]:
            facet = cell.plain  # the facet cell is plain Text; its text is the row's target
            row = self._rows.get(facet)
            return (row.sort_value(column), facet) if row is not None else (0, facet)

        table.sort("facet", key=order, reverse=self.sort_reverse)
        if current is not None and current in table.rows:
            table.move_cursor(row=table.get_row_index(current))
        self.sub_title = f"facets · sorted by {column}{' ↓' if self.sort_reverse else ''}"

    def _rebuild(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for key, row in self._rows.items():
            if self._matches(row):
                cells = row.cells(self._now)
                table.add_row(*(cells[c] for c, _ in COLUMNS), key=key)
        self._sort()

    def _cursor_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # -- actions -------------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#facet-filter", Input)
        box.add_class("-open")
        box.focus()

    @on(Input.Changed, "#facet-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._rebuild()

    @on(Input.Submitted, "#facet-filter")
    def _filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#facet-filter", Input)
        if box.value or box.has_class("-open"):
            box.value = ""
            box.remove_class("-open")
            self.query_one(DataTable).focus()

    def action_sort(self) -> None:
        self.sort_column = SORTABLE[(SORTABLE.index(self.sort_column) + 1) % len(SORTABLE)]
        self._sort()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._sort()

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        self.sort_column = column
        self._sort()

    @on(DataTable.RowSelected, "#facets-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(OpenFacet(str(event.row_key.value)))

    def action_open(self) -> None:
        key = self._cursor_key()
        if key:
            self.post_message(OpenFacet(key))

    def action_evict(self) -> None:
        key = self._cursor_key()
        if key:
            self._evict(key)

    @work(thread=True, group="facets-action")
    def _evict(self, target: str) -> None:
        try:
            was_warm = self.sup.evict(target)
        except FacetsError as exc:  # deleted meanwhile, or an attached console's owner is away
            self.app.call_from_thread(partial(self.notify, plain_message(target, exc), severity="error", markup=False))
            return
        message = f"{neutralize(target)} evicted" if was_warm else f"{neutralize(target)} was not warm"
        self.app.call_from_thread(partial(self.notify, message, markup=False))

    def action_reset(self) -> None:
        key = self._cursor_key()
        if key:
            self._reset(key)

    @work(thread=True, group="facets-action")
    def _reset(self, target: str) -> None:
        try:
            cleared = self.sup.reset(target)
        except FacetsError as exc:
            self.app.call_from_thread(partial(self.notify, plain_message(target, exc), severity="error", markup=False))
            return
        if cleared is None:
            message = f"{neutralize(target)} was healthy: nothing to reset"
        else:
            message = f"{neutralize(target)} reset: was {cleared.state} after {cleared.faults} faults in a row"
        self.app.call_from_thread(partial(self.notify, message, markup=False))
        self.app.call_from_thread(self.refresh_fleet)

    def action_delete(self) -> None:
        key = self._cursor_key()
        if not key:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(key)

        self.app.push_screen(
            ConfirmScreen(
                f"Delete {neutralize(key)} and all its data? It can be got back:"
                f" {KEPT_FOR_UNDELETE.format(neutralize(key))}."
            ),
            answered,
        )

    @work(thread=True, group="facets-action")
    def _delete(self, target: str) -> None:
        try:
            self.sup.delete(target)
        except FacetsError as exc:  # deleted meanwhile, or an attached console's owner is away
            self.app.call_from_thread(partial(self.notify, plain_message(target, exc), severity="error", markup=False))
            return
        self.app.call_from_thread(partial(self.notify, f"{neutralize(target)} deleted", markup=False))
        self.app.call_from_thread(self.refresh_fleet)
