"""Loading apps: formats, ABI validation, content addressing, versions, the compiled cache."""

from __future__ import annotations

import os

import pytest

from runtime import BadModule, BadRequest, NotFound, Supervisor
from runtime.wasm import WasmRuntime
from tests.conftest import COUNTER_WAT, fixture


def test_load_wat_then_call_counter(sup):
    version = sup.load_app(COUNTER_WAT)
    assert (version.app, version.version) == ("counter", 1)
    assert set(version.exports) == {"memory", "facet_alloc", "facet_handle", "facet_init"}
    assert version.imports == ("sql",)
    assert sup.call("counter/alice").response == b'{"count":1}'
    assert sup.call("counter/alice").response == b'{"count":2}'


def test_load_wasm_binary(sup, tmp_path):
    wasm = WasmRuntime.wat_to_wasm(COUNTER_WAT.read_text())
    path = tmp_path / "tally.wasm"
    path.write_bytes(wasm)
    version = sup.load_app(path)
    assert version.app == "tally"
    assert sup.call("tally/x").ok


def test_same_bytes_load_once(sup):
    first = sup.load_app(COUNTER_WAT)
    again = sup.load_app(COUNTER_WAT)
    assert again == first
    assert len(sup.app_versions("counter")) == 1
    stored = [p for p in os.listdir(sup.data_dir / "modules") if p.endswith(".wasm")]
    assert stored == [f"{first.sha256}.wasm"]


def test_new_bytes_make_a_new_version(sup):
    sup.load_app(COUNTER_WAT)
    v2 = sup.load_app_bytes(COUNTER_WAT.read_text() + "\n;; v2\n", "counter")
    # Comments do not change the binary: same sha, same version.
    assert v2.version == 1
    v2 = sup.load_app(fixture("probe.wat"), "counter")
    assert v2.version == 2
    assert [v.version for v in sup.app_versions("counter")] == [1, 2]


def test_unknown_import_is_refused_by_name(sup):
    with pytest.raises(BadModule, match=r"env\.system"):
        sup.load_app(fixture("unknown_import.wat"))
    assert sup.app_list() == []


def test_missing_export_is_refused_by_name(sup):
    with pytest.raises(BadModule, match="facet_handle"):
        sup.load_app(fixture("missing_export.wat"))


def test_wrong_signature_is_refused(sup):
    wat = """(module (memory (export "memory") 1)
      (func (export "facet_alloc") (param i64) (result i32) (i32.const 0))
      (func (export "facet_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    with pytest.raises(BadModule, match="facet_alloc has the wrong signature"):
        sup.load_app_bytes(wat, "wrong")


def test_random_bytes_are_not_a_module(sup, tmp_path):
    path = tmp_path / "noise.wasm"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(BadModule):
        sup.load_app(path)
    path.write_bytes(b"\x00asm" + os.urandom(100))
    with pytest.raises(BadModule, match="not a valid WebAssembly module"):
        sup.load_app(path)


def test_bad_wat_text(sup):
    with pytest.raises(BadModule, match="WAT"):
        sup.load_app_bytes("(module (func $f (result i32) i64.const 1)", "broken")


def test_missing_file_and_bad_names(sup, tmp_path):
    with pytest.raises(NotFound):
        sup.load_app(tmp_path / "nope.wasm")
    with pytest.raises(BadRequest):
        sup.load_app(COUNTER_WAT, name="Counter")
    with pytest.raises(BadRequest):
        sup.load_app(COUNTER_WAT, name="../etc")


def test_compiled_module_cache_is_used_after_restart(tmp_path, monkeypatch):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        version = sup.load_app(COUNTER_WAT)
        sup.call("counter/a")
    cached = list((data / "modules").glob(f"{version.sha256}.*.cwasm"))
    assert len(cached) == 1

    compiled = []
    original = WasmRuntime.compile
    monkeypatch.setattr(WasmRuntime, "compile", lambda self, wasm: compiled.append(1) or original(self, wasm))
    with Supervisor(data) as sup:
        assert sup.call("counter/a").response == b'{"count":2}'
    assert compiled == [], "a cold start recompiled instead of using the cache"


def test_corrupt_cache_is_recompiled(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        version = sup.load_app(COUNTER_WAT)
    (cached,) = (data / "modules").glob(f"{version.sha256}.*.cwasm")
    cached.write_bytes(b"garbage")
    with Supervisor(data) as sup:
        assert sup.call("counter/a").response == b'{"count":1}'
    assert cached.read_bytes() != b"garbage"


def test_app_list(sup):
    sup.load_app(COUNTER_WAT)
    sup.call("counter/a")
    sup.call("counter/b")
    (info,) = sup.app_list()
    assert (info.name, info.facets, info.versions) == ("counter", 2, 1)
