"""Snapshots of every view at a fixed size, on deterministic data (see the `frozen` fixture).

Update after an intended change with `pytest tests/console/test_snapshots.py --snapshot-update`
and review the SVGs in __snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest

from console.app import FacetsConsole
from console.screens.facet_detail import FacetDetailScreen
from console.widgets.table_browser import TableBrowser
from textual.widgets import DataTable

from tests.console.waiting import until

SIZE = (130, 34)


async def settle(pilot, condition):
    """Wait for ``condition``, then let the screen finish drawing."""
    await until(pilot, condition)
    await pilot.pause(0.3)


def home_loaded(app):
    return app.screen.query_one("#facets-table", DataTable).row_count == 8


async def open_detail(pilot, app, target, tab=None):
    await settle(pilot, lambda: home_loaded(app))
    app.open_facet(target)
    await settle(pilot, lambda: isinstance(app.screen, FacetDetailScreen)
                 and app.screen.query_one("#tables-list", DataTable).row_count > 0)
    if tab:
        await pilot.press(tab)
        await pilot.pause(0.5)


def test_facets_home(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_facets_filtered_and_sorted(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press("s", "s", "s", "r", "slash", "o")
        await pilot.pause(0.3)
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_detail_data_tab_with_table_open(frozen, snap_compare):
    async def run_before(pilot):
        await open_detail(pilot, pilot.app, "todo/alice")
        table = pilot.app.screen.query_one("#tables-list", DataTable)
        table.move_cursor(row=table.get_row_index("items"))
        await pilot.press("enter")
        await settle(pilot, lambda: "rows" in str(pilot.app.screen.query_one(TableBrowser).status))
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("tab", ["l", "u", "o"])
def test_detail_tabs(frozen, snap_compare, tab):
    async def run_before(pilot):
        await open_detail(pilot, pilot.app, "todo/alice", tab)
        await pilot.pause(1.2)
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_detail_call_tab(frozen, snap_compare):
    async def run_before(pilot):
        await open_detail(pilot, pilot.app, "todo/alice", "c")
        pilot.app.screen.query_one("#call-body").value = '{"op": "lists"}'
        await pilot.press("enter")
        await settle(pilot, lambda: "lists" in str(pilot.app.screen.query_one("#call-response").render()))
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("key", ["2", "3", "4"])
def test_other_views(frozen, snap_compare, key):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press(key)
        await pilot.pause(1.0)
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_help(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press("question_mark")
        await pilot.pause(0.3)
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_command_bar_result(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press("colon")
        pilot.app.screen.query_one("#command-bar").value = "tables todo/alice"
        await pilot.press("enter")
        await pilot.pause(0.5)
    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_readonly_home(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
    assert snap_compare(FacetsConsole(frozen, readonly=True), terminal_size=SIZE, run_before=run_before)
