"""Hardening of the supervisor (issue 12): gates, import/export, faults, limits, read-only mode.

Each test names the defect it proves fixed; the races are forced with hooks and Events
at the race point, never with sleeps.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

import pytest

from runtime import CallResult, ErrorCode, FacetsError, QuotaPolicy, Supervisor
from runtime.facet import FacetSlot
from runtime.gate import Gate
from tests.conftest import COUNTER_WAT, fixture, sql_body, sql_reply


def test_call_result_error_is_an_error_code_that_prints_as_before(sup):
    sup.load_app(COUNTER_WAT)
    sup.set_quotas("counter/a", rate=1)
    assert sup.call("counter/a").ok
    refused = sup.call("counter/a")
    assert isinstance(refused.error, ErrorCode) and refused.error is ErrorCode.RATE_LIMITED
    assert str(refused.error) == "rate_limited" and f"{refused.error}" == "rate_limited"
    assert json.dumps({"error": refused.error}) == '{"error": "rate_limited"}'
    assert isinstance(CallResult.failure(ErrorCode.TRAP, "x").error, ErrorCode)
    # The meters keep plain strings (saved as JSON, shown by every interface).
    errors = sup.usage("counter/a")["errors"]
    assert errors == {"rate_limited": 1} and all(type(k) is str for k in errors)
    assert asdict(refused)["error"] == "rate_limited"


def _records_held(obj: object) -> int:
    """LogRecords held by ``obj``'s attributes: in a list, or in a dict of lists/deques."""
    from runtime.logs import LogRecord

    count = 0
    for value in vars(obj).values():
        groups = value.values() if isinstance(value, dict) else [value]
        for group in groups:
            if isinstance(group, (list, tuple)) or hasattr(group, "maxlen"):
                count += sum(isinstance(item, LogRecord) for item in group)
    return count


def test_log_sink_keeps_no_records_once_written():
    """Dead code removed: the per-facet rings kept 1,000 records per facet that nothing read."""
    from runtime.logs import LogRecord, LogSink

    written: list[LogRecord] = []
    sink = LogSink(written.extend)
    try:
        sink.add(
            LogRecord(time=0.0, app="a", facet=f"f{i}", request_id="", level="info", message="m") for i in range(50)
        )
        sink.flush()
        assert len(written) == 50
        assert _records_held(sink) == 0
        assert not hasattr(sink, "recent")
    finally:
        sink.close()


@pytest.mark.parametrize(
    "garbage",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["not-sqlite", "bad-header"],
)
def test_a_damaged_control_database_is_a_clear_error(tmp_path, garbage):
    data = tmp_path / "data"
    data.mkdir()
    (data / "control.sqlite3").write_bytes(garbage)
    with pytest.raises(FacetsError) as caught:
        Supervisor(data)
    message = caught.value.message
    assert str(data / "control.sqlite3") in message and "move it aside" in message
    assert (data / "control.sqlite3").read_bytes() == garbage  # nothing was overwritten


# -- facet creation: a slow policy, a full disk -------------------------------------------


class _BlockingPolicy(QuotaPolicy):
    """Blocks ``admit_facet`` for app ``a`` (only its facet ``facet`` if given) until
    ``release`` is set."""

    def __init__(self, facet: str | None = None) -> None:
        super().__init__()
        self.facet = facet
        self.entered = threading.Event()
        self.release = threading.Event()

    def admit_facet(self, app, facet, existing_facets, quotas):
        if app == "a" and self.facet in (None, facet):
            self.entered.set()
            assert self.release.wait(60), "the test never released the policy"
        return super().admit_facet(app, facet, existing_facets, quotas)


