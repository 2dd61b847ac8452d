"""The home view's per-facet HTTP status counts (``ok/4xx/5xx``), from ``sup.fetch``."""

from __future__ import annotations

import json

from rich.text import Text
from textual.widgets import DataTable

from console.app import FacetsConsole
from runtime import HttpRequest
from tests.console.test_tui import SIZE, facets_table, run_async
from tests.console.waiting import until


def answer(status: int) -> HttpRequest:
    """A request the probe app answers with ``status`` (``E``: echo the envelope)."""
    return HttpRequest("GET", body=b"E" + json.dumps({"status": status}).encode() + b"\n")


def http_cell(table: DataTable, target: str) -> Text | str:
    return table.get_cell(target, "http")


def plain(cell: Text | str) -> str:
    return cell.plain if isinstance(cell, Text) else cell


@run_async
async def test_home_shows_http_counts_per_class_and_follows_new_requests(probe):
    for status in (200, 204, 303, 404):
        assert probe.fetch("probe/a", answer(status)).status == status
    assert probe.fetch("probe/a", HttpRequest("GET", body=b"X")).status == 500  # a trap
    assert probe.call("probe/b", b"E").ok  # a facet only ever called: no HTTP answers
    app = FacetsConsole(probe)
    async with app.run_test(size=SIZE) as pilot:
        table = facets_table(app)
        await until(pilot, lambda: table.row_count == 2)
        cell = http_cell(table, "probe/a")
        assert plain(cell) == "3/1/1"  # 200, 204 and 303 are ok; 404; the trap's 500
        assert isinstance(cell, Text)
        assert [cell.plain[s.start : s.end] for s in cell.spans if "red" in str(s.style)] == ["1"]  # 5xx in red
        assert plain(http_cell(table, "probe/b")) == "-"

        # the table refreshes incrementally: new answers reach the cell
        for _ in range(2):
            probe.fetch("probe/b", HttpRequest("GET", body=b"X"))
        probe.fetch("probe/a", answer(201))
        await until(pilot, lambda: plain(http_cell(table, "probe/b")) == "0/0/2")
        await until(pilot, lambda: plain(http_cell(table, "probe/a")) == "4/1/1")


@run_async
async def test_sorting_by_http_puts_the_failing_facets_last_and_reverse_first(probe):
    probe.fetch("probe/ok", answer(200))
    probe.fetch("probe/client", answer(404))
    probe.fetch("probe/broken", HttpRequest("GET", body=b"X"))
    app = FacetsConsole(probe)
    async with app.run_test(size=SIZE) as pilot:
        table = facets_table(app)
        await until(pilot, lambda: table.row_count == 3)
        while app.screen.sort_column != "http":
            await pilot.press("s")
        order = [str(row.key.value) for row in table.ordered_rows]
        assert order == ["probe/ok", "probe/client", "probe/broken"]  # by 5xx, then 4xx
        await pilot.press("r")
        assert [str(row.key.value) for row in table.ordered_rows] == ["probe/broken", "probe/client", "probe/ok"]
