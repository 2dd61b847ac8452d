"""The guest side of alarms, at the seams (runtime.wasm, runtime.components, runtime.hostcalls).

Delivering alarms is the supervisor's (its scheduler); here the guest's half is checked
with real wasmtime and a real FacetDB: the host calls stage a change on the request's
context (read back through a stand-in for the scheduler's store, which is the interface
the context is given), bad times and missing handlers are refused, and the handler runs
under the request limits with the same failure codes.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import wasmtime

from runtime import abi, toolchain
from runtime.components import ComponentRuntime
from runtime.errors import BadModule, ErrorCode
from runtime.hostcalls import UNCHANGED, RequestContext
from runtime.storage import FacetDB
from runtime.wasm import GuestFault, GuestInstance, WasmRuntime
from tests.conftest import ROOT, fixture

ALARM_WAT = fixture("alarm.wat").read_text()
FUEL = 10**8
TIMEOUT_MS = 2000


class Alarms:
    """The scheduler's side as the context sees it: ``get(app, facet)``."""

    def __init__(self, pending: dict[tuple[str, str], int] | None = None) -> None:
        self.pending = dict(pending or {})
        self.asked: list[tuple[str, str]] = []

    def get(self, app: str, facet: str) -> int | None:
        self.asked.append((app, facet))
        return self.pending.get((app, facet))


@pytest.fixture(scope="module")
def runtime() -> Iterator[WasmRuntime]:
    wasm = WasmRuntime()
    yield wasm
    wasm.close()


@pytest.fixture
def db(tmp_path) -> Iterator[FacetDB]:
    database = FacetDB(str(tmp_path / "facet.db"))
    yield database
    database.close()


def instantiate(runtime: WasmRuntime, text: str = ALARM_WAT) -> tuple[GuestInstance, abi.ModuleShape]:
    module = runtime.compile(runtime.wat_to_wasm(text))
    shape = runtime.inspect(module)
    guest = runtime.instantiate(runtime.prepare(module), fuel=FUEL, memory_limit=8 << 20, timeout_ms=TIMEOUT_MS)
    return guest, shape


def context(db: FacetDB, alarms: Any = None) -> RequestContext:
    return RequestContext("app", "f", "req-1", db, 65536, 1 << 20, alarms=alarms)


def request(guest: GuestInstance, ctx: RequestContext, body: bytes) -> bytes:
    return guest.handle(body, fuel=FUEL, timeout_ms=TIMEOUT_MS, host=ctx)


def set_alarm(guest: GuestInstance, ctx: RequestContext, at_ms: int) -> int:
    (code,) = struct.unpack("<i", request(guest, ctx, b"S" + struct.pack("<q", at_ms)))
    return int(code)


def get_alarm(guest: GuestInstance, ctx: RequestContext) -> int:
    (at,) = struct.unpack("<q", request(guest, ctx, b"G"))
    return int(at)


def fired(db: FacetDB) -> int:
    db.begin()
    try:
        rows = db.execute_guest("SELECT count(*) FROM fired", [], max_result_bytes=1 << 20).rows
    finally:
        db.rollback()
    return int(rows[0][0])


def create_table(guest: GuestInstance, db: FacetDB) -> None:
    db.begin()
    answer = request(guest, context(db), b'Q{"sql":"CREATE TABLE fired (at INTEGER)"}')
    assert json.loads(answer)["ok"], answer
    db.commit()


# -- core modules (ABI v1) ----------------------------------------------------------------
def test_the_shape_says_whether_a_module_has_an_alarm_handler(runtime):
    guest, shape = instantiate(runtime)
    assert shape.has_alarm and guest.has_alarm
    assert {"set_alarm", "get_alarm", "delete_alarm"} <= set(shape.imports)
    plain, plain_shape = instantiate(runtime, ALARM_WAT.replace('(export "facet_alarm")', ""))
    assert not plain_shape.has_alarm and not plain.has_alarm


