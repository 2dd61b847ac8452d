"""Console defects found in review (issue 12), each pinned by a test that failed before its fix."""

from __future__ import annotations

import threading

from textual.widgets import RichLog

from console.app import FacetsConsole
from console.screens.result import CommandResultScreen
from console.widgets.command_bar import CommandBar
from console.widgets.log_view import LogView
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


@run_async
async def test_a_late_log_load_does_not_overwrite_a_new_scope(seeded):
    """The load for the old scope finishes after the new scope's: it must be dropped."""
    started, released = threading.Event(), threading.Event()
    real_logs = seeded.logs

    def logs(target=None, **kwargs):
        if target == "todo/alice":           # the first scope's load: slow
            started.set()
            assert released.wait(10)
        return real_logs(target, **kwargs)

    seeded.logs = logs
    seeded.call("todo/alice", "{bad json")    # an error log line in each scope
    seeded.call("counter/alice", "{bad json")
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        view = app.screen.query_one(LogView)
        log = view.query_one(RichLog)
        text = lambda: "\n".join(line.text for line in log.lines)  # noqa: E731
        await until(pilot, lambda: "todo/alice" in text() or "counter/alice" in text())
        view.set_scope("todo", "alice")       # this load blocks in the worker...
        await until(pilot, started.is_set)
        view.set_scope("counter", "alice")    # ...while the next scope's load completes
        await until(pilot, lambda: "counter/alice" in text())
        released.set()
        await until(pilot, lambda: "todo/alice" in text() or getattr(view, "stale_dropped", 0) == 1)
        assert "todo/alice" not in text() and "counter/alice" in text()
