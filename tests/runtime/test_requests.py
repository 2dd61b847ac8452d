"""The request path: naming, transactions (output gate), input gate, concurrency, upgrades."""

from __future__ import annotations

import json
import threading

import pytest

from runtime import Supervisor
from tests.conftest import COUNTER_WAT, fixture, sql_body, sql_reply


@pytest.mark.parametrize(
    "target",
    [
        "",
        "counter",
        "counter/",
        "/a",
        "counter/../x",
        "counter/A",
        "Counter/a",
        "counter/a/b",
        "counter/-a",
        "counter/" + "a" * 64,
        "counter/a b",
        "counter/é",
    ],
)
def test_bad_names_are_refused_before_touching_disk(sup, target):
    sup.load_app(COUNTER_WAT)
    before = sorted(p.relative_to(sup.data_dir) for p in sup.data_dir.rglob("*") if "facets" in p.parts)
    result = sup.call(target)
    assert (result.ok, result.error) == (False, "bad_request")
    after = sorted(p.relative_to(sup.data_dir) for p in sup.data_dir.rglob("*") if "facets" in p.parts)
    assert after == before


def test_longest_name_is_accepted(sup):
    sup.load_app(COUNTER_WAT)
    assert sup.call("counter/" + "a" * 63).ok


def test_unknown_app_is_not_found(sup):
    result = sup.call("nothing/here")
    assert result.error == "not_found"


def test_facets_are_isolated(sup):
    sup.load_app(COUNTER_WAT)
    for _ in range(3):
        sup.call("counter/alice")
    assert sup.call("counter/bob").response == b'{"count":1}'
    assert sup.call("counter/alice").response == b'{"count":4}'
    assert (sup.data_dir / "facets" / "counter" / "alice.sqlite3").exists()


def test_result_carries_usage(probe):
    result = probe.call("probe/u", sql_body("CREATE TABLE t(x)"))
    assert result.usage.cold_start and result.usage.fuel > 0 and result.usage.wall_ms > 0
    result = probe.call("probe/u", sql_body("INSERT INTO t VALUES (1), (2), (3)"))
    assert not result.usage.cold_start
    assert result.usage.rows_written == 3
    assert result.request_id


def test_write_then_trap_rolls_back_everything(probe):
    probe.call("probe/a", sql_body("CREATE TABLE t(x)"))
    probe.call("probe/a", sql_body("INSERT INTO t VALUES (1)"))
    failed = probe.call("probe/a", sql_body("INSERT INTO t VALUES (2)", op="W"))
    assert (failed.ok, failed.error) == (False, "trap")
    assert failed.usage.rows_written == 0
    assert sql_reply(probe.call("probe/a", sql_body("SELECT x FROM t")))["rows"] == [[1]]


def test_trap_discards_the_instance(sup):
    sup.load_app(fixture("probe.wat"))
    assert sup.call("probe/a", b"Ex").ok
    assert sup.call("probe/a", b"X").error == "trap"
    assert sup.facet_list()[0].state == "failed"
    again = sup.call("probe/a", b"Ex")
    assert again.ok and again.usage.cold_start


def test_response_is_returned_only_after_commit(probe, tmp_path):
    """Once call() returns, another connection sees the write (it was committed)."""
    import sqlite3

    probe.call("probe/c", sql_body("CREATE TABLE t(x)"))
    probe.call("probe/c", sql_body("INSERT INTO t VALUES (42)"))
    conn = sqlite3.connect(probe.db_path("probe/c"))
    assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    conn.close()


def test_data_survives_restart(tmp_path):
    data = tmp_path / "d"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT)
        sup.call("counter/a")
        sup.call("counter/a")
    with Supervisor(data) as sup:
        assert sup.call("counter/a").response == b'{"count":3}'
        assert [f.name for f in sup.facet_list()] == ["a"]


