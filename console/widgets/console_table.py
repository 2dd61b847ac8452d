"""ConsoleTable: the console's DataTable, whose cells are redrawn when a column's width changes.

Textual 8.2.8 (pinned in constraints.txt) measures new rows only when the table next
idles, and keys its rendered cells and lines by content, cursor and an update count but
not by column width. A frame drawn between ``add_row`` and that idle therefore caches
every cell cut to its column header's width, and the cache serves those cuts until the
next change to the table: under traffic (log lines and refreshes keep the event loop
busy) a freshly opened table showed ``firs``/``seco`` for ``first``/``second``, and an
idle fleet table could stay cut to ``count`` for ``counter/alice`` for good.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


class ConsoleTable(DataTable[object]):
    """A ``DataTable`` that drops its render caches whenever its column widths change."""

    #: The column widths the cached cells were drawn at.
    _measured_widths: tuple[int, ...] = ()

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        widths = tuple(column.get_render_width(self) for column in self.ordered_columns)
        if widths != self._measured_widths:
            self._measured_widths = widths
            self._clear_caches()  # the cells drawn at the old widths
            self.refresh()
