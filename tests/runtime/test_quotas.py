"""Quotas: parsing, the three levels, persistence, and every key enforced at run time."""

from __future__ import annotations

import time

import pytest

from runtime import QuotaError, Quotas, Supervisor, parse_quota
from tests.conftest import COUNTER_WAT, sql_body


@pytest.mark.parametrize(
    "key, raw, expected",
    [
        ("memory", "512KiB", 512 * 1024),
        ("memory", "64MiB", 64 * 1024**2),
        ("storage", "1GB", 10**9),
        ("storage", "16384", 16384),
        ("storage", 8192, 8192),
        ("log_bytes", "0", 0),
        ("timeout_ms", "250ms", 250),
        ("timeout_ms", "2s", 2000),
        ("timeout_ms", "300", 300),
        ("fuel", "5M", 5_000_000),
        ("fuel", "1000", 1000),
        ("rate", "2.5", 2.5),
        ("rate", "off", 0),
        ("queue", "8", 8),
        ("queue", "off", 0),
        ("max_facets", "100", 100),
    ],
)
def test_parse_accepted_forms(key, raw, expected):
    assert parse_quota(key, raw) == expected


@pytest.mark.parametrize(
    "key, raw, fragment",
    [
        ("fuel", "lots", "fuel"),
        ("storage", "1XB", "unknown unit"),
        ("memory", "-5", "memory"),
        ("memory", -5, "negative"),
        ("timeout_ms", "0", "at least"),
        ("bogus", "1", "unknown quota key"),
        ("queue", "1.5", "whole number"),
        ("memory", "100GiB", "at most"),
        ("fuel", True, "fuel"),
        ("rate", "fast", "rate"),
    ],
)
def test_parse_refuses_bad_values_naming_the_key(key, raw, fragment):
    with pytest.raises(QuotaError, match=fragment) as info:
        parse_quota(key, raw)
    assert key in str(info.value) or fragment == "unknown quota key"


def test_three_levels_most_specific_wins(sup):
    sup.set_quotas("*", fuel="10M")
    sup.set_quotas("counter", fuel="20M", timeout_ms="1s")
    sup.set_quotas("counter/vip", fuel="30M")
    assert sup.quotas("*").fuel == 10_000_000
    assert sup.quotas("counter").fuel == 20_000_000
    assert sup.quotas("counter/vip").fuel == 30_000_000
    assert sup.quotas("counter/vip").timeout_ms == 1000
    assert sup.quotas("counter/other").fuel == 20_000_000
    assert sup.quotas("todo/x").fuel == 10_000_000
    assert sup.quotas("todo/x").memory == Quotas().memory
    # "default" removes a level's setting
    sup.set_quotas("counter/vip", fuel="default")
    assert sup.quotas("counter/vip").fuel == 20_000_000
    assert sup.explicit_quotas("counter/vip") == {}


def test_bad_input_changes_nothing(sup):
    sup.set_quotas("counter/a", fuel="5M")
    for changes in (
        {"fuel": "6M", "storage": "1XB"},
        {"memory": "1MiB", "bogus": "1"},
        {"fuel": "lots"},
        {"memory": "-1"},
    ):
        with pytest.raises(QuotaError):
            sup.set_quotas("counter/a", changes)
    assert sup.explicit_quotas("counter/a") == {"fuel": 5_000_000}
    with pytest.raises(QuotaError, match="per-app"):
        sup.set_quotas("counter/a", max_facets="3")
    with pytest.raises(QuotaError, match="target"):
        sup.set_quotas("../etc", fuel="1M")
    with pytest.raises(QuotaError, match="global"):
        sup.set_quotas("*", fuel="default")


