"""Copying facet databases in and out atomically: a copy is written under a temporary
name in its destination directory, fsynced, then given its final name in one step.

A process killed mid-copy (kill -9, power cut) leaves at most a temporary file, which
never blocks a retry and is never taken for a facet: its name starts with ``.`` and
ends with ``.tmp``, where a facet database is ``NAME.sqlite3``; the supervisor removes
leftover ones from ``DATA/facets`` at startup.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Callable

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
    if Path(f"{dest}-wal").exists():   # the last close checkpoints and deletes it
        raise OSError(errno.EIO, "the copy's WAL was not checkpointed", f"{dest}-wal")
    fsync_file(dest)
    return dest.stat().st_size


def publish(temp: Path, final: Path) -> None:
    """Give the complete file ``temp`` the name ``final``, atomically and never over an
    existing file (``FileExistsError``), then make the new name durable."""
    try:
        os.link(temp, final)   # fails if `final` exists: nothing is ever overwritten
    except FileExistsError:
        raise
    except OSError:   # a file system without hard links: check, then rename
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
