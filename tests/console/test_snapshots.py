"""Snapshots of every view at a fixed size, on deterministic data (see the `frozen` fixture).

Update after an intended change with `pytest tests/console/test_snapshots.py --snapshot-update`
and review the SVGs in __snapshots__/ before committing them.

Every test waits for an explicit condition (the data on screen, the focus where the view
puts it, the background workers done), never for a length of time: a slow machine only
makes a test slower. The cursor does not blink in tests (conftest.py).
"""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, RichLog, Static

from console.app import FacetsConsole
from console.screens.facet_detail import FacetDetailScreen
from console.screens.help import HelpScreen
from console.screens.result import CommandResultScreen
from console.widgets.table_browser import TableBrowser
from tests.console.waiting import until

SIZE = (130, 34)


async def settle(pilot, condition):
    """Wait for ``condition``, then for the workers running now and the redraw they cause."""
    await until(pilot, condition)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def home_loaded(app):
    return app.screen.query_one("#facets-table", DataTable).row_count == 8


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def open_detail(pilot, app, target, tab=None, focus=None):
    await settle(pilot, lambda: home_loaded(app))
    app.open_facet(target)
    await settle(
        pilot,
        lambda: (
            isinstance(app.screen, FacetDetailScreen)
            and app.screen.query_one("#tables-list", DataTable).row_count > 0
            and app.focused is app.screen.query_one("#tables-list")
        ),
    )
    if tab:
        await pilot.press(tab)
        await settle(
            pilot,
            lambda: (
                app.screen.query_one("TabbedContent").active == focus[0]
                and (focus[1] is None or app.focused is app.screen.query_one(focus[1]))
            ),
        )
        await pilot.wait_for_scheduled_animations()  # the tab underline slides


