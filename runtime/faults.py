"""Classifying failed file and database operations by error number, never by message."""

from __future__ import annotations

import errno
import sqlite3

from .errors import ErrorCode

#: Primary SQLite result codes (the low byte of ``sqlite_errorcode``).
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14


def _primary(exc: sqlite3.Error) -> int:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def fault_code(exc: BaseException) -> ErrorCode:
    """A full disk (or file-system quota) is ``storage_full``; anything else ``internal``."""
    if isinstance(exc, sqlite3.Error):
        if _primary(exc) == SQLITE_FULL:
            return ErrorCode.STORAGE_FULL
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ErrorCode.STORAGE_FULL
    return ErrorCode.INTERNAL


def out_of_descriptors(exc: BaseException) -> bool:
    """Whether opening a database failed for want of file descriptors. SQLite reports
    EMFILE as SQLITE_CANTOPEN without the errno, so CANTOPEN counts: closing a few idle
    databases and retrying once is cheap when it was something else."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return isinstance(exc, sqlite3.Error) and _primary(exc) == SQLITE_CANTOPEN
