"""Pilot tests of what the console shows of supervision, alarms and rollouts (issue 15),
against a real supervisor: the home view's state, version and alarm columns, its
supervision line and the reset key; the detail view's health panel; the Apps view's
rollout."""

from __future__ import annotations

import time

import pytest
from textual.widgets import DataTable, Static

from console.app import FacetsConsole
from tests.conftest import fixture
from tests.console.test_tui import SIZE, facets_table, open_detail, run_async
from tests.console.waiting import until
from tests.runtime.versioned import versioned_wat

HOUR_MS = 3_600_000


@pytest.fixture
def operated(seeded):
    """The samples, plus: probe/loop in backoff for an hour (three traps, backoff_ms=1h so
    the countdown stays in the hour while the test runs), an alarm on todo/alice in about
    two hours (1h55m), and the app ``ver`` whose version 2 is a canary for every facet."""
    sup = seeded
    sup.load_app(fixture("probe.wat"))
    sup.set_quotas("probe", backoff_ms="1h")
    for _ in range(3):
        assert sup.call("probe/loop", b"X").error == "trap"
    assert sup.health("probe/loop").state == "backoff"
    sup.alarms.set("todo", "alice", int(time.time() * 1000) + 2 * HOUR_MS - 300_000)  # in 1h55m
    sup.load_app_bytes(versioned_wat("v1"), "ver")
    assert sup.call("ver/a").response == b"v1"
    sup.load_app_bytes(versioned_wat("v2"), "ver", canary="100%")
    return sup


def cell(app, key: str, column: str) -> str:
    value = facets_table(app).get_cell(key, column)
    return getattr(value, "plain", str(value))


def supervision_line(app) -> str:
    return str(app.screen.query_one("#supervision-line", Static).render())


@run_async
async def test_home_shows_backoff_versions_and_alarms_and_resets(operated):
    sup = operated
    app = FacetsConsole(sup)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 10)
        state = facets_table(app).get_cell("probe/loop", "state")
        assert state.plain.startswith("backoff ") and state.plain.endswith(("m", "s"))  # backoff 59m59s
        assert "on yellow" in str(state.style)  # stands out
        assert cell(app, "todo/alice", "alarm").startswith("1h5")  # the time to it: 1h55m
        assert cell(app, "counter/alice", "alarm") == "-"
        assert cell(app, "ver/a", "version") == "1→2 canary"  # warm on 1, its next request runs 2
        assert cell(app, "todo/alice", "version") == "1"
        line = supervision_line(app)
        assert "1 in backoff" in line and "R resets" in line
        assert "1 alarm pending" in line and "todo/alice in 1h5" in line

        facets_table(app).move_cursor(row=facets_table(app).get_row_index("probe/loop"))
        await pilot.press("R")
        await until(pilot, lambda: sup.health("probe/loop") is None)
        await until(pilot, lambda: not cell(app, "probe/loop", "state").startswith("backoff"))
        assert any("was backoff after 3 faults" in n.message for n in app._notifications)
        await until(pilot, lambda: "backoff" not in supervision_line(app))
        assert sup.call("probe/loop", b"Eback").ok  # it serves again


@run_async
async def test_quarantined_stands_out_and_readonly_cannot_reset(operated):
    sup = operated
    sup.set_quotas("probe", quarantine_faults="3")
    sup.reset("probe/loop")
    for _ in range(3):
        sup.call("probe/loop", b"X")
    assert sup.health("probe/loop").state == "quarantined"
    app = FacetsConsole(sup, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 10)
        state = facets_table(app).get_cell("probe/loop", "state")
        assert state.plain == "quarantined" and "on red" in str(state.style)
        assert "1 quarantined" in supervision_line(app) and "R resets" not in supervision_line(app)
        facets_table(app).move_cursor(row=facets_table(app).get_row_index("probe/loop"))
        await pilot.press("R")
        await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        assert sup.health("probe/loop").state == "quarantined"  # refused: nothing cleared


