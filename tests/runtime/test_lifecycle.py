"""Facet lifecycle: warm instances, eviction (operator, idle, LRU), deletion, browsing."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from runtime import BadRequest, FacetsError, NotFound, Supervisor
from runtime.storage import FacetReader
from tests.conftest import COUNTER_WAT, sql_body


def test_states_cold_warm(sup):
    sup.load_app(COUNTER_WAT)
    sup.call("counter/a")
    assert [f.state for f in sup.facet_list()] == ["warm"]
    assert sup.evict("counter/a") is True
    assert [f.state for f in sup.facet_list()] == ["cold"]
    assert sup.evict("counter/a") is False
    result = sup.call("counter/a")
    assert result.usage.cold_start and result.response == b'{"count":2}'


def test_idle_instances_are_evicted(tmp_path):
    with Supervisor(tmp_path / "d", idle_timeout=0.2, usage_flush_interval=0.1) as sup:
        sup.load_app(COUNTER_WAT)
        sup.call("counter/a")
        deadline = time.monotonic() + 5
        while sup.warm_count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sup.warm_count == 0
        assert sup.call("counter/a").response == b'{"count":2}'


def test_least_recently_used_instances_are_evicted_beyond_max_warm(tmp_path):
    with Supervisor(tmp_path / "d", max_warm=3) as sup:
        sup.load_app(COUNTER_WAT)
        for name in "abcde":
            sup.call(f"counter/{name}")
        states = {f.name: f.state for f in sup.facet_list()}
        assert states == {"a": "cold", "b": "cold", "c": "warm", "d": "warm", "e": "warm"}
        sup.call("counter/c")
        sup.call("counter/a")
        states = {f.name: f.state for f in sup.facet_list()}
        assert states["d"] == "cold" and states["c"] == "warm" and states["a"] == "warm"


def test_delete_removes_files_and_state(sup):
    sup.load_app(COUNTER_WAT)
    sup.call("counter/a")
    sup.set_quotas("counter/a", fuel="5M")
    path = sup.db_path("counter/a")
    assert path.exists()
    sup.delete("counter/a")
    assert not path.exists() and not path.with_name("a.sqlite3-wal").exists()
    assert sup.facet_list() == []
    assert sup.explicit_quotas("counter/a") == {}
    with pytest.raises(NotFound):
        sup.delete("counter/a")
    # Calling again creates a brand new facet.
    assert sup.call("counter/a").response == b'{"count":1}'


def test_evict_and_delete_validate_names(sup):
    with pytest.raises(BadRequest):
        sup.evict("../x")
    with pytest.raises(NotFound):
        sup.evict("counter/none")


def test_browse_tables_and_rows_while_serving(probe):
    probe.call("probe/b", sql_body("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)"))
    for i in range(25):
        probe.call("probe/b", sql_body("INSERT INTO items(name) VALUES (?)", f"item {i}"))
    assert probe.tables("probe/b") == [{"name": "items", "count": 25, "columns": ["id", "name"]}]
    page = probe.rows("probe/b", "items", limit=10, offset=20)
    assert page["columns"] == ["id", "name"]
    assert [r[0] for r in page["rows"]] == [21, 22, 23, 24, 25]
    filtered = probe.rows("probe/b", "items", where="id % 10 = 0")
    assert [r[0] for r in filtered["rows"]] == [10, 20]
    # a reader open during writes sees each commit (data_version changes)
    reader = probe.reader("probe/b")
    before = reader.data_version()
    probe.call("probe/b", sql_body("INSERT INTO items(name) VALUES ('late')"))
    assert reader.data_version() != before
    assert reader.query("SELECT count(*) FROM items")["rows"] == [[26]]
    reader.close()


def big_database(path, rows: int = 20_000) -> str:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute(
        f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {rows}) "
        "INSERT INTO t(v) SELECT 'row ' || n FROM r"
    )
    conn.commit()
    conn.close()
    return str(path)


def test_closing_a_reader_stops_its_running_query_instead_of_crashing(tmp_path):
    # The console closes a table view's reader while a worker thread may be counting
    # rows on it; closing a sqlite3 connection under a running query crashed the process.
    reader = FacetReader(big_database(tmp_path / "big.sqlite3"))
    outcome: list[BaseException | dict] = []
    started = threading.Event()

    def slow_count() -> None:
        started.set()
        try:  # 400 million row pairs: minutes, unless interrupted
            outcome.append(reader.query("SELECT count(*) FROM t AS a, t AS b"))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=slow_count)
    worker.start()
    started.wait()
    time.sleep(0.1)
    reader.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert isinstance(outcome[0], BadRequest) and "interrupted" in outcome[0].message
    with pytest.raises(FacetsError, match="closed"):
        reader.query("SELECT 1")
    reader.close()  # twice is fine


def test_one_reader_serves_several_threads_at_once(tmp_path):
    reader = FacetReader(big_database(tmp_path / "shared.sqlite3", rows=2_000))
    errors: list[BaseException] = []

    def browse(offset: int) -> None:
        try:
            for i in range(100):
                page = reader.query("SELECT id FROM t ORDER BY id LIMIT 10 OFFSET ?", [offset + i])
                assert [r[0] for r in page["rows"]] == list(range(offset + i + 1, offset + i + 11))
                assert reader.data_version() >= 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=browse, args=(k * 300,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader.close()
    assert errors == []


def test_operator_query_is_read_only(probe):
    probe.call("probe/q", sql_body("CREATE TABLE t(x)"))
    with pytest.raises(BadRequest, match="read-only"):
        probe.query("probe/q", "INSERT INTO t VALUES (1)")
    with pytest.raises(BadRequest):
        probe.query("probe/q", "DROP TABLE t")
    assert probe.tables("probe/q")[0]["count"] == 0
    with pytest.raises(NotFound):
        probe.rows("probe/q", "nope")
    with pytest.raises(NotFound):
        probe.tables("probe/none")


def test_process_durability_and_bad_durability(tmp_path):
    with Supervisor(tmp_path / "p", durability="process") as sup:
        sup.load_app(COUNTER_WAT)
        assert sup.call("counter/a").ok
        import sqlite3

        conn = sqlite3.connect(sup.db_path("counter/a"))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    with pytest.raises(BadRequest):
        Supervisor(tmp_path / "x", durability="sometimes")
