"""A facet's private SQLite database: the guarded write path and read-only browsing.

``FacetDB`` owns the facet's one read-write connection. The platform owns
transactions (one per request, ``BEGIN IMMEDIATE`` .. ``COMMIT``); guest SQL
runs inside them under an authorizer, SQLite limits, a page-count cap for the
storage quota and a progress handler that enforces the request deadline and
counts VM work for metering.

``FacetReader`` is a separate read-only connection (``mode=ro``) through
sqlite-utils, so an operator browses a facet while it serves (WAL lets readers
and the writer run side by side).
"""

from __future__ import annotations

import base64
import ctypes
import functools
import math
import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from .errors import BadRequest, ErrorCode, FacetsError, NotFound

#: Statements the platform runs carry this comment, so a guest can never send a
#: byte-identical string and reuse a prepared statement that was authorized
#: outside guest mode (SQLite authorizes at prepare time; Python caches statements).
_NONCE = f"/* facets:{secrets.token_hex(8)} */"

_BEGIN, _COMMIT, _ROLLBACK = (f"{verb} {_NONCE}" for verb in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"))
#: One request of a commit group runs between these (see ``FacetDB.savepoint``).
_SAVEPOINT, _RELEASE, _ROLLBACK_TO = (f"{verb} facets_request {_NONCE}" for verb in
                                      ("SAVEPOINT", "RELEASE", "ROLLBACK TO"))

RESERVED_PREFIX = "_facets"

#: PRAGMAs a guest may run, read-only: those that take a table/index name argument...
_PRAGMAS_WITH_ARG = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check", "table_list",
})
#: ...and those only read without an argument (``PRAGMA user_version`` yes, ``= 3`` no).
_PRAGMAS_READ_ONLY = frozenset({
    "user_version", "schema_version", "application_id", "page_count", "page_size",
    "freelist_count", "data_version", "encoding", "max_page_count", "foreign_keys",
}) | _PRAGMAS_WITH_ARG
_REFUSED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer"})
_ALLOWED_VTABLE_MODULES = frozenset({"fts5", "rtree"})

#: SQLite limits applied to every facet connection.
GUEST_LIMITS = {
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_LENGTH: 4 * 1024 * 1024,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 100,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 999,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 10,
}

#: Page cache per facet connection, in KiB (allocated lazily, see FacetDB.__init__).
CACHE_KIB = 2048

#: How many SQLite VM instructions between two progress-handler calls. Metering
#: counts scan work in these units: ``rows_read`` adds one per call.
VM_STEP = 100

_DENY = sqlite3.SQLITE_DENY
_OK = sqlite3.SQLITE_OK


_SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006


@functools.lru_cache(maxsize=1)
def _sqlite_library() -> ctypes.CDLL | None:
    try:
        import _sqlite3
        lib = ctypes.CDLL(_sqlite3.__file__)
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        return lib
    except (ImportError, OSError, AttributeError):
        return None


def skip_checkpoint_on_close(conn: sqlite3.Connection, path: str) -> bool:
    """Ask SQLite not to checkpoint the WAL when ``conn`` closes (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE).

    Closing the last connection of a WAL database otherwise checkpoints it and syncs twice,
    which makes closing an idle facet's database cost milliseconds. Python's sqlite3 has no
    API for this option, so the ``sqlite3*`` handle is read from CPython's connection object
    (its first field) and used only if SQLite confirms it is this very database. Returns
    whether the option is set; when it is not, closing is just slower.
    """
    lib = _sqlite_library()
    if lib is None:
        return False
    try:
        handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
        name = lib.sqlite3_db_filename(handle, b"main") if handle else None
        if not name or os.path.realpath(os.fsdecode(name)) != os.path.realpath(path):
            return False
        return lib.sqlite3_db_config(ctypes.c_void_p(handle), _SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                                     ctypes.c_int(1), ctypes.c_void_p(0)) == 0
    except (ValueError, OSError):
        return False


