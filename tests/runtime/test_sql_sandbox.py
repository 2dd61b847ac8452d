"""Guest SQL runs under an authorizer, limits, a storage cap and a deadline."""

from __future__ import annotations

import json
import math

import pytest

from runtime.storage import FacetDB
from tests.conftest import sql_body, sql_reply


def refused(sup, target, sql, code="not_authorized"):
    reply = sql_reply(sup.call(target, sql_body(sql)))
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    return reply


def test_attach_of_another_facets_file_is_refused(probe):
    probe.call("probe/victim", sql_body("CREATE TABLE secrets(s)"))
    probe.call("probe/victim", sql_body("INSERT INTO secrets VALUES ('pw')"))
    victim = probe.db_path("probe/victim")
    refused(probe, "probe/thief", f"ATTACH DATABASE '{victim}' AS v")
    refused(probe, "probe/thief", "DETACH DATABASE main")


def test_vacuum_into_writes_no_file(probe, tmp_path):
    target = tmp_path / "copy.sqlite3"
    reply = sql_reply(probe.call("probe/v", sql_body(f"VACUUM INTO '{target}'")))
    assert reply["ok"] is False
    assert not target.exists()


def test_guest_sql_never_runs_outside_the_platform_transaction(tmp_path):
    # VACUUM INTO can only run outside a transaction, where guest SQL is refused outright.
    db = FacetDB(str(tmp_path / "f.sqlite3"))
    from runtime.storage import SqlFailure

    with pytest.raises(SqlFailure) as info:
        db.execute_guest(f"VACUUM INTO '{tmp_path / 'copy.sqlite3'}'", [], max_result_bytes=10_000)
    assert info.value.fatal and "no transaction" in info.value.message
    assert not (tmp_path / "copy.sqlite3").exists()
    db.close()


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA writable_schema=ON",
        "PRAGMA journal_mode=DELETE",
        "PRAGMA synchronous=OFF",
        "PRAGMA max_page_count=100000000",
        "PRAGMA user_version=7",
        "PRAGMA trusted_schema=ON",
        "PRAGMA temp_store_directory='/tmp'",
        "PRAGMA foreign_keys=OFF",
    ],
)
def test_pragma_writes_are_refused(probe, sql):
    refused(probe, "probe/p", sql)


@pytest.mark.parametrize(
    "sql", ["PRAGMA user_version", "PRAGMA page_count", "PRAGMA table_info(t)", "SELECT * FROM pragma_table_info('t')"]
)
def test_read_only_pragmas_are_allowed(probe, sql):
    probe.call("probe/p", sql_body("CREATE TABLE t(x)"))
    assert sql_reply(probe.call("probe/p", sql_body(sql)))["ok"] is True