def test_set_get_and_delete_stage_a_change_and_write_nothing(runtime, db):
    guest, _ = instantiate(runtime)
    alarms = Alarms({("app", "f"): 5_000})
    ctx = context(db, alarms)
    assert ctx.alarm_change is UNCHANGED
    assert get_alarm(guest, ctx) == 5_000  # nothing staged: the stored alarm
    assert alarms.asked == [("app", "f")]
    assert set_alarm(guest, ctx, 1_700_000_000_123) == abi.ALARM_SET
    assert ctx.alarm_change == 1_700_000_000_123
    assert get_alarm(guest, ctx) == 1_700_000_000_123  # the request's own change first
    assert set_alarm(guest, ctx, 42) == abi.ALARM_SET  # a new set replaces it
    assert ctx.alarm_change == 42 and get_alarm(guest, ctx) == 42
    request(guest, ctx, b"D")
    assert ctx.alarm_change is None
    assert get_alarm(guest, ctx) == -1  # deleted in this request, whatever is stored
    assert alarms.pending == {("app", "f"): 5_000}  # the context wrote nothing anywhere


def test_without_a_scheduler_there_is_no_alarm(runtime, db):
    guest, _ = instantiate(runtime)
    ctx = context(db)
    assert get_alarm(guest, ctx) == -1
    assert set_alarm(guest, ctx, 0) == abi.ALARM_SET  # the epoch itself is a valid time
    assert get_alarm(guest, ctx) == 0


@pytest.mark.parametrize(
    "at_ms, code",
    [
        (-1, abi.ALARM_BAD_TIME),
        (-(2**63), abi.ALARM_BAD_TIME),  # read signed: the most negative i64
        (abi.MAX_ALARM_MS, abi.ALARM_SET),  # 9999-12-31T23:59:59.999Z
        (abi.MAX_ALARM_MS + 1, abi.ALARM_BAD_TIME),
        (2**63 - 1, abi.ALARM_BAD_TIME),
    ],
)
def test_bad_times_are_refused_with_2(runtime, db, at_ms, code):
    guest, _ = instantiate(runtime)
    ctx = context(db)
    assert set_alarm(guest, ctx, at_ms) == code
    assert ctx.alarm_change == (at_ms if code == abi.ALARM_SET else UNCHANGED)


def test_a_module_without_a_handler_is_refused_with_1(runtime, db):
    guest, _ = instantiate(runtime, ALARM_WAT.replace('(export "facet_alarm")', ""))
    ctx = context(db)
    assert set_alarm(guest, ctx, 1_000) == abi.ALARM_NO_HANDLER
    assert set_alarm(guest, ctx, -1) == abi.ALARM_NO_HANDLER  # the handler is checked first
    assert ctx.alarm_change is UNCHANGED
    request(guest, ctx, b"D")  # deleting is always allowed (there is nothing to deliver)
    assert ctx.alarm_change is None
    with pytest.raises(GuestFault) as refused:
        guest.alarm(fuel=FUEL, timeout_ms=TIMEOUT_MS, host=ctx)
    assert refused.value.code == ErrorCode.BAD_MODULE


def test_the_handler_runs_and_is_accounted(runtime, db):
    guest, _ = instantiate(runtime)
    create_table(guest, db)
    ctx = context(db)
    db.begin()
    guest.alarm(fuel=FUEL, timeout_ms=TIMEOUT_MS, host=ctx)
    db.commit()
    assert guest.fuel_used > 0
    assert ctx.counters.sql_calls == 1 and ctx.counters.rows_written == 1
    assert fired(db) == 1


def test_a_handler_may_set_the_next_alarm(runtime, db):
    guest, _ = instantiate(runtime)
    create_table(guest, db)
    setup = context(db)
    request(guest, setup, b"N" + struct.pack("<q", 9_000))
    request(guest, setup, b"M\x03")
    ctx = context(db, Alarms({("app", "f"): 1_000}))
    guest.alarm(fuel=FUEL, timeout_ms=TIMEOUT_MS, host=ctx)
    assert ctx.alarm_change == 9_000
    assert request(guest, setup, b"R") == struct.pack("<i", abi.ALARM_SET)
    # and a bad next time is refused inside the handler as anywhere
    request(guest, setup, b"N" + struct.pack("<q", -5))
    ctx = context(db)
    guest.alarm(fuel=FUEL, timeout_ms=TIMEOUT_MS, host=ctx)
    assert ctx.alarm_change is UNCHANGED
    assert request(guest, setup, b"R") == struct.pack("<i", abi.ALARM_BAD_TIME)


