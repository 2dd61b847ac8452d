"""One owner per data directory: the lock, the note, the refusal of a second opener."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from runtime import DataDirBusy, ErrorCode, FacetsError, Supervisor, owner_of
from runtime.owner import OWNER_FILE, OwnerInfo, OwnerLock
from tests.conftest import COUNTER_WAT, ROOT


def test_a_second_supervisor_on_an_owned_directory_is_refused_naming_the_owner(tmp_path):
    data = tmp_path / "d"
    with Supervisor(data, role="serve") as sup:
        sup.load_app(COUNTER_WAT)
        with pytest.raises(DataDirBusy) as caught:
            Supervisor(data)
        error = caught.value
        assert error.code == ErrorCode.REFUSED and isinstance(error, FacetsError)
        assert error.owner is not None and (error.owner.pid, error.owner.role) == (os.getpid(), "serve")
        assert "serve" in error.message and f"pid {os.getpid()}" in error.message
        assert sup.call("counter/a").ok  # the owner keeps serving
        info = owner_of(data)
        assert info is not None and info.pid == os.getpid() and info.role == "serve" and info.control is None
    assert owner_of(data) is None  # released by close
    with Supervisor(data) as again:  # and the next opener owns it
        assert again.usage("counter/a")["requests"] == 1


def test_a_readonly_open_beside_the_owner_takes_no_lock(tmp_path):
    data = tmp_path / "d"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT)
        sup.call("counter/a")
        sup.flush_usage()
        with Supervisor(data, readonly=True) as reader:
            assert reader.owner is None
            assert reader.usage("counter/a")["requests"] == 1
        assert owner_of(data) is not None  # the reader's close released nothing of the owner's


def test_a_supervisor_that_fails_to_open_leaves_the_directory_free(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "control.sqlite3").write_bytes(b"this is not a database at all" * 100)
    for _ in range(2):  # the second attempt hits the same damage, not a lock left behind
        with pytest.raises(FacetsError) as caught:
            Supervisor(data)
        assert not isinstance(caught.value, DataDirBusy)
    assert owner_of(data) is None


_OWNER = """
import sys, time
from runtime import Supervisor
sup = Supervisor(sys.argv[1], role="run")
print("owned", flush=True)
time.sleep(600)
"""


def test_the_lock_goes_with_an_owner_killed_by_sigkill(tmp_path):
    data = tmp_path / "d"
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, str(data)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "owned\n"
        info = owner_of(data)
        assert info is not None and info.pid == proc.pid and info.role == "run"
        with pytest.raises(DataDirBusy):
            Supervisor(data)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert (data / OWNER_FILE).exists()  # the killed owner's note stays behind...
    assert owner_of(data) is None  # ...but names no owner: the kernel dropped the lock
    with Supervisor(data) as sup:
        assert sup.owner is not None and sup.owner.info.pid == os.getpid()
    assert not (data / OWNER_FILE).exists()


def test_the_owner_note_is_published_atomically_and_checked(tmp_path):
    lock = OwnerLock.acquire(tmp_path, "console")
    try:
        lock.publish(control="/x/control.sock", admin_url="http://127.0.0.1:8801")
        note = json.loads((tmp_path / OWNER_FILE).read_text())
        assert note["control"] == "/x/control.sock" and note["admin_url"] == "http://127.0.0.1:8801"
        assert owner_of(tmp_path) == OwnerInfo.from_dict(note)
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    finally:
        lock.release()
    for bad in ([], {"pid": "1", "role": "x", "started_at": 0}, {"pid": 1, "role": "x", "started_at": 0, "control": 3}):
        assert OwnerInfo.from_dict(bad) is None


def test_a_stale_note_naming_a_live_process_does_not_block_the_directory(tmp_path):
    """A crashed owner's stale note with a live, unrelated pid does not make the directory owned."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "owner.lock").touch()
    stale = OwnerInfo(os.getppid(), "serve", 0.0, "/nowhere.sock")
    (data / OWNER_FILE).write_text(json.dumps(stale.as_dict()))
    assert owner_of(data) is None
    script = textwrap.dedent("""
        import sys
        from runtime import Supervisor
        with Supervisor(sys.argv[1], role="command") as sup:
            print(sup.owner.info.role)
    """)
    argv = [sys.executable, "-c", script, str(data)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "command\n", out.stderr