@pytest.mark.parametrize("sql", ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT s", "RELEASE s", "BEGIN IMMEDIATE", "END"])
def test_transaction_control_is_refused(probe, sql):
    refused(probe, "probe/t", sql)


def test_guest_commit_cannot_escape_the_request_transaction(probe):
    probe.call("probe/t", sql_body("CREATE TABLE t(x)"))
    # A trap after an attempted COMMIT still rolls everything back.
    probe.call("probe/t", sql_body("INSERT INTO t VALUES (1)", op="W"))
    assert sql_reply(probe.call("probe/t", sql_body("SELECT count(*) FROM t")))["rows"] == [[0]]


def two_statements(first: str, second: str) -> bytes:
    """A probe request that runs two statements in one request."""
    a = json.dumps({"sql": first}).encode()
    return b"D" + bytes([len(a)]) + a + json.dumps({"sql": second}).encode()


@pytest.mark.parametrize(
    "rollback",
    [
        "INSERT OR ROLLBACK INTO t VALUES (1)",
        "INSERT INTO guarded VALUES (1)",  # a trigger that runs RAISE(ROLLBACK)
    ],
)
def test_statement_that_rolls_back_cannot_let_later_writes_escape(probe, rollback):
    setup = [
        "CREATE TABLE t(x UNIQUE)",
        "INSERT INTO t VALUES (1)",
        "CREATE TABLE guarded(x)",
        "CREATE TRIGGER no BEFORE INSERT ON guarded BEGIN SELECT RAISE(ROLLBACK, 'no'); END",
    ]
    for statement in setup:
        sql_reply(probe.call("probe/r", sql_body(statement)))
    # The first statement ends the platform's transaction; the second would then be
    # written at once in autocommit mode. It is refused and the request fails.
    result = probe.call("probe/r", two_statements(rollback, "INSERT INTO t VALUES (2)"))
    assert not result.ok and result.error == "sql_error"
    assert "rolled back the request's transaction" in result.message
    assert sql_reply(probe.call("probe/r", sql_body("SELECT x FROM t")))["rows"] == [[1]]
    # the facet goes on serving
    assert sql_reply(probe.call("probe/r", sql_body("INSERT INTO t VALUES (3)")))["rows_written"] == 1


def test_load_extension_is_refused(probe):
    refused(probe, "probe/x", "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')")


def test_reserved_names(probe):
    refused(probe, "probe/r", "CREATE TABLE _facets_usage(x)")
    refused(probe, "probe/r", "CREATE TABLE _FACETS_x(x)")
    probe.call("probe/r", sql_body("CREATE TABLE ok(x)"))
    refused(probe, "probe/r", "CREATE INDEX _facets_i ON ok(x)")


def test_temp_objects_are_refused(probe):
    refused(probe, "probe/tmp", "CREATE TEMP TABLE scratch(x)")


def test_unbounded_recursive_cte_times_out(probe):
    probe.set_quotas("probe/cte", timeout_ms="300ms")
    probe.call("probe/cte", sql_body("CREATE TABLE t(x)"))
    probe.call("probe/cte", sql_body("INSERT INTO t VALUES (1)"))
    result = probe.call(
        "probe/cte", sql_body("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r")
    )
    assert result.error == "timeout"
    assert sql_reply(probe.call("probe/cte", sql_body("SELECT count(*) FROM t")))["rows"] == [[1]]


def test_limits_on_sql_and_values(probe):
    long_sql = "SELECT " + "+".join(["1"] * 60_000)
    result = probe.call("probe/l", sql_body(long_sql))
    assert sql_reply(result)["error"]["code"] in ("too_big", "sql_error")
    deep = "SELECT " + "(" * 200 + "1" + ")" * 200
    assert sql_reply(probe.call("probe/l", sql_body(deep)))["ok"] is False
    big_value = "SELECT zeroblob(100000000)"
    assert sql_reply(probe.call("probe/l", sql_body(big_value)))["error"]["code"] == "too_big"


def test_storage_quota_stops_growth_and_rolls_back(probe):
    probe.set_quotas("probe/full", storage="64KiB")
    probe.call("probe/full", sql_body("CREATE TABLE t(x)"))
    assert probe.call("probe/full", sql_body("INSERT INTO t VALUES ('small')")).ok
    result = probe.call("probe/full", sql_body("INSERT INTO t VALUES (randomblob(200000))"))
    assert result.error == "storage_full"
    assert sql_reply(probe.call("probe/full", sql_body("SELECT count(*) FROM t")))["rows"] == [[1]]
    # Raising the quota lets the same write through at the next request.
    probe.set_quotas("probe/full", storage="1MiB")
    assert probe.call("probe/full", sql_body("INSERT INTO t VALUES (randomblob(200000))")).ok


def test_result_size_is_bounded(probe):
    probe.set_quotas("probe/big", memory="1MiB")
    probe.call("probe/big", sql_body("CREATE TABLE t(x)"))
    probe.call(
        "probe/big",
        sql_body(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5000) "
            "INSERT INTO t SELECT printf('%.100c', 'x') FROM r"
        ),
    )
    reply = sql_reply(probe.call("probe/big", sql_body("SELECT x FROM t")))
    assert reply["error"]["code"] == "too_big"


def test_deadline_is_not_armed_outside_requests(tmp_path):
    db = FacetDB(str(tmp_path / "f.sqlite3"))
    db.begin(deadline=math.inf)
    result = db.execute_guest(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 100000) SELECT count(*) FROM r",
        [],
        max_result_bytes=1000,
    )
    db.commit()
    assert result.rows == [[100000]]
    db.close()
