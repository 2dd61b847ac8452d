"""LogsScreen: the whole fleet's logs, filterable by app/facet, level and text."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from runtime.abi import is_valid_name

from ..widgets.log_view import LogView
from .base import ConsoleScreen


class LogsScreen(ConsoleScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("a", "scope", "App/facet filter")]

    DEFAULT_CSS = """
    LogsScreen #log-scope { height: 1; border: none; padding: 0 1; }
    """

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="show only APP or APP/FACET (a), empty for all", id="log-scope")
        yield LogView(self.sup, id="fleet-log")

    def on_mount(self) -> None:
        self.sub_title = "logs"
        self.query_one(LogView).query_one("RichLog").focus()

    def action_scope(self) -> None:
        self.query_one("#log-scope", Input).focus()

    @on(Input.Submitted, "#log-scope")
    def _scope(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        app, _, facet = text.partition("/")
        if text and (not is_valid_name(app) or (facet and not is_valid_name(facet))):
            self.notify("expected APP or APP/FACET", severity="error")
            return
        self.query_one(LogView).set_scope(app or None, facet or None)
        self.sub_title = f"logs · {text}" if text else "logs"
        self.query_one(LogView).query_one("RichLog").focus()
