"""Pilot tests of the console: every flow an operator uses, against a real supervisor."""

from __future__ import annotations

import asyncio
import functools
import io
import json

import pytest
from rich.console import Console
from textual.widgets import DataTable, Input, RichLog, Static

from console.app import FacetsConsole
from console.screens.confirm import ConfirmScreen
from console.screens.facet_detail import FacetDetailScreen
from console.screens.facets import FacetsScreen
from console.screens.help import HelpScreen
from console.screens.result import CommandResultScreen
from console.widgets.table_browser import TableBrowser
from tests.conftest import fixture, sql_body
from tests.console.waiting import until

SIZE = (140, 40)


def run_async(test):
    """Run an async Pilot test with asyncio.run (no async pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def table_keys(table: DataTable) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


async def open_detail(pilot, app, target: str) -> None:
    """Open a facet's detail view and wait until it is composed and focused."""
    app.open_facet(target)
    await until(
        pilot, lambda: isinstance(app.screen, FacetDetailScreen) and app.focused is app.screen.query_one("#tables-list")
    )


def facets_table(app) -> DataTable:
    return app.screen.query_one("#facets-table", DataTable)


@run_async
async def test_home_lists_every_facet_and_drills_in(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 8)
        assert table_keys(facets_table(app))[:2] == ["counter/alice", "guestbook/lobby"]
        await pilot.press("down", "enter")
        await until(pilot, lambda: isinstance(app.screen, FacetDetailScreen))
        assert app.screen.target == "guestbook/lobby"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, FacetsScreen))


@run_async
async def test_filter_and_sort(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 8)
        await pilot.press("slash", *"todo")
        await until(pilot, lambda: facets_table(app).row_count == 2)
        assert table_keys(facets_table(app)) == ["todo/alice", "todo/bob"]
        await pilot.press("enter", "escape")
        assert facets_table(app).row_count == 8
        await pilot.press("s", "s", "s", "s")  # facet -> state -> version -> alarm -> requests
        assert app.screen.sort_column == "requests"
        requests = [app.screen._rows[k].requests for k in table_keys(facets_table(app))]
        assert requests == sorted(requests)
        await pilot.press("r")
        requests = [app.screen._rows[k].requests for k in table_keys(facets_table(app))]
        assert requests == sorted(requests, reverse=True)


@run_async
async def test_live_refresh_updates_changed_cells(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 8)
        before = app.screen._rows["counter/alice"].requests
        seeded.call("counter/alice", "")
        seeded.call("counter/newcomer", "")
        await until(
            pilot,
            lambda: (
                app.screen._rows.get("counter/alice") is not None
                and app.screen._rows["counter/alice"].requests == before + 1
                and facets_table(app).row_count == 9
            ),
        )
        assert facets_table(app).get_cell("counter/alice", "requests") == before + 1
        # a change outside any request (eviction) reaches the table too
        assert app.screen._rows["counter/alice"].state == "warm"
        seeded.evict("counter/alice")
        await until(pilot, lambda: app.screen._rows["counter/alice"].state == "cold")
        assert "cold" in str(facets_table(app).get_cell("counter/alice", "state"))


@run_async
async def test_paging_a_large_table_and_live_refresh(seeded):
    seeded.load_app(fixture("probe.wat"))
    seeded.set_quotas("probe/big", timeout_ms="10s")
    seeded.call("probe/big", sql_body("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
    seeded.call(
        "probe/big",
        sql_body(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 250000) "
            "INSERT INTO t(v) SELECT 'row ' || n FROM r"
        ),
    )
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        app.open_facet("probe/big")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, FacetDetailScreen)
                and app.screen.query_one("#tables-list", DataTable).row_count == 1
            ),
        )
        await pilot.press("enter")
        status = lambda: str(app.screen.query_one(TableBrowser).status)  # noqa: E731
        await until(pilot, lambda: "250,000 rows" in status())
        assert "rowid 1–100" in status()
        grid = app.screen.query_one("#browser-grid", DataTable)
        assert grid.row_count == 100  # one page, never the whole table
        await pilot.press("pagedown")
        await until(pilot, lambda: "rowid 101–200" in status())
        await pilot.press("G")
        await until(pilot, lambda: "rowid 249901–250000" in status())
        await pilot.press("pageup")
        await until(pilot, lambda: "rowid 249801–249900" in status())
        await pilot.press("g")
        await until(pilot, lambda: "rowid 1–100" in status())
        # the facet commits: the open page refreshes by itself
        seeded.call("probe/big", sql_body("UPDATE t SET v = 'changed' WHERE id = 1"))
        await until(pilot, lambda: str(grid.get_cell_at((0, 2))) == "changed")  # rowid, id, v


@run_async
async def test_sql_box_is_read_only(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "todo/alice")
        await pilot.press("x", *"SELECT count(*) FROM items", "enter")
        result = app.screen.query_one("#sql-result", DataTable)
        await until(pilot, lambda: result.row_count == 1)
        assert str(result.get_cell_at((0, 0))) == "4"
        box = app.screen.query_one("#sql-box", Input)
        box.value = "DELETE FROM items"
        await pilot.press("enter")
        status = app.screen.query_one("#sql-status", Static)
        await until(pilot, lambda: "read" in str(status.render()).lower())
        assert seeded.query("todo/alice", "SELECT count(*) FROM items")["rows"] == [[4]]


