"""HelpScreen: every key of every view, and the command language, generated from the code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..commands import SPECS


def _keys(binding: Binding) -> str:
    return ", ".join(
        k.replace("slash", "/").replace("question_mark", "?").replace("colon", ":") for k in binding.key.split(",")
    )


def bindings_table(title: str, bindings: Sequence[BindingType]) -> Table:
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

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[BindingType]]]) -> None:
        """``sections``: (title, bindings) per view, in the order shown; the app lists its
        views (this screen imports none of them)."""
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        commands = Table(
            title="Command bar (:), the palette (ctrl+p) and scripts",
            title_justify="left",
            show_header=False,
            box=None,
            padding=(0, 2),
            min_width=72,
        )
        commands.add_column("usage", style="bold cyan", no_wrap=True)
        commands.add_column("what")
        for spec in SPECS.values():
            commands.add_row(Text(spec.usage), Text(spec.summary))
        with Vertical():
            yield Static(Text("Facets console: keys (Esc closes)"), id="help-title")
            with VerticalScroll():
                for title, bindings in self.sections:
                    yield Static(bindings_table(title, bindings))
                    yield Static("")
                yield Static(commands)
