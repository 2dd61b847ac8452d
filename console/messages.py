"""App-level messages: how workers and widgets tell the rest of the console what happened.

Widgets and screens post these and the app handles them, so no widget reaches into the
app (and none imports it).
"""

from __future__ import annotations

from textual.message import Message

from runtime import LogRecord


class LogsArrived(Message):
    """A batch of new log records from the supervisor's log stream."""

    def __init__(self, records: list[LogRecord]) -> None:
        super().__init__()
        self.records = records


class OpenFacet(Message):
    """Drill into a facet's detail view (posted by the fleet table, handled by the app)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target


class RunCommand(Message):
    """A line entered in the command bar, for the app to run in the command language."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line
