"""Browsing a facet's database, read-only, for operators: its tables, a page of rows,
an operator's query. Each opens its own ``FacetReader`` (a separate read-only
connection, so browsing never waits for the facet and the facet never waits for it:
WAL) and closes it when done.

Thread-safety: no state of its own; the registry's ``created`` is read without its
lock (a dict lookup). Runs on the caller's thread (the console's workers, the CLI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .storage import FacetReader

if TYPE_CHECKING:
    from .registry import FacetRegistry


class Browser:
    def __init__(self, registry: FacetRegistry) -> None:
        self._registry = registry

    def reader(self, target: str) -> FacetReader:
        """A read-only connection to the facet's database; close it when done."""
        return FacetReader(str(self._registry.db_path(*self._registry.known(target))))

    def tables(self, target: str) -> list[dict[str, Any]]:
        with self.reader(target) as reader:
            return reader.tables()

    def rows(
        self, target: str, table: str, *, limit: int = 100, offset: int = 0, where: str | None = None
    ) -> dict[str, Any]:
        with self.reader(target) as reader:
            return reader.rows(table, limit=limit, offset=offset, where=where)

    def query(self, target: str, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        """Run a read-only operator query on the facet's database."""
        with self.reader(target) as reader:
            return reader.query(sql, params)
