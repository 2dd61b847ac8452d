"""App-level messages: how workers and widgets tell the rest of the console what happened."""

from __future__ import annotations

from textual.message import Message

from runtime import LogRecord


class LogsArrived(Message):
    """A batch of new log records from the supervisor's log stream."""

    def __init__(self, records: list[LogRecord]) -> None:
        super().__init__()
        self.records = records
