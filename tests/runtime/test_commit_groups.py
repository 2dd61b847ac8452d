"""Commit groups: requests queued behind a busy facet share one transaction and one COMMIT,
each in its own savepoint, and none is answered before that COMMIT."""

from __future__ import annotations

import time

import pytest

from runtime import Supervisor
from tests.conftest import fixture, sql_body, sql_reply

SLOW = sql_body(
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2000000) SELECT count(*) FROM r"
)


@pytest.fixture
def full(tmp_path):
    """A supervisor with full durability (a disk sync per COMMIT) and the probe module."""
    with Supervisor(tmp_path / "data", durability="full", idle_timeout=3600, workers=32) as sup:
        sup.load_app(fixture("probe.wat"))
        sup.set_quotas("probe", timeout_ms="60s", fuel="1000G", queue="off")
        yield sup


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def queued_behind_slow_request(sup, target: str, bodies: list[bytes]):
    """Submit ``bodies`` while a slow read holds the facet's gate; return their results."""
    app, facet = target.split("/")
    slot = sup._slot(app, facet)
    slow = sup.submit(target, SLOW)
    until(lambda: slot.busy)
    futures = []
    for body in bodies:  # one at a time: pool threads would otherwise queue in any order
        futures.append(sup.submit(target, body))
        until(lambda: slot.waiting == len(futures))
    assert not slow.done(), "the slow request ended before the others were queued"
    assert slow.result().ok
    return [f.result() for f in futures]


def test_queued_requests_share_one_commit(full):
    full.call("probe/g", sql_body("CREATE TABLE t(x)"))
    results = queued_behind_slow_request(full, "probe/g", [sql_body("INSERT INTO t VALUES (?)", i) for i in range(20)])
    assert all(r.ok for r in results)
    assert [r.usage.commit_group for r in results] == [20] * 20
    assert [sql_reply(r)["last_insert_rowid"] for r in results] == list(range(1, 21))  # queue order
    rows = sql_reply(full.call("probe/g", sql_body("SELECT x FROM t ORDER BY rowid")))["rows"]
    assert rows == [[i] for i in range(20)]


def test_a_failed_request_rolls_back_only_its_own_writes(full):
    full.call("probe/g", sql_body("CREATE TABLE t(x)"))
    bodies = [sql_body("INSERT INTO t VALUES (?)", i) for i in range(10)]
    bodies[4] = sql_body("INSERT INTO t VALUES (?)", 4, op="W")  # writes, then traps
    results = queued_behind_slow_request(full, "probe/g", bodies)
    assert [r.error for r in results] == [None] * 4 + ["trap"] + [None] * 5
    assert [r.usage.commit_group for r in results if r.ok] == [9] * 9
    assert results[4].usage.rows_written == 0
    rows = sql_reply(full.call("probe/g", sql_body("SELECT x FROM t ORDER BY rowid")))["rows"]
    assert rows == [[i] for i in range(10) if i != 4]


def test_a_statement_that_ends_the_transaction_does_not_take_the_group_with_it(full):
    """INSERT OR ROLLBACK undoes the whole transaction, so the requests before it in the
    group lose their writes; not yet answered, they run again and commit."""
    for statement in ("CREATE TABLE t(x UNIQUE)", "INSERT INTO t VALUES (-1)"):
        full.call("probe/g", sql_body(statement))
    bodies = [sql_body("INSERT INTO t VALUES (?)", i) for i in range(8)]
    bodies[3] = sql_body("INSERT OR ROLLBACK INTO t VALUES (-1)")
    results = queued_behind_slow_request(full, "probe/g", bodies)
    assert [r.error for r in results] == [None] * 3 + ["sql_error"] + [None] * 4
    rows = sql_reply(full.call("probe/g", sql_body("SELECT x FROM t ORDER BY x")))["rows"]
    assert rows == [[-1]] + [[i] for i in range(8) if i != 3]


def test_group_members_each_get_their_own_response_and_logs(full):
    bodies = [b"L1" + f"hello {i}".encode() for i in range(5)] + [b"Eecho"]
    results = queued_behind_slow_request(full, "probe/g", bodies)
    assert [r.response for r in results] == [b"logged"] * 5 + [b"echo"]
    full.log_sink.flush()
    messages = {(rec.request_id, rec.message) for rec in full.logs("probe/g", limit=50)}
    for i, result in enumerate(results[:5]):
        assert (result.request_id, f"hello {i}") in messages


@pytest.fixture(params=[True, False], ids=["groups", "no-groups"])
def either(request, tmp_path):
    """Full durability with commit groups, and process durability without them."""
    durability = "full" if request.param else "process"
    with Supervisor(tmp_path / "data", durability=durability, idle_timeout=3600, workers=32) as sup:
        assert sup.commit_groups is request.param
        sup.load_app(fixture("probe.wat"))
        sup.set_quotas("probe", timeout_ms="60s", fuel="1000G", queue="off")
        yield sup


def test_process_durability_runs_each_request_alone(tmp_path):
    with Supervisor(tmp_path / "data", durability="process", workers=32) as sup:
        sup.load_app(fixture("probe.wat"))
        sup.set_quotas("probe", timeout_ms="60s", fuel="1000G", queue="off")
        sup.call("probe/g", sql_body("CREATE TABLE t(x)"))
        results = queued_behind_slow_request(
            sup, "probe/g", [sql_body("INSERT INTO t VALUES (?)", i) for i in range(5)]
        )
        assert [(r.ok, r.usage.commit_group) for r in results] == [(True, 1)] * 5


def test_a_request_that_gives_up_waiting_is_withdrawn(either):
    """Overloaded after its wait, and it never runs later."""
    full = either
    full.set_quotas("probe/g", timeout_ms="100ms")
    full.call("probe/g", sql_body("CREATE TABLE t(x)"))
    slot = full._slot("probe", "g")
    with slot.lock:  # the gate stays busy for longer than the request may wait
        late = full.submit("probe/g", sql_body("INSERT INTO t VALUES (1)"))
        assert late.result(timeout=10).error == "overloaded"
        assert slot.waiting == 0
    assert sql_reply(full.call("probe/g", sql_body("SELECT count(*) FROM t")))["rows"] == [[0]]


def test_concurrent_callers_on_one_facet_lose_nothing(either):
    full = either
    full.call("probe/c", sql_body("CREATE TABLE c(n)"))
    full.call("probe/c", sql_body("INSERT INTO c VALUES (0)"))
    futures = [full.submit("probe/c", sql_body("UPDATE c SET n = n + 1")) for _ in range(300)]
    results = [f.result() for f in futures]
    assert all(r.ok for r in results)
    assert sql_reply(full.call("probe/c", sql_body("SELECT n FROM c")))["rows"] == [[300]]
    assert full.usage("probe/c")["requests"] == 303
