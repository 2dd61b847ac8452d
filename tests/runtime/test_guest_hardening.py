"""Hostile guests and careless operators, part two: each case ends with a stable code and a
clear message, bounds hold, and the supervisor keeps serving everyone else.

The modules that attack the loader are built here, as wasm binaries, so their size is a
parameter: a 0.5 MB module of 100,000 empty functions took 11 s and 617 MiB to compile.
"""

from __future__ import annotations

import json
import random
import shutil
import struct

import pytest
import wasmtime

from runtime import BadModule, ErrorCode, Supervisor, abi
from runtime.hostcalls import max_log_records
from runtime.wasm import WasmRuntime, scan_module
from tests.conftest import COUNTER_WAT, fixture, sql_body, sql_reply


# -- building wasm binaries ------------------------------------------------------------
def leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + leb(len(payload)) + payload


def vector(items: list[bytes]) -> bytes:
    return leb(len(items)) + b"".join(items)


def name(text: str) -> bytes:
    return leb(len(text)) + text.encode()


def facet_module(
    *, extra_functions: int = 0, extra_exports: int = 0, memories: int = 1, tables: int = 0, body_padding: int = 0
) -> bytes:
    """A valid facet module answering "ok", grown in one dimension.

    Types: 0 () -> (), 1 (i32) -> i32, 2 (i32, i32) -> i64. Functions: 0 facet_alloc,
    1 facet_handle, then ``extra_functions`` empty ones. ``extra_exports`` more exports
    of facet_handle; ``body_padding`` nops in facet_handle's body.
    """
    types = section(1, vector([b"\x60\x00\x00", b"\x60\x01\x7f\x01\x7f", b"\x60\x02\x7f\x7f\x01\x7e"]))
    functions = section(3, leb(2 + extra_functions) + b"\x01\x02" + b"\x00" * extra_functions)
    table_section = section(4, vector([b"\x70\x00\x01"] * tables)) if tables else b""
    memory = section(5, vector([b"\x00\x01"] * memories))
    exports = [name("memory") + b"\x02\x00", name("facet_alloc") + b"\x00\x00", name("facet_handle") + b"\x00\x01"]
    exports += [name(f"x{i}") + b"\x00\x01" for i in range(extra_exports)]
    alloc = b"\x00" + b"\x41" + leb(1024) + b"\x0b"  # i32.const 1024
    handle = b"\x00" + b"\x01" * body_padding + b"\x42\x02\x0b"  # i64.const 2: "ok" at 0
    empty = b"\x02\x00\x0b"
    code = section(
        10, leb(2 + extra_functions) + leb(len(alloc)) + alloc + leb(len(handle)) + handle + empty * extra_functions
    )
    data = section(11, vector([b"\x00\x41\x00\x0b" + name("ok")]))
    return (
        b"\x00asm\x01\x00\x00\x00"
        + types
        + functions
        + table_section
        + memory
        + section(7, vector(exports))
        + code
        + data
    )


@pytest.fixture
def fleet(probe):
    """The probe plus a counter facet with known state, to check nothing else is hurt."""
    probe.load_app(COUNTER_WAT)
    probe.call("counter/bystander")
    return probe


def assert_others_fine(sup: Supervisor, expected_count: int) -> None:
    assert sup.call("counter/bystander").response == f'{{"count":{expected_count}}}'.encode()


@pytest.fixture
def no_compiling(monkeypatch):
    """Fail the test if anything reaches wasmtime's compiler."""

    def refuse(*args, **kwargs):
        raise AssertionError("the module reached the compiler")

    monkeypatch.setattr(wasmtime, "Module", refuse)


# -- 1. faults are classified by code and by where they happened, never by text ---------
def test_untyped_errors_are_not_classified_by_their_text(tmp_path):
    runtime = WasmRuntime()
    try:
        prepared = runtime.prepare(runtime.compile(runtime.wat_to_wasm(fixture("probe.wat").read_text())))
        guest = runtime.instantiate(prepared, fuel=10**6, memory_limit=8 << 20, timeout_ms=1000)
        # The words that used to decide "memory_limit" mean nothing during a call...
        text = "memory minimum size of 100 pages exceeds memory limits"
        assert guest._fault(wasmtime.WasmtimeError(text), during="call").code == ErrorCode.TRAP
        # ...and instantiation's store-limit refusals are memory limits whatever they say.
        assert (
            guest._fault(wasmtime.WasmtimeError("something new"), during="instantiation").code == ErrorCode.MEMORY_LIMIT
        )
    finally:
        runtime.close()