@pytest.mark.parametrize(
    "mode, fuel, timeout_ms, code",
    [
        (1, FUEL, TIMEOUT_MS, ErrorCode.TRAP),
        (2, 10**6, 60_000, ErrorCode.FUEL_EXHAUSTED),
        (2, 10**12, 100, ErrorCode.TIMEOUT),
        (4, FUEL * 100, 60_000, ErrorCode.STACK_OVERFLOW),
    ],
)
def test_a_failing_handler_is_classified_as_a_request_is(runtime, db, mode, fuel, timeout_ms, code):
    guest, _ = instantiate(runtime)
    request(guest, context(db), b"M" + bytes([mode]))
    with pytest.raises(GuestFault) as failed:
        guest.alarm(fuel=fuel, timeout_ms=timeout_ms, host=context(db))
    assert failed.value.code == code, failed.value.message
    # After an epoch interrupt the fuel a loop burned is under-counted (handle too: a probe
    # loop that ran 100 ms reported 24), so a timeout is not checked for fuel here.
    if code != ErrorCode.TIMEOUT:
        assert guest.fuel_used > 0
    if code == ErrorCode.FUEL_EXHAUSTED:
        assert guest.fuel_used == fuel
        assert "during alarm" in failed.value.message


def test_host_calls_outside_a_request_trap(runtime):
    guest, _ = instantiate(runtime)
    with pytest.raises(GuestFault) as failed:
        guest.alarm(fuel=FUEL, timeout_ms=TIMEOUT_MS, host=None)
    assert failed.value.code == ErrorCode.TRAP and "outside a request" in failed.value.message


def test_the_abi_pages_alarm_example_runs_as_printed(runtime, db):
    page = (ROOT / "sample_apps" / "ABI.md").read_text()
    section = page[page.index("## Alarms") :]
    wat = section[section.index("```wat\n") + len("```wat\n") : section.index("\n```", section.index("```wat"))]
    guest, shape = instantiate(runtime, wat)
    assert shape.has_alarm and set(shape.imports) == {"now_ms", "set_alarm"}
    before = int(time.time() * 1000)
    ctx = context(db)
    request(guest, ctx, b"")
    assert isinstance(ctx.alarm_change, int) and before + 60_000 <= ctx.alarm_change
    for _ in range(2):
        ctx = context(db)
        guest.alarm(fuel=FUEL, timeout_ms=TIMEOUT_MS, host=ctx)
        assert isinstance(ctx.alarm_change, int) and before + 60_000 <= ctx.alarm_change


MINIMAL = """(module {imports} (memory (export "memory") 1)
  (func (export "facet_alloc") (param i32) (result i32) (i32.const 8))
  (func (export "facet_handle") (param i32 i32) (result i64) (i64.const 0)) {exports})"""


@pytest.mark.parametrize(
    "imports, exports, message",
    [
        ('(import "facet" "set_alarm" (func (param i32) (result i32)))', "", "import facet.set_alarm has the wrong"),
        ('(import "facet" "get_alarm" (func (result i32)))', "", "import facet.get_alarm has the wrong"),
        ('(import "facet" "delete_alarm" (func (param i64)))', "", "import facet.delete_alarm has the wrong"),
        ("", '(func (export "facet_alarm") (param i32))', "export facet_alarm has the wrong signature"),
        ("", '(func (export "facet_alarm") (result i32) (i32.const 0))', "export facet_alarm has the wrong"),
    ],
)
def test_wrong_signatures_are_refused_at_load(runtime, imports, exports, message):
    module = runtime.compile(runtime.wat_to_wasm(MINIMAL.format(imports=imports, exports=exports)))
    with pytest.raises(BadModule, match=message):
        runtime.inspect(module)