def _in_thread(fn):
    """Run ``fn`` on a thread; return (done Event, results list)."""
    done, out = threading.Event(), []

    def run():
        try:
            out.append(fn())
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def test_a_slow_admit_facet_does_not_stall_other_apps(tmp_path):
    policy = _BlockingPolicy()
    with Supervisor(tmp_path / "d", policy=policy) as sup:
        sup.load_app(COUNTER_WAT, name="a")
        sup.load_app(COUNTER_WAT, name="b")
        slow_done, slow = _in_thread(lambda: sup.call("a/x"))
        assert policy.entered.wait(30)
        # While app a's policy call blocks: app b creates a facet, and listings answer.
        other_done, other = _in_thread(lambda: (sup.call("b/y"), sup.facet_list(), sup.app_list()))
        stalled = not other_done.wait(30)  # a deadlock detector, not a timing assertion
        policy.release.set()
        assert not stalled, "b's creation waited for a's policy"
        result, listed, apps = other[0]
        assert [a.name for a in apps] == ["a", "b"]
        assert result.ok and result.response == b'{"count":1}'
        assert [f.target for f in listed] == ["b/y"]
        assert slow_done.wait(30) and slow[0].ok
        assert {f.target for f in sup.facet_list()} == {"a/x", "b/y"}


def test_racing_creations_never_exceed_max_facets(tmp_path):
    policy = _BlockingPolicy(facet="x")
    with Supervisor(tmp_path / "d", policy=policy) as sup:
        sup.load_app(COUNTER_WAT, name="a")
        sup.set_quotas("a", max_facets=1)
        first_done, first = _in_thread(lambda: sup.call("a/x"))
        assert policy.entered.wait(30)
        # A second creation while the first is still being admitted counts it as existing.
        second_done, second = _in_thread(lambda: sup.call("a/y"))
        stalled = not second_done.wait(30)  # a deadlock detector, not a timing assertion
        policy.release.set()
        assert not stalled
        assert first_done.wait(30) and first[0].ok
        assert second[0].error == ErrorCode.FACET_LIMIT
        assert [f.target for f in sup.facet_list("a")] == ["a/x"]


def test_racing_first_calls_to_one_facet_create_it_once(tmp_path):
    policy = _BlockingPolicy()
    with Supervisor(tmp_path / "d", policy=policy) as sup:
        sup.load_app(COUNTER_WAT, name="a")
        sup.set_quotas("a", max_facets=1)
        first_done, first = _in_thread(lambda: sup.call("a/x"))
        assert policy.entered.wait(30)
        second_done, second = _in_thread(lambda: sup.call("a/x"))
        policy.release.set()
        assert first_done.wait(30) and second_done.wait(30)
        assert first[0].ok and second[0].ok  # the second is not refused facet_limit
        assert sorted([first[0].response, second[0].response]) == [b'{"count":1}', b'{"count":2}']


