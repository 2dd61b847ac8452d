"""App-level messages: how workers and widgets tell the rest of the console what happened."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from runtime import LogRecord


class LogsArrived(Message):
    """A batch of new log records from the supervisor's log stream."""

    def __init__(self, records: list[LogRecord]) -> None:
        super().__init__()
        self.records = records


class CommandFinished(Message):
    """A command-bar line finished; ``result`` is the command language's dict."""

    def __init__(self, line: str, result: dict[str, Any]) -> None:
        super().__init__()
        self.line = line
        self.result = result


class OpenFacet(Message):
    """Drill into a facet's detail view."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