@run_async
async def test_the_countdown_moves_without_a_change_from_the_supervisor(seeded):
    """A backing-off facet nobody calls is not in the changes the home view asks for:
    its countdown is redrawn from the clock alone."""
    sup = seeded
    sup.load_app(fixture("probe.wat"))
    sup.set_quotas("probe", backoff_ms="1h")
    for _ in range(3):
        sup.call("probe/loop", b"X")
    app = FacetsConsole(sup)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 9)
        screen = app.screen
        first = cell(app, "probe/loop", "state")
        retry_at = screen._rows["probe/loop"].retry_at
        drawn = screen._now
        await until(pilot, lambda: screen._now >= drawn + 1.5, timeout=30)
        assert cell(app, "probe/loop", "state") != first
        assert cell(app, "probe/loop", "state") == screen._rows["probe/loop"].state_cell(screen._now).plain
        assert screen._rows["probe/loop"].retry_at == retry_at  # the same record: only the clock moved


@run_async
async def test_detail_shows_the_facets_supervision_alarm_and_version(operated):
    sup = operated
    sup.pin("ver/a", 1)
    sup.alarms.set("probe", "loop", int(time.time() * 1000) + HOUR_MS)
    app = FacetsConsole(sup)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 10)
        await open_detail(pilot, app, "probe/loop")
        await until(pilot, lambda: "backoff" in str(app.screen.query_one("#facet-summary", Static).render()))
        summary = str(app.screen.query_one("#facet-summary", Static).render())
        assert "3 faults in a row" in summary and "next retry in " in summary and "alarm in " in summary
        await pilot.press("h")
        faults = app.screen.query_one("#health-faults", DataTable)
        await until(pilot, lambda: faults.row_count == 3)
        assert "trap" in str(faults.get_row_at(0)[1])
        await pilot.press("R")
        await until(pilot, lambda: sup.health("probe/loop") is None)
        await until(pilot, lambda: "healthy" in str(app.screen.query_one("#facet-summary", Static).render()))
        await until(pilot, lambda: faults.row_count == 0)
        await pilot.press("escape")
        await open_detail(pilot, app, "ver/a")
        await until(pilot, lambda: "pinned" in str(app.screen.query_one("#facet-summary", Static).render()))
        assert "runs version 1" in str(app.screen.query_one("#facet-summary", Static).render())


@run_async
async def test_apps_view_shows_the_rollout_side_by_side(operated):
    sup = operated
    for facet in ("a", "b", "c"):
        sup.call(f"ver/{facet}")  # v2 answers for every canary
    app = FacetsConsole(sup)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: facets_table(app).row_count == 12)
        await pilot.press("2")
        await until(pilot, lambda: app.current_mode == "apps" and app.screen.query_one("#apps-table").row_count == 9)
        apps = app.screen.query_one("#apps-table", DataTable)
        apps.move_cursor(row=apps.get_row_index("ver"))
        versions = app.screen.query_one("#versions-table", DataTable)
        await until(pilot, lambda: versions.row_count == 2 and "canary" in str(versions.get_row_at(0)))
        newest = [getattr(c, "plain", str(c)) for c in versions.get_row_at(0)]
        assert newest[:3] == ["2", "canary 100%", "3"]  # version, role, facets
        assert "2 (100%)" in [getattr(c, "plain", str(c)) for c in apps.get_row("ver")]
        alarms = app.screen.query_one("#fleet-alarms", DataTable)
        await until(pilot, lambda: alarms.row_count == 1)
        assert getattr(alarms.get_row_at(0)[0], "plain", "") == "todo/alice"


@run_async
async def test_apps_view_loads_a_canary(seeded, tmp_path):
    from textual.widgets import Input

    sup = seeded
    sup.load_app_bytes(versioned_wat("v1"), "ver")
    v2 = tmp_path / "v2.wat"
    v2.write_text(versioned_wat("v2"))
    app = FacetsConsole(sup)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.screen.query_one("#apps-table", DataTable)
        await until(pilot, lambda: table.row_count == 8)
        await pilot.press("L")
        app.screen.query_one("#load-path", Input).value = f"{v2} as ver --canary 20%"
        await pilot.press("enter")
        await until(pilot, lambda: sup.rollout("ver")["canary"] == 2)
        assert sup.rollout("ver")["canary_percent"] == 20.0 and sup.rollout("ver")["active"] == 1
        await until(pilot, lambda: "canary for 20%" in str(app.screen.query_one("#apps-status", Static).render()))
        await until(pilot, lambda: "2 (20%)" in [getattr(c, "plain", str(c)) for c in table.get_row("ver")])
