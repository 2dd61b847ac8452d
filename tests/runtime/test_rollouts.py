"""Rollouts: pins, canaries by name hash, promote, rollback, and migrations that fail."""

from __future__ import annotations

import pytest

from runtime import BadRequest, NotFound, Supervisor
from runtime.rollout import BUCKETS, canary_bucket, parse_percent
from tests.runtime.versioned import versioned_wat

FACETS = [f"f{i}" for i in range(200)]


def _load(sup: Supervisor, label: str, **kwargs) -> int:
    init = kwargs.pop("init_sql", ())
    wat = versioned_wat(
        label, init, init_traps=kwargs.pop("init_traps", False), handle_traps=kwargs.pop("handle_traps", False)
    )
    return sup.load_app_bytes(wat, "app", **kwargs).version


def _served_by(sup: Supervisor, facets=FACETS) -> dict[str, str]:
    out = {}
    for facet in facets:
        result = sup.call(f"app/{facet}", b"")
        out[facet] = result.response.decode() if result.ok else str(result.error)
    return out


def _canaries(percent: float) -> set[str]:
    return {f for f in FACETS if canary_bucket("app", f) < round(percent * 100)}


def test_a_new_version_reaches_every_facet_by_default(sup):
    _load(sup, "v1")
    assert set(_served_by(sup).values()) == {"v1"}
    _load(sup, "v2")
    assert set(_served_by(sup).values()) == {"v2"}


def test_a_canary_goes_to_the_facets_whose_name_hash_is_below_the_share(sup):
    _load(sup, "v1")
    _served_by(sup)  # every facet exists and runs v1
    _load(sup, "v2", canary="25%")
    served = _served_by(sup)
    expected = _canaries(25)
    assert {f for f, label in served.items() if label == "v2"} == expected
    assert {f for f, label in served.items() if label == "v1"} == set(FACETS) - expected
    assert 25 < len(expected) < 75  # the hash spreads them: a quarter of 200, roughly
    rollout = sup.rollout("app")
    assert (rollout["active"], rollout["canary"], rollout["canary_percent"]) == (1, 2, 25.0)
    by_version = {v["version"]: v for v in rollout["versions"]}
    assert by_version[2]["facets"] == len(expected)
    assert by_version[1]["facets"] == len(FACETS) - len(expected)


