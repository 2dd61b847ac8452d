"""A facet's private SQLite database: the guarded write path and read-only browsing.

``FacetDB`` owns the facet's one read-write connection. The platform owns
transactions (one per request, ``BEGIN IMMEDIATE`` .. ``COMMIT``); guest SQL
runs inside them under an authorizer, SQLite limits, a page-count cap for the
storage quota, a progress handler that enforces the request deadline and a
bound on temporary memory, and replacements for the built-in functions whose
one call could outlast the deadline. ``rows_read`` comes from SQLite's
statement counters (rows visited, see ``execute_guest``).

``FacetReader`` is a separate read-only connection (``mode=ro``) through
sqlite-utils, so an operator browses a facet while it serves (WAL lets readers
and the writer run side by side).
"""

from __future__ import annotations

import base64
import ctypes
import functools
import gc
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from .errors import BadRequest, ErrorCode, FacetsError, NotFound
from .faults import SQLITE_INTERRUPT, SQLITE_READONLY, SQLITE_TOOBIG, failure_code, sqlite_code

#: Statements the platform runs carry this comment, so a guest can never send a
#: byte-identical string and reuse a prepared statement that was authorized
#: outside guest mode (SQLite authorizes at prepare time; Python caches statements).
_NONCE = f"/* facets:{secrets.token_hex(8)} */"

