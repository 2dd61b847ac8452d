"""``facets COMMAND`` and ``facets run`` against an owned data directory go to its owner
(``console/remote.py``): one process's truth, and the same output as an embedded run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import console.remote
from console.cli import main
from console.control_server import ControlServer
from runtime import Supervisor, owner_of
from tests.conftest import COUNTER_WAT, ROOT, fixture

FACETS = [sys.executable, "-m", "console.cli"]


def facets(data: Path, *args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACETS_DATA": str(data), "PYTHONPATH": str(ROOT)}
    return subprocess.run([*FACETS, *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


_OWNER = """
import sys
from console.control_server import serve_control
from runtime import Supervisor
with Supervisor(sys.argv[1], role="test-owner") as sup, serve_control(sup):
    print("serving", flush=True)
    sys.stdin.read()  # until the test closes our stdin
print("closed", flush=True)
"""


def test_two_scripts_through_one_owner_count_every_request(tmp_path):
    """The issue's scenario: an owner stays up while two `facets run` scripts send N calls
    each to one facet at once. Before, each script process flushed its own meters over the
    other's (4,002 calls, 2,002 counted); through the owner every one is counted."""
    data, n = tmp_path / "d", 300
    assert facets(data, "load", str(COUNTER_WAT)).returncode == 0
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(data)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "serving\n"
        script = tmp_path / "calls.facets"
        script.write_text("call counter/a\n" * n)
        env = {**os.environ, "FACETS_DATA": str(data)}
        runs = [
            subprocess.Popen([*FACETS, "run", str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [run.communicate(timeout=300)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0]
        for out in outputs:
            results = [json.loads(line) for line in out.splitlines()]
            assert len(results) == n and all(r["ok"] for r in results)
        counts = sorted(json.loads(line)["response"]["count"] for out in outputs for line in out.splitlines())
        assert counts == list(range(1, 2 * n + 1))  # every call ran once, on one database
        usage = json.loads(facets(data, "usage", "counter/a", "--json").stdout)["usage"]
        assert usage["requests"] == 2 * n
        last = json.loads(facets(data, "call", "counter/a", "--json").stdout)
        assert last["response"] == {"count": 2 * n + 1}
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        assert owner.wait(timeout=60) == 0
    assert owner_of(data) is None
    with Supervisor(data) as sup:  # what the owner flushed when it closed: all of it
        assert sup.usage("counter/a")["requests"] == 2 * n + 1


def test_a_command_from_another_directory_reaches_the_owner(tmp_path):
    """`quota` and `load` sent to an owner: the owner sees the change at once, and a relative
    path is the operator's (the CLI's working directory), not the owner's."""
    data, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(COUNTER_WAT, elsewhere / "mine.wat")
    with Supervisor(data) as sup, ControlServer(sup):
        loaded = facets(data, "load", "mine.wat", "as", "counter", "--json", cwd=elsewhere)
        assert loaded.returncode == 0 and json.loads(loaded.stdout)["app"] == "counter", loaded.stdout
        assert [a.name for a in sup.app_list()] == ["counter"]
        changed = facets(data, "quota", "counter", "fuel=5M", "--json")
        assert changed.returncode == 0 and json.loads(changed.stdout)["quotas"]["fuel"] == 5_000_000
        assert sup.quotas("counter/a").fuel == 5_000_000  # the owner's own view
        readonly = facets(data, "quota", "counter", "fuel=1M", "--readonly", "--json")
        assert readonly.returncode == 1 and json.loads(readonly.stdout)["error"]["code"] == "refused"
        failed = facets(data, "call", "nope/a", "--json")
        assert failed.returncode == 1 and json.loads(failed.stdout)["error"]["code"] == "not_found"
        assert facets(data, "tables").returncode == 2  # a usage error is still found before sending
    assert sup.quotas("counter").fuel == 5_000_000


def test_a_running_script_owns_the_directory_and_runs_a_second_command(tmp_path):
    """`facets run` serves its control socket while it owns the directory: a command sent
    meanwhile runs in it, and the script's later line sees its effect."""
    data = tmp_path / "d"
    script = tmp_path / "slow.facets"
    script.write_text(
        f"load {fixture('probe.wat')}\nquota probe/spin fuel=1000G timeout_ms=10s\ncall probe/spin I\nquota probe/x\n"
    )
    env = {**os.environ, "FACETS_DATA": str(data)}
    owner = subprocess.Popen([*FACETS, "run", str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert json.loads(owner.stdout.readline())["ok"]  # loaded: it owns and serves by now
        info = owner_of(data)
        assert info is not None and info.role == "run" and info.pid == owner.pid and info.control
        sent = facets(data, "quota", "probe/x", "fuel=7M", "--json")
        assert sent.returncode == 0, sent.stdout
        rest = [json.loads(line) for line in owner.stdout.read().splitlines()]
    finally:
        owner.wait(timeout=120)
    assert rest[1]["error"]["code"] == "timeout"  # the spin ran its 10 s while the command came in
    assert rest[2]["quotas"]["fuel"] == 7_000_000  # the script's own last line sees it
    assert owner.returncode == 1
    assert owner_of(data) is None and not (data / "control.sock").exists() and not (data / "owner.json").exists()


#: Commands whose output depends only on the data directory (no fresh request ids or latencies).
SAME_OUTPUT = [
    ["apps"],
    ["facets"],
    ["usage", "counter/a"],
    ["quota", "counter", "fuel=5M"],
    ["quota", "counter/a"],
    ["tables", "counter/a"],
    ["rows", "counter/a", "counter"],
    ["sql", "counter/a", "select n, n * 1.5 as x from counter"],
    ["logs", "counter/a"],
    ["bill"],
    ["metrics"],
    ["help"],
    ["call", "nope/x"],
    ["delete", "counter/a"],
    ["load", "missing.wat"],
    ["export", "counter/a", "out.sqlite3"],
    ["evict", "counter/a", "--readonly"],
    ["usage", "counter/a", "--readonly"],
]


def test_output_sent_to_the_owner_is_byte_identical_to_the_embedded_run(tmp_path, monkeypatch):
    """Each command prints the same bytes (JSON and the rich rendering) and exits the same,
    whether it ran embedded or was sent to the owner; and so does a script."""
    monkeypatch.setattr(time, "time", lambda: 1793620800.0)  # `rps` is the last second's rate
    data = tmp_path / "d"
    with Supervisor(data) as sup:
        sup.load_app(COUNTER_WAT)
        assert sup.call("counter/a").ok
    script = tmp_path / "s.facets"
    script.write_text("apps\nquota counter/a\ncall nope/x\nusage counter\n")
    runner = CliRunner()

    def outputs(cwd: Path) -> dict[str, tuple[int, str]]:
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        got = {}
        for args in SAME_OUTPUT:
            for extra in (["--json"], []):
                if args[0] == "export" and not extra:
                    continue  # export never overwrites: once per directory
                result = runner.invoke(main, ["--data", str(data), *args, *extra])
                got[" ".join([*args, *extra])] = (result.exit_code, result.output)
        result = runner.invoke(main, ["--data", str(data), "run", str(script)])
        got["run"] = (result.exit_code, result.output)
        return got

    embedded = outputs(tmp_path / "a")
    assert owner_of(data) is None
    with Supervisor(data) as sup, ControlServer(sup):
        sent = outputs(tmp_path / "b")
        assert sup.app_list()  # the owner answered; nobody else opened the directory
    assert list(sent) == list(embedded)
    for line, (status, out) in embedded.items():
        assert sent[line] == (status, out), line
    assert (tmp_path / "b" / "out.sqlite3").exists()  # the owner wrote where the operator stood
    assert {status for status, _ in embedded.values()} == {0, 1}, {k: v[0] for k, v in embedded.items()}


@pytest.mark.parametrize("readonly", [False, True])
def test_a_script_sent_to_an_owner_prints_its_json_lines(tmp_path, readonly):
    data = tmp_path / "d"
    with Supervisor(data) as sup, ControlServer(sup):
        sup.load_app(COUNTER_WAT)
        assert sup.call("counter/a").ok
        flags = ["--readonly"] if readonly else []
        proc = facets(data, "run", "-", *flags, stdin="call counter/a\nusage counter/a\n")
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [x["ok"] for x in lines] == [not readonly, True]
        assert proc.returncode == (1 if readonly else 0)
        assert sup.usage("counter/a")["requests"] == (1 if readonly else 2)
        assert lines[1]["usage"]["requests"] == (1 if readonly else 2)  # the owner's unflushed truth


def test_an_owner_that_serves_no_socket_gets_a_clear_refusal_after_a_bounded_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(console.remote, "OWNER_WAIT", 0.3)
    data = tmp_path / "d"
    runner = CliRunner()
    with Supervisor(data, role="serve") as sup:  # a Python program: it owns, serves nothing
        sup.load_app(COUNTER_WAT)
        sup.call("counter/a")
        result = runner.invoke(main, ["--data", str(data), "quota", "counter", "fuel=1M", "--json"])
        assert result.exit_code == 1
        error = json.loads(result.output)["error"]
        assert error["code"] == "refused" and "serve (pid" in error["message"] and "--readonly" in error["message"]
        script = tmp_path / "s.facets"
        script.write_text("apps\n")
        result = runner.invoke(main, ["--data", str(data), "run", str(script)])
        assert result.exit_code == 1 and json.loads(result.output)["error"]["code"] == "refused"
        result = runner.invoke(main, ["--data", str(data), "apps", "--readonly", "--json"])  # reading is safe
        assert result.exit_code == 0 and json.loads(result.output)["apps"][0]["name"] == "counter"
        assert sup.quotas("counter").fuel != 1_000_000


def test_the_console_serves_the_control_socket_while_it_owns_the_directory(tmp_path, monkeypatch):
    """A `facets COMMAND` run while the console is open goes to the console's supervisor."""
    import console.app
    from console.remote import ControlClient

    seen: list[dict] = []

    def run(self: console.app.FacetsConsole) -> None:  # in place of the Textual loop
        info = owner_of(self.sup.data_dir)
        assert info is not None and info.role == "console" and info.control
        seen.append(ControlClient(info.control).command("quota counter fuel=3M"))
        assert self.sup.quotas("counter").fuel == 3_000_000  # the console's own supervisor has it

    monkeypatch.setattr(console.app.FacetsConsole, "run", run)
    data = tmp_path / "d"
    console.app.run_console(str(data))
    assert seen and seen[0]["ok"]
    assert owner_of(data) is None and not (data / "control.sock").exists()


def test_a_console_on_an_owned_directory_says_who_owns_it(tmp_path):
    """Until the console can attach to an owner, it refuses clearly (exit 1, no traceback)."""
    data = tmp_path / "d"
    with Supervisor(data, role="serve"):
        result = CliRunner().invoke(main, ["--data", str(data), "console", "--no-samples"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # exited, did not raise
    assert "in use by serve (pid" in result.output and "(refused)" in result.output