def test_quotas_survive_restart_and_can_be_preprovisioned(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        sup.set_quotas("counter/future", memory="1MiB", fuel="2M")  # before the facet exists
        sup.set_quotas("counter", rate="50")
    with Supervisor(tmp_path / "d") as sup:
        q = sup.quotas("counter/future")
        assert (q.memory, q.fuel, q.rate) == (1024 * 1024, 2_000_000, 50.0)
        sup.load_app(COUNTER_WAT)
        assert sup.call("counter/future").ok


def test_fuel_change_applies_to_a_running_facet(probe):
    assert probe.call("probe/f", b"Eok").ok
    probe.set_quotas("probe/f", fuel="100k")
    assert probe.call("probe/f", b"I").error == "fuel_exhausted"
    probe.set_quotas("probe/f", fuel="1000G", timeout_ms="100ms")
    assert probe.call("probe/f", b"I").error == "timeout"


def test_memory_raise_applies_without_restart_and_shrink_at_next_instantiation(probe):
    probe.set_quotas("probe/m", memory="2MiB")
    assert probe.call("probe/m", b"E" + b"x" * 1_500_000).ok  # grows memory to ~1.6 MiB
    assert probe.call("probe/m", b"E" + b"x" * 3_000_000).error == "memory_limit"
    probe.set_quotas("probe/m", memory="8MiB")
    assert probe.call("probe/m", b"E" + b"x" * 1_500_000).ok  # fresh instance after the failure
    grown = probe.call("probe/m", b"E" + b"x" * 3_000_000)  # same warm instance, raised limit
    assert grown.ok and not grown.usage.cold_start
    # A shrink below what the instance holds is applied at the next instantiation.
    probe.set_quotas("probe/m", memory="1MiB")
    shrunk = probe.call("probe/m", b"Esmall")
    assert shrunk.ok and shrunk.usage.cold_start and shrunk.usage.memory <= 1024 * 1024


def test_log_bytes_truncates_with_marker_and_counts(probe):
    probe.set_quotas("probe/l", log_bytes="10")
    result = probe.call("probe/l", b"L1" + b"a" * 50)
    assert result.ok and result.usage.logs_truncated == 1 and result.usage.log_bytes == 10
    result = probe.call("probe/l", b"K\x05")  # 5 x "tick" = 20 bytes, budget 10
    assert result.usage.log_bytes == 10 and result.usage.logs_truncated == 3
    messages = [r.message for r in probe.logs("probe/l") if r.source == "guest"]
    assert messages[0] == "a" * 10 + " …[truncated]"
    assert probe.usage("probe/l")["logs_truncated"] == 4


def test_rate_limit(probe):
    probe.set_quotas("probe/r", rate="3")
    results = [probe.call("probe/r", b"Ex").error for _ in range(6)]
    assert results[:3] == [None, None, None]
    assert "rate_limited" in results[3:]
    time.sleep(0.7)  # the bucket refills at 3/s
    assert probe.call("probe/r", b"Ex").ok
    assert probe.usage("probe/r")["errors"]["rate_limited"] >= 1
    probe.set_quotas("probe/r", rate="off")
    assert all(probe.call("probe/r", b"Ex").ok for _ in range(20))


def test_queue_limit_gives_overloaded(probe):
    probe.set_quotas("probe/q", queue="1", fuel="1000G", timeout_ms="1500ms")
    spinning = probe.submit("probe/q", b"I")
    slot = probe._slot("probe", "q")
    deadline = time.monotonic() + 5
    while not slot.busy and time.monotonic() < deadline:
        time.sleep(0.005)
    waiting = probe.submit("probe/q", b"Ewait")
    while slot.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    third = probe.call("probe/q", b"Ethird")
    assert third.error == "overloaded"
    assert spinning.result().error == "timeout"
    assert waiting.result().ok


def test_max_facets(probe):
    probe.set_quotas("probe", max_facets="2")
    assert probe.call("probe/a", b"E").ok and probe.call("probe/b", b"E").ok
    refused = probe.call("probe/c", b"E")
    assert refused.error == "facet_limit"
    assert [f.name for f in probe.facet_list("probe")] == ["a", "b"]
    assert probe.call("probe/a", b"Estill").ok
    probe.set_quotas("probe", max_facets="3")
    assert probe.call("probe/c", b"E").ok


def test_storage_quota_change_reapplied_to_open_database(probe):
    probe.call("probe/s", sql_body("CREATE TABLE t(x)"))
    assert probe.call("probe/s", sql_body("INSERT INTO t VALUES (randomblob(100000))")).ok
    probe.set_quotas("probe/s", storage="64KiB")  # below current size: growth stops
    assert probe.call("probe/s", sql_body("INSERT INTO t VALUES (randomblob(100000))")).error == "storage_full"
    probe.set_quotas("probe/s", storage="10MiB")
    assert probe.call("probe/s", sql_body("INSERT INTO t VALUES (randomblob(100000))")).ok


# -- issue 12: huge, infinite and NaN values -----------------------------------------------
from runtime.quotas import QUOTA_KEYS, accepted_range  # noqa: E402

BAD_TEXT = [
    "inf",
    "-inf",
    "nan",
    "NaN",
    "Infinity",
    "1e400",
    "-5",
    "99999999999999999999999999G",
    "1" * 400,
    "1" * 5000,
    "184467440737095516160",
    "١٢",
]
BAD_NUMBERS = [float("inf"), float("-inf"), float("nan"), 1e308, 10**400, -1, 2**64, 1e300]


@pytest.mark.parametrize("key", QUOTA_KEYS)
@pytest.mark.parametrize("raw", BAD_TEXT + BAD_NUMBERS, ids=repr)
def test_every_key_refuses_non_finite_huge_and_negative_values(key, raw):
    with pytest.raises(QuotaError) as info:
        parse_quota(key, raw)
    message = str(info.value)
    assert key in message and accepted_range(key) in message
    assert len(message) < 400  # a 5,000-digit value is not quoted whole


@pytest.mark.parametrize("key", QUOTA_KEYS)
def test_every_key_has_a_finite_range_and_accepts_its_bounds(key):
    from runtime.quotas import _RANGE

    low, high = _RANGE[key]
    for bound in (low, high):
        value = parse_quota(key, float(bound) if key == "rate" else int(bound))
        assert value == (float(bound) if key == "rate" else bound)
        assert isinstance(value, float if key == "rate" else int)
    assert high < 2**63  # fits SQLite's INTEGER and wasmtime's u64 fuel
    with pytest.raises(QuotaError, match="at most"):
        parse_quota(key, float(high) * 2 if key == "rate" else int(high) * 2)


def test_large_counts_are_exact_not_rounded_through_float():
    assert parse_quota("fuel", "999999999999999") == 999_999_999_999_999
    assert parse_quota("fuel", "1000000G") == 10**15
    assert parse_quota("storage", "1TiB") == 1024**4


@pytest.mark.parametrize("key", QUOTA_KEYS)
@pytest.mark.parametrize("raw", ["inf", "nan", "1e400", "99999999999999999999999999G", "-1", "184467440737095516160"])
def test_the_command_line_refuses_them_with_bad_quota(sup, key, raw):
    from console.commands import run_line

    target = "*"
    result = run_line(sup, f"quota {target} {key}={raw}")
    assert result["ok"] is False and result["error"]["code"] == "bad_quota", result
    assert key in result["error"]["message"]
    assert sup.explicit_quotas(target) == {}  # nothing stored


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e400, 10**30, -0.5])
def test_the_python_api_refuses_them_and_stores_nothing(sup, value):
    for key in QUOTA_KEYS:
        target = "counter" if key == "max_facets" else "counter/a"
        with pytest.raises(QuotaError, match=key):
            sup.set_quotas(target, {key: value})
    assert sup.explicit_quotas("counter/a") == {} and sup.explicit_quotas("counter") == {}