def test_a_module_may_import_all_seven_host_functions(runtime):
    imports = " ".join(
        f'(import "facet" "{name}" (func (param {" ".join(params)}) (result {" ".join(results)})))'
        for name, (params, results) in abi.HOST_IMPORTS.items()
    )
    module = runtime.compile(runtime.wat_to_wasm(MINIMAL.format(imports=imports, exports="")))
    assert set(runtime.inspect(module).imports) == set(abi.HOST_IMPORTS) and len(abi.HOST_IMPORTS) == 7


# -- components (ABI v2) ------------------------------------------------------------------
COMPONENTS = ROOT / "tests" / "fixtures" / "components"
SOURCES = {"js": COMPONENTS / "alarms.js", "py": COMPONENTS / "alarms.py"}
#: The line (JS) or name (Python) that makes the alarm handler the app's.
HANDLER = {"js": "  alarm: runAlarm,", "py": "def alarm(env):"}
NO_HANDLER = {"js": "", "py": "def not_the_alarm_handler(env):"}
BIG_MEMORY = 1 << 30


@pytest.fixture(scope="module")
def components(runtime) -> ComponentRuntime:
    return ComponentRuntime(runtime)


class Component:
    """One instantiated component with its own database, driven as FacetSlot drives one:
    init in its own transaction, then each call in its own."""

    #: Compiled once per component in this run (a 12-18 MB component compiles in ~10 s).
    compiled: ClassVar[dict[bytes, tuple[Any, Any]]] = {}

    def __init__(self, runtime: ComponentRuntime, data: bytes, db: FacetDB, alarms: Any = None) -> None:
        key = hashlib.sha256(data).digest()
        if key not in self.compiled:
            component = runtime.deserialize(runtime.compile_artifact(data))
            shape = runtime.inspect(component)
            self.compiled[key] = (shape, runtime.prepare(component, shape, data))
        self.shape, prepared = self.compiled[key]
        self.guest = runtime.instantiate(prepared, fuel=10**10, memory_limit=BIG_MEMORY, timeout_ms=30_000)
        self.db = db
        self.alarms = alarms
        self.in_transaction(lambda ctx: self.guest.call_init(fuel=10**10, timeout_ms=30_000, host=ctx))

    def in_transaction(self, run: Any) -> RequestContext:
        ctx = context(self.db, self.alarms)
        self.db.begin()
        try:
            run(ctx)
        except BaseException:
            self.db.rollback()
            raise
        self.db.commit()
        return ctx

    def call(self, body: str) -> tuple[str, RequestContext]:
        answer: list[bytes] = []
        ctx = self.in_transaction(
            lambda c: answer.append(self.guest.handle(body.encode(), fuel=10**10, timeout_ms=30_000, host=c))
        )
        return answer[0].decode(), ctx

    def alarm(self, *, fuel: int = 10**10, timeout_ms: int = 30_000) -> RequestContext:
        return self.in_transaction(lambda c: self.guest.alarm(fuel=fuel, timeout_ms=timeout_ms, host=c))


def build(source: Path) -> bytes:
    return toolchain.build(source).component


@pytest.fixture(params=sorted(SOURCES))
def language(request) -> str:
    return str(request.param)


@pytest.fixture
def app(components, language, db) -> Component:
    return Component(components, build(SOURCES[language]), db, Alarms({("app", "f"): 7_000}))


def test_a_component_sets_gets_and_deletes_its_alarm(app, language):
    assert app.guest.has_alarm
    assert app.call("get")[0] == "7000"  # the stored alarm, through option<s64>
    answer, ctx = app.call("set 1700000000123")
    assert answer == "ok" and ctx.alarm_change == 1_700_000_000_123
    answer, ctx = app.call("set-date 1700000000456")  # a Date / a datetime
    assert answer == "ok" and ctx.alarm_change == 1_700_000_000_456
    answer, ctx = app.call("set 0")
    assert answer == "ok" and ctx.alarm_change == 0
    answer, ctx = app.call("delete")
    assert answer == "ok" and ctx.alarm_change is None
    assert app.alarms.pending == {("app", "f"): 7_000}  # nothing written by the context
    app.alarms.pending.clear()
    answer, ctx = app.call("get")
    assert answer in ("null", "None") and ctx.alarm_change is UNCHANGED


