"""ConsoleScreen: what every main view shares (header, command bar, footer, the supervisor)."""

from __future__ import annotations

from typing import cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from ..host import ConsoleHost, ConsoleSupervisor
from ..widgets.command_bar import CommandBar


class ConsoleScreen(Screen):
    """Subclasses implement ``compose_body``; writes are refused in read-only mode via
    ``WRITE_ACTIONS`` (hidden from the footer and refused if invoked)."""

    WRITE_ACTIONS: frozenset[str] = frozenset()

    @property
    def console(self) -> ConsoleHost:
        return cast(ConsoleHost, self.app)

    @property
    def sup(self) -> ConsoleSupervisor:
        return self.console.sup

    @property
    def readonly(self) -> bool:
        return self.console.readonly

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield from self.compose_body()
        yield CommandBar(self.console.command_history)
        yield Footer()

    def compose_body(self) -> ComposeResult:
        return iter(())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.readonly and action in self.WRITE_ACTIONS)
