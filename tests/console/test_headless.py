"""Scripts: JSON Lines, flushing, exit codes, --fail-fast, 100 facets, idempotent reruns; the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from console.headless import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_script
from tests.conftest import COUNTER_WAT, ROOT, fixture

FACETS = [sys.executable, "-m", "console.cli"]


def run(sup, script: str, **kw):
    out = io.StringIO()
    status = run_script(sup, script.splitlines(), out, **kw)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def test_script_results_and_exit_status(sup):
    status, results = run(
        sup,
        f"""
        # provision
        load {COUNTER_WAT}

        call counter/a
        call counter/a
        quota counter/a fuel=lots
        usage counter/a
    """,
    )
    assert status == EXIT_FAILED
    assert [r["ok"] for r in results] == [True, True, True, False, True]
    assert results[2]["response"] == {"count": 2}
    assert results[3]["error"]["code"] == "bad_quota"
    assert results[4]["usage"]["requests"] == 2
    assert all("cmd" in r for r in results)


def test_fail_fast_stops(sup):
    status, results = run(sup, f"load {COUNTER_WAT}\ncall nope/x\ncall counter/a", fail_fast=True)
    assert status == EXIT_FAILED and len(results) == 2


def test_unparsable_line_runs_nothing(sup):
    status, results = run(sup, f"load {COUNTER_WAT}\ncall counter/a 'unclosed\ncall counter/a")
    assert status == EXIT_USAGE
    assert len(results) == 1 and results[0]["error"]["code"] == "usage" and "line 2" in results[0]["error"]["message"]
    assert sup.app_list() == []  # nothing half-done


def test_hundred_facets_and_idempotent_rerun(sup):
    script = "\n".join(
        [f"load {COUNTER_WAT}"] + [f"call counter/f{i:03d}" for i in range(100)] + ["usage counter", "facets counter"]
    )
    status, results = run(sup, script)
    assert status == EXIT_OK
    assert results[0]["version"] == 1
    assert results[-2]["usage"]["requests"] == 100
    assert len(results[-1]["facets"]) == 100
    assert all(f["usage"]["requests"] == 1 for f in results[-1]["facets"])
    status, again = run(sup, script)
    assert status == EXIT_OK
    assert again[0]["version"] == 1  # same bytes: same version
    assert again[1]["response"] == {"count": 2}
    assert again[-2]["usage"]["requests"] == 200


def cli(*args, data, stdin=None, check_status=None):
    env = {**os.environ, "FACETS_DATA": str(data)}
    proc = subprocess.run([*FACETS, *args], input=stdin, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    if check_status is not None:
        assert proc.returncode == check_status, (proc.stdout, proc.stderr)
    return proc


def test_cli_single_commands(tmp_path):
    data = tmp_path / "d"
    out = cli("load", str(COUNTER_WAT), "--json", data=data, check_status=0).stdout
    assert json.loads(out)["app"] == "counter"
    out = cli("call", "counter/a", "--json", data=data, check_status=0).stdout
    assert json.loads(out)["response"] == {"count": 1}
    table = cli("facets", data=data, check_status=0).stdout
    assert "counter/a" in table and "warm" not in table  # a fresh process: cold
    failed = cli("call", "nope/a", "--json", data=data, check_status=1).stdout
    assert json.loads(failed)["error"]["code"] == "not_found"
    cli("delete", "counter/a", data=data, check_status=1)
    cli("tables", data=data, check_status=2)
    # --data wins over FACETS_DATA
    other = tmp_path / "other"
    cli("--data", str(other), "load", str(COUNTER_WAT), data=data, check_status=0)
    assert (other / "control.sqlite3").exists()


def test_cli_run_script_file_stdin_and_missing(tmp_path):
    data = tmp_path / "d"
    script = tmp_path / "s.facets"
    script.write_text(f"load {COUNTER_WAT}\ncall counter/a\n")
    lines = cli("run", str(script), data=data, check_status=0).stdout.splitlines()
    assert [json.loads(x)["ok"] for x in lines] == [True, True]
    lines = cli("run", "-", data=data, stdin="call counter/a\ncall counter/zz 'x'\n", check_status=0).stdout
    assert json.loads(lines.splitlines()[0])["response"] == {"count": 2}
    missing = cli("run", str(tmp_path / "nope"), data=data, check_status=2).stdout
    assert json.loads(missing)["error"]["code"] == "usage"
    cli("run", "-", data=data, stdin="call counter/a\nbogus\n", check_status=2)


def test_cli_output_never_carries_guest_escapes(tmp_path):
    data = tmp_path / "d"
    cli("load", str(fixture("probe.wat")), data=data, check_status=0)
    out = cli("call", "probe/x", "E\x1b[2J[bold red]boom[/]", data=data, check_status=0).stdout
    assert "\x1b" not in out and "[bold red]boom[/]" in out


def test_json_lines_are_flushed_as_each_command_finishes(tmp_path):
    """The first results can be read while a later (slow) command is still running."""
    env = {**os.environ, "FACETS_DATA": str(tmp_path / "d")}
    proc = subprocess.Popen(
        [*FACETS, "run", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    proc.stdin.write(f"load {fixture('probe.wat')}\nquota probe/spin fuel=1000G timeout_ms=3s\ncall probe/spin I\n")
    proc.stdin.close()
    first = json.loads(proc.stdout.readline())
    second = json.loads(proc.stdout.readline())
    still_running = proc.poll() is None
    third = json.loads(proc.stdout.readline())
    proc.wait(timeout=60)
    assert first["ok"] and second["ok"]
    assert still_running, "results were held back until the script ended"
    assert third["error"]["code"] == "timeout"
    assert proc.returncode == 1


def test_console_that_cannot_open_its_data_directory_says_why(tmp_path):
    """No traceback: a read-only console on a missing directory, and a damaged control database."""
    proc = cli("console", "--readonly", data=tmp_path / "missing", check_status=1)
    assert "Traceback" not in proc.stderr and "facets:" in proc.stderr
    assert not (tmp_path / "missing").exists()
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "control.sqlite3").write_bytes(b"not a database at all" * 100)
    proc = cli("console", data=damaged, check_status=1)
    assert "Traceback" not in proc.stderr and "control.sqlite3" in proc.stderr
