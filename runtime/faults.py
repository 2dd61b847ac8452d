"""Classifying failed file and database operations by error number or SQLite result code,
never by message text. Every module that turns an ``OSError`` or ``sqlite3.Error`` into an
``ErrorCode`` asks here."""

from __future__ import annotations

import errno
import sqlite3

from .errors import ErrorCode

# Primary result codes (the low byte of an extended code), see https://sqlite.org/rescode.html.
SQLITE_NOMEM, SQLITE_READONLY, SQLITE_INTERRUPT, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN = 7, 8, 9, 11, 13, 14
SQLITE_TOOBIG, SQLITE_AUTH, SQLITE_NOTADB = 18, 23, 26

#: How a failed statement maps to a code, by SQLite's primary result code.
_CODE_BY_SQLITE = {
    SQLITE_FULL: ErrorCode.STORAGE_FULL,
    SQLITE_INTERRUPT: ErrorCode.TIMEOUT,
    SQLITE_AUTH: ErrorCode.NOT_AUTHORIZED,
    SQLITE_TOOBIG: ErrorCode.TOO_BIG,  # also a host-side guard raising OverflowError
    SQLITE_NOMEM: ErrorCode.TOO_BIG,
}


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc`` (``sqlite_errorcode`` & 0xff), or None when the
    error did not come from SQLite (e.g. Python's "one statement at a time")."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def failure_code(exc: BaseException, default: ErrorCode = ErrorCode.INTERNAL) -> ErrorCode:
    """The error code of a failed database or file operation: SQLITE_FULL, ENOSPC and EDQUOT
    are ``storage_full``, SQLITE_INTERRUPT the deadline, SQLITE_AUTH the sandbox,
    SQLITE_TOOBIG/NOMEM a limit; anything else is ``default``."""
    if isinstance(exc, OSError) and not isinstance(exc, sqlite3.Error):
        return ErrorCode.STORAGE_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else default
    code = sqlite_code(exc)
    return default if code is None else _CODE_BY_SQLITE.get(code, default)


def out_of_descriptors(exc: BaseException) -> bool:
    """Whether opening a database failed for want of file descriptors. SQLite reports
    EMFILE as SQLITE_CANTOPEN without the errno, so CANTOPEN counts: closing a few idle
    databases and retrying once is cheap when it was something else."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return isinstance(exc, sqlite3.Error) and sqlite_code(exc) == SQLITE_CANTOPEN
