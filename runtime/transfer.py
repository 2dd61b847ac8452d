"""Export and import of facet databases, atomically: a copy is written under a temporary
name in its destination directory, fsynced, then given its final name in one step.

An import only ever creates a brand-new facet: its copy is registered by
``FacetRegistry.create(move_from=...)``, which fails if the facet came to exist
meanwhile (a call created it), so a database a call has written is never
overwritten; and it is counted against the storage quota by what was copied
(the source's ``-wal`` included).

A process killed mid-copy (kill -9, power cut) leaves at most a temporary file, which
never blocks a retry and is never taken for a facet: its name starts with ``.`` and
ends with ``.tmp``, where a facet database is ``NAME.sqlite3``; the supervisor removes
leftover ones from ``DATA/facets`` at startup.

Thread-safety: no lock of its own. An export reads through a ``FacetReader`` (safe
while the facet serves); an import copies outside every lock and registers under the
registry's. Runs on the operator's thread.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadRequest, FacetsError, NotFound
from .faults import failure_code
from .storage import RESERVED_PREFIX

if TYPE_CHECKING:
    from .apps import AppStore
    from .quotas import QuotaBook
    from .registry import FacetRegistry, Log
    from .storage import FacetReader

#: Temporary copies are named ``.<final name>.<purpose>-<random>.tmp``.
TEMP_SUFFIX = ".tmp"


def temp_path(final: Path, purpose: str) -> Path:
    """A fresh temporary name beside ``final`` (same directory, so a rename is atomic)."""
    return final.with_name(f".{final.name}.{purpose}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


#: What SQLite may leave beside a database killed mid-write.
SIDECARS = ("-journal", "-wal", "-shm")


def is_temp(path: Path) -> bool:
    """A temporary copy, or a journal SQLite left beside one."""
    name = path.name
    for sidecar in SIDECARS:
        name = name.removesuffix(sidecar)
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def discard(temp: Path) -> None:
    """Remove a temporary copy and any journal beside it."""
    for suffix in ("", *SIDECARS):
        Path(f"{temp}{suffix}").unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def copy_database(backup: Callable[[sqlite3.Connection], None], dest: Path, *, wal: bool) -> int:
    """Write a complete database at ``dest`` (a temporary name) with ``backup(connection)``,
    switch it to WAL if ``wal``, close it (which checkpoints: no ``-wal`` beside it) and fsync
    it. Returns its size in bytes: what was actually copied, the source's WAL included."""
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        backup(conn)
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    if Path(f"{dest}-wal").exists():  # the last close checkpoints and deletes it
        raise OSError(errno.EIO, "the copy's WAL was not checkpointed", f"{dest}-wal")
    fsync_file(dest)
    return dest.stat().st_size


def publish(temp: Path, final: Path) -> None:
    """Give the complete file ``temp`` the name ``final``, atomically and never over an
    existing file (``FileExistsError``), then make the new name durable."""
    try:
        os.link(temp, final)  # fails if `final` exists: nothing is ever overwritten
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if final.exists():
            raise FileExistsError(final) from None
        os.rename(temp, final)
    else:
        temp.unlink()
    fsync_dir(final.parent)


