"""FleetHeader: fleet totals and a requests-per-second sparkline, above the facets table."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static


class FleetHeader(Horizontal):
    DEFAULT_CSS = """
    FleetHeader { height: 1; }
    FleetHeader #totals { width: auto; padding: 0 1; }
    FleetHeader #traffic { width: auto; padding: 0 1; }
    FleetHeader Sparkline { width: 1fr; height: 1; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="totals")
        yield Sparkline([0.0], id="fleet-rps")
        yield Static("", id="traffic")

    def show(self, totals: str, rps_series: list[float], traffic: str) -> None:
        self.query_one("#totals", Static).update(Text(totals))
        self.query_one(Sparkline).data = rps_series or [0.0]
        self.query_one("#traffic", Static).update(Text(traffic))
