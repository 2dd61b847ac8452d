"""The host functions of the facet ABI (``sql``, ``log``, ``now_ms``, ``random``).

A ``RequestContext`` is created for each request (and for each ``facet_init``)
and handed to the guest instance; the wasm seam routes host calls to it.

Failure rules, so a guest always gets a predictable outcome:

* What the host cannot even read (a range outside guest memory, bytes that are
  not UTF-8, text that is not JSON) ends the request with ``bad_request``.
* A readable but wrong ``sql`` request (no ``sql`` key, a non-scalar
  parameter) and every SQL failure is answered in JSON:
  ``{"ok": false, "error": {"code": ..., "message": ...}}``.
* ``storage_full``, ``timeout`` and a statement that rolled back the whole
  transaction (``ON CONFLICT ROLLBACK``, ``RAISE(ROLLBACK)``) are answered the
  same way so the guest can log them, and they also mark the request: it is
  rolled back and fails with that code however the guest goes on.
* If the guest's ``facet_alloc`` returns 0 or a range outside memory while the
  host writes a result, or calls a host function itself then (the wasm seam
  refuses it: each ``sql`` reply would call it again), the request ends with
  ``bad_response``.
* ``log`` keeps at most ``log_bytes`` of text and ``max_log_records(log_bytes)``
  records per request; what it cuts or drops is counted in ``logs_truncated``.
* ``set_alarm`` and ``delete_alarm`` only stage a change (``alarm_change``): nothing is
  written until the request has committed, when the caller applies it to the alarm
  store, so a request that fails or rolls back drops its alarm change with its writes.
  ``get_alarm`` sees the request's own staged change first.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from . import abi
from .errors import ErrorCode
from .logs import LogRecord, neutralize
from .storage import FacetDB, SqlFailure, from_json_param
from .wasm import HostAbort

if TYPE_CHECKING:
    from .wasm import GuestInstance


class AlarmStore(Protocol):
    """What a ``RequestContext`` reads pending alarms from (the supervisor's scheduler)."""

    def get(self, app: str, facet: str) -> int | None:
        """The facet's pending alarm in ms since the epoch, or None."""
        ...


class _Unchanged:
    """The type of ``UNCHANGED``: a request that neither set nor deleted its alarm."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


#: ``RequestContext.alarm_change`` when the request staged no alarm change (None is a
#: staged delete, an int a staged set).
UNCHANGED: Final = _Unchanged()

MAX_RANDOM_BYTES = 65_536
_INT64 = 2**63
#: Built once: json.dumps with options builds a new encoder on every call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
TRUNCATION_MARKER = " …[truncated]"
#: What one log record costs besides its text, for the per-request record limit: a row in
#: the control database (time, app, facet, request id, level, source) is about this many
#: bytes. Without it 200,000 empty records in one request all reached the database.
LOG_RECORD_COST = 64
#: Records a request may always keep, however small its ``log_bytes`` quota.
MIN_LOG_RECORDS = 16


def max_log_records(log_bytes: int) -> int:
    """Records one request may log under a ``log_bytes`` quota: one per ``LOG_RECORD_COST``
    bytes of it (at least ``MIN_LOG_RECORDS``); the 64 KiB default gives 1,024."""
    return max(MIN_LOG_RECORDS, log_bytes // LOG_RECORD_COST)


class RequestCounters:
    """What one request used, besides fuel and wall time (measured by the caller)."""

    __slots__ = ("log_bytes", "logs_truncated", "rows_read", "rows_written", "sql_calls")

    def __init__(self) -> None:
        self.rows_read = self.rows_written = self.sql_calls = 0
        self.log_bytes = self.logs_truncated = 0


class RequestContext:
    """The state host functions share during one request (or one ``facet_init``)."""

    __slots__ = (
        "alarm_change",
        "alarms",
        "app",
        "counters",
        "db",
        "facet",
        "log_limit",
        "log_records_left",
        "logs",
        "max_result_bytes",
        "poison",
        "request_id",
    )

    def __init__(
        self,
        app: str,
        facet: str,
        request_id: str,
        db: FacetDB,
        log_limit: int,
        max_result_bytes: int,
        *,
        alarms: AlarmStore | None = None,
    ) -> None:
        self.app = app
        self.facet = facet
        self.request_id = request_id
        self.db = db
        self.log_limit = log_limit
        self.log_records_left = max_log_records(log_limit)
        self.max_result_bytes = max_result_bytes
        self.counters = RequestCounters()
        self.logs: list[LogRecord] = []
        #: Set when a host call decided the request must fail whatever the guest does next.
        self.poison: tuple[ErrorCode, str] | None = None
        #: Where the facet's pending alarm is read from (None: no scheduler, no alarm).
        self.alarms = alarms
        #: The alarm change this request staged: ``UNCHANGED``, an int (set, ms since the
        #: epoch) or None (deleted). The caller applies it after the request's COMMIT.
        self.alarm_change: int | _Unchanged | None = UNCHANGED

    # -- helpers --------------------------------------------------------------
    def _read(self, guest: GuestInstance, ptr: int, length: int, what: str) -> bytes:
        try:
            return guest.read(ptr, length)
        except IndexError as exc:
            raise HostAbort(ErrorCode.BAD_REQUEST, f"{what}: {exc}") from None

    def _reply(self, guest: GuestInstance, payload: dict[str, Any]) -> int:
        data = _ENCODE(payload).encode()
        ptr = guest.alloc(len(data))
        if ptr == 0:
            raise HostAbort(ErrorCode.BAD_RESPONSE, f"facet_alloc({len(data)}) returned 0")
        try:
            guest.write(ptr, data)
        except IndexError as exc:
            raise HostAbort(ErrorCode.BAD_RESPONSE, f"facet_alloc returned {exc}") from None
        return abi.pack(ptr, len(data))

    # -- host functions ------------------------------------------------------
    def sql(self, guest: GuestInstance, ptr: int, length: int) -> int:
        raw = self._read(guest, ptr, length, "sql request")
        try:
            request = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise HostAbort(ErrorCode.BAD_REQUEST, "sql request is not valid UTF-8") from None
        except ValueError as exc:
            raise HostAbort(ErrorCode.BAD_REQUEST, f"sql request is not JSON: {exc}") from None
        except RecursionError:  # json's decoder refuses nesting past the recursion limit
            raise HostAbort(
                ErrorCode.BAD_REQUEST,
                'sql request is nested too deeply (parameters are JSON scalars or a {"$blob": ...} object)',
            ) from None
        return self._reply(guest, self._run_sql(request))

    def _run_sql(self, request: Any) -> dict[str, Any]:
        """The JSON answer to one parsed sql request (both ABIs' ``sql`` end here)."""
        self.counters.sql_calls += 1
        try:
            statement, params = self._parse_sql_request(request)
            result = self.db.execute_guest(statement, params, max_result_bytes=self.max_result_bytes)
        except SqlFailure as failure:
            self.counters.rows_read += failure.rows_read  # a scan that failed late still read them
            if failure.fatal and self.poison is None:
                self.poison = (failure.code, failure.message)
            return {"ok": False, "error": {"code": str(failure.code), "message": failure.message}}
        self.counters.rows_read += result.rows_read
        self.counters.rows_written += result.rows_written
        return {
            "ok": True,
            "columns": result.columns,
            "rows": result.rows,
            "rows_read": result.rows_read,
            "rows_written": result.rows_written,
            "last_insert_rowid": result.last_insert_rowid,
        }

    def sql_text(self, statement: str, params: str) -> bytes:
        """ABI v2's ``sql(statement, params)``: params are a JSON array's text ("" for none);
        params that are not JSON are answered ``bad_request`` like any wrong request."""
        if params:
            try:
                parsed: Any = json.loads(params)
            except (ValueError, RecursionError) as exc:
                self.counters.sql_calls += 1
                message = f"params are not JSON: {exc}" if isinstance(exc, ValueError) else "params nest too deeply"
                failure = {"ok": False, "error": {"code": str(ErrorCode.BAD_REQUEST), "message": message}}
                return _ENCODE(failure).encode()
        else:
            parsed = None
        return _ENCODE(self._run_sql({"sql": statement, "params": parsed})).encode()

    def log_text(self, level: int, message: bytes) -> None:
        """ABI v2's ``log``: the same budget, cut and neutralisation as v1's."""
        self._record_log(level, message)

    def random_bytes(self, length: int) -> bytes:
        """ABI v2's ``random(len)``."""
        if length > MAX_RANDOM_BYTES:
            raise HostAbort(ErrorCode.BAD_REQUEST, f"random: at most {MAX_RANDOM_BYTES} bytes per call")
        return os.urandom(length)

    @staticmethod
    def _parse_sql_request(request: Any) -> tuple[str, list[Any]]:
        statement = request.get("sql") if type(request) is dict else None
        if type(statement) is not str:
            raise SqlFailure(ErrorCode.BAD_REQUEST, 'expected {"sql": "...", "params": [...]}')
        params = request.get("params")
        if params is None:
            return statement, []
        if type(params) is not list:
            raise SqlFailure(ErrorCode.BAD_REQUEST, "params must be a JSON array")
        for value in params:  # the common case: plain scalars, used as they are
            kind = type(value)
            if (
                kind is str
                or kind is float
                or kind is bool
                or value is None
                or (kind is int and -_INT64 <= value < _INT64)
            ):
                continue
            try:
                return statement, [from_json_param(p) for p in params]
            except ValueError as exc:
                raise SqlFailure(ErrorCode.BAD_REQUEST, str(exc)) from None
        return statement, params

    def log(self, guest: GuestInstance, level: int, ptr: int, length: int) -> None:
        self._record_log(level, self._read(guest, ptr, length, "log message"))

    def _record_log(self, level: int, raw: bytes) -> None:
        budget = self.log_limit - self.counters.log_bytes
        if budget <= 0 or self.log_records_left <= 0:
            self.counters.logs_truncated += 1
            return
        self.log_records_left -= 1
        if len(raw) > budget:
            raw = raw[:budget]
            self.counters.logs_truncated += 1
            text = raw.decode("utf-8", errors="replace") + TRUNCATION_MARKER
        else:
            text = raw.decode("utf-8", errors="replace")
        self.counters.log_bytes += len(raw)
        self.logs.append(
            LogRecord(
                time=time.time(),
                app=self.app,
                facet=self.facet,
                request_id=self.request_id,
                level=abi.LOG_LEVELS.get(level, "info"),
                message=neutralize(text),
                source="guest",
            )
        )

    # -- alarms (both ABIs: the component seam calls these with its own instance) --
    def set_alarm(self, guest: Any, at_ms: int) -> int:
        """Stage the facet's one pending alarm at ``at_ms`` (replacing any); ``abi.ALARM_SET``,
        or why it is refused: ``ALARM_NO_HANDLER`` (``guest`` exports no handler, so the
        alarm could never be delivered), ``ALARM_BAD_TIME`` (negative or past year 9999)."""
        if not guest.has_alarm:
            return abi.ALARM_NO_HANDLER
        if not abi.valid_alarm_time(at_ms):
            return abi.ALARM_BAD_TIME
        self.alarm_change = at_ms
        return abi.ALARM_SET

    def pending_alarm(self) -> int | None:
        """The alarm the facet will have if this request commits: its staged change, else
        the stored one."""
        change = self.alarm_change
        if not isinstance(change, _Unchanged):
            return change
        return None if self.alarms is None else self.alarms.get(self.app, self.facet)

    def get_alarm(self, guest: object) -> int:
        """ABI v1's ``get_alarm``: the pending alarm's time, or ``abi.NO_ALARM`` (-1)."""
        pending = self.pending_alarm()
        return abi.NO_ALARM if pending is None else pending

    def delete_alarm(self, guest: object) -> None:
        self.alarm_change = None

    def now_ms(self, guest: object) -> int:
        return int(time.time() * 1000)

    def random(self, guest: GuestInstance, ptr: int, length: int) -> None:
        if length > MAX_RANDOM_BYTES:
            raise HostAbort(ErrorCode.BAD_REQUEST, f"random: at most {MAX_RANDOM_BYTES} bytes per call")
        try:
            guest.write(ptr, os.urandom(length))
        except IndexError as exc:
            raise HostAbort(ErrorCode.BAD_REQUEST, f"random: {exc}") from None
