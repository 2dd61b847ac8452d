"""HelpScreen: every key of every view, and the command language, generated from the code."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..commands import SPECS


def _keys(binding: Binding) -> str:
    return ", ".join(k.replace("slash", "/").replace("question_mark", "?").replace("colon", ":")
                     for k in binding.key.split(","))


def bindings_table(title: str, bindings) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2), min_width=72)
    table.add_column("keys", style="bold cyan", no_wrap=True)
    table.add_column("action")
    for binding in bindings:
        if isinstance(binding, tuple):
            binding = Binding(*binding)
        table.add_row(Text(_keys(binding)), Text(binding.description or binding.action))
    return table


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90%; height: 90%; border: thick $primary; background: $surface; }
    HelpScreen #help-title { height: 1; background: $primary-background; padding: 0 1; }
    HelpScreen VerticalScroll { padding: 0 1; }
    """

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        from ..app import FacetsConsole
        from ..widgets.call_panel import CallPanel  # noqa: F401  (no keys of its own)
        from ..widgets.log_view import LogView
        from ..widgets.quota_form import QuotaForm
        from ..widgets.table_browser import TableBrowser
        from .apps import AppsScreen
        from .billing import BillingScreen
        from .facet_detail import FacetDetailScreen
        from .facets import FacetsScreen
        from .logs import LogsScreen

        sections = [
            ("Everywhere", FacetsConsole.BINDINGS),
            ("Facets (home, 1)", FacetsScreen.BINDINGS),
            ("Facet detail (Enter on a facet)", FacetDetailScreen.BINDINGS),
            ("Data tab: table browser", TableBrowser.BINDINGS),
            ("Logs tab and Logs view", LogView.BINDINGS),
            ("Quotas tab", QuotaForm.BINDINGS),
            ("Apps (2)", AppsScreen.BINDINGS),
            ("Logs (3)", LogsScreen.BINDINGS),
            ("Usage & billing (4)", BillingScreen.BINDINGS),
        ]
        commands = Table(title="Command bar (:), the palette (ctrl+p) and scripts", title_justify="left",
                         show_header=False, box=None, padding=(0, 2), min_width=72)
        commands.add_column("usage", style="bold cyan", no_wrap=True)
        commands.add_column("what")
        for spec in SPECS.values():
            commands.add_row(Text(spec.usage), Text(spec.summary))
        with Vertical():
            yield Static(Text("Facets console: keys (Esc closes)"), id="help-title")
            with VerticalScroll():
                for title, bindings in sections:
                    yield Static(bindings_table(title, bindings))
                    yield Static("")
                yield Static(commands)
