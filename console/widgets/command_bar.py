"""CommandBar: the ``:`` line that runs the operator command language in the console."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.widgets import Input

from ..messages import RunCommand


class CommandBar(Input):
    """An input docked at the bottom; hidden until ``:`` is pressed. Up/down walk the history."""

    DEFAULT_CSS = """
    CommandBar { dock: bottom; display: none; border: none; height: 1; padding: 0 1; }
    CommandBar.-open { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=False),
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
    ]

    def __init__(self, history: list[str] | None = None) -> None:
        """``history``: the lines entered so far, shared with whoever passes the same list
        (the console passes one list per app, so every view's bar walks the same history);
        a bar of its own starts empty."""
        super().__init__(
            placeholder=':command   e.g. call todo/alice {"op":"lists"}   (help lists commands)', id="command-bar"
        )
        self.history: list[str] = [] if history is None else history
        self._cursor = 0

    def open(self, text: str = "") -> None:
        self.add_class("-open")
        self.value = text
        self.cursor_position = len(text)
        self._cursor = len(self.history)
        self.focus()

    def action_close(self) -> None:
        self.value = ""
        self.remove_class("-open")
        self.screen.focus_next()

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self._cursor = max(0, min(len(self.history), self._cursor + step))
        self.value = self.history[self._cursor] if self._cursor < len(self.history) else ""
        self.cursor_position = len(self.value)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        line = event.value.strip()
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self.value = ""
        self.remove_class("-open")
        if line:
            self.post_message(RunCommand(line))