def _real_sqlite_full() -> sqlite3.OperationalError:
    """A genuine SQLITE_FULL error, as a full disk raises it."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t(x)")
    conn.execute("PRAGMA max_page_count=2")
    try:
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        assert exc.sqlite_errorcode == 13
        return exc
    finally:
        conn.close()
    raise AssertionError("expected SQLITE_FULL")


def test_a_full_control_database_refuses_the_creation_with_a_code(sup, monkeypatch):
    sup.load_app(COUNTER_WAT)
    assert sup.call("counter/old").ok
    full = _real_sqlite_full()

    def add_facet(*args, **kwargs):
        raise full

    monkeypatch.setattr(sup.control, "add_facet", add_facet)
    result = sup.call("counter/new")
    assert not result.ok and result.error == ErrorCode.STORAGE_FULL
    assert not sup.facet_exists("counter/new")
    assert sup.call("counter/old").response == b'{"count":2}'  # everyone else is served
    monkeypatch.undo()
    assert sup.call("counter/new").response == b'{"count":1}'  # and it works once there is room


@pytest.mark.parametrize("number, code", [(errno.ENOSPC, ErrorCode.STORAGE_FULL), (errno.EACCES, ErrorCode.INTERNAL)])
def test_a_failing_mkdir_refuses_the_creation_with_a_code(sup, monkeypatch, number, code):
    sup.load_app(COUNTER_WAT)
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if "facets" in self.parts:
            raise OSError(number, os.strerror(number), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = sup.call("counter/a")
    assert not result.ok and result.error == code
    assert not sup.facet_exists("counter/a")
    monkeypatch.undo()
    assert sup.call("counter/a").response == b'{"count":1}'


# -- gates and waits ----------------------------------------------------------------------


class _GateHook:
    """Makes ``FacetSlot.<method>`` block, for the facet named ``facet``, once armed: the
    evicting thread then holds that facet's gate until ``release`` is set. Also signals
    ``sleeping`` when a request queued at a gate goes to sleep."""

    def __init__(self, monkeypatch, method: str, facet: str) -> None:
        self.armed = False
        self.held, self.release, self.sleeping = threading.Event(), threading.Event(), threading.Event()
        original = getattr(FacetSlot, method)
        original_sleep = Gate.sleep

        def hooked(slot, *args, **kwargs):
            if self.armed and slot.name == facet:
                self.armed = False
                self.held.set()
                assert self.release.wait(30), "the test never released the gate"
            return original(slot, *args, **kwargs)

        def sleep(slot, request, timeout):
            self.sleeping.set()
            return original_sleep(slot, request, timeout)

        monkeypatch.setattr(FacetSlot, method, hooked)
        monkeypatch.setattr(Gate, "sleep", sleep)


@pytest.mark.parametrize("path", ["operator-evict", "idle", "lru-warm", "lru-db", "delete"])
def test_a_request_queued_while_eviction_holds_the_gate_is_woken(tmp_path, monkeypatch, path):
    settings = {
        "idle_timeout": 0.0 if path == "idle" else 3600.0,
        "usage_flush_interval": 0.05 if path == "idle" else 3600.0,
        "max_warm": 1 if path == "lru-warm" else 100,
        "max_open_dbs": 1 if path == "lru-db" else 100,
    }
    hook = _GateHook(monkeypatch, "close_db" if path == "lru-db" else "close", "a")
    with Supervisor(tmp_path / "d", **settings) as sup:  # full durability: commit groups on
        sup.load_app(COUNTER_WAT)
        sup.set_quotas("counter", timeout_ms=500)  # the old code failed after 2 x 0.5 s
        hook.armed = path == "idle"  # the housekeeper evicts it after this call
        assert sup.call("counter/a").ok
        hook.armed = True
        evictor = {
            "operator-evict": lambda: sup.evict("counter/a"),
            "idle": lambda: None,
            "lru-warm": lambda: sup.call("counter/b"),
            "lru-db": lambda: sup.call("counter/b"),
            "delete": lambda: sup.delete("counter/a"),
        }[path]
        evicted, _ = _in_thread(evictor)
        assert hook.held.wait(30)  # eviction holds a's gate now
        queued, results = _in_thread(lambda: sup.call("counter/a"))
        assert hook.sleeping.wait(30)  # the request queued and went to sleep
        hook.release.set()
        assert queued.wait(30) and evicted.wait(30)
        result = results[0]
        if path == "delete":
            assert result.error == ErrorCode.NOT_FOUND, (result.error, result.message)
        else:
            assert result.ok, (result.error, result.message)
            assert result.response == b'{"count":2}'


# -- import and export ----------------------------------------------------------------------


def _make_source(path: Path, rows: int = 2000) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO items(name) VALUES (?)", [(f"item {i:05d} " + "x" * 100,) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("when", ["before-copy", "after-copy"])
def test_import_never_overwrites_a_facet_a_call_created_meanwhile(probe, tmp_path, monkeypatch, when):
    source = _make_source(tmp_path / "source.sqlite3")
    effective = probe.quota_book.effective
    armed = [True]
    facet_dir = probe.data_dir / "facets" / "probe"

    def race(app, facet=None):
        # The race points: the import checked that probe/x does not exist, and is about to
        # copy ("before-copy": the old code's window) or to install its finished copy
        # ("after-copy", a temporary file exists); a call creates probe/x and writes first.
        copied = facet_dir.is_dir() and any(p.name.startswith(".") for p in facet_dir.iterdir())
        if armed[0] and facet == "x" and (when == "before-copy" or copied):
            armed[0] = False
            written = probe.call("probe/x", sql_body("CREATE TABLE written(v)"))
            assert written.ok
            assert probe.call("probe/x", sql_body("INSERT INTO written VALUES ('acknowledged')")).ok
        return effective(app, facet)

    monkeypatch.setattr(probe.quota_book, "effective", race)
    with pytest.raises(FacetsError) as caught:
        probe.import_facet(source, "probe/x")
    assert caught.value.code == ErrorCode.BAD_REQUEST and "meanwhile" in caught.value.message
    assert not armed[0]
    # The call's acknowledged write is there; nothing of the import is.
    rows = sql_reply(probe.call("probe/x", sql_body("SELECT v FROM written")))
    assert rows["rows"] == [["acknowledged"]]
    assert [t["name"] for t in probe.tables("probe/x")] == ["written"]
    assert [p.name for p in facet_dir.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_import_counts_the_source_wal_against_the_storage_quota(probe, tmp_path):
    source = tmp_path / "walled.sqlite3"
    writer = sqlite3.connect(source)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")  # everything stays in the -wal
        writer.execute("CREATE TABLE blobs(b)")
        writer.executemany("INSERT INTO blobs VALUES (randomblob(10000))", [()] * 200)
        writer.commit()
        assert source.stat().st_size < 64 * 1024 < 1024 * 1024 < Path(f"{source}-wal").stat().st_size
        probe.set_quotas("probe", storage=1024 * 1024)
        with pytest.raises(FacetsError) as caught:
            probe.import_facet(source, "probe/big")
        assert caught.value.code == ErrorCode.BAD_REQUEST and "storage quota" in caught.value.message
    finally:
        writer.close()
    assert not probe.facet_exists("probe/big")
    assert list((probe.data_dir / "facets").glob("*/big*")) == []
    assert list((probe.data_dir / "facets").glob("*/.*")) == []


_KILL_MID_COPY = r"""
import os, signal, sqlite3, sys
sys.path.insert(0, os.getcwd())
from runtime import Supervisor
from runtime.storage import FacetReader

