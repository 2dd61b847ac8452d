"""Component apps (ABI v2) through the supervisor: the same sandbox, quotas and codes as
core modules, for a hostile JavaScript and a hostile Python app (tests/fixtures/components).

Each app is built from source on first use (10-30 s) and compiled once; later loads, in
this run or the next, come from the build cache (runtime/toolchain.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import wasmtime

from runtime import BadModule, BuildFailed, ErrorCode, HttpRequest, Supervisor, abi
from runtime.hostcalls import TRUNCATION_MARKER
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "components"
SOURCES = {"js": FIXTURES / "hostile.js", "py": FIXTURES / "hostile.py"}
#: What each runtime's recursion ends in: SpiderMonkey stops it with its own limit (the
#: SDK reports stack_overflow); CPython's limit is raised by the app, so the wasm stack
#: overflows, which a component trap reports without a code: a plain trap.
RECURSION_CODE = {"js": ErrorCode.STACK_OVERFLOW, "py": ErrorCode.TRAP}


@pytest.fixture(params=sorted(SOURCES))
def hostile(sup, request):
    version = sup.load_app(SOURCES[request.param], "hostile")
    assert version.kind == "component"
    assert version.language == {"js": "javascript", "py": "python"}[request.param]
    assert version.toolchain.startswith({"js": "componentize-js", "py": "componentize-py"}[request.param])
    # Requests that are not about time get plenty of it: a cold start's migrations commit
    # to a new database, and a busy disk once held that fsync past the 2 s default.
    sup.set_quotas("hostile", timeout_ms="30s")
    sup.language = request.param
    return sup


def hits(sup, facet="hostile/a"):
    return sup.query(facet, "SELECT count(*) FROM hits")["rows"][0][0]


def test_a_component_answers_and_writes(hostile):
    first = hostile.call("hostile/a", "ok")  # cold: instantiation and the migrations first
    assert first.ok, (first.error, first.message)
    assert first.usage.cold_start
    result = hostile.call("hostile/a", "ok")
    assert result.ok and result.response == b"ok"
    assert not result.usage.cold_start
    assert result.usage.rows_written == 1 and result.usage.sql_calls == 1 and result.usage.fuel > 0
    # counted at the memory its core modules declare (a live component's memory is not visible)
    assert result.usage.memory > 1_000_000
    assert hits(hostile) == 2
    info = {a.name: a for a in hostile.app_list()}["hostile"]
    assert info.version.kind == "component" and info.version.size > 1_000_000


def test_a_spinning_guest_times_out_while_other_facets_serve(hostile):
    hostile.set_quotas("hostile/spin", timeout_ms="400ms", fuel="1000G")
    outcome = {}
    spinner = threading.Thread(target=lambda: outcome.setdefault("r", hostile.call("hostile/spin", "spin")))
    spinner.start()
    try:
        time.sleep(0.05)
        served = hostile.call("hostile/b", "ok")  # another facet, while the first spins
        still_spinning = spinner.is_alive()
    finally:
        spinner.join(30)
    assert served.ok and served.response == b"ok"
    assert still_spinning  # the healthy request did not wait for the spinning one
    assert outcome["r"].error == ErrorCode.TIMEOUT, outcome["r"].message
    assert hostile.call("hostile/spin", "ok").ok  # a fresh instance serves again


def test_a_spinning_guest_runs_out_of_fuel(hostile):
    hostile.set_quotas("hostile/a", fuel="20M", timeout_ms="30s")
    result = hostile.call("hostile/a", "spin")
    assert result.error == ErrorCode.FUEL_EXHAUSTED, result.message
    assert result.usage.fuel >= 20_000_000


def test_unbounded_recursion_is_contained(hostile):
    hostile.set_quotas("hostile/a", fuel="100G", timeout_ms="60s")  # only the stack can stop it
    result = hostile.call("hostile/a", "recurse")
    assert result.error == RECURSION_CODE[hostile.language], result.message
    assert hostile.call("hostile/a", "ok").ok


def test_a_gigabyte_allocation_hits_the_memory_quota(hostile):
    result = hostile.call("hostile/a", "alloc")
    assert result.error == ErrorCode.MEMORY_LIMIT, result.message
    assert hostile.call("hostile/a", "ok").ok


def test_a_memory_quota_below_the_components_initial_memory_refuses_instantiation(hostile):
    hostile.set_quotas("hostile/small", memory="1MiB")
    result = hostile.call("hostile/small", "ok")
    assert result.error == ErrorCode.MEMORY_LIMIT, result.message
    assert "initial memory" in result.message
    assert hostile.query("hostile/small", "SELECT count(*) FROM sqlite_master")["rows"] == [[0]]


def test_a_thrown_exception_fails_the_request_and_rolls_it_back(hostile):
    assert hostile.call("hostile/a", "ok").ok
    mode = "write" if hostile.language == "py" else "throw"
    result = hostile.call("hostile/a", mode)
    assert result.error == ErrorCode.TRAP
    assert "thrown on purpose" in result.message or "wrote a row, then failed" in result.message
    assert hits(hostile) == 1  # the failed request's row, if it wrote one, is gone
    logged = [r.message for r in hostile.logs("hostile/a")]
    assert any("request failed (trap)" in m for m in logged), logged


def test_the_guest_reads_no_file_and_opens_no_socket(hostile):
    result = hostile.call("hostile/a", "passwd")
    assert result.ok, result.message
    answer = json.loads(result.response)
    assert "root:" not in result.response.decode()
    if hostile.language == "js":
        assert all(value.startswith("failed") for value in answer.values()), answer
    else:
        for attempt in ("open", "listdir", "socket"):
            assert answer[attempt]["ok"] is False, answer
        assert answer["environ"] == {"ok": True, "value": "{}"}


@pytest.mark.parametrize("mode", ["exit", "os_exit"])
def test_exiting_ends_only_the_request(hostile, mode):
    if mode == "os_exit" and hostile.language == "js":
        pytest.skip("JavaScript has no os._exit")
    result = hostile.call("hostile/a", mode)
    assert result.error == ErrorCode.TRAP, result.message
    assert hostile.call("hostile/a", "ok").ok


def test_a_log_flood_is_cut_at_the_log_quota(hostile):
    hostile.set_quotas("hostile/flood", log_bytes="64KiB")
    assert hostile.call("hostile/flood", "ok").ok  # instantiated: init's own log is not this request's
    result = hostile.call("hostile/flood", "flood")
    assert result.usage.logs_truncated > 0
    records = hostile.logs("hostile/flood")
    guest = [r for r in records if r.source == "guest" and r.request_id == result.request_id]
    kept = sum(len(r.message.replace(TRUNCATION_MARKER, "").encode()) for r in guest)
    assert 0 < kept <= 64 * 1024
    assert hostile.call("hostile/b", "ok").ok


def test_guest_output_reaches_the_facet_log_neutralised_and_never_stdout(hostile, capfd):
    result = hostile.call("hostile/a", "log")
    assert result.ok and result.response == b"logged"
    out, err = capfd.readouterr()
    assert "red" not in out and "red" not in err and "\x1b" not in out + err
    guest = [r.message for r in hostile.logs("hostile/a") if r.source == "guest"]
    joined = "\n".join(guest)
    assert "red" in joined and "to stderr" in joined and "through env.log" in joined
    assert "\x1b" not in joined and "\x07" not in joined
    assert "[b]bold[/b]" in joined  # markup stays text


def test_the_clock_and_randomness_are_the_hosts(hostile):
    before = int(time.time() * 1000)
    first = json.loads(hostile.call("hostile/a", "entropy").response)
    second = json.loads(hostile.call("hostile/b", "entropy").response)  # another instance
    after = int(time.time() * 1000)
    for answer in (first, second):
        clock = answer["now"]
        assert before - 5 <= clock <= after + 5
        assert before - 5 <= answer["date" if hostile.language == "js" else "time"] <= after + 5
    assert first["random"] != second["random"]
    assert first["bytes"] != second["bytes"]


def test_the_storage_quota_refuses_writes_past_it(hostile):
    hostile.set_quotas("hostile/full", storage="64KiB")
    assert hostile.call("hostile/full", "ok").ok
    result = hostile.call("hostile/full", "big")
    assert result.error == ErrorCode.STORAGE_FULL, result.message
    assert hits(hostile, "hostile/full") == 1


def test_binary_bodies_cross_both_ways_exactly(hostile):
    body = bytes(range(256)) * 64 + b"\xff\xfe\x00tail"
    result = hostile.fetch("hostile/a", HttpRequest("POST", "/echo", body=body))
    assert result.ok, result.message
    assert result.http.status == 200 and result.http.body == body
    text = "héllo wörld ✓ 𝄞".encode()
    result = hostile.fetch("hostile/a", HttpRequest("POST", "/echo", body=text))
    assert result.http.body == text


def test_a_one_mebibyte_body_crosses_each_way(hostile):
    hostile.set_quotas("hostile/a", fuel="10G")
    body = b"z" * (1 << 20)
    result = hostile.fetch("hostile/a", HttpRequest("POST", "/echo", body=body))
    assert result.ok, result.message
    assert result.http.body == body


def test_a_plain_request_must_be_utf8(hostile):
    result = hostile.call("hostile/a", b"\xff\xfe")
    assert result.error == ErrorCode.BAD_REQUEST
    assert hostile.call("hostile/a", "ok").ok


# -- loading ------------------------------------------------------------------------------
def test_a_component_importing_anything_else_is_refused(sup):
    evil = wasmtime.wat2wasm('(component (import "evil:net/socket@1.0.0" (instance (export "connect" (func)))))')
    with pytest.raises(BadModule, match=r"evil:net/socket@1\.0\.0 is not part of the facet ABI v2"):
        sup.load_app_bytes(bytes(evil), "evil")
    assert not sup.app_list()


def test_a_component_without_the_guest_interface_is_refused(sup):
    with pytest.raises(BadModule, match=f"missing export: {re.escape(abi.GUEST_INTERFACE)}"):
        sup.load_app_bytes(b"\x00asm\x0d\x00\x01\x00", "empty")


def test_a_component_built_before_alarms_loads_and_serves(sup):
    # Built against facets:app@2.0.0 (host@2.0.0 imported, guest@2.0.0 without `alarm`):
    # the 2.1.0 host is semver-compatible with it.
    old = bytes(wasmtime.wat2wasm((FIXTURES / "before_alarms.wat").read_text()))
    version = sup.load_app_bytes(old, "old")
    assert version.kind == "component"
    assert sup.call("old/a", "CREATE TABLE t (x)").ok
    result = sup.call("old/a", "SELECT 6 * 7")
    assert result.ok, result.message
    assert json.loads(result.response)["rows"] == [[42]]


def test_a_build_error_names_the_file_and_line(sup, tmp_path):
    app = tmp_path / "broken.js"
    app.write_text("export default {\n  call(body) {\n    return body +;\n  },\n};\n")
    with pytest.raises(BuildFailed) as caught:
        sup.load_app(app)
    assert caught.value.line == 3 and caught.value.file is not None and caught.value.file.endswith("broken.js")
    assert caught.value.code == ErrorCode.BAD_MODULE
    assert not sup.app_list()


def test_a_later_process_reuses_the_build_and_the_compiled_cache(tmp_path, sup):
    sup.load_app(SOURCES["js"], "hostile")  # built and compiled (or already cached)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "console", "--data", str(tmp_path / "other"), "load", str(SOURCES["js"]), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["kind"] == "component" and result["language"] == "javascript"
    progress = [json.loads(line)["progress"] for line in proc.stderr.splitlines() if line.startswith('{"progress"')]
    steps = {report["step"]: report for report in progress}
    assert steps["build"]["cached"] is True and steps["compile"]["cached"] is True, progress
    with Supervisor(tmp_path / "other") as other:
        assert other.call("hostile/z", "ok").response == b"ok"


def test_declared_memory_sums_the_core_modules_and_nested_components():
    from runtime.components import declared_memory

    text = """(component
      (core module (memory 3))
      (core module (memory 1 5))
      (component (core module (memory 2))))"""
    assert declared_memory(bytes(wasmtime.wat2wasm(text))) == 6 * 65_536
    assert declared_memory(b"\x00asm\x0d\x00\x01\x00\x01\xff") == 0  # malformed: counts nothing
