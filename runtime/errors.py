"""Stable error codes and the exception hierarchy of the runtime.

Every interface (Python API, CLI, console, the ``sql`` host call) reports
failures with one of the codes below. They are part of the public contract:
never rename one, only add.

Exceptions raised by the Python API::

    FacetsError                 base class; carries ``.code`` and a message
    ├── BadRequest              bad_request: malformed name, body, argument
    ├── NotFound                not_found: no such app or facet
    ├── BadModule               bad_module: not wasm, or breaks the facet ABI
    │   ├── BuildFailed         a JS/TS/Python source did not build (``.file``, ``.line``)
    │   └── ToolchainMissing    the toolchain for that language is not installed
    ├── QuotaError              bad_quota: a quota value or key was refused
    └── DataDirBusy             refused: another process owns the data directory
                                (``runtime.owner``; ``.owner`` says who)

A failed *request* never raises: ``Supervisor.call`` returns a
``CallResult`` whose ``.error`` is one of the codes.

Which interface emits which code::

    Supervisor.call / CallResult.error   the request outcomes: fuel_exhausted ... internal
                                         backoff, quarantined: refused by supervision after
                                         repeated faults (``runtime.supervision``)
    Supervisor.fetch                     the same, and too_big (a body over max_body); each
                                         maps to one HTTP status (``runtime.http.status_for``)
    the ``sql`` host call (to the guest) sql_error, not_authorized, too_big
    the Python API (FacetsError.code)    bad_request, not_found, bad_module, bad_quota, internal,
                                         and a policy's refusal code (facet_limit ...)
    the command language (CLI, scripts,  every code above that the runtime reports, plus:
    the console's ``:`` bar)               usage    the line cannot be understood (quoting,
                                                    unknown command, wrong arguments, a
                                                    NUL byte, a line over 1 MiB); exit status 2
                                           refused  a destructive command without ``--yes``,
                                                    or a write under ``--readonly``
                                           io_error the operating system or SQLite failed
                                                    reading or writing a file (OSError,
                                                    sqlite3.Error); classified by type
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .owner import OwnerInfo


class ErrorCode(StrEnum):
    """Stable error codes; the string value is what every interface shows."""

    # Sandbox and request outcome
    FUEL_EXHAUSTED = "fuel_exhausted"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    STACK_OVERFLOW = "stack_overflow"
    TRAP = "trap"
    STORAGE_FULL = "storage_full"
    BAD_RESPONSE = "bad_response"
    BAD_REQUEST = "bad_request"
    BAD_MODULE = "bad_module"
    NOT_FOUND = "not_found"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "rate_limited"
    FACET_LIMIT = "facet_limit"
    BAD_QUOTA = "bad_quota"
    INTERNAL = "internal"
    # Supervision (runtime.supervision): refused at once, nothing instantiated
    BACKOFF = "backoff"
    QUARANTINED = "quarantined"
    # Codes of the `sql` host call
    SQL_ERROR = "sql_error"
    NOT_AUTHORIZED = "not_authorized"
    TOO_BIG = "too_big"
    # Codes of the command language (CLI, scripts, the console's `:` bar)
    USAGE = "usage"
    REFUSED = "refused"
    IO_ERROR = "io_error"


class FacetsError(Exception):
    """Base class of every error the runtime raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadRequest(FacetsError):
    code = ErrorCode.BAD_REQUEST


class NotFound(FacetsError):
    code = ErrorCode.NOT_FOUND


class BadModule(FacetsError):
    code = ErrorCode.BAD_MODULE


class BuildFailed(BadModule):
    """A guest toolchain refused the source (``runtime.toolchain``): a syntax error, a
    missing import. ``file`` and ``line`` locate it when the toolchain said where (the
    path as the operator gave it, 1-based line); ``output`` is the toolchain's own text,
    neutralised and cut."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.output = output


class ToolchainMissing(BadModule):
    """The toolchain a source file needs is not installed (``make install`` installs both)."""


class QuotaError(FacetsError):
    code = ErrorCode.BAD_QUOTA


class DataDirBusy(FacetsError):
    """Another process holds the data directory's owner lock (``runtime.owner``)."""

    code = ErrorCode.REFUSED
    #: Who holds it, as its ``owner.json`` says (None when it has not said yet).
    owner: OwnerInfo | None = None