data, what, source, target = sys.argv[1:5]

def kill(status, remaining, total):   # after the first page: the copy is half done
    os.kill(os.getpid(), signal.SIGKILL)

class KilledMidBackup(sqlite3.Connection):
    def backup(self, dest, **kwargs):
        return super().backup(dest, pages=1, progress=kill)

real_connect = sqlite3.connect
def connect(database, *args, **kwargs):
    if isinstance(database, str) and database.startswith("file:") and source in database:
        kwargs["factory"] = KilledMidBackup
    return real_connect(database, *args, **kwargs)
sqlite3.connect = connect

def reader_backup(self, dest):
    with self._use() as conn:
        conn.backup(dest, pages=1, progress=kill)
FacetReader.backup = reader_backup

sup = Supervisor(data)
if what == "import":
    sup.import_facet(source, target)
else:
    sup.export_facet(source, target)
print("not killed")
"""


def _run_killed(tmp_path: Path, *args: str) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", _KILL_MID_COPY, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)


def test_an_import_killed_mid_copy_registers_nothing_and_can_be_retried(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(fixture("probe.wat"))
    source = _make_source(tmp_path / "source.sqlite3")
    _run_killed(tmp_path, str(data), "import", str(source), "probe/x")
    with Supervisor(data) as sup:
        assert not sup.facet_exists("probe/x")
        assert [p.name for p in (data / "facets").glob("*/*")] == []  # the temp copy is gone
        assert sup.import_facet(source, "probe/x") == ["items"]
        assert sup.tables("probe/x") == [{"name": "items", "count": 2000, "columns": ["id", "name"]}]


def test_an_export_killed_mid_copy_leaves_nothing_in_the_way(tmp_path):
    data = tmp_path / "data"
    source = _make_source(tmp_path / "source.sqlite3")
    with Supervisor(data) as sup:
        sup.load_app(fixture("probe.wat"))
        sup.import_facet(source, "probe/x")
    out = tmp_path / "out"
    out.mkdir()
    _run_killed(tmp_path, str(data), "export", "probe/x", str(out / "x.sqlite3"))
    assert not (out / "x.sqlite3").exists()
    with Supervisor(data) as sup:
        size = sup.export_facet("probe/x", out / "x.sqlite3")
    assert size == (out / "x.sqlite3").stat().st_size
    conn = sqlite3.connect(out / "x.sqlite3")
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (2000,)
    conn.close()


def test_startup_does_not_adopt_temporary_copies(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(fixture("probe.wat"))
        assert sup.call("probe/kept").ok
    leftover = data / "facets" / "probe" / ".y.sqlite3.import-0badf00d.tmp"
    _make_source(leftover, rows=10)
    with Supervisor(data) as sup:
        assert [f.target for f in sup.facet_list()] == ["probe/kept"]
        assert not leftover.exists()


# -- limits: file descriptors, memory --------------------------------------------------------

_UNDER_32_FDS = r"""
import os, resource, sys, json
sys.path.insert(0, os.getcwd())
from runtime import Supervisor
data, max_open = sys.argv[1], int(sys.argv[2]) or None
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))   # hard too: raise_fd_limit cannot lift it
failures = []
with Supervisor(data, max_open_dbs=max_open) as sup:
    sup.load_app("sample_apps/counter/counter.wat")
    for round in range(2):
        for i in range(40):
            result = sup.call(f"counter/f{i}")
            if not result.ok or result.response != ('{"count":%d}' % (round + 1)).encode():
                failures.append([f"counter/f{i}", result.error, result.message])
    print(json.dumps({"failures": failures, "max_open_dbs": sup.max_open_dbs}))
