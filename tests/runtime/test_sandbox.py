"""Hostile guests: each gets a stable error code, the supervisor keeps serving, nothing is lost."""

from __future__ import annotations

import pytest

from runtime import BadModule
from tests.conftest import COUNTER_WAT, fixture, sql_body, sql_reply


@pytest.fixture
def fleet(probe):
    """A probe plus a healthy counter facet with known state, to check nothing else is hurt."""
    probe.load_app(COUNTER_WAT)
    probe.call("counter/bystander")
    return probe


def assert_others_fine(sup, expected_count):
    assert sup.call("counter/bystander").response == f'{{"count":{expected_count}}}'.encode()


@pytest.mark.parametrize(
    "body, quotas, code",
    [
        (b"I", {"fuel": "1000G", "timeout_ms": "200ms"}, "timeout"),
        (b"I", {"fuel": "1M"}, "fuel_exhausted"),
        (b"C", {}, "stack_overflow"),
        (b"M", {"memory": "4MiB"}, "memory_limit"),
        (b"X", {}, "trap"),
        (b"O", {}, "bad_request"),
        (b"U", {}, "bad_request"),
        (b"P", {}, "bad_response"),
    ],
)
def test_hostile_request(fleet, body, quotas, code):
    if quotas:
        fleet.set_quotas("probe/h", **quotas)
    fleet.call("probe/h", sql_body("CREATE TABLE t(x)"))
    fleet.call("probe/h", sql_body("INSERT INTO t VALUES (1)"))
    result = fleet.call("probe/h", body)
    assert (result.ok, result.error) == (False, code), result.message
    assert result.message
    # the facet recovers, its data is intact, and the other facet never noticed
    assert sql_reply(fleet.call("probe/h", sql_body("SELECT x FROM t")))["rows"] == [[1]]
    assert_others_fine(fleet, 2)


def test_infinite_loop_in_start_function(fleet):
    fleet.load_app(fixture("loop_in_start.wat"))
    fleet.set_quotas("loop_in_start", fuel="1000G", timeout_ms="200ms")
    result = fleet.call("loop_in_start/x")
    assert result.error == "timeout"
    fleet.set_quotas("loop_in_start", fuel="1M", timeout_ms="5s")
    assert fleet.call("loop_in_start/x").error == "fuel_exhausted"
    assert_others_fine(fleet, 2)


def test_infinite_loop_in_facet_init_rolls_back_its_writes(fleet):
    fleet.load_app(fixture("loop_in_init.wat"))
    fleet.set_quotas("loop_in_init", fuel="1000G", timeout_ms="200ms")
    result = fleet.call("loop_in_init/x")
    assert result.error == "timeout"
    assert fleet.tables("loop_in_init/x") == []  # CREATE TABLE marker was rolled back
    assert_others_fine(fleet, 2)


def test_oversized_initial_memory(fleet):
    fleet.load_app(fixture("big_memory.wat"))
    result = fleet.call("big_memory/x")
    assert result.error == "memory_limit"
    assert "memory" in result.message
    assert_others_fine(fleet, 2)


def test_huge_table_is_refused_at_load(fleet):
    # 10,000,000 initial elements are over the table limit every instantiation applies,
    # so the module could never run: it is refused when loaded, not at each cold start.
    with pytest.raises(BadModule, match="table") as refused:
        fleet.load_app(fixture("big_table.wat"))
    assert refused.value.code == "bad_module"
    assert "big_table" not in {app.name for app in fleet.app_list()}
    assert_others_fine(fleet, 2)


def test_failing_allocator(fleet):
    fleet.load_app(fixture("bad_alloc.wat"))
    result = fleet.call("bad_alloc/x")
    assert result.error == "bad_response"
    assert "facet_alloc" in result.message
    # and with a body, the very first allocation fails too
    assert fleet.call("bad_alloc/x", b"body").error == "bad_response"
    assert_others_fine(fleet, 2)


def test_memory_quota_applies_to_growth(probe):
    probe.set_quotas("probe/m", memory="1MiB")
    assert probe.call("probe/m", b"M").error == "memory_limit"
    probe.set_quotas("probe/m", memory="8MiB")
    result = probe.call("probe/m", b"M")
    assert result.error == "memory_limit"
    assert result.usage.memory > 4 * 1024 * 1024


def test_wasm_stack_is_bounded_not_the_process(probe):
    probe.set_quotas("probe/s", crash_faults="off")  # five in a row: not a backoff here
    for _ in range(5):
        assert probe.call("probe/s", b"C").error == "stack_overflow"
    assert probe.call("probe/s", b"Eok").response == b"ok"


def test_supervisor_serves_many_failures_in_a_row(probe):
    probe.set_quotas("probe/f", crash_faults="off", quarantine_faults="off")  # every one runs
    codes = {probe.call("probe/f", body).error for body in (b"X", b"O", b"U", b"P") * 10}
    assert codes == {"trap", "bad_request", "bad_response"}
    assert probe.call("probe/f", b"Estill here").response == b"still here"
