"""Hardening of the facet database (issue 12): error codes, rows_read, the platform's
transaction, deadlines, result size, temp files and the operator's reader."""

from __future__ import annotations

import json
import math
import sqlite3
import time

import pytest

from runtime import storage
from runtime.errors import BadRequest, ErrorCode
from runtime.storage import FacetDB, FacetReader, SqlFailure
from tests.conftest import sql_body, sql_reply

#: A guest that runs several statements in one request: the body is an op byte ('T': trap
#: afterwards, anything else: answer with the last statement's reply) followed by sql
#: requests separated by newlines.
MULTI_WAT = r"""
(module
  (import "facet" "sql" (func $sql (param i32 i32) (result i64)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 1024))
  (global $done (mut i32) (i32.const 0))
  (func $alloc (export "facet_alloc") (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $have i32)
    (if (global.get $done)
      (then (global.set $heap (i32.const 1024)) (global.set $done (i32.const 0))))
    (local.set $p (global.get $heap))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $have (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end) (local.get $have)) (i32.const 16))
                                    (i32.const 1)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func (export "facet_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $start i32) (local $end i32) (local $last i64)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $i (i32.add (local.get $ptr) (i32.const 1)))
    (local.set $start (local.get $i))
    (block $out (loop $scan
      (if (i32.or (i32.ge_u (local.get $i) (local.get $end))
                  (i32.eq (i32.load8_u (local.get $i)) (i32.const 10)))
        (then
          (if (i32.gt_u (local.get $i) (local.get $start))
            (then (local.set $last (call $sql (local.get $start)
                                              (i32.sub (local.get $i) (local.get $start))))))
          (local.set $start (i32.add (local.get $i) (i32.const 1)))))
      (br_if $out (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $scan)))
    (global.set $done (i32.const 1))
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 84)) (then unreachable))
    (local.get $last))
)
"""


def multi(*statements: str, trap: bool = False) -> bytes:
    return (b"T" if trap else b"R") + b"\n".join(json.dumps({"sql": s}).encode() for s in statements)


@pytest.fixture
def db(tmp_path):
    database = FacetDB(str(tmp_path / "f.sqlite3"))
    yield database
    database.close()


def run(db: FacetDB, sql: str, *params, limit: int = 10_000_000):
    """One guest statement in its own committed transaction."""
    db.begin()
    try:
        result = db.execute_guest(sql, list(params), max_result_bytes=limit)
    except BaseException:
        db.rollback()
        raise
    db.commit()
    return result


def failure(db: FacetDB, sql: str, *params, limit: int = 10_000_000) -> SqlFailure:
    with pytest.raises(SqlFailure) as info:
        run(db, sql, *params, limit=limit)
    return info.value


# -- 1. errors are classified by SQLite's result code, never by message text --------------

def test_missing_table_named_like_full_is_sql_error_not_storage_full(probe):
    reply = sql_reply(probe.call("probe/names", sql_body("SELECT * FROM fullnames")))
    assert reply["ok"] is False and reply["error"]["code"] == "sql_error", reply
    # not fatal: the request (and a write before it) goes through
    probe.call("probe/names", sql_body("CREATE TABLE t(x)"))
    body = b"D" + bytes([len(json.dumps({"sql": "INSERT INTO t VALUES (1)"}))]) + \
        json.dumps({"sql": "INSERT INTO t VALUES (1)"}).encode() + \
        json.dumps({"sql": "SELECT * FROM toofull"}).encode()
    assert probe.call("probe/names", body).ok
    assert sql_reply(probe.call("probe/names", sql_body("SELECT count(*) FROM t")))["rows"] == [[1]]


@pytest.mark.parametrize("sql, code", [
    ("SELECT * FROM fullnames", "sql_error"),
    ("SELECT 'interrupted' FROM nowhere", "sql_error"),
    ("SELECT x FROM toobig", "sql_error"),
    ("SELECT load_extension('x')", "not_authorized"),
    ("PRAGMA journal_mode=DELETE", "not_authorized"),
    ("SELECT zeroblob(100000000)", "too_big"),
])
def test_guest_failures_by_code(db, sql, code):
    assert failure(db, sql).code == code


def test_failure_code_reads_sqlite_result_codes():
    full = sqlite3.OperationalError("whatever the text")
    full.sqlite_errorcode = 13 | (1 << 8)   # an extended code of SQLITE_FULL
    assert storage.failure_code(full) == ErrorCode.STORAGE_FULL
    fake = sqlite3.OperationalError("database or disk is full")   # the text alone means nothing
    assert storage.failure_code(fake) == ErrorCode.INTERNAL
    assert storage.failure_code(RuntimeError("disk full")) == ErrorCode.INTERNAL


def test_reader_readonly_detection_is_by_code(tmp_path, db):
    run(db, "CREATE TABLE t(x)")
    with FacetReader(db.path) as reader:
        with pytest.raises(BadRequest, match="read-only"):
            reader.query("INSERT INTO t VALUES (1)")
        with pytest.raises(BadRequest, match="SQL error"):
            reader.query("SELECT * FROM readonly_names")


# -- 3. no guest may end the platform's transaction, nor read its statements ---------------