#: Why a request fails after one of its statements rolled back the whole transaction.
TXN_LOST = ("no transaction: a statement rolled back the request's transaction "
            "(ON CONFLICT ROLLBACK or RAISE(ROLLBACK)), so the request fails")


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


@dataclass(slots=True)
class StatementResult:
    columns: list[str]
    rows: list[list[Any]]
    rows_read: int
    rows_written: int
    last_insert_rowid: int


class FacetDB:
    """The facet's read-write connection. Used only under its facet's lock."""

    def __init__(self, path: str, *, durability: str = "full", storage_limit: int | None = None) -> None:
        if durability not in ("full", "process"):
            raise BadRequest(f"durability must be 'full' or 'process', not {durability!r}")
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                     cached_statements=256)
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
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        for limit, value in GUEST_LIMITS.items():
            conn.setlimit(limit, value)
        self.page_size = cursor.execute("PRAGMA page_size").fetchone()[0]
        skip_checkpoint_on_close(conn, path)
        self._guest = False
        self._deadline = math.inf
        self._vm_calls = 0
        self.timed_out = False
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._progress, VM_STEP)
        if storage_limit is not None:
            self.set_storage_limit(storage_limit)

    # -- sandbox hooks -----------------------------------------------------
    def _authorize(self, action: int, arg1, arg2, dbname, source) -> int:
        if not self._guest:
            return _OK
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH,
                      sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return _DENY
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _PRAGMAS_READ_ONLY and (arg2 is None or name in _PRAGMAS_WITH_ARG):
                return _OK
            return _DENY
        if action == sqlite3.SQLITE_FUNCTION:
            return _DENY if (arg2 or "").lower() in _REFUSED_FUNCTIONS else _OK
        if action in (sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE):
            if (arg2 or "").lower() not in _ALLOWED_VTABLE_MODULES:
                return _DENY
        if action in _TEMP_ACTIONS:
            return _DENY  # temp objects live outside the facet's file and its quota
        if dbname not in (None, "main"):
            return _DENY
        for name in (arg1, arg2):
            if name and name.lower().startswith(RESERVED_PREFIX):
                return _DENY
        return _OK

    def _progress(self) -> int:
        self._vm_calls += 1
        if time.monotonic() > self._deadline:
            self.timed_out = True
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
    def begin(self, deadline: float = math.inf) -> None:
        self._deadline = deadline
        self.timed_out = False
        self._cursor.execute(_BEGIN)

    def commit(self) -> None:
        self._deadline = math.inf
        self._cursor.execute(_COMMIT)

    def rollback(self) -> None:
        self._deadline = math.inf
        if self._conn.in_transaction:
            self._cursor.execute(_ROLLBACK)

    def savepoint(self, deadline: float = math.inf) -> None:
        """Start one request inside the open transaction (a commit group, see ``FacetSlot``)."""
        self._deadline = deadline
        self.timed_out = False
        self._cursor.execute(_SAVEPOINT)

    def release(self) -> None:
        """Keep the request's writes in the transaction; they are durable at its COMMIT."""
        self._deadline = math.inf
        self._cursor.execute(_RELEASE)

    def rollback_to(self) -> None:
        """Undo the request's writes, keeping the rest of the transaction."""
        self._deadline = math.inf
        if self._conn.in_transaction:
            self._cursor.execute(_ROLLBACK_TO)
            self._cursor.execute(_RELEASE)

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
        """
        conn = self._conn
        if not conn.in_transaction:
            raise SqlFailure(ErrorCode.SQL_ERROR, TXN_LOST, fatal=True)
        changes_before = conn.total_changes
        vm_before = self._vm_calls
        self._guest = True
        try:
            cursor = self._cursor
            cursor.execute(sql, params)
            description = cursor.description
            columns = [d[0] for d in description] if description else []
            rows: list[list[Any]] = []
            size = 0
            for row in cursor:
                out = [_to_json_value(v) if type(v) in _NEEDS_CONVERSION else v for v in row]
                size += sum(len(v) if isinstance(v, str) else 8 for v in out if v is not None) + 8
                if size > max_result_bytes:
                    raise SqlFailure(ErrorCode.TOO_BIG,
                                     f"result exceeds {max_result_bytes} bytes; page it with LIMIT")
                rows.append(out)
        except SqlFailure:
            raise
        except sqlite3.DatabaseError as exc:
            failure = self._classify(exc)
            if not conn.in_transaction:   # SQLite rolled back everything (see above, and SQLITE_FULL)
                failure.fatal = True
                if failure.code != ErrorCode.STORAGE_FULL:
                    failure.message += "; " + TXN_LOST
            raise failure from None
        except (OverflowError, ValueError, TypeError) as exc:
            raise SqlFailure(ErrorCode.BAD_REQUEST, f"bad parameter: {exc}") from None
        finally:
            self._guest = False
        return StatementResult(
            columns=columns, rows=rows,
            rows_read=len(rows) + (self._vm_calls - vm_before),
            rows_written=conn.total_changes - changes_before,
            last_insert_rowid=cursor.lastrowid or 0,
        )

    def _classify(self, exc: sqlite3.DatabaseError) -> SqlFailure:
        text = str(exc)
        if self.timed_out or text == "interrupted":
            return SqlFailure(ErrorCode.TIMEOUT, "statement stopped at the request deadline", fatal=True)
        if "not authorized" in text or "authorization denied" in text or "prohibited" in text:
            return SqlFailure(ErrorCode.NOT_AUTHORIZED, text)
        if isinstance(exc, sqlite3.OperationalError) and ("full" in text):
            return SqlFailure(ErrorCode.STORAGE_FULL, "storage quota reached: " + text, fatal=True)
        if "too big" in text or "too long" in text or "too many" in text:
            return SqlFailure(ErrorCode.TOO_BIG, text)
        return SqlFailure(ErrorCode.SQL_ERROR, text)

    def close(self) -> None:
        try:
            self.rollback()
        finally:
            self._conn.close()


_TEMP_ACTIONS = frozenset({
    sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_CREATE_TEMP_TABLE,
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_VIEW,
})


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
        if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, dict) and set(value) == {"$blob"} and isinstance(value["$blob"], str):
        try:
            return base64.b64decode(value["$blob"], validate=True)
        except ValueError:
            raise ValueError("$blob is not valid base64") from None
    raise ValueError(f"parameters must be JSON scalars or {{\"$blob\": ...}}, not {type(value).__name__}")


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
        self._conn = conn
        self._lock = threading.Lock()
        self._closed = False
        self.db = sqlite_utils.Database(conn)

    @contextmanager
    def _use(self):
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
                out.append({"name": name, "count": table.count,
                            "columns": [c.name for c in table.columns]})
        return out

    def rows(self, table: str, *, limit: int = 100, offset: int = 0,
             where: str | None = None) -> dict[str, Any]:
        if table not in self.table_names():
            raise NotFound(f"no table {table!r}")
        if limit < 0 or offset < 0:
            raise BadRequest("limit and offset must be >= 0")
        sql = f"SELECT * FROM [{table}]"
        if where:
            sql += f" WHERE {where}"
        sql += " LIMIT ? OFFSET ?"
        return self.query(sql, [limit, offset])

    def query(self, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        try:
            with self._use() as conn:
                cursor = conn.execute(sql, params or [])
                columns = [d[0] for d in cursor.description] if cursor.description else []
                return {"columns": columns, "rows": [[_to_json_value(v) for v in row] for row in cursor]}
        except sqlite3.DatabaseError as exc:
            text = str(exc)
            if "readonly" in text or "query_only" in text or "read-only" in text:
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
                self._conn.interrupt()   # thread-safe, and meant for this
            except sqlite3.ProgrammingError:   # closed meanwhile by another thread
                pass
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> "FacetReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
