"""TableBrowser: a paged grid over one facet table that stays fast on millions of rows.

Only one page is ever loaded. Tables with a rowid are paged by key
(``WHERE rowid > ? ORDER BY rowid LIMIT n``), so page 10,000 costs what page 1
costs; other tables (``WITHOUT ROWID``, views) fall back to LIMIT/OFFSET. The
browser keeps a read-only connection open and watches ``PRAGMA data_version``:
when the facet commits, the current page reloads by itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from runtime import FacetsError, neutralize
from runtime.storage import FacetReader

from ..format import plain
from ..host import ConsoleSupervisor
from .console_table import ConsoleTable


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier whatever it holds: double quotes, the inner ones doubled.
    (Brackets cannot quote it: SQLite has no escape for ``]`` inside ``[...]``, so a table
    named ``x] ...`` closed the bracket and the rest ran as SQL.)"""
    return '"' + name.replace('"', '""') + '"'


class TableBrowser(Vertical):
    """Browse ``table`` of facet ``target`` a page at a time."""

    DEFAULT_CSS = """
    TableBrowser { height: 1fr; }
    TableBrowser #browser-status { height: 1; padding: 0 1; background: $boost; }
    TableBrowser DataTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: the grid inside would otherwise scroll on these keys instead of paging
        Binding("pagedown,n", "page(1)", "Next page", priority=True),
        Binding("pageup,p", "page(-1)", "Prev page", priority=True),
        Binding("home,g", "first", "First page", priority=True),
        Binding("end,G", "last", "Last page", priority=True),
    ]

    PAGE_SIZE = 100
    WATCH_INTERVAL = 0.5

    status: reactive[str] = reactive("")
    """The line above the grid: table, position, total (the table's name neutralised)."""

    def __init__(self, sup: ConsoleSupervisor, target: str, table: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sup = sup
        self.target = target
        self.table = table
        #: The name as it may be shown (the guest chose it: escapes, brackets and all).
        self._shown_name = neutralize(table)
        self._reader: FacetReader | None = None
        self._keyset = True
        self._columns: list[str] = []
        #: keyset: rowid of the first row shown (None: from the start); offset mode: the offset
        self._anchor: Any = None
        self._first_rowid: int | None = None
        self._last_rowid: int | None = None
        self._offset = 0
        #: rows in the table; counted after the first page is shown (a count walks the table)
        self._total: int | None = None
        self._version: int | None = None
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Static("", id="browser-status")
        yield ConsoleTable(zebra_stripes=True, cursor_type="row", id="browser-grid")

    def watch_status(self, status: str) -> None:
        for label in self.query("#browser-status").results(Static):  # none once unmounted
            label.update(Text(status))  # plain: the name is the guest's, never markup

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.status = f"{self._shown_name}: loading…"
        self._open()
        self.set_interval(self.WATCH_INTERVAL, self._watch_commits)

    def on_unmount(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- loading -----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="table-browser")
    def _open(self) -> None:
        try:
            reader = self.sup.reader(self.target)
            info = reader.query("SELECT * FROM pragma_table_info(?)", [self.table])
            self._columns = [row[1] for row in info["rows"]]
            without_rowid = reader.query(
                "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_master WHERE name = ?", [self.table]
            )["rows"]
            self._keyset = not (without_rowid and without_rowid[0][0])
            self._reader = reader
            self._version = reader.data_version()
        except FacetsError as exc:
            self.app.call_from_thread(self._show_error, exc.message)
            return
        self._load(direction="first")

    def _fetch(self, direction: str) -> tuple[list[str], list[list[Any]]]:
        reader = self._reader
        assert reader is not None
        name = quote_identifier(self.table)
        n = self.PAGE_SIZE
        if not self._keyset:
            if self._total is None or direction == "last":
                self._total = self._count()
            if direction == "first":
                self._offset = 0
            elif direction == "last":
                self._offset = max(0, (self._total - 1) // n * n)
            elif direction == "next" and self._offset + n < self._total:
                self._offset += n
            elif direction == "prev":
                self._offset = max(0, self._offset - n)
            result = reader.query(f"SELECT * FROM {name} LIMIT ? OFFSET ?", [n, self._offset])
            return result["columns"], result["rows"]
        if direction == "first":
            sql, params, flip = f"SELECT rowid, * FROM {name} ORDER BY rowid LIMIT ?", [n], False
        elif direction == "last":
            sql, params, flip = f"SELECT rowid, * FROM {name} ORDER BY rowid DESC LIMIT ?", [n], True
        elif direction == "next" and self._last_rowid is not None:
            sql, params, flip = (
                f"SELECT rowid, * FROM {name} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                [self._last_rowid, n],
                False,
            )
        elif direction == "prev" and self._first_rowid is not None:
            sql, params, flip = (
                f"SELECT rowid, * FROM {name} WHERE rowid < ? ORDER BY rowid DESC LIMIT ?",
                [self._first_rowid, n],
                True,
            )
        else:  # reload the current page from its first row
            start = self._first_rowid if self._first_rowid is not None else -(2**63)
            sql, params, flip = (
                f"SELECT rowid, * FROM {name} WHERE rowid >= ? ORDER BY rowid LIMIT ?",
                [start, n],
                False,
            )
        result = reader.query(sql, params)
        rows = result["rows"][::-1] if flip else result["rows"]
        if not rows and direction in ("next", "prev"):
            return self._fetch("reload")  # ran off an end: stay where we are
        if rows:
            self._first_rowid, self._last_rowid = rows[0][0], rows[-1][0]
        else:
            self._first_rowid = self._last_rowid = None
        return ["rowid", *result["columns"][1:]], rows

    def _count(self) -> int:
        assert self._reader is not None
        return self._reader.query(f"SELECT count(*) FROM {quote_identifier(self.table)}")["rows"][0][0]

    @work(thread=True, exclusive=True, group="table-browser")
    def _load(self, direction: str) -> None:
        if self._reader is None:
            return
        try:
            columns, rows = self._fetch(direction)
            self._version = self._reader.data_version()
            self.app.call_from_thread(self._show, columns, rows)
            # The page is on screen; now the total, which walks the whole table.
            self._total = self._count()
        except FacetsError as exc:
            self.app.call_from_thread(self._show_error, exc.message)
            return
        self.app.call_from_thread(self._show_status, len(rows))

    def _show(self, columns: list[str], rows: list[list[Any]]) -> None:
        if not self.is_attached:  # closed while the page was loading
            return
        grid = self.query_one(DataTable)
        cursor = grid.cursor_row
        grid.clear(columns=True)
        for column in columns:
            # no key: a guest table may have its own column named rowid (keys must be unique)
            grid.add_column(plain(column))
        grid.add_rows([[plain(v) for v in row] for row in rows])
        if rows:
            grid.move_cursor(row=min(cursor, len(rows) - 1))
        self._show_status(len(rows))

    def _show_status(self, shown: int) -> None:
        if not self.is_attached:
            return
        if self._keyset:
            where = f"rowid {self._first_rowid}–{self._last_rowid}" if shown else "empty"
        else:
            where = f"rows {self._offset + 1}–{self._offset + shown}" if shown else "empty"
        total = "counting…" if self._total is None else f"{self._total:,} rows"
        self.status = f"{self._shown_name}  ·  {where}  ·  {total}  ·  PgUp/PgDn page, g/G first/last"

    def _show_error(self, message: str) -> None:
        if not self.is_attached:
            return
        self.status = f"{self._shown_name}: {neutralize(message)}"

    # -- live refresh ---------------------------------------------------------------
    @work(thread=True, exclusive=True, group="table-watch")
    def _watch_commits(self) -> None:
        reader = self._reader
        if reader is None:
            return
        try:
            version = reader.data_version()
        except Exception:
            return
        if self._version is not None and version != self._version:
            self._version = version
            self.app.call_from_thread(self._load, "reload")

    # -- actions ----------------------------------------------------------------------
    def action_page(self, step: int) -> None:
        self._load("next" if step > 0 else "prev")

    def action_first(self) -> None:
        self._load("first")

    def action_last(self) -> None:
        self._load("last")