"""


@pytest.mark.parametrize("max_open_dbs", [0, 100], ids=["derived-budget", "too-many-asked"])
def test_every_call_succeeds_under_ulimit_n_32(tmp_path, max_open_dbs):
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", _UNDER_32_FDS, str(tmp_path / "d"), str(max_open_dbs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["failures"] == []
    if not max_open_dbs:
        assert 1 <= report["max_open_dbs"] < 16


def test_warm_instances_are_evicted_beyond_the_memory_budget(tmp_path):
    budget = 3 * 2**20
    with Supervisor(tmp_path / "d", memory_budget=budget) as sup:
        sup.load_app(fixture("probe.wat"))
        grow = b"E" + b"x" * 2**20  # the echo's buffer grows each instance past 1 MiB
        for name in "abcd":
            result = sup.call(f"probe/{name}", grow)
            assert result.ok and result.usage.memory > 2**20
            assert sup.usage()["memory"] <= budget
        states = {f.name: f.state for f in sup.facet_list()}
        assert states == {"a": "cold", "b": "cold", "c": "warm", "d": "warm"}
        # The evicted come back with a cold start; the budget holds throughout.
        again = sup.call("probe/a", grow)
        assert again.ok and again.usage.cold_start
        assert {f.name for f in sup.facet_list() if f.state == "warm"} == {"d", "a"}
        assert sup.usage()["memory"] <= budget
        assert any("memory budget" in r.message for r in sup.logs("probe/b"))


def test_a_busy_facet_is_never_evicted_for_memory(tmp_path):
    with Supervisor(tmp_path / "d", memory_budget=3 * 2**20) as sup:
        sup.load_app(fixture("probe.wat"))
        grow = b"E" + b"x" * 2**20
        assert sup.call("probe/a", grow).ok and sup.call("probe/b", grow).ok
        slot_a = sup._slot("probe", "a")
        with slot_a.gate.held():  # a is busy (its gate is held) while c pushes over the budget
            assert sup.call("probe/c", grow).ok
        states = {f.name: f.state for f in sup.facet_list()}
        assert states == {"a": "warm", "b": "cold", "c": "warm"}


# -- read-only ------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_readonly_supervisor_writes_nothing(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT)
        assert sup.call("counter/a").ok
        sup.set_quotas("counter", fuel="5M")
    stray = data / "facets" / "app" / "x.sqlite3"
    stray.parent.mkdir()
    _make_source(stray, rows=3)
    before = _tree(data)
    refused_code = ErrorCode.REFUSED
    with Supervisor(data, readonly=True, usage_flush_interval=0.01) as sup:
        # Reads work...
        assert [f.target for f in sup.facet_list()] == ["counter/a"]  # the stray is not adopted
        assert not sup.facet_exists("app/x")
        assert [a.name for a in sup.app_list()] == ["counter"]
        assert sup.usage("counter/a")["requests"] == 1
        assert sup.quotas("counter").fuel == 5_000_000
        assert any("created" in r.message for r in sup.logs("counter/a"))
        assert len(sup.series("*", "requests", resolution=60, points=2)) == 2  # would flush usage
        assert 'facet="a"' in sup.prometheus()
        # ...every write is refused with one stable code, and nothing is written.
        result = sup.call("counter/a")
        assert not result.ok and result.error == refused_code
        for write in (
            lambda: sup.load_app(COUNTER_WAT),
            lambda: sup.set_quotas("counter", fuel="1M"),
            lambda: sup.delete("counter/a"),
            lambda: sup.evict("counter/a"),
            lambda: sup.export_facet("counter/a", tmp_path / "out.sqlite3"),
            lambda: sup.import_facet(stray, "counter/b"),
        ):
            with pytest.raises(FacetsError) as caught:
                write()
            assert caught.value.code == refused_code
    assert _tree(data) == before  # control.sqlite3 byte-identical, no file added or removed
    assert not (tmp_path / "out.sqlite3").exists()


def test_a_readonly_supervisor_makes_no_directory(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT)
    for path in sorted((data / "modules").iterdir()):
        path.unlink()
    (data / "modules").rmdir()
    with Supervisor(data, readonly=True) as sup:
        assert [a.name for a in sup.app_list()] == ["counter"]
    assert not (data / "modules").exists()


def test_readonly_needs_an_existing_data_directory(tmp_path):
    with pytest.raises(FacetsError):
        Supervisor(tmp_path / "none", readonly=True)
    assert not (tmp_path / "none").exists()


def test_settings_and_keywords_configure_the_same_supervisor(tmp_path):
    from runtime import SupervisorSettings

    settings = SupervisorSettings(durability="process", max_warm=3)
    with Supervisor(tmp_path / "a", settings, idle_timeout=60) as sup:
        assert (sup.durability, sup.commit_groups) == ("process", False)
        assert (sup.settings.max_warm, sup.settings.idle_timeout) == (3, 60)
    with Supervisor(tmp_path / "b", durability="process", max_warm=3, idle_timeout=60) as sup:
        assert sup.settings == SupervisorSettings(durability="process", max_warm=3, idle_timeout=60)
    with pytest.raises(TypeError):
        Supervisor(tmp_path / "c", no_such_setting=1)
    with pytest.raises(FacetsError):
        Supervisor(tmp_path / "d", durability="sometimes")


def test_an_import_the_policy_refuses_is_a_clear_error(probe, tmp_path):
    """It raised AttributeError (CallResult has no ``code``) instead of the refusal."""
    probe.set_quotas("probe", max_facets=1)
    assert probe.call("probe/first").ok
    with pytest.raises(FacetsError) as caught:
        probe.import_facet(_make_source(tmp_path / "s.sqlite3", rows=3), "probe/second")
    assert caught.value.code == ErrorCode.FACET_LIMIT
    assert not probe.facet_exists("probe/second")
    assert not list((probe.data_dir / "facets" / "probe").glob("*second*"))  # nothing left of it
    assert not list((probe.data_dir / "facets" / "probe").glob(".*"))