@pytest.mark.parametrize("table", ["sqlite_stmt", "SQLITE_STMT", "main.sqlite_stmt", "dbstat"])
def test_statement_and_page_introspection_is_refused(db, table):
    run(db, "CREATE TABLE t(x)")
    assert failure(db, f"SELECT * FROM {table}").code == "not_authorized"


@pytest.mark.parametrize("statement", [storage._COMMIT, storage._ROLLBACK, storage._RELEASE,
                                       storage._BEGIN, storage._SAVEPOINT, storage._ROLLBACK_TO,
                                       f"PRAGMA page_count {storage._NONCE}"])
def test_platform_statements_cannot_be_replayed_even_knowing_the_marker(db, statement):
    run(db, "CREATE TABLE t(x)")
    db.begin()
    db.execute_guest("INSERT INTO t VALUES (1)", [], max_result_bytes=1000)
    with pytest.raises(SqlFailure) as info:
        db.execute_guest(statement, [], max_result_bytes=1000)
    assert info.value.code == "not_authorized"
    assert db.in_transaction
    db.rollback()
    assert run(db, "SELECT count(*) FROM t").rows == [[0]]


def test_guest_reading_sqlite_stmt_then_replaying_commit_keeps_no_writes(sup):
    sup.load_app_bytes(MULTI_WAT, "multi")
    assert sup.call("multi/m", multi("CREATE TABLE t(x)")).ok
    seen = json.loads(sup.call("multi/m", multi("SELECT sql FROM sqlite_stmt")).response)
    assert seen["ok"] is False and seen["error"]["code"] == "not_authorized", seen
    # Even a guest that knew every platform statement gets nothing from replaying them.
    replays = [storage._COMMIT, storage._BEGIN, storage._RELEASE, "COMMIT", "END"]
    result = sup.call("multi/m", multi("INSERT INTO t VALUES (1)", *replays,
                                       "INSERT INTO t VALUES (2)", trap=True))
    assert result.error == "trap"
    count = json.loads(sup.call("multi/m", multi("SELECT count(*) FROM t")).response)
    assert count["rows"] == [[0]]


# -- 4. a failed BEGIN or SAVEPOINT leaves no transaction open --------------------------------

def test_begin_with_a_passed_deadline_never_leaves_a_transaction_open(db):
    run(db, "CREATE TABLE t(x)")
    for _ in range(300):   # the progress handler fires inside BEGIN every ~20 runs of it
        db.begin(deadline=time.monotonic() - 1)
        assert db.in_transaction
        db.rollback()
        assert not db.in_transaction
    db.begin()
    db.execute_guest("INSERT INTO t VALUES (1)", [], max_result_bytes=1000)
    db.commit()
    assert run(db, "SELECT count(*) FROM t").rows == [[1]]


def test_savepoint_with_a_passed_deadline_keeps_the_transaction_sound(db):
    run(db, "CREATE TABLE t(x)")
    db.begin()
    for _ in range(300):
        db.savepoint(deadline=time.monotonic() - 1)
        db.rollback_to()
    db.commit()
    assert not db.in_transaction


def test_a_deadline_passed_before_begin_fails_only_that_request(probe):
    probe.call("probe/late", sql_body("CREATE TABLE t(x)"))
    probe.set_quotas("probe/late", timeout_ms=1)
    for _ in range(60):   # every BEGIN runs with its deadline nearly due
        probe.call("probe/late", sql_body("INSERT INTO t SELECT 1"))
    probe.set_quotas("probe/late", timeout_ms="2s")
    after = probe.call("probe/late", sql_body("INSERT INTO t VALUES (1)"))
    assert after.ok, (after.error, after.message)


# -- 8. the operator's reader: identifiers quoted, queries bounded ---------------------------

def test_quote_identifier():
    assert storage.quote_identifier('a"b') == '"a""b"'
    assert storage.quote_identifier("x] ; DROP TABLE t; --") == '"x] ; DROP TABLE t; --"'
    with pytest.raises(BadRequest):
        storage.quote_identifier("a\x00b")


@pytest.mark.parametrize("name", ["x] UNION SELECT sql, 1 FROM sqlite_master --",
                                  'we"ird', "sp ace", "[br]ackets"])
def test_reader_rows_of_a_hostile_table_name(db, name):
    quoted = '"' + name.replace('"', '""') + '"'
    run(db, f"CREATE TABLE {quoted}(a, b)")
    run(db, f"INSERT INTO {quoted} VALUES (1, 2)")
    run(db, "CREATE TABLE other(a, b)")
    with FacetReader(db.path) as reader:
        assert reader.rows(name) == {"columns": ["a", "b"], "rows": [[1, 2]]}


def test_reader_query_has_a_deadline(db):
    with FacetReader(db.path) as reader:
        with pytest.raises(BadRequest) as info:
            reader.query("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
                         "SELECT count(*) FROM r", timeout=0.2)
        assert info.value.code == ErrorCode.TIMEOUT
        assert reader.query("SELECT 1")["rows"] == [[1]]   # usable afterwards


def test_supervisor_query_still_answers(probe):
    probe.call("probe/q", sql_body("CREATE TABLE t(x)"))
    assert probe.query("probe/q", "SELECT count(*) FROM t", [])["rows"] == [[0]]