def test_facets_home(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_facets_filtered_and_sorted(frozen, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await settle(pilot, lambda: home_loaded(app))
        await pilot.press("s", "s", "s", "s", "r", "slash", "o")  # facet, state, ver, alarm, requests
        screen = app.screen
        expected = sum(1 for row in screen._rows.values() if "o" in row.facet or "o" in row.state)
        await settle(
            pilot,
            lambda: (
                screen.sort_column == "requests"
                and screen.sort_reverse
                and screen.filter_text == "o"
                and screen.query_one("#facets-table", DataTable).row_count == expected
            ),
        )

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_detail_data_tab_with_table_open(frozen, snap_compare):
    async def run_before(pilot):
        await open_detail(pilot, pilot.app, "todo/alice")
        table = pilot.app.screen.query_one("#tables-list", DataTable)
        table.move_cursor(row=table.get_row_index("items"))
        await pilot.press("enter")
        await settle(
            pilot,
            lambda: (
                "4 rows" in str(pilot.app.screen.query_one(TableBrowser).status)
                and pilot.app.screen.query_one("#browser-grid", DataTable).row_count == 4
            ),
        )

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


#: key -> (tab id, what gets the focus, what the tab shows once loaded)
TABS = {
    "l": ("logs", "LogView RichLog", lambda app: len(app.screen.query_one("LogView RichLog", RichLog).lines) > 0),
    "u": ("usage", None, lambda app: shown(app, "#usage-counters").startswith("requests")),
    "o": ("quotas", "#quota-fuel", lambda app: app.screen.query_one("#quota-fuel", Input).value == "200000000"),
}


@pytest.mark.parametrize("tab", ["l", "u", "o"])
def test_detail_tabs(frozen, snap_compare, tab):
    pane, focus, loaded = TABS[tab]

    async def run_before(pilot):
        await open_detail(pilot, pilot.app, "todo/alice", tab, (pane, focus))
        await settle(pilot, lambda: loaded(pilot.app))

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_detail_call_tab(frozen, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await open_detail(pilot, app, "todo/alice", "c", ("call", "#call-body"))
        app.screen.query_one("#call-body", Input).value = '{"op": "lists"}'
        await pilot.press("enter")
        await settle(pilot, lambda: "lists" in shown(app, "#call-response"))

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


#: key -> what the view shows once loaded
VIEWS = {
    "2": lambda app: (
        app.current_mode == "apps"
        and app.screen.query_one("#apps-table", DataTable).row_count == 7
        and app.screen.query_one("#versions-table", DataTable).row_count > 0
        and app.screen.query_one("#app-facets-table", DataTable).row_count > 0
    ),
    "3": lambda app: app.current_mode == "logs" and len(app.screen.query_one("LogView RichLog", RichLog).lines) > 0,
    "4": lambda app: (
        app.current_mode == "billing"
        and app.screen.query_one("#bill-apps", DataTable).row_count > 0
        and app.screen.query_one("#bill-facets", DataTable).row_count > 0
        and "total" in shown(app, "#bill-summary")
    ),
}


@pytest.mark.parametrize("key", ["2", "3", "4"])
def test_other_views(frozen, snap_compare, key):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press(key)
        await settle(pilot, lambda: VIEWS[key](pilot.app))

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


@pytest.fixture
def operated(frozen):
    """The frozen samples, plus issue 15's states: probe/loop in backoff (three traps),
    counter/alice with an alarm in 90 minutes, and app ver whose version 2 (which traps) is
    a canary for every facet, called once each."""
    from tests.conftest import fixture
    from tests.console.conftest import FIXED_TIME
    from tests.runtime.versioned import versioned_wat

    sup = frozen
    sup.load_app(fixture("probe.wat"))
    for _ in range(3):
        sup.call("probe/loop", b"X")
    sup.alarms.set("counter", "alice", int(FIXED_TIME * 1000) + 90 * 60_000)
    sup.load_app_bytes(versioned_wat("v1"), "ver")
    sup.call("ver/a")
    sup.load_app_bytes(versioned_wat("v2", handle_traps=True), "ver", canary="100%")
    sup.call("ver/a")
    sup.call("ver/b")
    return sup


def operated_loaded(app):
    return app.screen.query_one("#facets-table", DataTable).row_count == 11


def test_facets_home_supervision_and_rollout(operated, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: operated_loaded(pilot.app) and "backoff" in shown(pilot.app, "#supervision-line"))

    assert snap_compare(FacetsConsole(operated), terminal_size=SIZE, run_before=run_before)


def test_detail_health_tab(operated, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await settle(pilot, lambda: operated_loaded(app))
        app.open_facet("probe/loop")
        await settle(
            pilot, lambda: isinstance(app.screen, FacetDetailScreen) and "backoff" in shown(app, "#facet-summary")
        )
        await pilot.press("h")
        await settle(pilot, lambda: app.screen.query_one("#health-faults", DataTable).row_count == 3)
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(FacetsConsole(operated), terminal_size=SIZE, run_before=run_before)


def test_apps_rollout(operated, snap_compare):
    async def run_before(pilot):
        app = pilot.app
        await settle(pilot, lambda: operated_loaded(app))
        await pilot.press("2")
        await settle(pilot, lambda: app.current_mode == "apps" and app.screen.query_one("#apps-table").row_count == 9)
        table = app.screen.query_one("#apps-table", DataTable)
        table.move_cursor(row=table.get_row_index("ver"))
        await settle(
            pilot,
            lambda: (
                app.screen.query_one("#versions-table", DataTable).row_count == 2
                and app.screen.query_one("#fleet-alarms", DataTable).row_count == 1
            ),
        )

    assert snap_compare(FacetsConsole(operated), terminal_size=SIZE, run_before=run_before)


def test_help(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press("question_mark")
        await settle(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_command_bar_result(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))
        await pilot.press("colon")
        pilot.app.screen.query_one("#command-bar", Input).value = "tables todo/alice"
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(pilot.app.screen, CommandResultScreen))

    assert snap_compare(FacetsConsole(frozen), terminal_size=SIZE, run_before=run_before)


def test_readonly_home(frozen, snap_compare):
    async def run_before(pilot):
        await settle(pilot, lambda: home_loaded(pilot.app))

    assert snap_compare(FacetsConsole(frozen, readonly=True), terminal_size=SIZE, run_before=run_before)
