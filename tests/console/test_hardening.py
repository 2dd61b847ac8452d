"""Console defects found in review (issue 12), each pinned by a test that failed before its fix."""

from __future__ import annotations

import threading

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Input, RichLog, Static

from console.app import FacetsConsole
from console.screens.help import HelpScreen
from console.screens.result import CommandResultScreen
from console.widgets.command_bar import CommandBar
from console.widgets.log_view import LogView
from console.widgets.table_browser import TableBrowser
from runtime import FacetsError, neutralize
from tests.conftest import fixture, sql_body
from tests.console.screen_text import screen_text
from tests.console.test_tui import SIZE, open_detail, run_async
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
        if target == "todo/alice":  # the first scope's load: slow
            started.set()
            assert released.wait(10)
        return real_logs(target, **kwargs)

    seeded.logs = logs
    seeded.call("todo/alice", "{bad json")  # an error log line in each scope
    seeded.call("counter/alice", "{bad json")
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        view = app.screen.query_one(LogView)
        log = view.query_one(RichLog)
        text = lambda: "\n".join(line.text for line in log.lines)  # noqa: E731
        await until(pilot, lambda: "todo/alice" in text() or "counter/alice" in text())
        view.set_scope("todo", "alice")  # this load blocks in the worker...
        await until(pilot, started.is_set)
        view.set_scope("counter", "alice")  # ...while the next scope's load completes
        await until(pilot, lambda: "counter/alice" in text())
        released.set()
        await until(pilot, lambda: "todo/alice" in text() or getattr(view, "stale_dropped", 0) == 1)
        assert "todo/alice" not in text() and "counter/alice" in text()


@run_async
async def test_a_table_drawn_before_it_idles_shows_whole_cells(seeded, monkeypatch):
    """Under traffic a frame can be drawn between the rows arriving and the table measuring
    them (it measures when it idles); the cells must not stay cut to the header's width."""
    seeded.load_app(fixture("probe.wat"))
    seeded.call("probe/t", sql_body("CREATE TABLE t(name TEXT, note TEXT)"))
    seeded.call("probe/t", sql_body("INSERT INTO t VALUES ('a', 'b')"))
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/t")
        await pilot.press("enter")
        browser = app.screen.query_one(TableBrowser)
        grid = browser.query_one(DataTable)
        await until(pilot, lambda: "1 rows" in browser.status and grid.size.height > 1)
        add_rows = DataTable.add_rows

        def add_rows_then_draw(self, rows):
            keys = add_rows(self, rows)
            for y in range(self.size.height):  # the frame traffic would draw right now
                self.render_line(y)
            return keys

        monkeypatch.setattr(DataTable, "add_rows", add_rows_then_draw)
        # the facet commits: the open page reloads, and is drawn before the table idles
        seeded.call("probe/t", sql_body("UPDATE t SET name = 'first row', note = 'second column'"))
        await until(pilot, lambda: str(grid.get_cell_at((0, 1))) == "first row")
        await app.workers.wait_for_complete()
        await pilot.pause()
        line = grid.render_line(1).text
        assert "first row" in line and "second column" in line, line
        assert "name" in grid.render_line(0).text and "note" in grid.render_line(0).text


@run_async
async def test_the_table_list_follows_commits(seeded):
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "todo/alice")
        tables = app.screen.query_one("#tables-list", DataTable)
        await until(pilot, lambda: "items" in tables.rows)
        assert tables.get_cell("items", "count") == 4
        seeded.call("todo/alice", '{"op": "add", "list": "groceries", "title": "tea"}')
        await until(pilot, lambda: tables.get_cell("items", "count") == 5)
        row = tables.get_row_index("items") + 1  # the header is line 0
        await until(pilot, lambda: " 5 " in tables.render_line(row).text)


