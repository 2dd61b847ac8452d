"""MeterBar: one meter against its quota, as a labelled bar."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ..format import bar


class MeterBar(Widget):
    """``label  ██████░░░░ 61%  used / limit``."""

    DEFAULT_CSS = """
    MeterBar { height: 1; width: 1fr; }
    """

    used: reactive[float] = reactive(0.0)
    """The current value of the meter."""
    limit: reactive[float] = reactive(0.0)
    """The quota it is measured against (0: no limit)."""
    text: reactive[str] = reactive("")
    """How used/limit read in words, e.g. '12.0 MiB / 64.0 MiB'."""

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label

    def render(self) -> Text:
        meter = bar(self.used, self.limit, width=20) if self.limit else Text("no limit", style="dim")
        return Text.assemble((f"{self.label:<14}", "bold"), meter, "  ", self.text)