@pytest.mark.parametrize("at_ms", [-1, abi.MAX_ALARM_MS + 1])
def test_a_component_is_refused_a_bad_time_with_a_clear_error(app, at_ms):
    answer, ctx = app.call(f"set {at_ms}")
    assert answer.startswith("AlarmError: set") and "outside 0..253402300799999" in answer, answer
    assert ctx.alarm_change is UNCHANGED
    answer, ctx = app.call("set-text soon")
    assert answer.startswith("TypeError: set") and "milliseconds since the epoch" in answer, answer
    answer, ctx = app.call(f"set {abi.MAX_ALARM_MS}")
    assert answer == "ok" and ctx.alarm_change == abi.MAX_ALARM_MS


def test_the_component_host_refuses_bad_times_itself(components, db):
    # The SDKs check first; the host checks again (a hand-made component skips the SDK):
    # the same logic as ABI v1's, so bool false for both reasons.
    guest = Component(components, build(SOURCES["js"]), db).guest
    ctx = context(db)
    assert ctx.set_alarm(guest, -1) == abi.ALARM_BAD_TIME
    assert ctx.set_alarm(guest, 5) == abi.ALARM_SET and ctx.alarm_change == 5


def test_the_alarm_handler_writes_a_row_in_its_transaction(app):
    ctx = app.alarm()
    assert app.guest.fuel_used > 0
    assert ctx.counters.rows_written == 1 and ctx.alarm_change is UNCHANGED
    assert app.call("count")[0] == "1"


def test_a_component_handler_may_set_the_next_alarm(app):
    app.call("mode next")
    before = int(time.time() * 1000)
    ctx = app.alarm()
    assert isinstance(ctx.alarm_change, int) and before + 60_000 <= ctx.alarm_change
    assert app.call("count")[0] == "1"


def test_a_throwing_handler_is_a_failed_delivery_rolled_back(app):
    app.call("mode throw")
    with pytest.raises(GuestFault) as failed:
        app.alarm()
    assert failed.value.code == ErrorCode.TRAP
    assert failed.value.message.startswith("alarm handler failed: ")
    assert "thrown on purpose" in failed.value.message


def test_a_spinning_handler_runs_out_of_fuel(app):
    app.call("mode spin")
    with pytest.raises(GuestFault) as failed:
        app.alarm(fuel=20_000_000)
    assert failed.value.code == ErrorCode.FUEL_EXHAUSTED, failed.value.message
    assert app.guest.fuel_used >= 20_000_000


def test_an_sdk_app_without_a_handler_refuses_set_alarm(components, language, db, tmp_path):
    source = SOURCES[language].read_text()
    assert HANDLER[language] in source
    variant = tmp_path / SOURCES[language].name
    variant.write_text(source.replace(HANDLER[language], NO_HANDLER[language]))
    app = Component(components, build(variant), db)
    # The export is there (the world has it), so the host would accept: the SDK refuses.
    assert app.guest.has_alarm
    answer, ctx = app.call("set 1000")
    assert answer.startswith("AlarmError: set") and "no alarm handler" in answer, answer
    assert ctx.alarm_change is UNCHANGED
    # An alarm that arrives anyway (the handler was removed since it was set) is done.
    ctx = app.alarm()
    assert any("no alarm handler" in record.message for record in ctx.logs)
    assert app.call("count")[0] == "0"


def test_a_component_built_before_alarms_still_loads_and_runs(components, db):
    data = bytes(wasmtime.wat2wasm((COMPONENTS / "before_alarms.wat").read_text()))
    old = Component(components, data, db)
    assert old.shape.imports == ("facets:app/host@2.0.0",)
    assert old.shape.exports == ("facets:app/guest@2.0.0",)
    assert not old.guest.has_alarm
    assert json.loads(old.call("CREATE TABLE t (x)")[0])["ok"]
    assert json.loads(old.call("SELECT 6 * 7")[0])["rows"] == [[42]]
    with pytest.raises(GuestFault) as refused:
        old.alarm()
    assert refused.value.code == ErrorCode.BAD_MODULE
    ctx = context(db)
    assert ctx.set_alarm(old.guest, 1_000) == abi.ALARM_NO_HANDLER