_BEGIN, _COMMIT, _ROLLBACK = (f"{verb} {_NONCE}" for verb in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"))
#: One request of a commit group runs between these (see ``FacetDB.savepoint``).
_SAVEPOINT, _RELEASE, _ROLLBACK_TO = (
    f"{verb} facets_request {_NONCE}" for verb in ("SAVEPOINT", "RELEASE", "ROLLBACK TO")
)

RESERVED_PREFIX = "_facets"

#: PRAGMAs a guest may run, read-only: those that take a table/index name argument...
_PRAGMAS_WITH_ARG = frozenset(
    {
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "table_list",
    }
)
#: ...and those only read without an argument (``PRAGMA user_version`` yes, ``= 3`` no).
_PRAGMAS_READ_ONLY = (
    frozenset(
        {
            "user_version",
            "schema_version",
            "application_id",
            "page_count",
            "page_size",
            "freelist_count",
            "data_version",
            "encoding",
            "max_page_count",
            "foreign_keys",
        }
    )
    | _PRAGMAS_WITH_ARG
)
_REFUSED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
_ALLOWED_VTABLE_MODULES = frozenset({"fts5", "rtree"})
#: Eponymous virtual tables a guest may not read: ``sqlite_stmt`` lists the connection's
#: prepared statements (the platform's among them, with their marker), ``dbstat`` /
#: ``sqlite_dbpage`` / ``sqlite_dbdata`` expose raw pages. (``json_each``/``json_tree``
#: stay; ``pragma_*`` functions are checked as the PRAGMA they run, see ``_authorize``.)
_REFUSED_TABLES = frozenset({"sqlite_stmt", "dbstat", "sqlite_dbpage", "sqlite_dbdata", "sqlite_dbptr"})

#: SQLite limits applied to every facet connection.
GUEST_LIMITS = {
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_LENGTH: 4 * 1024 * 1024,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 999,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 10,
    # LIKE/GLOB cost up to (text bytes x pattern bytes) inside one VM instruction, where the
    # deadline is never checked: '%000...01' over 4 MiB of '0's took > 300 s with SQLite's
    # default 50,000-byte pattern limit, ~0.3 s with 50 bytes (measured on this machine).
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 50,
}

#: Page cache per facet connection, in KiB (allocated lazily, see FacetDB.__init__).
CACHE_KIB = 2048

#: How many SQLite VM instructions between two progress-handler calls (the deadline's
#: resolution). Without statement counters (no ctypes), ``rows_read`` falls back to
#: rows returned plus one per call.
VM_STEP = 100

_DENY = sqlite3.SQLITE_DENY
_OK = sqlite3.SQLITE_OK

_SQLITE_DONE = 101


_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006


#: Memory a guest statement may add while it runs (its sorts' and temporary b-trees' data, in
#: memory with ``temp_store=MEMORY``), as growth of the resident size from its first progress
#: call (100 VM steps), checked every 8 calls (800 VM steps).
TEMP_MEMORY = 64 * 1024 * 1024


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: (pid, fd) of this process's open ``/proc/self/statm``; reopened in a forked child, where
#: the inherited descriptor would still describe the parent.
_statm: tuple[int, int] | None = None


def _resident_bytes() -> int:
    """Resident bytes of the process (``/proc/self/statm``), ~1.7 us, or 0 where there is
    no procfs (then temp memory is bounded by the deadline only).

    What the temp-memory bound compares is the growth while one statement runs. SQLite's own
    accounting (``sqlite3_memory_used``) is compiled off in this build (it reads 0), and so
    is its heap limit. glibc's ``mallinfo2`` was tried first: it walks every free chunk, and
    with a fragmented heap (a supervisor that has served thousands of facets) one call took
    35 ms, which turned a 1,000,000-row INSERT from 1 s into 45 s. The resident size costs
    the same whatever the heap looks like. It counts every thread, so a statement running
    beside another growing one is stopped sooner: the bound errs on the safe side."""
    global _statm
    pid = os.getpid()
    if _statm is None or _statm[0] != pid:
        try:
            _statm = (pid, os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            return 0
    try:
        return int(os.pread(_statm[1], 128, 0).split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


#: ``sqlite3_trace_v2`` callback type and event mask (SQLITE_TRACE_PROFILE: once per run of a
#: statement, when it finishes or is reset, with the ``sqlite3_stmt*``).
_TRACE_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_SQLITE_TRACE_PROFILE = 0x02

#: ``sqlite3_stmt_status`` counters that count rows visited: 1 is SQLITE_STMTSTATUS_FULLSCAN_STEP
#: (steps of full table/index scans), 3 SQLITE_STMTSTATUS_AUTOINDEX (rows put into an automatic
#: index), and 0 the slot every other ``OP_Next``/``OP_Prev``/``OP_SorterNext`` step lands in
#: (``p->aCounter[pOp->p5]++`` with p5 = 0: index range scans, sorted and materialized
#: results). Slot 0 is not documented but it is a plain read of ``aCounter[0]`` that every
#: SQLite build allows (even with SQLITE_ENABLE_API_ARMOR, which rejects only op < 0 or > 8);
#: the tests pin down that an index range scan of 100 rows counts ~100.
_STEP_COUNTERS = (1, 0, 3)

#: Rows visited by the statement that last finished on a connection, by ``sqlite3*`` handle
#: (-1: none since they were taken); written by ``_on_statement_end``. Plain ints in one
#: module dict: no object per facet for the garbage collector.
_last_steps: dict[int, int] = {}
#: The platform's own prepared statements (``FacetDB._platform``), whose counters nobody reads.
_platform_statements: set[int] = set()


@functools.lru_cache(maxsize=1)
def _sqlite_library() -> ctypes.CDLL | None:
    try:
        import _sqlite3

        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sqlite3_trace_v2.restype = ctypes.c_int
        lib.sqlite3_trace_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint, _TRACE_CALLBACK, ctypes.c_void_p]
        lib.sqlite3_prepare_v2.restype = ctypes.c_int
        lib.sqlite3_prepare_v2.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_void_p,
        ]
        for name in ("sqlite3_step", "sqlite3_reset", "sqlite3_finalize", "sqlite3_close"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.sqlite3_extended_errcode.restype = ctypes.c_int
        lib.sqlite3_extended_errcode.argtypes = [ctypes.c_void_p]
        lib.sqlite3_errmsg.restype = ctypes.c_char_p
        lib.sqlite3_errmsg.argtypes = [ctypes.c_void_p]
        lib.sqlite3_db_config.restype = ctypes.c_int
        return lib
    except (ImportError, OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def _stmt_status() -> Any:
    """``sqlite3_stmt_status`` called without releasing the GIL (``PyDLL``): it only reads a
    counter, and the GIL round trip would double its ~0.15 us."""
    try:
        import _sqlite3

        status = ctypes.PyDLL(_sqlite3.__file__).sqlite3_stmt_status
        status.restype = ctypes.c_int
        status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        return status
    except (ImportError, OSError, AttributeError):
        return None


def _db_handle(conn: sqlite3.Connection, path: str) -> int | None:
    """The ``sqlite3*`` handle of ``conn``, read from CPython's connection object (its first
    field) and returned only if SQLite confirms it is this very database; else None."""
    lib = _sqlite_library()
    if lib is None:
        return None
    try:
        handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
        name = lib.sqlite3_db_filename(handle, b"main") if handle else None
        if not name or os.path.realpath(os.fsdecode(name)) != os.path.realpath(path):
            return None
        return handle
    except (ValueError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def _platform_calls() -> tuple[Any, Any]:
    """``sqlite3_step`` and ``sqlite3_reset`` for the platform's statements, called with a
    ``c_void_p`` and no argtypes (no conversion: begin+commit 6.5 -> 5.9 us, measured). Step
    releases the GIL (a COMMIT syncs, a BEGIN IMMEDIATE may wait for the lock); reset does
    not: the statement has always halted by then, and resetting a halted statement does no I/O."""
    import _sqlite3

    return ctypes.CDLL(_sqlite3.__file__).sqlite3_step, ctypes.PyDLL(_sqlite3.__file__).sqlite3_reset


def skip_checkpoint_on_close(conn: sqlite3.Connection, path: str) -> bool:
    """Ask SQLite not to checkpoint the WAL when ``conn`` closes (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE).

    Closing the last connection of a WAL database otherwise checkpoints it and syncs twice,
    which makes closing an idle facet's database cost milliseconds. Python's sqlite3 has no
    API for this option, so the ``sqlite3*`` handle is read from CPython's connection object
    (see ``_db_handle``). Returns whether the option is set; when it is not, closing is just slower.
    """
    handle = _db_handle(conn, path)
    if handle is None:
        return False
    lib = _sqlite_library()
    assert lib is not None
    return (
        lib.sqlite3_db_config(
            ctypes.c_void_p(handle), _SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, ctypes.c_int(1), ctypes.c_void_p(0)
        )
        == 0
    )


def _on_statement_end(kind: int, db: int | None, stmt: int | None, elapsed: int | None) -> int:
    """SQLITE_TRACE_PROFILE callback, once per run of a statement when it finishes or is reset:
    record the rows it visited and zero its counters (a cached statement's counters otherwise
    add up over its runs). Read here, where the statement is certainly alive; remembering the
    pointer to read it later would save ~1 us but could read a finalized statement. The
    fallback: used only where ``_statement_cache`` cannot confirm CPython's layout (a C-to-Python
    call per statement end, platform statements included, ~1 us more per statement)."""
    if db and stmt and stmt not in _platform_statements:
        status = _stmt_status()
        _last_steps[db] = status(stmt, 1, 1) + status(stmt, 0, 1) + status(stmt, 3, 1)
    return 0


def _take_steps(handle: int) -> int | None:
    """Rows visited by the statement that last finished on ``handle``; None if none finished
    since the last call."""
    steps = _last_steps.get(handle, -1)
    _last_steps[handle] = -1
    return None if steps < 0 else steps


_ON_STATEMENT_END = _TRACE_CALLBACK(_on_statement_end)  # module-level: lives as long as C uses it

_POINTER_AT = ctypes.c_void_p.from_address


def _take_counters(counters: Any) -> int | None:
    """Rows visited by the statement whose ``st`` field ``counters`` views (see ``_STEP_COUNTERS``),
    zeroing them (a cached statement's counters otherwise add up over its runs); None if it has
    no ``sqlite3_stmt``. Its Python statement must be held by the caller."""
    if not counters.value:
        return None
    status = _counter_reader()
    return status(counters, 1, 1) + status(counters, 0, 1) + status(counters, 3, 1)


#: Offset of ``sqlite3_stmt *st`` in CPython's ``pysqlite_Statement`` (the first field after
#: the object header); confirmed by ``_statement_cache`` before it is ever used.
_ST_OFFSET = object.__basicsize__
_SQLITE_STMTSTATUS_RUN = 6


@functools.lru_cache(maxsize=1)
def _counter_reader() -> Any:
    """``sqlite3_stmt_status`` through ``PyDLL`` and without argtypes: called with a ``c_void_p``
    and two small ints it needs no conversion, ~0.27 us a call against ~0.45 us with argtypes
    (measured, 200,000 calls)."""
    try:
        import _sqlite3

        return ctypes.PyDLL(_sqlite3.__file__).sqlite3_stmt_status
    except (ImportError, OSError, AttributeError):
        return None


def _statement_cache(cursor: sqlite3.Cursor, handle: int, probe_sql: str) -> Any:
    """The connection's statement cache (CPython's ``functools.lru_cache`` over the connection,
    which ``Cursor.execute`` asks for every statement), or None if this interpreter's objects
    are not laid out as checked here.

    ``execute_guest`` asks it for the guest's statement itself, right before ``execute`` asks
    the same (a hit: the very object execute then runs) and holds the object while it reads its
    counters, so the ``sqlite3_stmt`` cannot be finalized under the reads. This replaces the
    trace callback (a C-to-Python call per statement end, ~1.5 us, platform statements too).
    Found without reading memory (``gc.get_referents``), and its statement's ``st`` pointer is
    trusted only after SQLite confirms it: one of this connection's statements
    (``sqlite3_next_stmt``), with the probe's text, and run once by ``Cursor.execute``."""
    lib = _sqlite_library()
    status = _counter_reader()
    if lib is None or status is None or sqlite3.sqlite_version_info < (3, 20, 0):  # no RUN counter
        return None
    conn = cursor.connection
    try:
        lib.sqlite3_next_stmt.restype = ctypes.c_void_p
        lib.sqlite3_next_stmt.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.sqlite3_sql.restype = ctypes.c_char_p
        lib.sqlite3_sql.argtypes = [ctypes.c_void_p]
        caches = [
            o
            for o in gc.get_referents(conn)
            if type(o) is functools._lru_cache_wrapper and getattr(o, "__wrapped__", None) is conn
        ]
        if len(caches) != 1:
            return None
        cache = caches[0]
        statement = cache(probe_sql)
        kind = type(statement)
        if kind.__name__ != "Statement" or kind.__basicsize__ < _ST_OFFSET + ctypes.sizeof(ctypes.c_void_p):
            return None
        st = ctypes.c_void_p.from_address(id(statement) + _ST_OFFSET).value
        known, count = lib.sqlite3_next_stmt(handle, None), 0
        while known and known != st and count < 10_000:
            known, count = lib.sqlite3_next_stmt(handle, known), count + 1
        if not st or known != st or lib.sqlite3_sql(st) != probe_sql.encode():
            return None
        pointer = ctypes.c_void_p(st)
        status(pointer, _SQLITE_STMTSTATUS_RUN, 1)
        cursor.execute(probe_sql).fetchall()
        if status(pointer, _SQLITE_STMTSTATUS_RUN, 1) != 1:  # execute ran another statement
            return None
        return cache
    except (AttributeError, TypeError, ValueError, sqlite3.Error):
        return None


class PlatformSqlError(sqlite3.OperationalError):
    """A platform statement run with ``sqlite3_exec`` failed; carries ``sqlite_errorcode``
    like the errors of Python's sqlite3 module."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.sqlite_errorcode = code
        self.sqlite_errorname = ""  # Python's own errors name it; the code is what counts


# -- built-in functions whose one call could outlast any deadline ------------------------------
#
# The deadline is checked between VM instructions, never inside one, so a single function call
# must be bounded by itself. Measured worst cases, one call each, with 4 MiB values:
# printf('%.*c', 2000000000, 'x') 10.8 s (SQLite keeps looping after the result hit the length
# limit), instr(4 MiB of '0', 40 KB of '0' || '1') 7.2 s, trim(4 MiB, a 50,000-character set) and
# replace() with a 40 KB pattern > 15 s (text bytes x pattern bytes). These are replaced, on guest
# connections, by functions with the same semantics: instr and replace run Python's linear-time
# search on the exact bytes SQLite hands over; printf/format answer NULL (what SQLite answers,
# eventually) when the widths and precisions alone exceed the length limit, and otherwise run
# the real built-in on a private in-memory connection; trim/ltrim/rtrim with a character set run
# the built-in when text x set is at most TRIM_BUDGET bytes, else fail too_big. After this the
# worst single call measured is ~0.3 s (LIKE at the 50-byte pattern limit); all four payloads
# above fail or answer in under 50 ms. Registered SQLITE_INNOCUOUS, as the built-ins are, so
# views, triggers and CHECK constraints can still use them with trusted_schema=OFF.

_SQLITE_UTF8, _SQLITE_DETERMINISTIC, _SQLITE_INNOCUOUS = 1, 0x800, 0x200000
_SQLITE_INTEGER, _SQLITE_BLOB, _SQLITE_NULL = 1, 4, 5
_SQLITE_TRANSIENT = ctypes.c_void_p(-1)
_XFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p))
#: Bytes of text times bytes of character set a trim may compare (~50 ms).
TRIM_BUDGET = 1 << 26
_CONTINUATION = bytes(range(0x80, 0xC0))
#: One printf conversion: flags, width, precision, length modifier, conversion character.
_PRINTF_SPEC = re.compile(rb"%([-+ #!0,]*)(\*|[0-9]+)?(?:\.(\*|[0-9]*))?(l{0,2})(.|$)", re.S)
#: Conversions whose precision is a maximum, not a minimum, of what they print.
_PRECISION_IS_MAXIMUM = frozenset(b"sSzqQw")


@functools.lru_cache(maxsize=1)
def _value_api() -> Any:
    """SQLite's value/result/statement functions for the guarded built-ins, through ``PyDLL``
    (the callbacks hold the GIL; these calls are short) except ``step`` (it runs the builtin)."""
    lib = _sqlite_library()
    if lib is None:
        return None
    try:
        import _sqlite3

        api = ctypes.PyDLL(_sqlite3.__file__)
        vp, ci, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        for name, res, args in (
            ("sqlite3_value_type", ci, [vp]),
            ("sqlite3_value_bytes", ci, [vp]),
            ("sqlite3_value_text", vp, [vp]),
            ("sqlite3_value_blob", vp, [vp]),
            ("sqlite3_value_int64", i64, [vp]),
            ("sqlite3_result_null", None, [vp]),
            ("sqlite3_result_int64", None, [vp, i64]),
            ("sqlite3_result_text", None, [vp, ctypes.c_char_p, ci, vp]),
            ("sqlite3_result_value", None, [vp, vp]),
            ("sqlite3_result_error_toobig", None, [vp]),
            ("sqlite3_result_error", None, [vp, ctypes.c_char_p, ci]),
            ("sqlite3_result_error_code", None, [vp, ci]),
            ("sqlite3_bind_value", ci, [vp, ci, vp]),
            ("sqlite3_column_value", vp, [vp, ci]),
            ("sqlite3_reset", ci, [vp]),
            ("sqlite3_clear_bindings", ci, [vp]),
            ("sqlite3_prepare_v2", ci, [vp, ctypes.c_char_p, ci, ctypes.POINTER(vp), vp]),
            ("sqlite3_open_v2", ci, [ctypes.c_char_p, ctypes.POINTER(vp), ci, vp]),
            ("sqlite3_limit", ci, [vp, ci, ci]),
            ("sqlite3_errmsg", ctypes.c_char_p, [vp]),
            ("sqlite3_create_function_v2", ci, [vp, ctypes.c_char_p, ci, ci, vp, _XFUNC, vp, vp, vp]),
        ):
            function = getattr(api, name)
            function.restype = res
            function.argtypes = args
        return api
    except (ImportError, OSError, AttributeError):
        return None


class _Helper:
    """A thread's private in-memory connection that runs the real built-ins; closed with the
    thread (its ``threading.local`` goes, and with it this object)."""

    def __init__(self, db: int) -> None:
        self.db = db
        self.statements: dict[tuple[str, int], int] = {}

    def __del__(self) -> None:
        lib = _sqlite_library()
        if lib is not None:
            for stmt in self.statements.values():
                lib.sqlite3_finalize(stmt)
            lib.sqlite3_close(ctypes.c_void_p(self.db))


_helpers = threading.local()


def _builtin(ctx: int, name: str, argc: int, argv: Any) -> None:
    """Answer ``ctx`` with the real built-in ``name`` applied to ``argv``: run on this thread's
    private in-memory connection (same limits), values passed through unchanged."""
    api = _value_api()
    lib = _sqlite_library()
    assert lib is not None  # the guarded functions are registered only when it loaded
    helper: _Helper | None = getattr(_helpers, "helper", None)
    if helper is None:
        out = ctypes.c_void_p()
        if api.sqlite3_open_v2(b":memory:", ctypes.byref(out), 0x02 | 0x04, None) != 0:
            api.sqlite3_result_error(ctx, b"cannot open the function helper", -1)
            return
        helper = _helpers.helper = _Helper(out.value or 0)
        for limit, value in GUEST_LIMITS.items():
            api.sqlite3_limit(helper.db, limit, value)
    db = helper.db
    statements = helper.statements
    stmt = statements.get((name, argc))
    if stmt is None:
        out = ctypes.c_void_p()
        sql = f"SELECT {name}({', '.join('?' * argc)})".encode()
        if api.sqlite3_prepare_v2(db, sql, -1, ctypes.byref(out), None) != 0:
            api.sqlite3_result_error(ctx, api.sqlite3_errmsg(db), -1)
            return
        stmt = statements[(name, argc)] = out.value or 0
    for i in range(argc):
        api.sqlite3_bind_value(stmt, i + 1, argv[i])
    if lib.sqlite3_step(stmt) == 100:  # SQLITE_ROW
        api.sqlite3_result_value(ctx, api.sqlite3_column_value(stmt, 0))
        api.sqlite3_reset(stmt)
    else:
        code = api.sqlite3_reset(stmt)
        api.sqlite3_result_error(ctx, api.sqlite3_errmsg(db), -1)
        api.sqlite3_result_error_code(ctx, code)
    api.sqlite3_clear_bindings(stmt)


def _value_bytes(api: Any, value: int, blob: bool) -> bytes:
    pointer = api.sqlite3_value_blob(value) if blob else api.sqlite3_value_text(value)
    size = api.sqlite3_value_bytes(value)
    return ctypes.string_at(pointer, size) if pointer and size else b""


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _printf_too_long(api: Any, argc: int, argv: Any) -> bool:
    """Whether the widths and precisions of printf's format alone exceed the length limit (the
    answer is then NULL); mirrors SQLite's parsing (``sqlite3_str_vappendf``)."""
    if argc < 1 or api.sqlite3_value_type(argv[0]) == _SQLITE_NULL:
        return False
    limit = GUEST_LIMITS[sqlite3.SQLITE_LIMIT_LENGTH]
    arg, total = 1, 0

    def next_int() -> int:
        nonlocal arg
        if arg >= argc:
            return 0
        arg += 1
        return _int32(api.sqlite3_value_int64(argv[arg - 1]))

    for match in _PRINTF_SPEC.finditer(_value_bytes(api, argv[0], False)):
        width_text, precision_text, conversion = match.group(2), match.group(3), match.group(5)
        if conversion == b"%":
            continue
        width = precision = 0
        if width_text == b"*":
            width = abs(next_int())
        elif width_text:
            width = int(width_text) % (1 << 32) & 0x7FFFFFFF
        if precision_text == b"*":
            precision = abs(next_int())
        elif precision_text:
            precision = int(precision_text) % (1 << 32) & 0x7FFFFFFF
        if conversion and conversion[0] in _PRECISION_IS_MAXIMUM:
            precision = 0
        arg += 1
        total += max(width, precision)
        if total > limit:
            return True
    return False


def _guarded_printf(name: str) -> Any:
    def call(ctx: int, argc: int, argv: Any) -> None:
        api = _value_api()
        if _printf_too_long(api, argc, argv):
            api.sqlite3_result_null(ctx)
        else:
            _builtin(ctx, name, argc, argv)

    return _XFUNC(call)


def _guarded_instr(ctx: int, argc: int, argv: Any) -> None:
    api = _value_api()
    kinds = [api.sqlite3_value_type(argv[0]), api.sqlite3_value_type(argv[1])]
    if _SQLITE_NULL in kinds:
        api.sqlite3_result_null(ctx)
        return
    blobs = kinds == [_SQLITE_BLOB, _SQLITE_BLOB]
    if not blobs and _SQLITE_BLOB in kinds:
        _builtin(ctx, "instr", argc, argv)  # mixed: SQLite converts copies, not argv
        return
    haystack = _value_bytes(api, argv[0], blobs)
    needle = _value_bytes(api, argv[1], blobs)
    if not blobs and needle and needle[0] in _CONTINUATION:
        _builtin(ctx, "instr", argc, argv)  # SQLite only tries character starts
        return
    position = haystack.find(needle)
    if position < 0:
        found = 0
    elif blobs:
        found = position + 1
    else:  # SQLite counts characters: 1 + the character starts after the first, up to the match
        found = 1 + len(haystack[1 : position + 1].translate(None, _CONTINUATION))
    api.sqlite3_result_int64(ctx, found)


def _guarded_replace(ctx: int, argc: int, argv: Any) -> None:
    api = _value_api()
    if any(api.sqlite3_value_type(argv[i]) == _SQLITE_NULL for i in range(3)):
        api.sqlite3_result_null(ctx)
        return
    text = _value_bytes(api, argv[0], False)
    pattern = _value_bytes(api, argv[1], False)
    if not pattern or pattern[0] == 0:  # SQLite stops at a leading NUL: an empty pattern
        api.sqlite3_result_value(ctx, argv[0])  # answered as it came, type and all
        return
    replacement = _value_bytes(api, argv[2], False)
    size = len(text) + text.count(pattern) * (len(replacement) - len(pattern))
    if size > GUEST_LIMITS[sqlite3.SQLITE_LIMIT_LENGTH]:
        api.sqlite3_result_error_toobig(ctx)
        return
    out = text.replace(pattern, replacement)
    api.sqlite3_result_text(ctx, out, len(out), _SQLITE_TRANSIENT)


def _guarded_trim(name: str) -> Any:
    def call(ctx: int, argc: int, argv: Any) -> None:
        api = _value_api()
        cost = api.sqlite3_value_bytes(argv[0]) * api.sqlite3_value_bytes(argv[1])
        if cost > TRIM_BUDGET:
            api.sqlite3_result_error(ctx, f"{name}(): text x character set over {TRIM_BUDGET} bytes".encode(), -1)
            api.sqlite3_result_error_code(ctx, SQLITE_TOOBIG)
        else:
            _builtin(ctx, name, argc, argv)

    return _XFUNC(call)


#: (name, number of arguments, implementation); module-level: they live as long as C uses them.
_GUARDED = [
    ("printf", -1, _guarded_printf("printf")),
    ("format", -1, _guarded_printf("format")),
    ("instr", 2, _XFUNC(_guarded_instr)),
    ("replace", 3, _XFUNC(_guarded_replace)),
] + [(name, 2, _guarded_trim(name)) for name in ("trim", "ltrim", "rtrim")]


def _guard_builtins(handle: int) -> bool:
    """Replace the unbounded built-ins on connection ``handle``; False if any is not replaced."""
    api = _value_api()
    if api is None:
        return False
    flags = _SQLITE_UTF8 | _SQLITE_DETERMINISTIC | _SQLITE_INNOCUOUS
    return all(
        api.sqlite3_create_function_v2(handle, name.encode(), argc, flags, None, function, None, None, None) == 0
        for name, argc, function in _GUARDED
    )


#: Why a request fails after one of its statements rolled back the whole transaction.
TXN_LOST = (
    "no transaction: a statement rolled back the request's transaction "
    "(ON CONFLICT ROLLBACK or RAISE(ROLLBACK)), so the request fails"
)


class SqlFailure(Exception):
    """A guest statement failed; ``code`` is one of the ``sql`` host call's codes.

    ``fatal`` failures (storage full, the deadline, a lost transaction) are answered
    to the guest like the others but also end the request, whatever the guest does next.
    """

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        #: Rows the statement visited before it failed (a scan stopped at the deadline read
        #: them all the same), for the caller to meter.
        self.rows_read = 0


@dataclass(slots=True)
class StatementResult:
    columns: list[str]
    rows: list[list[Any]]
    rows_read: int
    rows_written: int
    last_insert_rowid: int


class FacetDB:
    """The facet's read-write connection. Used only under its facet's lock."""

    def __init__(
        self, path: str, *, durability: str = "full", storage_limit: int | None = None, checkpoints: bool = True
    ) -> None:
        if durability not in ("full", "process"):
            raise BadRequest(f"durability must be 'full' or 'process', not {durability!r}")
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
        conn = self._conn
        # Every statement goes through this one cursor. conn.execute() makes a cursor per
        # call, and the connection keeps a weak reference to each until it has made 200
        # more: with 1,000 busy facets that is ~200,000 long-lived objects, enough churn
        # to start a full garbage collection (~0.5 s with 10,000 warm facets) every few
        # seconds.
        self._cursor = cursor = conn.cursor()
        # A small cache first: SQLite preallocates ~20 pages (~90 KiB) for a page cache
        # created at the default size, the largest part of an idle facet's memory. Raised
        # again right after, the cache then grows only as pages are actually used.
        cursor.execute("PRAGMA cache_size=-16")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        cursor.execute("PRAGMA trusted_schema=OFF")
        if not checkpoints:  # the archive checkpoints, once it has copied the frames (runtime.archive)
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        # Sorts, GROUP BY, DISTINCT and materialized subqueries keep their temporary data in
        # memory, bounded per statement by TEMP_MEMORY (see _progress), instead of in temp
        # files outside the data directory and past every quota: an ORDER BY over 100 MB of
        # generated rows wrote 468 MB to /tmp under a 1 MiB storage quota.
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        for limit, value in GUEST_LIMITS.items():
            conn.setlimit(limit, value)
        self.page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
        #: Closing never checkpoints (and so never deletes the WAL): what the archive needs.
        self.keeps_wal_on_close = skip_checkpoint_on_close(conn, path)
        #: The ``sqlite3*`` handle when ctypes could confirm it (None: the fallbacks below).
        self._handle = handle = _db_handle(conn, path)
        #: The connection's statement cache when its statements' counters can be read directly
        #: (see ``_statement_cache``); None: the trace callback records them instead.
        self._cache: Any = None
        self._status = _counter_reader()
        if handle is not None:
            self._cache = _statement_cache(cursor, handle, f"SELECT 1 {_NONCE}")
        if handle is not None and self._cache is None:
            lib = _sqlite_library()
            assert lib is not None
            if (
                _stmt_status() is not None
                and lib.sqlite3_trace_v2(handle, _SQLITE_TRACE_PROFILE, _ON_STATEMENT_END, handle) == 0
            ):
                _last_steps[handle] = -1
            else:
                self._handle = None
        if handle is not None:
            _guard_builtins(handle)
        #: Told of each COMMIT (``runtime.archive.FacetArchive.committed``), if archived.
        self.tap: Any = None
        #: The platform's transaction statements, prepared by ``_platform``.
        self._statements: dict[str, ctypes.c_void_p] = {}
        #: Per SQL text: does it count a whole table with OP_Count (``SELECT count(*) FROM t``)?
        self._counts_table: dict[str, bool] | None = None
        self._guest = False
        self._denied = False
        self._heap_before = 0
        self.over_memory = False
        self._deadline = math.inf
        self._vm_calls = 0
        self.timed_out = False
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._progress, VM_STEP)
        if storage_limit is not None:
            self.set_storage_limit(storage_limit)

    # -- sandbox hooks -----------------------------------------------------
    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, dbname: str | None, source: str | None
    ) -> int:
        if not self._guest:
            return _OK
        if self._guest_verdict(action, arg1, arg2, dbname) == _OK:
            return _OK
        # Remembered so the failure is classified as not_authorized by this fact: SQLite
        # reports some denials (a function's) as plain SQLITE_ERROR, not SQLITE_AUTH.
        self._denied = True
        return _DENY

    @staticmethod
    def _guest_verdict(action: int, arg1: str | None, arg2: str | None, dbname: str | None) -> int:
        if action in (
            sqlite3.SQLITE_ATTACH,
            sqlite3.SQLITE_DETACH,
            sqlite3.SQLITE_TRANSACTION,
            sqlite3.SQLITE_SAVEPOINT,
        ):
            return _DENY
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _PRAGMAS_READ_ONLY and (arg2 is None or name in _PRAGMAS_WITH_ARG):
                return _OK
            return _DENY
        if action == sqlite3.SQLITE_FUNCTION:
            return _DENY if (arg2 or "").lower() in _REFUSED_FUNCTIONS else _OK
        if (
            action in (sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE)
            and (arg2 or "").lower() not in _ALLOWED_VTABLE_MODULES
        ):
            return _DENY
        if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in _REFUSED_TABLES:
            return _DENY
        if action in _TEMP_ACTIONS:
            return _DENY  # temp objects live outside the facet's file and its quota
        if dbname not in (None, "main"):
            return _DENY
        for ident in (arg1, arg2):
            if ident and ident.lower().startswith(RESERVED_PREFIX):
                return _DENY
        return _OK

    def _progress(self) -> int:
        calls = self._vm_calls = self._vm_calls + 1
        if time.monotonic() > self._deadline:
            self.timed_out = True
            return 1
        if self._guest:
            if self._heap_before < 0:  # the statement's first call: its baseline (~1.6 us,
                self._heap_before = _resident_bytes()  # paid only by statements this long)
            elif calls & 7 == 0 and _resident_bytes() - self._heap_before > TEMP_MEMORY:
                self.over_memory = True
                return 1
        return 0

    def set_storage_limit(self, limit_bytes: int) -> int:
        """Cap the database at ``limit_bytes`` (rounded down to pages); returns the cap in pages.

        SQLite never sets ``max_page_count`` below the current page count, so
        shrinking under the current size freezes growth at the current size.
        """
        pages = max(1, limit_bytes // self.page_size)
        return self._cursor.execute(f"PRAGMA max_page_count={int(pages)} {_NONCE}").fetchone()[0]

    def storage_bytes(self) -> int:
        return self._cursor.execute(f"PRAGMA page_count {_NONCE}").fetchone()[0] * self.page_size

    # -- transactions (platform only) ----------------------------------------
    def _platform(self, statement: str) -> None:
        """Run a transaction statement of the platform's.

        With the handle known it runs as a statement of our own, prepared once and never put
        into Python's statement cache: a guest string, however equal, is then always prepared
        under the guest authorizer, which refuses SQLITE_TRANSACTION and SQLITE_SAVEPOINT (from
        Python's cache it would get the platform's prepared statement: SQLite authorizes only
        at prepare time). Without the handle, the nonce'd text and the refusal of guest SQL
        containing the nonce stand in.
        """
        handle = self._handle
        if handle is None:
            self._cursor.execute(statement)
            return
        stmt = self._statements.get(statement)
        if stmt is None:
            lib = _sqlite_library()
            assert lib is not None
            out = ctypes.c_void_p()
            if lib.sqlite3_prepare_v2(handle, statement.encode(), -1, ctypes.byref(out), None) == 0 and out.value:
                stmt = self._statements[statement] = out
                _platform_statements.add(out.value)  # the profile callback skips them
        if stmt is not None:
            step, reset = _platform_calls()
            if step(stmt) == _SQLITE_DONE:
                reset(stmt)
                return
            reset(stmt)
        lib = _sqlite_library()
        assert lib is not None
        raise PlatformSqlError(
            (lib.sqlite3_errmsg(handle) or b"").decode(errors="replace"), lib.sqlite3_extended_errcode(handle)
        )

    def _arm(self, deadline: float) -> None:
        """Arm the request deadline once the transaction (or savepoint) is open: a deadline that
        fired inside BEGIN IMMEDIATE used to interrupt it after the transaction had started,
        leaving it open for every later request on the facet."""
        self._deadline = deadline
        self.timed_out = False

    def begin(self, deadline: float = math.inf) -> None:
        """Open the request's transaction; on failure no transaction is left open."""
        self._deadline = math.inf
        try:
            self._platform(_BEGIN)
        except BaseException:
            if self._conn.in_transaction:
                self._platform(_ROLLBACK)
            raise
        self._arm(deadline)

    def commit(self) -> None:
        self._deadline = math.inf
        self._platform(_COMMIT)
        if self.tap is not None:
            self.tap.committed(self)

    def checkpoint(self) -> tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(PASSIVE)``: (busy, frames in the WAL, frames copied into
        the database). Never waits for a reader; complete when the last two are equal."""
        busy, frames, copied = self._cursor.execute(f"PRAGMA wal_checkpoint(PASSIVE) {_NONCE}").fetchone()
        return int(busy), int(frames), int(copied)

    def query_platform(self, sql: str) -> list[tuple[Any, ...]]:
        """A read of the platform's own (outside any guest statement)."""
        return self._cursor.execute(f"{sql} {_NONCE}").fetchall()

    def rollback(self) -> None:
        self._deadline = math.inf
        if self._conn.in_transaction:
            self._platform(_ROLLBACK)

    def savepoint(self, deadline: float = math.inf) -> None:
        """Start one request inside the open transaction (a commit group, see ``FacetSlot``);
        on failure the transaction is as it was before."""
        self._deadline = math.inf
        self._platform(_SAVEPOINT)  # a failed SAVEPOINT leaves no savepoint behind
        self._arm(deadline)

    def release(self) -> None:
        """Keep the request's writes in the transaction; they are durable at its COMMIT."""
        self._deadline = math.inf
        self._platform(_RELEASE)

    def rollback_to(self) -> None:
        """Undo the request's writes, keeping the rest of the transaction."""
        self._deadline = math.inf
        if self._conn.in_transaction:
            self._platform(_ROLLBACK_TO)
            self._platform(_RELEASE)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    # -- guest SQL ------------------------------------------------------------
    def execute_guest(self, sql: str, params: list[Any], *, max_result_bytes: int) -> StatementResult:
        """Run one guest statement; raise ``SqlFailure`` with a stable code.

        Guest SQL only ever runs inside the platform's transaction. A statement can still
        end it: ``INSERT OR ROLLBACK``, a column declared ``ON CONFLICT ROLLBACK`` or a
        trigger's ``RAISE(ROLLBACK)`` roll back everything when they fire. Afterwards
        SQLite would run the next statement in autocommit mode, written at once and beyond
        the platform's reach, so that is refused and the request must fail (``TXN_LOST``).

        ``rows_read`` is the rows the statement visited: the steps of its table and index
        cursors (full scans, index ranges, automatic indexes, sorter and temporary results)
        from ``sqlite3_stmt_status``, the table's row count for an ``OP_Count``
        (``SELECT count(*) FROM t``), and never less than the rows returned (a key lookup
        visits 1 without a step). Not counted: rows a recursive CTE generates, the inner
        primary-key lookups of a join, virtual-table rows beyond those returned.
        """
        conn = self._conn
        if not conn.in_transaction:
            raise SqlFailure(ErrorCode.SQL_ERROR, TXN_LOST, fatal=True)
        if _NONCE in sql:
            # The platform's own statement texts: never let a guest string be one of them (or
            # hit one in Python's statement cache, which SQLite's authorizer never sees).
            raise SqlFailure(ErrorCode.NOT_AUTHORIZED, "not authorized")
        changes_before = conn.total_changes
        vm_before = self._vm_calls
        cache = self._cache
        handle = None if cache is not None else self._handle
        if handle is not None:
            _last_steps[handle] = -1
        cursor = self._cursor
        statement: Any = None  # held: its sqlite3_stmt lives at least until its counters are read
        counters: Any = None
        self._denied = False
        self.over_memory = False
        self._heap_before = -1
        self._guest = True
        try:
            if cache is not None:
                # The statement execute is about to take from the cache (prepared here if it is
                # not there yet, in guest mode, exactly as execute would); see _statement_cache.
                statement = cache(sql)
                counters = _POINTER_AT(id(statement) + _ST_OFFSET)
            cursor.execute(sql, params)
            description = cursor.description
            columns = [d[0] for d in description] if description else []
            rows: list[list[Any]] = []
            size = 0
            for row in cursor:
                # What the host's JSON answer will take, roughly: a blob goes out as base64 in
                # {"$blob": "..."}, so 4/3 of its length plus 12; a number up to 20-24 digits.
                size += 2 + len(row)
                for v in row:
                    kind = type(v)
                    if kind is str:
                        size += len(v) + 2 if v.isascii() else len(v.encode()) + 2
                    elif kind is bytes:
                        size += 4 * ((len(v) + 2) // 3) + 12
                    else:
                        size += 24
                if size > max_result_bytes:
                    raise SqlFailure(ErrorCode.TOO_BIG, f"result exceeds {max_result_bytes} bytes; page it with LIMIT")
                rows.append([_to_json_value(v) if type(v) in _NEEDS_CONVERSION else v for v in row])
            if counters is not None:  # _take_counters, inlined: ~0.15 us of a ~3 us statement
                status = self._status
                steps = (
                    status(counters, 1, 1) + status(counters, 0, 1) + status(counters, 3, 1) if counters.value else None
                )
            else:
                steps = _take_steps(handle) if handle is not None else None
            if steps is not None:
                rows_read = steps
                if (
                    rows_read == 0
                    and len(rows) == 1
                    and len(rows[0]) == 1
                    and type(rows[0][0]) is int
                    and self._counts_whole_table(sql, params)
                ):
                    rows_read = rows[0][0]
                rows_read = max(rows_read, len(rows))
            else:  # no statement counters: VM work in VM_STEP units, as an estimate
                rows_read = len(rows) + (self._vm_calls - vm_before)
        except SqlFailure:
            self._abandon_statement()
            if counters is not None:
                _take_counters(counters)  # a later run must not add them up
            raise
        except sqlite3.DatabaseError as exc:
            failure = self._classify(exc)
            if counters is not None:
                failure.rows_read = _take_counters(counters) or 0
            else:
                failure.rows_read = (_take_steps(handle) or 0) if handle is not None else 0
            if not conn.in_transaction:  # SQLite rolled back everything (see above, and SQLITE_FULL)
                failure.fatal = True
                if failure.code != ErrorCode.STORAGE_FULL:
                    failure.message += "; " + TXN_LOST
            raise failure from None
        except (OverflowError, ValueError, TypeError) as exc:
            raise SqlFailure(ErrorCode.BAD_REQUEST, f"bad parameter: {exc}") from None
        except BaseException:
            self._abandon_statement()
            if counters is not None:
                _take_counters(counters)
            raise
        finally:
            self._guest = False
        return StatementResult(
            columns=columns,
            rows=rows,
            rows_read=rows_read,
            rows_written=conn.total_changes - changes_before,
            last_insert_rowid=cursor.lastrowid or 0,
        )

    def _abandon_statement(self) -> None:
        """Reset a guest statement left unfinished (its result was too big): an active statement
        would make the platform's COMMIT fail. Closing the cursor resets it; rare, so a new
        cursor is cheap here."""
        self._guest = False
        self._cursor.close()  # resets the statement (and the profile callback its counters)
        self._cursor = self._conn.cursor()

    def _counts_whole_table(self, sql: str, params: list[Any]) -> bool:
        """Whether ``sql`` is answered by OP_Count (``SELECT count(*) FROM t``): it counts the
        table's rows by walking its pages without a single step, so its rows_read is the count.
        Asked only of statements that visited nothing and answered one integer; the plan is
        cached per SQL text (EXPLAIN, prepared under the guest authorizer like the statement)."""
        cache = self._counts_table
        if cache is None:
            cache = self._counts_table = {}
        known = cache.get(sql)
        if known is None:
            try:
                plan = self._cursor.execute("EXPLAIN " + sql, params).fetchall()
            except sqlite3.Error:
                plan = []
            known = any(op[1] == "Count" and not op[4] for op in plan)
            if len(cache) >= 64:
                cache.clear()
            cache[sql] = known
        return known

    def _classify(self, exc: sqlite3.DatabaseError) -> SqlFailure:
        """A guest statement's failure, by SQLite's result code (``failure_code``)."""
        if self.over_memory:
            return SqlFailure(
                ErrorCode.TOO_BIG,
                f"the statement needs more than {TEMP_MEMORY >> 20} "
                "MiB of temporary memory (a sort, GROUP BY or DISTINCT too big)",
            )
        if self.timed_out:
            code = ErrorCode.TIMEOUT
        elif self._denied:
            code = ErrorCode.NOT_AUTHORIZED
        else:
            code = failure_code(exc, ErrorCode.SQL_ERROR)
        text = str(exc)
        if code == ErrorCode.TIMEOUT:
            return SqlFailure(code, "statement stopped at the request deadline", fatal=True)
        if code == ErrorCode.STORAGE_FULL:
            return SqlFailure(code, "storage quota reached: " + text, fatal=True)
        return SqlFailure(code, text)

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self._release_native()
            self._conn.close()

    def _release_native(self) -> None:
        """Finalize our own statements (else ``sqlite3_close_v2`` leaves a zombie connection
        holding its files open) and stop the trace callback."""
        handle = self._handle
        if handle is None:
            return
        self._handle = None
        self._cache = None  # our reference would keep the cached statements alive past close
        lib = _sqlite_library()
        assert lib is not None
        for stmt in self._statements.values():
            _platform_statements.discard(stmt.value or 0)
            lib.sqlite3_finalize(stmt)
        self._statements.clear()
        lib.sqlite3_trace_v2(handle, 0, _TRACE_CALLBACK(), None)
        _last_steps.pop(handle, None)

    def __del__(self) -> None:
        # Dropped without close(): Python closes the connection, but only once nothing of
        # ours keeps it open.
        if getattr(self, "_handle", None) is not None:
            self._release_native()


_TEMP_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)


_NEEDS_CONVERSION = (bytes, float)


def _to_json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$blob": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/Infinity; SQLite stores NaN as NULL already.
        return None if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def from_json_param(value: Any) -> Any:
    """Turn one JSON parameter into a SQLite value; ``ValueError`` for anything not a scalar."""
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, dict) and set(value) == {"$blob"} and isinstance(value["$blob"], str):
        try:
            return base64.b64decode(value["$blob"], validate=True)
        except ValueError:
            raise ValueError("$blob is not valid base64") from None
    raise ValueError(f'parameters must be JSON scalars or {{"$blob": ...}}, not {type(value).__name__}')


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier: in double quotes, each ``"`` doubled (the only escape
    SQLite's quoted identifiers have). NUL cannot be part of a name and is refused."""
    if "\x00" in name:
        raise BadRequest("a name cannot contain NUL")
    return '"' + name.replace('"', '""') + '"'


#: Default wall-time bound, in seconds, of one operator query (``FacetReader.query``).
READER_TIMEOUT = 5.0


class FacetReader:
    """Read-only access to a facet's database for operators (never used by guests).

    Safe to share between threads and to close from any of them: one query runs at a
    time, and ``close`` interrupts a running one (a count over a million rows) and waits
    for it. Python's sqlite3 connection must not be used by two threads at once, and
    closing it under a running query crashes the process.
    """

    def __init__(self, path: str) -> None:
        if not os.path.exists(path):
            raise NotFound("the facet has no database yet")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self._deadline = math.inf
        conn.set_progress_handler(self._progress, VM_STEP * 10)
        self._conn = conn
        self._lock = threading.Lock()
        self._closed = False
        self.db = sqlite_utils.Database(conn)

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise FacetsError("the table view was closed", ErrorCode.INTERNAL)
            yield self._conn

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cue to refresh a view."""
        with self._use() as conn:
            return conn.execute("PRAGMA data_version").fetchone()[0]

    def table_names(self) -> list[str]:
        with self._use():
            return [n for n in self.db.table_names() if not n.startswith(RESERVED_PREFIX)]

    def tables(self) -> list[dict[str, Any]]:
        out = []
        for name in self.table_names():
            with self._use():
                table = self.db[name]
                out.append({"name": name, "count": table.count, "columns": [c.name for c in table.columns]})
        return out

    def rows(
        self,
        table: str,
        *,
        limit: int = 100,
        offset: int = 0,
        where: str | None = None,
        timeout: float = READER_TIMEOUT,
    ) -> dict[str, Any]:
        if table not in self.table_names():
            raise NotFound(f"no table {table!r}")
        if limit < 0 or offset < 0:
            raise BadRequest("limit and offset must be >= 0")
        sql = f"SELECT * FROM {quote_identifier(table)}"
        if where:
            sql += f" WHERE {where}"
        sql += " LIMIT ? OFFSET ?"
        return self.query(sql, [limit, offset], timeout=timeout)

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def query(self, sql: str, params: list[Any] | None = None, *, timeout: float = READER_TIMEOUT) -> dict[str, Any]:
        """Run one read-only query; ``BadRequest`` (code ``timeout`` after ``timeout`` seconds,
        ``bad_request`` for a write or an SQL error)."""
        deadline = math.inf
        try:
            with self._use() as conn:
                self._deadline = deadline = time.monotonic() + timeout
                try:
                    cursor = conn.execute(sql, params or [])
                    columns = [d[0] for d in cursor.description] if cursor.description else []
                    rows = [[_to_json_value(v) for v in row] for row in cursor]
                finally:
                    self._deadline = math.inf
                return {"columns": columns, "rows": rows}
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            code = sqlite_code(exc)
            if code == SQLITE_INTERRUPT and time.monotonic() >= deadline:
                raise BadRequest(f"query stopped after {timeout:g} s", ErrorCode.TIMEOUT) from None
            if code == SQLITE_READONLY:  # mode=ro and query_only both answer SQLITE_READONLY
                raise BadRequest(f"read-only: {text}") from None
            raise BadRequest(f"SQL error: {text}") from None

    def backup(self, dest: sqlite3.Connection) -> None:
        """Copy the database into ``dest`` with SQLite's online backup API (a consistent snapshot)."""
        with self._use() as conn:
            conn.backup(dest)

    def close(self) -> None:
        """Stop a running query and close; later calls raise ``FacetsError``."""
        if not self._closed:
            try:
                self._conn.interrupt()  # thread-safe, and meant for this
            except sqlite3.ProgrammingError:  # closed meanwhile by another thread
                pass
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> FacetReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