@run_async
async def test_quota_edit_applied_and_refused(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "counter/alice")
        await pilot.press("o")
        fuel = app.screen.query_one("#quota-fuel", Input)
        await until(pilot, lambda: fuel.value == "200000000")
        fuel.value = "5M"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: seeded.quotas("counter/alice").fuel == 5_000_000)
        await until(pilot, lambda: fuel.value == "5000000")
        # a bad value is refused in place, with the reason, and nothing changes
        fuel.value = "lots"
        note = app.screen.query_one("#note-fuel", Static)
        await until(pilot, lambda: "expected a whole number" in str(note.render()))
        await pilot.press("ctrl+s")
        result = app.screen.query_one("#quota-result", Static)
        await until(pilot, lambda: "refused" in str(result.render()))
        assert seeded.quotas("counter/alice").fuel == 5_000_000
        # and the running facet obeys the new quota at its next request
        assert seeded.call("counter/alice", "").usage.fuel < 5_000_000


@run_async
async def test_call_tab_and_guest_text_stays_plain(seeded):
    seeded.load_app(fixture("probe.wat"))
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/x")
        await pilot.press("c")
        body = app.screen.query_one("#call-body", Input)
        body.value = "E\x1b[2J[bold red]boom[/]"
        await pilot.press("enter")
        response = app.screen.query_one("#call-response", Static)
        await until(pilot, lambda: "boom" in str(response.render()))
        shown = str(response.render())
        assert "\x1b" not in shown and "\\x1b[2J[bold red]boom[/]" in shown


@run_async
async def test_logs_tail_level_pause(seeded):
    seeded.load_app(fixture("probe.wat"))
    seeded.call("probe/l", b"L1hello \x1b[31mred")
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/l")
        await pilot.press("l")
        log = app.screen.query_one(RichLog)
        text = lambda: "\n".join(line.text for line in log.lines)  # noqa: E731
        await until(pilot, lambda: "hello" in text())
        assert "\x1b" not in text() and "hello \\x1b[31mred" in text()
        view = app.screen.query_one("LogView")
        await pilot.press("space")  # pause
        assert view.paused
        seeded.call("probe/l", b"L3while paused")
        await until(pilot, lambda: view.pending >= 1)
        assert "while paused" not in text()
        await pilot.press("space")
        await until(pilot, lambda: "while paused" in text())
        await pilot.press("v", "v", "v")  # level >= error
        assert view.level == "error"
        assert "hello" not in text() and "while paused" in text()


@run_async
async def test_command_bar_runs_the_command_language(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"call counter/alice", "enter")
        await until(pilot, lambda: isinstance(app.screen, CommandResultScreen))
        assert app.screen.result["ok"] and app.screen.result["response"] == {"count": 43}
        await pilot.press("escape")
        await pilot.press("colon", *"quota counter/alice fuel=lots", "enter")
        await until(pilot, lambda: isinstance(app.screen, CommandResultScreen))
        assert app.screen.result["error"]["code"] == "bad_quota"


@run_async
async def test_readonly_hides_and_refuses_writes(seeded):
    app = FacetsConsole(seeded, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 8)
        assert seeded.warm_count > 0
        warm = seeded.warm_count
        await pilot.press("e")  # evict: refused
        await pilot.press("t")  # traffic: refused
        await app.workers.wait_for_complete()  # an evict that ran would be done now
        assert seeded.warm_count == warm and not app.traffic.running
        await pilot.press("colon", *"call counter/alice", "enter")
        await until(pilot, lambda: isinstance(app.screen, CommandResultScreen))
        assert app.screen.result["error"]["code"] == "refused"
        await pilot.press("escape")
        footer_keys = {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}
        assert "e" not in footer_keys and "D" not in footer_keys
        await open_detail(pilot, app, "counter/alice")
        assert app.screen.query_one("#quota-fuel", Input).disabled
        assert app.screen.query_one("#call-body", Input).disabled


@run_async
async def test_delete_needs_confirmation(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 8)
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        assert seeded.facet_exists("counter/alice")
        await pilot.press("D")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: not seeded.facet_exists("counter/alice"))
        await until(pilot, lambda: facets_table(app).row_count == 7)


@run_async
async def test_views_reachable_by_key_and_help_lists_keys(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        for key, mode in (("2", "apps"), ("3", "logs"), ("4", "billing"), ("1", "facets")):
            await pilot.press(key)
            await until(pilot, lambda mode=mode: app.current_mode == mode)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        console = Console(width=200, record=True, file=io.StringIO())
        for static in app.screen.query(Static):
            console.print(static.content)
        text = console.export_text()
        for expected in ("Filter", "Next page", "Apply quotas", "Load / upgrade", "Pause", "call APP/FACET"):
            assert expected in text


@run_async
async def test_apps_view_loads_an_app(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.screen.query_one("#apps-table", DataTable)
        await until(pilot, lambda: table.row_count == 7)
        await pilot.press("L")
        app.screen.query_one("#load-path", Input).value = f"{fixture('probe.wat')} as probe"
        await pilot.press("enter")
        await until(pilot, lambda: table.row_count == 8)
        assert "probe" in table_keys(table)


@run_async
async def test_traffic_moves_the_meters(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        before = seeded.usage()["requests"]
        await pilot.press("t")
        assert app.traffic.running
        await until(pilot, lambda: seeded.usage()["requests"] > before + 20)
        await pilot.press("t")
        assert not app.traffic.running


@pytest.mark.parametrize("line", ['call todo/alice \'{"op": "lists"}\'', "tables todo/alice", "apps"])
@run_async
async def test_command_bar_shows_same_results_as_scripts(seeded, line):
    from console.commands import run_line

    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon")
        app.screen.query_one("#command-bar", Input).value = line
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, CommandResultScreen))
        shown = app.screen.result
    expected = run_line(seeded, line)
    if "response" in expected:
        assert json.dumps(shown["response"]) == json.dumps(expected["response"])
    else:
        assert shown.keys() == expected.keys()
