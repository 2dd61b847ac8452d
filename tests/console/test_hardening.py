"""Console defects found in review (issue 12), each pinned by a test that failed before its fix."""

from __future__ import annotations

from console.app import FacetsConsole
from console.screens.result import CommandResultScreen
from console.widgets.command_bar import CommandBar
from tests.console.test_tui import SIZE, run_async
from tests.console.waiting import until


@run_async
async def test_command_history_belongs_to_one_console(seeded):
    first = FacetsConsole(seeded)
    async with first.run_test(size=SIZE) as pilot:
        home_bar = first.screen.query_one(CommandBar)
        await pilot.press("colon", *"apps", "enter")
        await until(pilot, lambda: isinstance(first.screen, CommandResultScreen))
        assert home_bar.history[-1:] == ["apps"]
        await pilot.press("escape")
        # every view of the same console walks the same history
        await pilot.press("2", "colon", "up")
        assert first.screen.query_one(CommandBar).value == "apps"
    second = FacetsConsole(seeded)
    async with second.run_test(size=SIZE) as pilot:
        await pilot.press("colon", "up")
        bar = second.screen.query_one(CommandBar)
        assert bar.history == [] and bar.value == ""
    assert CommandBar().history == []
