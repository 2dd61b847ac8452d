"""Readable Rich output for command results (the CLI without ``--json``).

Every string that may come from a guest (responses, rows, log messages, error
messages) goes through ``neutralize`` and into a ``rich.text.Text``, so neither
terminal escape sequences nor Rich markup from a guest reach the terminal.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from runtime import neutralize
from runtime.billing import format_bill

from .format import dumps, parse_response


def safe(value: Any) -> Text:
    """Any value as plain, neutralised text."""
    if isinstance(value, (dict, list)):
        value = dumps(value, ensure_ascii=False)
    return Text(neutralize("" if value is None else str(value)))


def _table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(safe(row.get(c)) for c in columns))
    return table


def _key_values(data: dict[str, Any], title: str | None = None) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(safe(key), safe(value))
    return table


def render(result: dict[str, Any]) -> RenderableType:
    if not result.get("ok", True):
        error = result.get("error", {})
        return Text.assemble(("error ", "bold red"), (f"[{error.get('code')}] ", "red"),
                             neutralize(str(error.get("message", ""))))
    body = {k: v for k, v in result.items() if k not in ("cmd", "ok")}
    if "columns" in body and "rows" in body:
        table = Table(header_style="bold")
        for column in body["columns"]:
            table.add_column(neutralize(str(column)))
        for row in body["rows"]:
            table.add_row(*(safe(v) for v in row))
        return table
    if "apps" in body and isinstance(body["apps"], list) and "currency" not in body:
        return _table(body["apps"], ["name", "version", "versions", "facets", "imports", "sha256"])
    if "facets" in body and isinstance(body["facets"], list) and "currency" not in body:
        rows = [{"facet": f"{f['app']}/{f['name']}", "state": f["state"],
                 "requests": f["usage"]["requests"], "errors": f["usage"]["error_count"],
                 "p50_ms": f["usage"]["p50_ms"], "p99_ms": f["usage"]["p99_ms"],
                 "storage": f["usage"]["storage"], "last_error": f["usage"]["last_error"]}
                for f in body["facets"]]
        return _table(rows, ["facet", "state", "requests", "errors", "p50_ms", "p99_ms", "storage",
                             "last_error"])
    if "tables" in body and isinstance(body["tables"], list) and body["tables"] \
            and isinstance(body["tables"][0], dict):
        return _table(body["tables"], ["name", "count", "columns"])
    if "logs" in body:
        table = Table(header_style="bold")
        for column in ("time", "facet", "level", "message"):
            table.add_column(column)
        for r in body["logs"]:
            stamp = time.strftime("%H:%M:%S", time.localtime(r["time"]))
            table.add_row(stamp, safe(f"{r['app']}/{r['facet']}" if r["app"] else "-"),
                          safe(r["level"]), safe(r["message"]))
        return table
    if "commands" in body:
        return _table(body["commands"], ["usage", "summary"])
    if "currency" in body:
        return Text(format_bill(body))
    if "text" in body:
        return Text(body["text"])
    if "response" in body:
        return Group(Text("response", style="bold"), safe(body["response"]),
                     _key_values(body["usage"], title="usage"))
    if "usage" in body:
        return _key_values(body["usage"], title=f"usage of {body.get('target', '*')}")
    if "quotas" in body:
        return _key_values(body["quotas"], title=f"effective quotas of {body.get('target')}")
    return _key_values(body)


def pretty_response(data: bytes) -> str:
    """A guest's response for display: indented JSON when it is strict, depth-bounded JSON,
    else its text. Never raises (a 100,000-deep ``[[[...]]]`` is shown as text)."""
    value = parse_response(data)
    return value if isinstance(value, str) else dumps(value, indent=2, ensure_ascii=False)
