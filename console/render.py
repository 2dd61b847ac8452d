"""Plain, neutralised Rich building blocks for command results (tables, key/values, a guest's response).

Every string that may come from a guest (responses, rows, log messages, error
messages) goes through ``neutralize`` and into a ``rich.text.Text``, so neither
terminal escape sequences nor Rich markup from a guest reach the terminal.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from runtime import neutralize

from .format import dumps, parse_response


def safe(value: Any) -> Text:
    """Any value as plain, neutralised text."""
    if isinstance(value, (dict, list)):
        value = dumps(value, ensure_ascii=False)
    return Text(neutralize("" if value is None else str(value)))


def table_of(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> Table:
    """A table of ``rows`` (dicts) showing ``columns``, every cell neutralised."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(safe(row.get(c)) for c in columns))
    return table


def key_values(data: dict[str, Any], title: str | None = None) -> Table:
    """A two-column key / value table, every cell neutralised."""
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(safe(key), safe(value))
    return table


def pretty_response(data: bytes) -> str:
    """A guest's response for display: indented JSON when it is strict, depth-bounded JSON,
    else its text. Never raises (a 100,000-deep ``[[[...]]]`` is shown as text)."""
    value = parse_response(data)
    return value if isinstance(value, str) else dumps(value, indent=2, ensure_ascii=False)
