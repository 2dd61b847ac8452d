"""Getting data back: snapshots, point-in-time restore from the WAL archive, forks,
undelete, retention, a corrupted archive, and kill -9 during writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from runtime import BadRequest, FacetsError, NotFound, Supervisor, parse_when
from runtime.archive import CHECKPOINT_FRAMES, read_segments
from tests.conftest import ROOT, fixture, sql_body, sql_reply


def rows(sup, target: str) -> list:
    return [r[0] for r in sql_reply(sup.call(target, sql_body("SELECT x FROM t ORDER BY rowid")))["rows"]]


def insert(sup, target: str, value) -> None:
    result = sup.call(target, sql_body("INSERT INTO t VALUES (?)", value))
    assert result.ok, result.message


def moment_between(sup, target: str, before, after) -> float:
    """Commit ``before``, note a moment strictly after it, then commit ``after``."""
    insert(sup, target, before)
    time.sleep(0.02)
    moment = time.time()
    time.sleep(0.02)
    insert(sup, target, after)
    return moment


@pytest.fixture
def table(probe):
    assert probe.call("probe/a", sql_body("CREATE TABLE t(x)")).ok
    return probe


def test_restore_to_a_moment_between_two_commits_gives_the_state_after_the_first(table):
    moment = moment_between(table, "probe/a", "first", "second")
    insert(table, "probe/a", "third")
    info = table.restore("probe/a", at=moment)
    assert rows(table, "probe/a") == ["first"]
    assert info.restored_to is not None and info.restored_to <= moment
    # The restore snapshotted what it replaced: it can be undone.
    assert info.undo_snapshot in [s.name for s in table.snapshots("probe/a")]
    table.restore("probe/a", snapshot=info.undo_snapshot)
    assert rows(table, "probe/a") == ["first", "second", "third"]


def test_history_branches_after_a_restore_and_both_branches_stay_restorable(table):
    early = moment_between(table, "probe/a", 1, 2)
    late = moment_between(table, "probe/a", 3, 4)
    table.restore("probe/a", at=early)
    insert(table, "probe/a", "after-restore")
    assert rows(table, "probe/a") == [1, "after-restore"]
    table.restore("probe/a", at=late)  # a moment on the branch the first restore left
    assert rows(table, "probe/a") == [1, 2, 3]


def test_restore_across_checkpoints_and_wal_restarts(table):
    """More than CHECKPOINT_FRAMES frames: the WAL is checkpointed and restarts, and every
    moment on both sides of it restores exactly."""
    table.call("probe/a", sql_body("CREATE TABLE big(x)"))
    moments = []
    for batch in range(3):
        for _ in range(CHECKPOINT_FRAMES // 2 + 50):
            assert table.call("probe/a", sql_body("INSERT INTO big VALUES (randomblob(3000))")).ok
        moments.append(moment_between(table, "probe/a", f"a{batch}", f"b{batch}"))
    wal = table.db_path("probe/a").with_name("a.sqlite3-wal")
    assert wal.stat().st_size < (CHECKPOINT_FRAMES * 2) * 4120  # it was checkpointed, not left to grow
    for batch, moment in enumerate(moments):
        table.restore("probe/a", at=moment)
        expected = [v for b in range(batch) for v in (f"a{b}", f"b{b}")] + [f"a{batch}"]
        assert rows(table, "probe/a") == expected
        count = sql_reply(table.call("probe/a", sql_body("SELECT count(*) FROM big")))["rows"][0][0]
        assert count == (batch + 1) * (CHECKPOINT_FRAMES // 2 + 50)


def test_history_survives_eviction_and_restart(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(fixture("probe.wat"))
        sup.call("probe/a", sql_body("CREATE TABLE t(x)"))
        moment = moment_between(sup, "probe/a", "one", "two")
        sup.evict("probe/a")
        insert(sup, "probe/a", "three")
    with Supervisor(data) as sup:
        insert(sup, "probe/a", "four")
        sup.restore("probe/a", at=moment)
        assert rows(sup, "probe/a") == ["one"]
        assert len(read_segments(data / "archive" / "probe" / "a")) >= 2  # the restore began one


def test_snapshots_restore_and_names(table):
    insert(table, "probe/a", "kept")
    snap = table.snapshot("probe/a", "before-import")
    assert snap.name == "before-import" and snap.size > 0 and snap.reason == "manual"
    insert(table, "probe/a", "later")
    auto = table.snapshot("probe/a")
    assert [s.name for s in table.snapshots("probe/a")] == [auto.name, "before-import"]
    with pytest.raises(BadRequest):
        table.snapshot("probe/a", "before-import")  # never overwritten
    with pytest.raises(BadRequest):
        table.snapshot("probe/a", "../escape")
    with pytest.raises(NotFound):
        table.restore("probe/a", snapshot="nope")
    table.restore("probe/a", snapshot="before-import")
    assert rows(table, "probe/a") == ["kept"]
    history = table.history("probe/a")
    assert history.snapshot_bytes >= snap.size and history.archive_bytes > 0
    assert history.window_start is not None and history.window_end is not None
    assert history.retention_s == 7 * 86400


def test_a_fork_has_independent_data(table):
    moment = moment_between(table, "probe/a", "x", "y")
    table.fork("probe/a", "probe/copy")
    table.fork("probe/a", "probe/past", at=moment)
    insert(table, "probe/copy", "only-in-copy")
    insert(table, "probe/a", "only-in-a")
    assert rows(table, "probe/copy") == ["x", "y", "only-in-copy"]
    assert rows(table, "probe/past") == ["x"]
    assert rows(table, "probe/a") == ["x", "y", "only-in-a"]
    with pytest.raises(BadRequest):
        table.fork("probe/a", "probe/copy")  # exists
    with pytest.raises(BadRequest):
        table.fork("probe/a", "other/copy")  # a fork stays in its app


def test_a_fork_obeys_max_facets(table):
    table.set_quotas("probe", max_facets="1")
    with pytest.raises(FacetsError) as refused:
        table.fork("probe/a", "probe/b")
    assert refused.value.code == "quota_exceeded" or "max_facets" in str(refused.value)
    assert not table.facet_exists("probe/b")


def test_undelete_brings_back_a_deleted_facet(table):
    insert(table, "probe/a", "precious")
    table.snapshot("probe/a", "mine")
    table.delete("probe/a")
    assert not table.facet_exists("probe/a")
    history = table.history("probe/a")
    assert history.deleted and [s.name for s in history.snapshots] == ["mine"]
    info = table.undelete("probe/a")
    assert info.target == "probe/a"
    assert rows(table, "probe/a") == ["precious"]
    with pytest.raises(BadRequest):
        table.undelete("probe/a")  # it exists again


def test_a_new_facet_of_a_deleted_name_starts_a_history_of_its_own(table):
    insert(table, "probe/a", "old")
    table.delete("probe/a")
    table.call("probe/a", sql_body("CREATE TABLE t(x)"))
    insert(table, "probe/a", "new")
    moment = time.time()
    table.restore("probe/a", at=moment)
    assert rows(table, "probe/a") == ["new"]


def test_retention_prunes_old_segments_and_deleted_facets(table):
    insert(table, "probe/a", 1)
    table.restore("probe/a", at=time.time())  # a second segment, with its own base
    insert(table, "probe/a", 2)
    directory = table.data_dir / "archive" / "probe" / "a"
    assert len(read_segments(directory)) == 2
    assert table.archiver is not None
    week = 7 * 86400
    assert table.archiver.prune_all(now=time.time() + 60) == 0  # all within the window
    freed = table.archiver.prune_all(now=time.time() + week + 60)
    assert freed > 0 and len(read_segments(directory)) == 1
    table.restore("probe/a", at=time.time())
    assert rows(table, "probe/a") == [1, 2]
    table.delete("probe/b") if table.facet_exists("probe/b") else None
    table.call("probe/b", sql_body("CREATE TABLE t(x)"))
    table.delete("probe/b")
    assert table.history("probe/b").deleted
    table.archiver.prune_all(now=time.time() + week + 60)
    with pytest.raises(NotFound):
        table.undelete("probe/b")


def test_a_corrupted_archive_is_reported_and_the_live_data_is_untouched(table):
    moment = moment_between(table, "probe/a", "one", "two")
    insert(table, "probe/a", "three")
    table.archiver.drain_all()
    log = sorted((table.data_dir / "archive" / "probe" / "a").glob("*.log"))[-1]
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    table.evict("probe/a")
    with pytest.raises(FacetsError) as failed:
        table.restore("probe/a", at=moment)
    assert "check" in str(failed.value)
    assert rows(table, "probe/a") == ["one", "two", "three"]


def test_a_moment_before_the_window_is_refused(table):
    with pytest.raises(BadRequest):
        table.restore("probe/a", at="2020-01-01T00:00:00Z")
    with pytest.raises(BadRequest):
        table.restore("probe/a")


def test_parse_when():
    now = 1_800_000_000.0
    assert parse_when("2026-12-01T14:05:00Z") == 1796133900.0
    assert parse_when("2026-12-01T14:05:00") == 1796133900.0
    assert parse_when("-15m", now) == now - 900
    assert parse_when("-2h", now) == now - 7200
    assert parse_when("1796133900") == 1796133900.0
    for bad in ("yesterday", "-15x", "", "1e400", "2026-13-01"):
        with pytest.raises(BadRequest):
            parse_when(bad)


WRITER = """
import sys
sys.path.insert(0, {root!r})
from runtime import Supervisor
from tests.conftest import sql_body
with Supervisor({data!r}) as sup:
    sup.load_app({probe!r})
    sup.call("probe/w", sql_body("CREATE TABLE t(x)"))
    i = 0
    while True:
        i += 1
        if sup.call("probe/w", sql_body("INSERT INTO t VALUES (?)", i)).ok:
            print(i, flush=True)