def test_the_same_facets_are_canaries_after_a_restart(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        _load(sup, "v1")
        _load(sup, "v2", canary=10)
        before = _served_by(sup)
    with Supervisor(tmp_path / "d") as sup:
        assert _served_by(sup) == before
        assert sup.rollout("app")["canary"] == 2


def test_promote_moves_everyone_and_rollback_returns_the_canaries(sup):
    _load(sup, "v1")
    _load(sup, "v2", canary=50)
    sup.promote("app")
    assert set(_served_by(sup).values()) == {"v2"}
    _load(sup, "v3", canary=50)
    sup.rollback("app")  # a canary staged: it is cancelled
    assert set(_served_by(sup).values()) == {"v2"}
    assert sup.rollout("app")["canary"] is None
    with pytest.raises(BadRequest):
        sup.promote("app")


def test_rollback_without_a_canary_goes_to_the_version_before_or_the_one_named(sup):
    for label in ("v1", "v2", "v3"):
        _load(sup, label)
    sup.rollback("app")
    assert set(_served_by(sup, FACETS[:5]).values()) == {"v2"}
    sup.rollback("app", 1)
    assert set(_served_by(sup, FACETS[:5]).values()) == {"v1"}
    with pytest.raises(BadRequest):
        sup.rollback("app")  # version 1 is the oldest
    with pytest.raises(NotFound):
        sup.rollback("app", 9)
    _load(sup, "v4")  # a rollback holds: a new load does not move a rolled-back app
    assert set(_served_by(sup, FACETS[:5]).values()) == {"v1"}
    assert sup.unpin("app")
    assert set(_served_by(sup, FACETS[:5]).values()) == {"v4"}


def test_pins_of_a_facet_and_of_an_app(sup):
    _load(sup, "v1")
    _load(sup, "v2")
    _served_by(sup, ["a", "b"])
    sup.pin("app/a", 1)
    assert _served_by(sup, ["a", "b"]) == {"a": "v1", "b": "v2"}
    sup.pin("app", 1)
    _load(sup, "v3")
    assert _served_by(sup, ["a", "b"]) == {"a": "v1", "b": "v1"}
    sup.pin("app/a", 3)
    assert _served_by(sup, ["a", "b"]) == {"a": "v3", "b": "v1"}
    assert sup.unpin("app/a") and sup.unpin("app")
    assert not sup.unpin("app")
    assert _served_by(sup, ["a", "b"]) == {"a": "v3", "b": "v3"}
    with pytest.raises(NotFound):
        sup.pin("app/a", 7)
    with pytest.raises(NotFound):
        sup.pin("app/nobody", 1)


def test_a_canary_whose_new_version_traps_backs_off_while_the_rest_serve(sup):
    _load(sup, "v1")
    _served_by(sup)
    _load(sup, "bad", canary=20, handle_traps=True)
    canaries = _canaries(20)
    for _ in range(3):
        served = _served_by(sup)
    assert {f for f, label in served.items() if label == "trap"} == canaries
    assert {label for f, label in served.items() if f not in canaries} == {"v1"}
    served = _served_by(sup)
    assert {f for f, label in served.items() if label == "backoff"} == canaries
    assert {label for f, label in served.items() if f not in canaries} == {"v1"}
    versions = {v["version"]: v for v in sup.rollout("app")["versions"]}
    assert versions[2]["errors"] == versions[2]["requests"] == 3 * len(canaries)  # refusals reach no version
    assert versions[1]["errors"] == 0
    sup.rollback("app")  # the canaries return to v1 ...
    for facet in canaries:
        sup.reset(f"app/{facet}")  # ... once their backoff is cleared
    assert set(_served_by(sup).values()) == {"v1"}


def test_a_failed_migration_rolls_back_and_stays_on_the_old_version(sup):
    _load(sup, "v1", init_sql=("CREATE TABLE IF NOT EXISTS a(x)",))
    assert sup.call("app/m", b"").response == b"v1"
    _load(sup, "v2", init_sql=("CREATE TABLE b(x)", "INSERT INTO a VALUES (1)"), init_traps=True)
    result = sup.call("app/m", b"")
    assert (result.ok, result.response, result.version) == (True, b"v1", 1)
    tables = {t["name"] for t in sup.tables("app/m")}
    assert "b" not in tables  # never half-migrated
    assert sup.rows("app/m", "a")["rows"] == []
    errors = [r.message for r in sup.logs("app/m", level="error")]
    assert any("migration from version 1 to 2 failed (trap)" in m and "stays on version 1" in m for m in errors)
    assert sup.call("app/m", b"").response == b"v1"  # not retried at every request
    assert sum("migration" in r.message for r in sup.logs("app/m", level="error")) == 1
    assert sup.health("app/m") is None  # it serves: no backoff
    assert {v["version"]: v["facets"] for v in sup.rollout("app")["versions"]} == {1: 1, 2: 0}
    _load(sup, "v3", init_sql=("CREATE TABLE IF NOT EXISTS c(x)",))
    assert sup.call("app/m", b"").response == b"v3"
    assert "c" in {t["name"] for t in sup.tables("app/m")}


def test_a_failed_migration_is_remembered_across_a_restart(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        _load(sup, "v1")
        sup.call("app/m", b"")
        _load(sup, "v2", init_traps=True)
        assert sup.call("app/m", b"").response == b"v1"
    with Supervisor(tmp_path / "d") as sup:  # it knows m ran v1: a failure falls back again
        assert sup.call("app/m", b"").response == b"v1"


def test_a_new_facets_init_failure_is_a_fault(sup):
    _load(sup, "v1", init_traps=True)
    for _ in range(3):
        assert sup.call("app/n", b"").error == "trap"
    assert sup.call("app/n", b"").error == "backoff"


def test_canary_percentages_are_checked():
    assert [parse_percent(p) for p in ("10%", "2.5", 100, "0.01%")] == [10.0, 2.5, 100.0, 0.01]
    for bad in ("0", "-5%", "101", "ten", "0.001", "nan"):
        with pytest.raises(BadRequest):
            parse_percent(bad)
    assert all(0 <= canary_bucket("a", f) < BUCKETS for f in FACETS)


def test_a_first_version_cannot_be_a_canary(sup):
    with pytest.raises(BadRequest):
        _load(sup, "v1", canary=10)
    assert not sup.apps.has("app")


def test_unpinning_an_app_during_a_canary_keeps_the_split(sup):
    _load(sup, "v1")
    _served_by(sup)
    sup.pin("app", 1)
    _load(sup, "v2", canary=20)
    before = _served_by(sup)
    assert sup.unpin("app")
    assert _served_by(sup) == before  # the non-canaries stay on v1, the canaries on v2
    sup.rollback("app")
    assert set(_served_by(sup).values()) == {"v1"}


@pytest.mark.parametrize("version", ["x", "1.9", 1.9, -1, 0, "", True])
def test_bad_version_numbers_are_refused(sup, version):
    _load(sup, "v1")
    sup.call("app/a", b"")
    with pytest.raises(BadRequest):
        sup.pin("app/a", version)
    with pytest.raises(BadRequest):
        sup.rollback("app", version)


def test_a_failed_migration_is_counted_as_a_fault_and_attributed_to_the_version_that_ran(sup):
    _load(sup, "v1")
    sup.call("app/m", b"")
    _load(sup, "v2", init_traps=True)
    assert sup.call("app/m", b"").response == b"v1"
    assert sup.usage("app/m")["faults"] == 1
    assert sup.call("app/m", b"X").error == "trap"  # a trap on the v1 it stayed on
    versions = {v["version"]: v for v in sup.rollout("app")["versions"]}
    assert (versions[1]["errors"], versions[2]["errors"]) == (1, 0)


def test_requests_and_errors_per_version_survive_a_restart(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        _load(sup, "v1")
        _load(sup, "bad", canary=100, handle_traps=True)
        assert sup.call("app/a", b"").error == "trap"
    with Supervisor(tmp_path / "d") as sup:
        versions = {v["version"]: (v["requests"], v["errors"]) for v in sup.rollout("app")["versions"]}
        assert versions == {1: (0, 0), 2: (1, 1)}