def test_initial_memory_is_checked_against_the_quota_before_instantiating(fleet):
    fleet.load_app_bytes(
        """(module (memory (export "memory") 256)
      (func (export "facet_alloc") (param i32) (result i32) (i32.const 8))
      (func (export "facet_handle") (param i32 i32) (result i64) (i64.const 0)))""",
        "sixteen",
    )
    fleet.set_quotas("sixteen/x", memory="16MiB")  # exactly the declared 256 pages
    assert fleet.call("sixteen/x").ok
    fleet.set_quotas("sixteen/y", memory=str((16 << 20) - 1))
    result = fleet.call("sixteen/y")
    assert result.error == "memory_limit"
    assert f"{16 << 20:,} bytes" in result.message and f"{(16 << 20) - 1:,} bytes" in result.message
    assert_others_fine(fleet, 2)


def test_store_limits_on_counts_are_refused_at_load(fleet, no_compiling):
    # Two memories (multi-memory is on in wasmtime) used to load, then fail every
    # instantiation with "resource limit exceeded".
    with pytest.raises(BadModule, match="2 memories; at most 1"):
        fleet.load_app_bytes(facet_module(memories=2), "two_memories")
    with pytest.raises(BadModule, match="5 tables; at most 4"):
        fleet.load_app_bytes(facet_module(tables=5), "five_tables")
    assert {app.name for app in fleet.app_list()} == {"probe", "counter"}


# -- 2. a memory quota change keeps every other store limit -------------------------------
def test_table_limit_survives_a_memory_quota_change(fleet):
    fleet.load_app(fixture("table_grow.wat"))
    grow = lambda n: fleet.call("table_grow/t", struct.pack("<I", n))  # noqa: E731
    assert grow(abi.MAX_TABLE_ELEMENTS - 1).response == b"grown"  # 1 + 99,999: at the limit
    assert not grow(abi.MAX_TABLE_ELEMENTS).ok  # one over: refused
    assert grow(0).ok  # a warm instance again
    fleet.set_quotas("table_grow/t", memory="16MiB")
    result = grow(2 * abi.MAX_TABLE_ELEMENTS)
    assert not result.usage.cold_start, "the quota change must reach the warm instance"
    assert (result.ok, result.error) == (False, "trap"), result.response
    assert_others_fine(fleet, 2)


# -- 3. load limits, checked before compiling -------------------------------------------
def test_compile_bomb_is_refused_before_compiling(sup, no_compiling):
    bomb = facet_module(extra_functions=100_000)
    assert len(bomb) < 600_000
    with pytest.raises(BadModule) as refused:
        sup.load_app_bytes(bomb, "bomb")
    assert refused.value.code == "bad_module"
    assert f"100,002 functions; at most {abi.MAX_FUNCTIONS:,}" in refused.value.message
    assert sup.app_list() == []


def test_export_bomb_is_refused_before_compiling(sup, no_compiling):
    with pytest.raises(BadModule, match=f"100,003 exports; at most {abi.MAX_EXPORTS:,}"):
        sup.load_app_bytes(facet_module(extra_exports=100_000), "exports")


@pytest.mark.parametrize(
    "module, words",
    [
        (facet_module(body_padding=abi.MAX_FUNCTION_BYTES), "function body"),
        (facet_module(body_padding=abi.MAX_CODE_BYTES), "bytes of code"),
        (b"\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff\x0f", "runs past the end"),
        (b"\x00asm\x01\x00\x00\x00\x01\x06\xff\xff\xff\xff\xff\x01", "integer longer than 32 bits"),
        # one memory, flags 0x08 (custom page size), minimum 1, page size 2**4294967295
        (b"\x00asm\x01\x00\x00\x00\x05\x08\x01\x08\x01\xff\xff\xff\xff\x0f", "page size"),
    ],
    ids=["function-body", "code-size", "section-past-end", "long-leb", "page-size"],
)
def test_other_load_limits_and_malformed_headers(sup, no_compiling, module, words):
    with pytest.raises(BadModule, match=words):
        sup.load_app_bytes(module, "refused")


