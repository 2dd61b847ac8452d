"""Component apps in the console: the Apps view loads a JavaScript source with progress and
shows its language, kind and toolchain; the JS/Python samples are built on a worker while
the console runs."""

from __future__ import annotations

from textual.widgets import DataTable, Input

from console.app import FacetsConsole
from console.samples import COMPONENT_SAMPLES, load_component_samples
from console.screens.apps import AppsScreen, progress_text
from runtime import BuildProgress
from tests.conftest import ROOT
from tests.console.test_tui import SIZE, run_async, table_keys
from tests.console.waiting import until

HOSTILE_JS = ROOT / "tests" / "fixtures" / "components" / "hostile.js"


def row_of(table: DataTable, key: str) -> dict[str, str]:
    columns = [str(column.label) for column in table.columns.values()]
    return dict(zip(columns, (str(cell) for cell in table.get_row(key)), strict=True))


@run_async
async def test_apps_view_loads_a_javascript_source_and_shows_what_it_is(seeded, monkeypatch):
    seeded.load_app(HOSTILE_JS, "warmup")  # the build and compile caches: the view's load is quick
    shown: list[BuildProgress] = []
    original = AppsScreen._progress

    def recording(screen: AppsScreen, report: BuildProgress) -> None:
        shown.append(report)
        original(screen, report)

    monkeypatch.setattr(AppsScreen, "_progress", recording)
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        table = app.screen.query_one("#apps-table", DataTable)
        await until(pilot, lambda: "warmup" in table_keys(table))
        await pilot.press("L")
        app.screen.query_one("#load-path", Input).value = f"{HOSTILE_JS} as hostile"
        await pilot.press("enter")
        await until(pilot, lambda: "hostile" in table_keys(table))
        row = row_of(table, "hostile")
        assert row["language"] == "javascript" and row["kind"] == "component"
        assert row["toolchain"].startswith("componentize-")
        assert "MiB" in row["size"]
    # the build and the compile reported to the view, on its own loop (from the cache: at once)
    assert {report.step for report in shown} == {"build", "compile"}
    assert all(report.cached for report in shown)


def test_progress_text_shows_the_step_a_bar_and_the_time():
    line = progress_text(BuildProgress("build", "componentize-js todo.js", 0.5, 7.25))
    assert line.plain.startswith("building componentize-js todo.js ")
    assert "█" * 12 + "░" * 12 in line.plain and " 50%" in line.plain and "7.2s" in line.plain
    hostile = progress_text(BuildProgress("compile", "wasmtime \x1b]52;c;aGk=\x07", None, 0.0))
    assert "\x1b" not in hostile.plain and "\x07" not in hostile.plain


@run_async
async def test_the_console_builds_the_component_samples_in_the_background(seeded):
    samples = list(COMPONENT_SAMPLES)
    app = FacetsConsole(seeded, component_samples=samples)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")  # usable at once: the Apps view answers while they build
        table = app.screen.query_one("#apps-table", DataTable)
        await until(pilot, lambda: table.row_count >= 7)
        await until(
            pilot, lambda: {"todo-js", "guestbook-py", "reminders"} <= {a.name for a in seeded.app_list()}, timeout=300
        )
        await pilot.press("r")
        await until(pilot, lambda: {"todo-js", "guestbook-py", "reminders"} <= set(table_keys(table)))
        assert row_of(table, "guestbook-py")["language"] == "python"
    assert seeded.rows("todo-js/carol", "items")["rows"]
    assert seeded.rows("guestbook-py/lobby", "entries")["rows"]
    assert [a["target"] for a in seeded.alarm_list()] == ["reminders/alice"]  # the seed's reminder


def test_component_samples_load_once(seeded):
    assert load_component_samples(seeded, list(COMPONENT_SAMPLES)) == ["todo-js", "guestbook-py", "reminders"]
    assert seeded.app_versions("todo-js")[-1].kind == "component"
    assert len(seeded.app_versions("todo-js")) == 1
