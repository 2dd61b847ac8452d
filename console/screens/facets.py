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
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input

from runtime import FacetsError, neutralize

from ..format import bar, human_bytes, human_count, plain, state_text
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


@dataclass(frozen=True)
class FacetRow:
    """Raw values of one row (what sorting and change detection compare)."""

    facet: str
    state: str
    version: int | None
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

    def cells(self) -> dict[str, Any]:
        return {
            "facet": plain(self.facet),
            "state": state_text(self.state),
            "version": str(self.version) if self.version is not None else "-",
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
            return self.version or 0
        return getattr(self, column)


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
        Binding("D", "delete", "Delete"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    WRITE_ACTIONS = frozenset({"evict", "delete"})
    REFRESH_SECONDS = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, FacetRow] = {}
        self._cursor: float | None = None  # from the last facet_changes applied
        self._refreshing = False
        self.filter_text = ""
        self.sort_column = "facet"
        self.sort_reverse = False

    def compose_body(self) -> ComposeResult:
        yield FleetHeader()
        yield Input(placeholder="filter facets (app/facet, state, error)…", id="facet-filter")
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
                )
            apps = self.sup.app_list()
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
        self.app.call_from_thread(self._apply, changes.cursor, rows, changed, removed, totals, rps_series[:-1], traffic)

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
    ) -> None:
        """Merge a refresh: ``rows`` holds the facets that may have changed, ``changed``
        those that did, ``removed`` the deleted ones."""
        self._refreshing = False
        if not self.is_attached:
            return
        self._cursor = cursor
        self.query_one(FleetHeader).show(totals, rps_series, traffic, self.console.ingress_status())
        table = self.query_one(DataTable)
        resort = False
        for key in removed:
            self._rows.pop(key, None)
            if key in table.rows:
                table.remove_row(key)
        for key in changed:
            row = rows[key]
            old = self._rows.get(key)
            self._rows[key] = row
            visible = self._matches(row)
            in_table = key in table.rows
            if visible and not in_table:
                cells = row.cells()
                table.add_row(*(cells[c] for c, _ in COLUMNS), key=key)
                resort = True
            elif not visible and in_table:
                table.remove_row(key)
            elif in_table:
                new_cells = row.cells()
                old_cells = old.cells() if old else {}
                for column, _ in COLUMNS:
                    if old_cells.get(column) != new_cells[column]:
                        table.update_cell(key, column, new_cells[column])
                if old is None or old.sort_value(self.sort_column) != row.sort_value(self.sort_column):
                    resort = True
        if resort:
            self._sort()

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
                cells = row.cells()
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

    def action_delete(self) -> None:
        key = self._cursor_key()
        if not key:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(key)

        self.app.push_screen(
            ConfirmScreen(f"Delete {neutralize(key)} and all its data? This cannot be undone."), answered
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