def test_upgrade_takes_effect_at_next_instantiation(sup):
    sup.load_app(COUNTER_WAT, "app")
    assert sup.call("app/a").response == b'{"count":1}'
    sup.load_app(fixture("probe.wat"), "app")
    upgraded = sup.call("app/a", b"Ehello")
    assert upgraded.ok and upgraded.response == b"hello" and upgraded.usage.cold_start
    # The data written by version 1 is still there.
    rows = sql_reply(sup.call("app/a", sql_body("SELECT n FROM counter")))["rows"]
    assert rows == [[1]]


def test_other_facets_keep_serving_while_one_spins(probe):
    """A spinning guest runs without the GIL: another facet is served meanwhile."""
    probe.set_quotas("probe/spin", fuel="1000G", timeout_ms="1s")
    spinning = probe.submit("probe/spin", b"I")
    started = threading.Event()
    served = []
    for _ in range(20):
        result = probe.call("probe/other", b"Eping")
        served.append(result.ok)
        if not spinning.done():
            started.set()
    assert all(served)
    assert started.is_set(), "the spinning request finished before the others were served"
    assert spinning.result().error == "timeout"


def test_one_request_at_a_time_per_facet(probe):
    """Concurrent increments of one facet never lose an update (the input gate)."""
    probe.call("probe/n", sql_body("CREATE TABLE c(n)"))
    probe.call("probe/n", sql_body("INSERT INTO c VALUES (0)"))
    body = sql_body("UPDATE c SET n = n + 1")
    futures = [probe.submit("probe/n", body) for _ in range(200)]
    assert all(f.result().ok for f in futures)
    assert sql_reply(probe.call("probe/n", sql_body("SELECT n FROM c")))["rows"] == [[200]]


def test_body_accepts_str_and_rejects_other_types(probe):
    assert probe.call("probe/s", "Ehi").response == b"hi"
    assert probe.call("probe/s", 42).error == "bad_request"


def test_host_functions_random_and_now(probe):
    import time

    a = probe.call("probe/h", b"R").response
    b = probe.call("probe/h", b"R").response
    assert len(a) == 16 and a != b
    now = int.from_bytes(probe.call("probe/h", b"T").response, "little")
    assert abs(now - time.time() * 1000) < 60_000


def test_sql_blobs_round_trip(probe):
    probe.call("probe/b", sql_body("CREATE TABLE f(data BLOB)"))
    assert probe.call("probe/b", sql_body("INSERT INTO f VALUES (?)", {"$blob": "AAEC/w=="})).ok
    reply = sql_reply(probe.call("probe/b", sql_body("SELECT data, length(data) FROM f")))
    assert reply["rows"] == [[{"$blob": "AAEC/w=="}, 4]]


def test_sql_reply_shape(probe):
    probe.call("probe/r", sql_body("CREATE TABLE t(a, b)"))
    reply = sql_reply(probe.call("probe/r", sql_body("INSERT INTO t VALUES (?, ?)", 1, "x")))
    assert reply == {"ok": True, "columns": [], "rows": [], "rows_read": 0, "rows_written": 1, "last_insert_rowid": 1}
    reply = sql_reply(probe.call("probe/r", sql_body("SELECT a, b FROM t")))
    assert reply["columns"] == ["a", "b"] and reply["rows"] == [[1, "x"]]


@pytest.mark.parametrize(
    "request_json, code",
    [
        ({"query": "SELECT 1"}, "bad_request"),
        ({"sql": "SELECT ?", "params": [[1, 2]]}, "bad_request"),
        ({"sql": "SELECT ?", "params": "x"}, "bad_request"),
        ({"sql": "SELECT ?", "params": [{"$blob": "!!"}]}, "bad_request"),
        ({"sql": "SELECT ?", "params": [2**70]}, "bad_request"),
        ({"sql": "SELEKT 1"}, "sql_error"),
        ({"sql": "SELECT 1; SELECT 2"}, "sql_error"),
    ],
)
def test_wrong_sql_requests_are_answered_in_json(probe, request_json, code):
    result = probe.call("probe/q", b"S" + json.dumps(request_json).encode())
    reply = sql_reply(result)
    assert reply["ok"] is False and reply["error"]["code"] == code


def test_sql_request_that_is_not_json_fails_the_request(probe):
    result = probe.call("probe/q", b"S{not json")
    assert result.error == "bad_request"
