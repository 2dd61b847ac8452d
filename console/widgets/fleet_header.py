"""FleetHeader: fleet totals and a requests-per-second sparkline, above the facets table;
below them, while the console serves HTTP (``--serve``), the URL and a curl to try."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static


class FleetHeader(Vertical):
    DEFAULT_CSS = """
    FleetHeader { height: auto; }
    FleetHeader > Horizontal { height: 1; }
    FleetHeader #totals { width: auto; padding: 0 1; }
    FleetHeader #traffic { width: auto; padding: 0 1; }
    FleetHeader Sparkline { width: 1fr; height: 1; }
    FleetHeader #ingress { height: 1; padding: 0 1; display: none; }
    FleetHeader #ingress.-shown { display: block; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static("", id="totals")
            yield Sparkline([0.0], id="fleet-rps")
            yield Static("", id="traffic")
        yield Static("", id="ingress")

    def show(self, totals: str, rps_series: list[float], traffic: str, ingress: str = "") -> None:
        """``ingress``: one line on the console's HTTP listener ("" when it serves none: hidden)."""
        self.query_one("#totals", Static).update(Text(totals))
        self.query_one(Sparkline).data = rps_series or [0.0]
        self.query_one("#traffic", Static).update(Text(traffic))
        line = self.query_one("#ingress", Static)
        line.update(Text(ingress))
        line.set_class(bool(ingress), "-shown")