def remove_temps(root: Path) -> list[Path]:
    """Delete temporary copies left in ``root/*/`` by a killed process; return them."""
    removed = []
    for path in root.glob(f"*/.*{TEMP_SUFFIX}*"):
        if is_temp(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class Transfer:
    """Export and import of facet databases, for the supervisor (see its methods)."""

    def __init__(
        self,
        registry: FacetRegistry,
        apps: AppStore,
        quota_book: QuotaBook,
        reader: Callable[[str], FacetReader],
        log: Log,
    ) -> None:
        self._registry = registry
        self._apps = apps
        self._quota_book = quota_book
        self._reader = reader
        self._log = log

    def export(self, target: str, path: str | os.PathLike[str]) -> int:
        """Write a consistent copy of the facet's database to ``path`` (SQLite's backup API,
        through a ``FacetReader``: safe while the facet serves). Never overwrites; atomic:
        a killed export leaves no partial file in the way of a retry. Returns the copy's size."""
        dest_path = Path(path)
        if dest_path.exists():
            raise BadRequest(f"{dest_path} already exists; export never overwrites")
        if not dest_path.parent.is_dir():
            raise NotFound(f"no directory {str(dest_path.parent)!r}")
        temp = temp_path(dest_path, "export")
        try:
            with self._reader(target) as reader:
                size = copy_database(reader.backup, temp, wal=False)
            publish(temp, dest_path)
        except FileExistsError:
            raise BadRequest(f"{dest_path} already exists; export never overwrites") from None
        except (sqlite3.Error, OSError) as exc:
            raise FacetsError(
                f"cannot export {target} to {dest_path}: {type(exc).__name__}: {exc}", failure_code(exc)
            ) from None
        finally:
            discard(temp)
        return size

    def import_(self, path: str | os.PathLike[str], app: str, facet: str) -> list[str]:
        """Create facet ``app/facet`` from a SQLite database file (copied, never moved).

        The app must be loaded and the facet must not exist, now or when the copy is
        registered (a call may create it meanwhile: the import then fails, and never
        overwrites what the call wrote); the file must pass ``PRAGMA quick_check``, use
        no reserved ``_facets`` names, and fit the facet's storage quota (what is
        copied, its ``-wal`` included). A killed import leaves nothing registered.
        Returns the imported table names.
        """
        target = f"{app}/{facet}"
        if not self._apps.has(app):
            raise NotFound(f"no app named {app!r}")
        if (app, facet) in self._registry.created:
            raise BadRequest(f"facet {target} already exists; delete it first")
        source_path = Path(path)
        if not source_path.is_file():
            raise NotFound(f"no file at {str(source_path)!r}")
        storage = self._quota_book.effective(app, facet).storage
        if source_path.stat().st_size > storage:  # early: no point copying it
            raise BadRequest(f"{source_path.name} is larger than the storage quota of {storage} bytes")
        try:
            source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise BadRequest(f"cannot open {source_path.name}: {exc}") from None
        dest = self._registry.db_path(app, facet)
        temp = temp_path(dest, "import")
        try:
            tables = _check_source(source, source_path.name)
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                size = copy_database(source.backup, temp, wal=True)
            except (sqlite3.Error, OSError) as exc:
                raise FacetsError(
                    f"cannot import {source_path.name}: {type(exc).__name__}: {exc}", failure_code(exc)
                ) from None
            quotas = self._quota_book.effective(app, facet)
            if size > quotas.storage:
                raise BadRequest(
                    f"{source_path.name} holds {size} bytes of database (its WAL "
                    f"included), more than the storage quota of {quotas.storage} bytes"
                )
            refused = self._registry.create(app, facet, move_from=temp)
            if refused is not None:
                raise FacetsError(refused.message, refused.error)
        finally:
            source.close()
            discard(temp)
        self._log(app, facet, "info", f"facet {target} imported from {source_path.name}")
        return tables


def _check_source(source: sqlite3.Connection, name: str) -> list[str]:
    """Refuse a source that is not a sound SQLite database or uses reserved names;
    return its table names, sorted."""
    try:
        check = source.execute("PRAGMA quick_check").fetchone()[0]
        schema = source.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'index', 'trigger')"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise BadRequest(f"{name} is not a SQLite database: {exc}") from None
    if check != "ok":
        raise BadRequest(f"{name} failed its integrity check: {check}")
    reserved = [n for _, n in schema if n.lower().startswith(RESERVED_PREFIX)]
    if reserved:
        raise BadRequest(f"{name} uses reserved names: {', '.join(reserved)}")
    return sorted(n for kind, n in schema if kind == "table" and not n.startswith("sqlite_"))