def test_table_limits_are_read_in_both_table_encodings():
    plain = WasmRuntime.wat_to_wasm(f"(module (table {abi.MAX_TABLE_ELEMENTS} funcref))")
    initialized = WasmRuntime.wat_to_wasm(f"(module (table {abi.MAX_TABLE_ELEMENTS} funcref (ref.null func)))")
    assert scan_module(plain).table_min == scan_module(initialized).table_min == abi.MAX_TABLE_ELEMENTS
    for text in (
        f"(table {abi.MAX_TABLE_ELEMENTS + 1} funcref)",
        f"(table 1 funcref (ref.null func)) (table {abi.MAX_TABLE_ELEMENTS + 1} funcref (ref.null func))",
    ):
        with pytest.raises(BadModule, match="initial elements"):
            scan_module(WasmRuntime.wat_to_wasm(f"(module {text})"))


def test_damaged_binaries_are_refused_with_bad_module_only():
    # The scan reads untrusted bytes: whatever they are, it answers BadModule or counts.
    original = (COUNTER_WAT.parent.parent / "todo" / "todo.wasm").read_bytes()
    rng = random.Random(12)
    for attempt in range(2000):
        damaged = bytearray(original[: rng.randrange(9, len(original))] if attempt % 2 else original)
        for _ in range(rng.randrange(1, 6)):
            damaged[rng.randrange(8, len(damaged))] = rng.randrange(256)
        try:
            scan_module(bytes(damaged))
        except BadModule as refused:
            assert refused.message


def test_a_module_at_the_export_limit_loads_and_cold_starts(sup, monkeypatch):
    module = facet_module(extra_exports=abi.MAX_EXPORTS - 3)
    assert scan_module(module).exports == abi.MAX_EXPORTS
    version = sup.load_app_bytes(module, "many")
    assert len(version.exports) == abi.MAX_EXPORTS

    # A cold start looks up the ABI's exports by name; wrapping every export is what
    # made cold starts of a 100,000-export module take minutes.
    def every_export(self, store):
        raise AssertionError("a cold start wrapped every export")

    monkeypatch.setattr(wasmtime.Instance, "exports", every_export)
    result = sup.call("many/x", b"hi")
    assert (result.ok, result.response, result.usage.cold_start) == (True, b"ok", True)
    with pytest.raises(BadModule, match="exports; at most"):
        sup.load_app_bytes(facet_module(extra_exports=abi.MAX_EXPORTS - 2), "too_many")


def test_sample_apps_are_well_inside_the_load_limits():
    for path in sorted((COUNTER_WAT.parent.parent).glob("*/*.wasm")):
        counts = scan_module(path.read_bytes())
        assert counts.functions * 10 <= abi.MAX_FUNCTIONS, path.name
        assert counts.exports * 10 <= abi.MAX_EXPORTS, path.name
        assert counts.largest_function * 10 <= abi.MAX_FUNCTION_BYTES, path.name
        assert counts.table_min * 10 <= abi.MAX_TABLE_ELEMENTS, path.name


