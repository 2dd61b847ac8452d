"""Crash-loop supervision: counting faults, backoff, the probe, quarantine, reset, quotas."""

from __future__ import annotations

import time

from runtime import ErrorCode, HttpRequest, Supervisor
from runtime.quotas import Quotas
from runtime.supervision import backoff_delay
from tests.conftest import fixture


def _trap(sup: Supervisor, target: str = "probe/a") -> str | None:
    return sup.call(target, b"X").error


def test_faults_below_the_threshold_are_served_and_a_success_clears_them(probe):
    assert [_trap(probe), _trap(probe)] == ["trap", "trap"]
    health = probe.health("probe/a")
    assert health is not None and (health.state, health.faults) == ("ok", 2)
    assert probe.call("probe/a", b"Eok").response == b"ok"
    assert probe.health("probe/a") is None  # in a row only
    assert [_trap(probe), _trap(probe)] == ["trap", "trap"]
    assert probe.call("probe/a", b"Estill").ok


def test_the_third_fault_backs_off_and_refuses_at_once_without_instantiating(probe):
    for _ in range(3):
        assert _trap(probe) == "trap"
    health = probe.health("probe/a")
    assert health is not None and (health.state, health.faults) == ("backoff", 3)
    assert [f["code"] for f in health.last_faults] == ["trap"] * 3
    assert health.retry_at is not None and health.retry_at > time.time()
    cold_before = probe.usage("probe/a")["cold_starts"]
    refused = probe.call("probe/a", b"Eok")
    assert (refused.ok, refused.error) == (False, ErrorCode.BACKOFF)
    assert 0 < refused.retry_after <= 1.0  # the first delay: backoff_ms, 1 s by default
    assert "retry in" in refused.message
    usage = probe.usage("probe/a")
    assert usage["cold_starts"] == cold_before  # nothing was instantiated
    assert usage["errors"]["backoff"] == 1
    assert (usage["faults"], usage["backoffs"]) == (3, 1)
    assert [f.state for f in probe.facet_list("probe")] == ["backoff"]


def test_after_the_delay_one_probe_runs_and_a_success_recovers(probe):
    probe.set_quotas("probe", backoff_ms="20ms")
    for _ in range(3):
        _trap(probe)
    assert probe.call("probe/a", b"Eearly").error == "backoff"
    time.sleep(0.05)
    assert probe.call("probe/a", b"Eback").response == b"back"
    assert probe.health("probe/a") is None
    assert probe.usage("probe/a")["recoveries"] == 1
    messages = [r.message for r in probe.logs("probe/a", limit=50)]
    assert any(m.startswith("backing off for") for m in messages)
    assert any(m.startswith("recovered:") for m in messages)


def test_a_probe_that_faults_doubles_the_delay_up_to_the_cap(probe):
    probe.set_quotas("probe", backoff_ms="10ms", backoff_max_ms="40ms", quarantine_faults="off")
    quotas = probe.quotas("probe/a")
    delays = []
    for faults in range(1, 8):
        if faults > 3:
            health = probe.health("probe/a")
            assert health is not None and health.retry_at is not None
            time.sleep(max(0.0, health.retry_at - time.time()) + 0.005)
        assert _trap(probe) == "trap", faults
        health = probe.health("probe/a")
        assert health is not None and health.faults == faults
        if faults >= 3:
            delays.append(backoff_delay(quotas, faults))
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]


def test_backoff_delay_doubles_from_the_first_and_is_capped():
    quotas = Quotas(crash_faults=3, backoff_ms=1000, backoff_max_ms=300_000)
    assert [backoff_delay(quotas, n) for n in (3, 4, 5, 11, 12, 1000)] == [1, 2, 4, 256, 300, 300]


def test_only_one_probe_runs_while_the_others_are_refused(probe):
    probe.set_quotas("probe", backoff_ms="1ms")
    for _ in range(3):
        _trap(probe)
    time.sleep(0.01)
    slot = probe.registry.slots[("probe", "a")]
    assert probe.supervision.admit(slot, "r1") is None  # the probe
    second = probe.supervision.admit(slot, "r2")
    assert second is not None and second.error == "backoff"
    probe.supervision.probe_lost(slot)  # it never ran: another may probe
    assert probe.supervision.admit(slot, "r3") is None


