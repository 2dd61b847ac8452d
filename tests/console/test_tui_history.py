"""The detail view's History tab: the restorable window, the snapshots, and a restore to
a snapshot through its confirmation."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from console.app import FacetsConsole
from console.screens.confirm import ConfirmScreen
from tests.console.test_tui import SIZE, open_detail, run_async
from tests.console.waiting import until


@run_async
async def test_history_tab_lists_snapshots_and_restores_to_one(seeded):
    sup = seeded
    sup.call("counter/alice")
    before = sup.call("counter/alice").response
    sup.snapshot("counter/alice", "known-good")
    for _ in range(3):
        sup.call("counter/alice")
    app = FacetsConsole(sup)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "counter/alice")
        await pilot.press("i")
        table = app.screen.query_one("#history-snapshots", DataTable)
        await until(pilot, lambda: table.row_count == 1)
        assert "known-good" in str(table.get_row_at(0)[0])
        window = str(app.screen.query_one("#history-window", Static).render())
        assert "restorable from" in window and "archive" in window
        await until(pilot, lambda: app.focused is table)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: table.row_count == 2)  # the undo snapshot joined it
    # The counter answers its next count after the snapshot's.
    after = sup.call("counter/alice").response
    assert int(after.split(b":")[1].rstrip(b"}")) == int(before.split(b":")[1].rstrip(b"}")) + 1
    assert any(s.reason == "before-restore" for s in sup.snapshots("counter/alice"))