#: A guest-chosen table name that is Rich markup (``[/]`` closes nothing: a MarkupError) and
#: carries an OSC 52 "set the clipboard" sequence for the operator's terminal.
HOSTILE_TABLE = "[/]x\x1b]52;c;aGk=\x07"
HOSTILE_COLUMN = "[bold]c"
HOSTILE_VALUE = "[red]v\x1b[2J"


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def assert_plain(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text


@run_async
async def test_guest_names_are_shown_as_plain_escaped_text(seeded):
    seeded.load_app(fixture("probe.wat"))
    for sql, params in (
        (f"CREATE TABLE {quoted(HOSTILE_TABLE)}({quoted(HOSTILE_COLUMN)} TEXT)", ()),
        (f"INSERT INTO {quoted(HOSTILE_TABLE)} VALUES (?)", (HOSTILE_VALUE,)),
    ):
        assert seeded.call("probe/x", sql_body(sql, *params)).ok
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/x")
        tables = app.screen.query_one("#tables-list", DataTable)
        await until(pilot, lambda: tables.row_count == 1)
        await pilot.pause()
        shown = screen_text(app)
        assert_plain(shown)
        assert neutralize(HOSTILE_TABLE) in shown  # [/]x\x1b]52;c;aGk=\x07, as text
        await pilot.press("enter")  # the table browser
        browser = app.screen.query_one(TableBrowser)
        await until(pilot, lambda: "1 rows" in browser.status)
        grid = browser.query_one(DataTable)
        await until(pilot, lambda: grid.row_count == 1)
        await pilot.pause()
        shown = screen_text(app)
        assert_plain(shown)
        assert f"{neutralize(HOSTILE_TABLE)}  ·  rowid 1–1" in shown
        assert HOSTILE_COLUMN in shown and neutralize(HOSTILE_VALUE) in shown
        # the SQL box's result grid: column names and values come from the database
        app.screen.query_one("#sql-box", Input).value = 'SELECT name AS "[/]n", * FROM sqlite_master'
        await pilot.press("x", "enter")
        result = app.screen.query_one("#sql-result", DataTable)
        await until(pilot, lambda: result.row_count == 1)
        await pilot.pause()
        shown = screen_text(app)
        assert_plain(shown)
        assert "[/]n" in shown and neutralize(HOSTILE_TABLE) in shown.split("[/]n", 1)[1]


@run_async
async def test_table_names_cannot_inject_sql_into_the_browser(seeded):
    """Brackets cannot quote a name holding ``]`` (SQLite has no escape inside them)."""
    seeded.load_app(fixture("probe.wat"))
    name = 'a] UNION SELECT 1, "x" --'
    for sql in (
        f"CREATE TABLE {quoted(name)}(v TEXT)",
        f"INSERT INTO {quoted(name)} VALUES ('only row')",
        'CREATE TABLE "a"(v TEXT)',
        "INSERT INTO a VALUES ('other table')",
    ):
        assert seeded.call("probe/x", sql_body(sql)).ok
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/x")
        app.screen.open_table(name)
        browser = app.screen.query_one(TableBrowser)
        await until(pilot, lambda: "rows" in browser.status or "error" in browser.status.lower())
        grid = browser.query_one(DataTable)
        await until(pilot, lambda: grid.row_count == 1)
        assert [str(cell) for cell in grid.get_row_at(0)] == ["1", "only row"]
        assert "1 rows" in browser.status


@run_async
async def test_guest_export_names_are_plain_in_the_apps_view(seeded, tmp_path):
    source = fixture("probe.wat").read_text()
    hostile_export = "facet_[/]x\\1b]52;c;aGk=\\07"  # WAT escapes: ESC and BEL
    module = tmp_path / "hostile.wat"
    module.write_text(source.replace('(export "facet_alloc")', f'(export "facet_alloc") (export "{hostile_export}")'))
    try:
        seeded.load_app(module, "hostile")
    except FacetsError as exc:  # a runtime that refuses such names is safe by construction
        pytest.skip(f"the runtime refuses the export name: {exc.code}")
    app = FacetsConsole(seeded)
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.press("2")
        table = app.screen.query_one("#apps-table", DataTable)
        await until(pilot, lambda: "hostile" in table.rows)
        await pilot.pause()
        shown = screen_text(app)
        assert_plain(shown)
        assert neutralize("facet_[/]x\x1b]52;c;aGk=\x07") in shown


@run_async
async def test_the_palette_asks_the_app_by_action(seeded):
    """The palette no longer imports the app: its entries run the app's actions."""
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Show keys")
        await until(pilot, lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape", "ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Run: call")
        await until(pilot, lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        bar = lambda: app.screen.query_one(CommandBar)  # noqa: E731
        await until(pilot, lambda: not isinstance(app.screen, CommandPalette) and bar().value == "call ")
        assert app.focused is bar()


@run_async
async def test_a_guest_column_named_rowid_does_not_crash_the_browser(seeded):
    """The browser adds its own rowid column; a guest column of that name made the grid's
    column keys collide (DuplicateKey) and took the console down."""
    seeded.load_app(fixture("probe.wat"))
    for sql in ("CREATE TABLE t(rowid TEXT, v TEXT)", "INSERT INTO t VALUES ('guest', 'value')"):
        assert seeded.call("probe/x", sql_body(sql)).ok
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/x")
        await pilot.press("enter")
        browser = app.screen.query_one(TableBrowser)
        await until(pilot, lambda: "1 rows" in browser.status)
        grid = browser.query_one(DataTable)
        await until(pilot, lambda: grid.row_count == 1)
        assert [str(column.label) for column in grid.ordered_columns] == ["rowid", "rowid", "v"]
        assert "value" in [str(cell) for cell in grid.get_row_at(0)]


@run_async
async def test_records_streamed_during_a_log_load_stay_shown(seeded):
    """A record that streams in after the load read the database, but before its result is
    shown, must not vanish when the result replaces the view."""
    seeded.load_app(fixture("probe.wat"))
    seeded.call("probe/l", b"L1first line")
    read, released = threading.Event(), threading.Event()
    real_logs = seeded.logs

    def logs(target=None, **kwargs):
        records = real_logs(target, **kwargs)
        if target == "probe/l":  # read, then slow to hand the result back
            read.set()
            assert released.wait(10)
        return records

    seeded.logs = logs
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        view = app.screen.query_one(LogView)
        log = view.query_one(RichLog)
        text = lambda: "\n".join(line.text for line in log.lines)  # noqa: E731
        await until(pilot, lambda: "first line" in text())
        view.set_scope("probe", "l")
        await until(pilot, read.is_set)
        seeded.call("probe/l", b"L1streamed line")  # stored after the load read
        await until(pilot, lambda: "streamed line" in text())
        released.set()
        await app.workers.wait_for_complete()
        await until(pilot, lambda: "first line" in text())  # the load's result is shown
        await pilot.pause()
        assert "streamed line" in text()


@pytest.mark.parametrize(
    "answer, shown, absent",
    [
        (b"[" * 100_000 + b"]" * 100_000, "[[[[", "RecursionError"),  # shown as text, no crash
        (b"[1e999, NaN]", "[1e999, NaN]", "Infinity"),  # not JSON: shown as it came
        (b'{"big": 1e999}', '"big": null', "Infinity"),  # strict JSON out
    ],
    ids=["100000-deep", "nan-tokens", "overflowing-float"],
)
@run_async
async def test_the_call_tab_survives_hostile_json(seeded, answer, shown, absent):
    seeded.load_app(fixture("probe.wat"))
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "probe/x")
        await pilot.press("c")
        app.screen.query_one("#call-body", Input).value = "E" + answer.decode()  # the probe echoes it
        await pilot.press("enter")
        response = app.screen.query_one("#call-response", Static)
        await until(pilot, lambda: "fuel" in str(response.render()))
        text = str(response.render())
        assert shown in text and absent not in text


@run_async
async def test_results_arriving_while_the_detail_view_is_torn_down_are_dropped(seeded):
    """A screen's children are removed before it detaches: a worker's late table list or
    query result must be dropped then, not fail its worker with NoMatches."""
    app = FacetsConsole(seeded)
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, app, "todo/alice")
        screen = app.screen
        await app.workers.wait_for_complete()
        for selector in ("#tables-list", "#sql-result", "#sql-status"):
            await screen.query_one(selector).remove()
        assert screen.is_attached
        screen._show_tables(10**9, [{"name": "late", "count": 1, "columns": ["x"]}])
        screen._sql_done({"columns": ["x"], "rows": [[1]]})
        screen._sql_failed("late")
        await pilot.pause()
        assert screen.is_attached and not screen.query("#tables-list")