def test_quarantine_after_the_cap_holds_until_reset(probe):
    probe.set_quotas("probe", backoff_ms="1ms", quarantine_faults=4)
    for n in range(4):
        time.sleep(0.01)
        assert _trap(probe) == "trap", n
    health = probe.health("probe/a")
    assert health is not None and health.state == "quarantined"
    time.sleep(0.02)  # long past any backoff: quarantine does not expire
    refused = probe.call("probe/a", b"Eok")
    assert (refused.error, refused.retry_after) == (ErrorCode.QUARANTINED, 0.0)
    assert "reset probe/a" in " ".join(r.message for r in probe.logs("probe/a", level="error"))
    cleared = probe.reset("probe/a")
    assert cleared is not None and cleared.state == "quarantined"
    assert probe.call("probe/a", b"Eok").response == b"ok"
    assert probe.reset("probe/a") is None  # healthy: nothing to clear
    usage = probe.usage("probe/a")
    assert (usage["quarantines"], usage["resets"]) == (1, 1)


def test_a_quarantine_and_a_backoff_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(fixture("probe.wat"))
        sup.set_quotas("probe/q", quarantine_faults=2)
        sup.set_quotas("probe/b", backoff_ms="1h", backoff_max_ms="2h")
        for _ in range(2):
            _trap(sup, "probe/q")
        for _ in range(3):
            _trap(sup, "probe/b")
    with Supervisor(data) as sup:
        assert sup.call("probe/q", b"Eok").error == "quarantined"
        refused = sup.call("probe/b", b"Eok")
        assert refused.error == "backoff" and refused.retry_after > 3000
        health = sup.health("probe/b")
        assert health is not None and len(health.last_faults) == 3
        sup.reset("probe/q")
    with Supervisor(data) as sup:
        assert sup.call("probe/q", b"Eok").response == b"ok"


def test_thresholds_are_quotas_changed_live(probe):
    probe.set_quotas("probe/a", crash_faults=5)
    for _ in range(4):
        _trap(probe)
    assert probe.health("probe/a").state == "ok"  # type: ignore[union-attr]
    probe.set_quotas("probe/a", crash_faults="off", quarantine_faults="off")
    for _ in range(20):
        assert _trap(probe) == "trap"
    assert probe.health("probe/a").state == "ok"  # type: ignore[union-attr]
    probe.set_quotas("probe/a", crash_faults=2)
    _trap(probe)  # the 25th in a row: over the new threshold at once
    assert probe.health("probe/a").state == "backoff"  # type: ignore[union-attr]


def test_other_facets_are_served_while_one_backs_off(probe):
    for _ in range(3):
        _trap(probe, "probe/bad")
    assert probe.call("probe/bad", b"Ex").error == "backoff"
    assert probe.call("probe/good", b"Ehello").response == b"hello"


def test_the_guests_own_error_response_and_quota_refusals_are_not_faults(probe):
    answer = b'E{"status": 500, "headers": []}\nbroken on purpose'
    for _ in range(5):
        result = probe.fetch("probe/h", HttpRequest("GET", body=answer))
        assert (result.ok, result.status) == (True, 500)
    assert probe.health("probe/h") is None
    probe.set_quotas("probe/h", max_body=1)
    for _ in range(5):
        assert probe.fetch("probe/h", HttpRequest("POST", body=b"Etoo big")).error == "too_big"
    assert probe.health("probe/h") is None


def test_every_fault_kind_counts(probe):
    probe.set_quotas("probe", quarantine_faults="off", crash_faults="off", timeout_ms="100ms")
    codes = [probe.call("probe/k", body).error for body in (b"X", b"P", b"O", b"C", b"I")]
    assert codes == ["trap", "bad_response", "bad_request", "stack_overflow", "timeout"]
    health = probe.health("probe/k")
    assert health is not None and health.faults == 5
    assert [f["code"] for f in health.last_faults] == codes


def test_reset_refuses_read_only_and_unknown_facets(tmp_path, probe):
    import pytest

    from runtime import FacetsError, NotFound

    with pytest.raises(NotFound):
        probe.reset("probe/nobody")
    probe.call("probe/a", b"Eok")
    probe.close()
    with Supervisor(probe.data_dir, readonly=True) as reader, pytest.raises(FacetsError) as raised:
        reader.reset("probe/a")
    assert raised.value.code == "refused"


def test_a_deleted_facet_forgets_its_record(probe):
    for _ in range(3):
        _trap(probe)
    probe.delete("probe/a")
    assert probe.call("probe/a", b"Efresh").response == b"fresh"
    assert probe.health("probe/a") is None


def test_raising_the_threshold_ends_a_backoff_at_the_next_verdict(probe):
    probe.set_quotas("probe", backoff_ms="1ms")
    for _ in range(3):
        _trap(probe)
    assert probe.health("probe/a").state == "backoff"  # type: ignore[union-attr]
    probe.set_quotas("probe", crash_faults=50)
    time.sleep(0.01)
    _trap(probe)  # the probe faults: 4 in a row, under the new threshold
    health = probe.health("probe/a")
    assert health is not None and (health.state, health.retry_at) == ("ok", None)
    assert probe.call("probe/a", b"Eok").ok