def test_oversized_module_bytes_are_refused(sup, no_compiling):
    from runtime.apps import MAX_MODULE_BYTES

    with pytest.raises(BadModule, match="limited to"):
        sup.load_app_bytes(b"\x00asm\x01\x00\x00\x00" + b"\x00\x00" * (MAX_MODULE_BYTES // 2), "huge")


def test_abi_page_states_the_load_limits():
    page = (COUNTER_WAT.parent.parent / "ABI.md").read_text()
    from runtime.apps import MAX_MODULE_BYTES

    for row, value in [
        ("module size", MAX_MODULE_BYTES // 2**20),
        ("functions (defined)", abi.MAX_FUNCTIONS),
        ("exports", abi.MAX_EXPORTS),
        ("imports", abi.MAX_IMPORTS),
        ("one function body", abi.MAX_FUNCTION_BYTES // 2**20),
        ("all function bodies", abi.MAX_CODE_BYTES // 2**20),
    ]:
        assert f"| {row} | {value:,}" in page, row
    assert f"{abi.MAX_TABLE_ELEMENTS:,} initial elements" in page


# -- 4. a missing modules directory ------------------------------------------------------
def test_missing_module_files_give_a_coded_failure(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data, idle_timeout=3600) as sup:
        probe = sup.load_app(fixture("probe.wat"))
        sup.load_app(COUNTER_WAT)
        assert sup.call("counter/a").ok
    modules = data / "modules"
    # Only the compiled cache gone: recompiled from the .wasm, and cached again.
    for cached in modules.glob(f"{probe.sha256}.*.cwasm"):
        cached.unlink()
    with Supervisor(data, idle_timeout=3600) as sup:
        assert sup.call("probe/a", b"Ehello").response == b"hello"
        assert list(modules.glob(f"{probe.sha256}.*.cwasm"))
    # The whole directory gone while running: the app whose module is not in memory
    # fails with a code naming the file; the others are served on.
    with Supervisor(data, idle_timeout=3600) as sup:
        assert sup.call("counter/a").response == b'{"count":2}'
        shutil.rmtree(modules)
        result = sup.call("probe/a", b"Ehello")
        assert (result.ok, result.error) == (False, "bad_module")
        assert f"{probe.sha256}.wasm" in result.message and "load the app again" in result.message
        assert sup.call("counter/a").response == b'{"count":3}'
        # Loading the same bytes again puts the file back.
        sup.load_app(fixture("probe.wat"))
        assert sup.call("probe/a", b"Eback").response == b"back"
    assert (modules / f"{probe.sha256}.wasm").is_file()


def test_a_damaged_module_file_gives_a_coded_failure(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data, idle_timeout=3600) as sup:
        probe = sup.load_app(fixture("probe.wat"))
    for path in (data / "modules").glob(f"{probe.sha256}.*"):
        if path.suffix == ".wasm":
            path.write_bytes(b"\x00asm\x01\x00\x00\x00")  # valid wasm, other bytes
        else:
            path.unlink()
    with Supervisor(data, idle_timeout=3600) as sup:
        result = sup.call("probe/a", b"Ehello")
        assert (result.error, "sha256" in result.message) == ("bad_module", True)


# -- 5. log records are bounded, not only log bytes --------------------------------------
def test_empty_log_records_are_bounded_and_counted(fleet):
    fleet.load_app(fixture("log_flood.wat"))
    result = fleet.call("log_flood/x", struct.pack("<I", 200_000))
    kept = max_log_records(fleet.quotas("log_flood/x").log_bytes)
    assert result.ok and result.usage.logs_truncated == 200_000 - kept
    stored = [r for r in fleet.logs("log_flood/x", limit=300_000) if r.source == "guest"]
    assert len(stored) == kept
    # The bound follows the quota.
    fleet.set_quotas("log_flood/y", log_bytes=str(200 * 64))
    result = fleet.call("log_flood/y", struct.pack("<I", 1_000))
    assert result.usage.logs_truncated == 1_000 - 200
    assert_others_fine(fleet, 2)


# -- 6. no host calls from a facet_alloc the host is running ------------------------------
def test_sql_from_inside_facet_alloc_is_refused(fleet):
    fleet.load_app(fixture("alloc_reenters.wat"))
    result = fleet.call("alloc_reenters/x", b"hi")
    assert (result.ok, result.error) == (False, "bad_response")
    assert "facet_alloc" in result.message and "sql" in result.message
    assert fleet.call("probe/a", b"Estill").response == b"still"
    assert_others_fine(fleet, 2)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost trap, on purpose
def test_a_lost_host_trap_still_fails_the_request(probe, monkeypatch):
    # If making the trap fails (the stack ran out there once), the ctypes callback
    # returns no trap and the guest runs on: the decision recorded before still holds.
    import runtime.wasm

    def broken(message: str) -> int:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(runtime.wasm, "_trap_address", broken)
    second = sql_body("SELECT 2")[1:]
    result = probe.call("probe/lost", b"D\x04nope" + second)  # a bad sql call, then a good one
    assert (result.ok, result.error) == (False, "bad_request")
    monkeypatch.undo()
    assert sql_reply(probe.call("probe/lost", sql_body("SELECT 3")))["rows"] == [[3]]


# -- 7. deeply nested sql requests -------------------------------------------------------
def test_deeply_nested_sql_params_are_a_bad_request(fleet):
    nested = '{"sql": "SELECT ?", "params": ' + "[" * 100_000 + "]" * 100_000 + "}"
    result = fleet.call("probe/n", b"S" + nested.encode())
    assert (result.ok, result.error) == (False, "bad_request")
    assert "nested too deeply" in result.message
    # a little nesting is answered in JSON, as any non-scalar parameter is
    shallow = json.loads(fleet.call("probe/n", sql_body("SELECT ?", [1])).response)
    assert shallow["ok"] is False and shallow["error"]["code"] == "bad_request"
    assert sql_reply(fleet.call("probe/n", sql_body("SELECT 1")))["rows"] == [[1]]
    assert_others_fine(fleet, 2)
