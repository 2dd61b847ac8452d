"""BillingScreen: usage and cost per app and per facet over a period."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Static

from runtime import FacetsError

from ..commands import CommandError, parse_when
from ..format import plain
from ..widgets.console_table import ConsoleTable
from .base import ConsoleScreen


class BillingScreen(ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "reload", "Refresh"), Binding("p", "period", "Period")]

    DEFAULT_CSS = """
    BillingScreen #period-row { height: 1; }
    BillingScreen #period-row Label { width: auto; padding: 0 1; }
    BillingScreen #period { width: 30; height: 1; border: none; }
    BillingScreen #bill-summary { height: auto; padding: 0 1; margin: 1 0; }
    BillingScreen #bill-apps { height: auto; max-height: 12; }
    BillingScreen #bill-facets { height: 1fr; }
    """

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="period-row"):
            yield Label("since (p):")
            yield Input(placeholder="this month · or 7d, 24h, 2026-11-01", id="period")
        yield Static("", id="bill-summary")
        yield ConsoleTable(id="bill-apps", cursor_type="row")
        yield ConsoleTable(id="bill-facets", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.sub_title = "usage & billing"
        for table_id, first in (("#bill-apps", "app"), ("#bill-facets", "facet")):
            table = self.query_one(table_id, DataTable)
            for title in (first, "requests", "rows read", "rows written", "cpu units", "GB-months", "cost"):
                table.add_column(title)
        self.action_reload()
        self.query_one("#bill-facets", DataTable).focus()

    def action_period(self) -> None:
        self.query_one("#period", Input).focus()

    @on(Input.Submitted, "#period")
    def _period_entered(self) -> None:
        self.action_reload()
        self.query_one("#bill-facets", DataTable).focus()

    def action_reload(self) -> None:
        text = self.query_one("#period", Input).value.strip()
        try:
            since = parse_when(text) if text else None
        except CommandError as exc:
            self.query_one("#bill-summary", Static).update(plain(exc.message, style="red"))
            return
        self._load(since)

    @work(thread=True, exclusive=True, group="billing")
    def _load(self, since: float | None) -> None:
        try:
            bill = self.sup.bill(since=since)
            usage = self.sup.usage()
        except FacetsError as exc:
            self.app.call_from_thread(self._failed, exc.message)
            return
        self.app.call_from_thread(self._show, bill, usage)

    def _failed(self, message: str) -> None:
        if self.is_attached:
            self.query_one("#bill-summary", Static).update(plain(message, style="red"))

    def _show(self, bill: dict[str, Any], usage: dict[str, Any]) -> None:
        if not self.is_attached:
            return
        period = (
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(bill['since']))} → "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(bill['until']))} UTC"
        )
        self.query_one("#bill-summary", Static).update(
            Text(
                f"{period}   total {bill['total']:.6f} {bill['currency']}   ·   "
                f"all-time: {usage['requests']:,} requests, "
                f"{usage['rows_read']:,} rows read, {usage['rows_written']:,} rows written"
            )
        )
        for table_id, rows, label in (
            ("#bill-apps", bill["apps"], lambda r: plain(r["app"])),
            ("#bill-facets", bill["facets"], lambda r: plain(f"{r['app']}/{r['facet']}")),
        ):
            table = self.query_one(table_id, DataTable)
            table.clear()
            for row in sorted(rows, key=lambda r: -r["cost"]["total"]):
                u = row["units"]
                table.add_row(
                    label(row),
                    f"{u['requests']:.0f}",
                    f"{u['rows_read']:.0f}",
                    f"{u['rows_written']:.0f}",
                    f"{u['cpu_units']:.3f}",
                    f"{u['storage_gb_months']:.6f}",
                    f"{row['cost']['total']:.6f}",
                )
