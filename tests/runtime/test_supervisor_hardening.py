"""Hardening of the supervisor (issue 12): gates, import/export, faults, limits, read-only mode.

Each test names the defect it proves fixed; the races are forced with hooks and Events
at the race point, never with sleeps.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from runtime import CallResult, ErrorCode, FacetsError, Supervisor
from tests.conftest import COUNTER_WAT


def test_call_result_error_is_an_error_code_that_prints_as_before(sup):
    sup.load_app(COUNTER_WAT)
    sup.set_quotas("counter/a", rate=1)
    assert sup.call("counter/a").ok
    refused = sup.call("counter/a")
    assert isinstance(refused.error, ErrorCode) and refused.error is ErrorCode.RATE_LIMITED
    assert str(refused.error) == "rate_limited" and f"{refused.error}" == "rate_limited"
    assert json.dumps({"error": refused.error}) == '{"error": "rate_limited"}'
    assert isinstance(CallResult.failure(ErrorCode.TRAP, "x").error, ErrorCode)
    # The meters keep plain strings (saved as JSON, shown by every interface).
    errors = sup.usage("counter/a")["errors"]
    assert errors == {"rate_limited": 1} and all(type(k) is str for k in errors)
    assert asdict(refused)["error"] == "rate_limited"


def _records_held(obj: object) -> int:
    """LogRecords held by ``obj``'s attributes: in a list, or in a dict of lists/deques."""
    from runtime.logs import LogRecord

    count = 0
    for value in vars(obj).values():
        groups = value.values() if isinstance(value, dict) else [value]
        for group in groups:
            if isinstance(group, (list, tuple)) or hasattr(group, "maxlen"):
                count += sum(isinstance(item, LogRecord) for item in group)
    return count


def test_log_sink_keeps_no_records_once_written():
    """Dead code removed: the per-facet rings kept 1,000 records per facet that nothing read."""
    from runtime.logs import LogRecord, LogSink

    written: list[LogRecord] = []
    sink = LogSink(written.extend)
    try:
        sink.add(LogRecord(time=0.0, app="a", facet=f"f{i}", request_id="", level="info", message="m")
                 for i in range(50))
        sink.flush()
        assert len(written) == 50
        assert _records_held(sink) == 0
        assert not hasattr(sink, "recent")
    finally:
        sink.close()


@pytest.mark.parametrize("garbage", [b"this is not a database at all" * 100,
                                     b"SQLite format 3\x00" + b"\xff" * 4000], ids=["not-sqlite", "bad-header"])
def test_a_damaged_control_database_is_a_clear_error(tmp_path, garbage):
    data = tmp_path / "data"
    data.mkdir()
    (data / "control.sqlite3").write_bytes(garbage)
    with pytest.raises(FacetsError) as caught:
        Supervisor(data)
    message = caught.value.message
    assert str(data / "control.sqlite3") in message and "move it aside" in message
    assert (data / "control.sqlite3").read_bytes() == garbage   # nothing was overwritten
