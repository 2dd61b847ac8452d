"""CommandResultScreen: what a command-bar line returned, rendered like the CLI renders it."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..commands import render
from ..format import plain


class CommandResultScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    CommandResultScreen { align: center middle; }
    CommandResultScreen > Vertical { width: 90%; height: 80%; border: thick $primary; background: $surface; }
    CommandResultScreen #result-title { height: 1; background: $primary-background; padding: 0 1; }
    CommandResultScreen VerticalScroll { padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, line: str, result: dict[str, Any]) -> None:
        super().__init__()
        self.line = line
        self.result = result

    def compose(self) -> ComposeResult:
        with Vertical():
            status = "ok" if self.result.get("ok") else "failed"
            yield Static(plain(f":{self.line}  →  {status}   (Esc closes)"), id="result-title")
            with VerticalScroll():
                yield Static(render(self.result), id="result-body")