"""


def test_kill_9_during_writes_loses_no_acknowledged_commit(tmp_path):
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(root=str(ROOT), data=str(data), probe=str(fixture("probe.wat")))],
        stdout=subprocess.PIPE,
        text=True,
    )
    acknowledged = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acknowledged = int(line)
            if acknowledged >= 1500:  # past a checkpoint and a WAL restart
                break
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert acknowledged >= 1500
    with Supervisor(data) as sup:
        sup.fork("probe/w", "probe/rebuilt", at=time.time())
        rebuilt = rows(sup, "probe/rebuilt")
    assert rebuilt[:acknowledged] == list(range(1, acknowledged + 1))


def test_snapshots_are_billed_as_storage(table):
    insert(table, "probe/a", "x" * 1000)
    before = table.usage("probe/a")["storage"]
    snap = table.snapshot("probe/a")
    table.evict("probe/a")  # the gauge is read at a cold start
    insert(table, "probe/a", "y")
    assert table.usage("probe/a")["storage"] >= before + snap.size


def test_compaction_starts_a_segment_with_a_base_and_every_moment_still_restores(table, monkeypatch):
    import runtime.archive as archive

    monkeypatch.setattr(archive, "COMPACT_MIN_BYTES", 20_000)
    early = moment_between(table, "probe/a", "e1", "e2")
    for _ in range(40):  # random: compressed, the log still outgrows the bound
        assert table.call("probe/a", sql_body("INSERT INTO t VALUES (randomblob(3000))")).ok
    directory = table.data_dir / "archive" / "probe" / "a"
    deadline = time.time() + 20
    while time.time() < deadline and not any(s.base and s.continues for s in read_segments(directory)):
        time.sleep(0.05)
    compacted = [s for s in read_segments(directory) if s.continues]
    assert compacted and compacted[0].base is not None, "the archiver compacts a log past its bound"
    late = moment_between(table, "probe/a", "l1", "l2")
    table.restore("probe/a", at=late)
    assert rows(table, "probe/a")[-1] == "l1" and len(rows(table, "probe/a")) == 2 + 40 + 1
    table.restore("probe/a", at=early)
    assert rows(table, "probe/a") == ["e1"]
