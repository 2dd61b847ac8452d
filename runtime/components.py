"""The component seam: apps built as WebAssembly components (ABI v2, ``sample_apps/wit``).

JavaScript and Python apps arrive as components (``runtime.toolchain`` builds them). This
module is the only place they are compiled, instantiated and called; ``runtime.wasm`` is
its twin for core modules, and both share one engine, its epoch ticker and its settings.

The hot path talks to wasmtime's component C API directly (``wasmtime._bindings``), as
``runtime.wasm`` does for core modules, instead of wasmtime-py's ``component.Func``:

* an export is called with ``wasmtime_component_func_call`` on preallocated
  ``wasmtime_component_val_t`` slots whose strings point straight at the request's bytes
  (the stock ``Func.__call__`` asks for the function's type and converts every value
  through Python type objects on each call; measured ~350 us a request);
* the host functions are raw ``wasmtime_component_func_callback_t`` callbacks that read
  their strings with one ``string_at`` and answer with one ``wasm_byte_vec_new``. The
  stock trampoline reports a Python exception through a module-level global, which is
  unsafe with facets on several threads: here a host function's failure is recorded on
  its own instance (``ComponentInstance._abort``), as in the core seam;
* every value that can be large is a WIT ``string``: a ``list<u8>`` crosses one element
  (one 32-byte ``wasmtime_component_val_t``) per byte, ~35 ns each, where a string is
  one memcpy. A body that is not UTF-8 crosses base64-encoded.

Sharp edges of wasmtime 50's component API that this module is built around:

* an instance used with another store, or after its store is gone, aborts the process:
  a ``ComponentInstance`` owns its store, and every call passes that store's context;
* a trap surfaces as a plain ``wasmtime_error_t`` with no trap code, and the instance is
  dead after it: a failure is classified by the store's state (fuel left, the deadline),
  never by the error's text, and ``FacetSlot`` drops the instance after any failure;
* there is no component ``InstancePre``: every instantiation goes through the linker
  (0.02-0.05 ms for JS, ~1 ms for Python, measured here).

WASI: a component that imports WASI (componentize-py's CPython always does: ~25
interfaces) gets wasmtime's WASI p2 with an empty ``WasiConfig``: no files, no
environment, no sockets, no arguments; stdout and stderr are discarded (the SDKs send
``print`` and ``console.log`` to the host's ``log`` instead). Clocks and randomness are
the host's. Any other import is refused at load.

Threads: as in ``runtime.wasm``, ctypes releases the GIL while a component runs, host
functions run on the calling thread, and the instance being entered is kept in a
thread-local so the linker's store-independent callbacks find it. An instance is used
by one thread at a time (its facet's gate).
"""

from __future__ import annotations

import base64
import ctypes
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import wasmtime
from wasmtime import _bindings as capi
from wasmtime import _ffi
from wasmtime import component as wcomponent

from . import abi
from .errors import BadModule, ErrorCode
from .wasm import (
    _NO_FINALIZER,
    GuestFault,
    HostAbort,
    WasmRuntime,
    _get_fuel,
    _limits,
    _Reader,
    _set_epoch_deadline,
    _set_fuel,
    first_line,
)

_COMPONENT_VERSION = b"\x0d\x00\x01\x00"
#: WASI p2 interfaces a component may import (satisfied by wasmtime's WASI with an empty
#: configuration): the prefix of every interface componentize-py's CPython imports.
_WASI_PREFIX = "wasi:"
#: Everything a component may weigh before it is compiled: JS components are ~12 MB and
#: Python ones ~18 MB; compiling is what a hostile upload makes expensive (~1 s per MB).
MAX_COMPONENT_BYTES = 64 * 1024 * 1024
_STRING = _ffi.WASMTIME_COMPONENT_STRING.value
_U64 = _ffi.WASMTIME_COMPONENT_U64.value
_BOOL = _ffi.WASMTIME_COMPONENT_BOOL.value
_S64 = _ffi.WASMTIME_COMPONENT_S64.value
_OPTION = _ffi.WASMTIME_COMPONENT_OPTION.value
_U8 = _ffi.WASMTIME_COMPONENT_U8.value
_LIST = _ffi.WASMTIME_COMPONENT_LIST.value
_RESULT = _ffi.WASMTIME_COMPONENT_RESULT.value
_TUPLE = _ffi.WASMTIME_COMPONENT_TUPLE.value
_Val = capi.wasmtime_component_val_t
_Val2 = _Val * 2
_func_call = capi._wasmtime_component_func_call
_post_return = capi._wasmtime_component_func_post_return
_val_delete = capi._wasmtime_component_val_delete
_error_new = capi._wasmtime_error_new
_vallist_new_uninit = capi._wasmtime_component_vallist_new_uninit
_val_new = capi._wasmtime_component_val_new
_UBytePtr = ctypes.POINTER(ctypes.c_ubyte)
#: ``wasm_byte_vec_new`` taking a plain ``bytes`` (wasmtime-py's binding wants a ubyte
#: pointer; its own function object must keep its argtypes, so this is a second one).
_byte_vec_new = ctypes.CFUNCTYPE(None, ctypes.POINTER(capi.wasm_byte_vec_t), ctypes.c_size_t, ctypes.c_char_p)(
    ctypes.cast(capi.dll.wasm_byte_vec_new, ctypes.c_void_p).value or 0
)


class ComponentHost(Protocol):
    """What a request context provides to a component's host functions (``RequestContext``)."""

    def sql_text(self, statement: str, params: str) -> bytes: ...
    def log_text(self, level: int, message: bytes) -> None: ...
    def now_ms(self, guest: Any) -> int: ...
    def random_bytes(self, length: int) -> bytes: ...
    # Alarms: the same methods as the core seam's (``RequestContext``), given this instance.
    def set_alarm(self, guest: Any, at_ms: int) -> int: ...
    def get_alarm(self, guest: Any) -> int: ...
    def delete_alarm(self, guest: Any) -> None: ...


_active = threading.local()


def _fail(guest: ComponentInstance | None, name: str, exc: BaseException) -> int:
    """Record why host function ``name`` failed on the instance and return a new error
    (owned by wasmtime from here on) that traps the guest. Never raises: an exception
    leaving a ctypes callback would hand wasmtime garbage for an error pointer."""
    try:
        if guest is not None and guest._abort is None:
            if isinstance(exc, HostAbort):
                guest._abort = exc
            else:
                guest._abort = HostAbort(ErrorCode.INTERNAL, f"host function {name} failed: {exc!r}")
        message = (guest._abort.message if guest is not None and guest._abort else str(exc)).encode()
        return ctypes.cast(_error_new(message), ctypes.c_void_p).value or 0
    except BaseException:
        return ctypes.cast(_error_new(b"host function failed"), ctypes.c_void_p).value or 0


def _string(val: Any) -> bytes:
    name = val.of.string
    return ctypes.string_at(name.data, name.size) if name.size else b""


HostBody = Callable[[Any, Any, Any], None]


def _host_function(name: str, needs_host: bool = True) -> Callable[[HostBody], Any]:
    """A raw linker callback around ``body(guest, args, results)``: the instance being
    entered comes from the thread-local, and nothing raised ever reaches wasmtime (it
    becomes an error that traps the guest, the reason recorded on the instance)."""

    def wrap(body: HostBody) -> Any:
        def callback(env: Any, context: Any, ty: Any, args: Any, nargs: int, results: Any, nresults: int) -> int:
            guest: ComponentInstance | None = getattr(_active, "guest", None)
            try:
                if needs_host and (guest is None or guest.host is None):
                    raise HostAbort(ErrorCode.INTERNAL, f"{name} called outside a request")
                body(guest, args, results)
                return 0
            except BaseException as exc:
                return _fail(guest, name, exc)

        return capi.wasmtime_component_func_callback_t(callback)

    return wrap


@_host_function("sql")
def _sql(guest: Any, args: Any, results: Any) -> None:
    answer = guest.host.sql_text(_string(args[0]).decode(), _string(args[1]).decode())
    out = results[0]
    out.kind = _STRING
    _byte_vec_new(ctypes.byref(out.of.string), len(answer), answer)


@_host_function("log")
def _log(guest: Any, args: Any, results: Any) -> None:
    guest.host.log_text(args[0].of.u8, _string(args[1]))


@_host_function("now-ms", needs_host=False)
def _now_ms(guest: Any, args: Any, results: Any) -> None:
    out = results[0]
    out.kind = _U64
    out.of.u64 = int(time.time() * 1000)


@_host_function("random")
def _random(guest: Any, args: Any, results: Any) -> None:
    data = guest.host.random_bytes(args[0].of.u32)
    out = results[0]
    out.kind = _LIST
    _vallist_new_uninit(ctypes.byref(out.of.list), len(data))
    items = out.of.list.data
    for index, byte in enumerate(data):  # a list<u8> is one val per byte (see the top)
        item = items[index]
        item.kind = _U8
        item.of.u8 = byte


@_host_function("set-alarm")
def _set_alarm(guest: Any, args: Any, results: Any) -> None:
    # The refusal's reason (abi.ALARM_NO_HANDLER, ALARM_BAD_TIME) is not sent: the SDKs
    # check both themselves first, with a message that says which.
    code = guest.host.set_alarm(guest, args[0].of.s64)
    out = results[0]
    out.kind = _BOOL
    out.of.boolean = code == abi.ALARM_SET


@_host_function("get-alarm")
def _get_alarm(guest: Any, args: Any, results: Any) -> None:
    at_ms = guest.host.get_alarm(guest)
    out = results[0]
    out.kind = _OPTION
    if at_ms == abi.NO_ALARM:
        out.of.option = None
        return
    inner = _Val()
    inner.kind = _S64
    inner.of.s64 = at_ms
    out.of.option = _val_new(ctypes.byref(inner))  # boxed; wasmtime owns (and frees) the results


@_host_function("delete-alarm")
def _delete_alarm(guest: Any, args: Any, results: Any) -> None:
    guest.host.delete_alarm(guest)


#: The callbacks must outlive every linker that uses them: keep them here.
_HOST_FUNCTIONS = {
    "sql": _sql,
    "log": _log,
    "now-ms": _now_ms,
    "random": _random,
    "set-alarm": _set_alarm,
    "get-alarm": _get_alarm,
    "delete-alarm": _delete_alarm,
}
#: What an export's failure is called in messages ("alarm handler failed: ...").
_LABELS = {"alarm": "alarm handler"}


@dataclass(frozen=True)
class ComponentShape:
    """What the load-time check found in a component."""

    imports: tuple[str, ...]
    exports: tuple[str, ...]
    #: True when it imports WASI (its stores then get an empty WASI context).
    uses_wasi: bool


@dataclass(frozen=True, slots=True)
class PreparedComponent:
    """A compiled component, checked, ready to instantiate."""

    component: wcomponent.Component
    uses_wasi: bool
    #: Linear memory its core modules declare (``declared_memory``): refused before
    #: instantiating when over the quota, and what its instances count as memory.
    memory_min: int = 0


#: Codes a guest's ``err`` may claim (``{"code": ..., "message": ...}``): the two failures
#: its own runtime detects before wasm does: SpiderMonkey's and CPython's recursion limits
#: stop a runaway recursion as an exception, and their allocators report a refused
#: ``memory.grow`` as an out-of-memory exception. A code only labels the guest's own
#: failed request; anything else an ``err`` says is a ``trap`` with that text.
GUEST_ERROR_CODES = frozenset({ErrorCode.MEMORY_LIMIT, ErrorCode.STACK_OVERFLOW})


def guest_error(name: str, text: str) -> GuestFault:
    """The fault for an export's ``err(text)``: an uncaught exception in the guest."""
    if text.startswith('{"code"'):
        try:
            claimed = json.loads(text)
        except ValueError:
            claimed = None
        if isinstance(claimed, dict) and claimed.get("code") in GUEST_ERROR_CODES:
            message = claimed.get("message")
            return GuestFault(
                ErrorCode(claimed["code"]), f"{name} failed: {message if isinstance(message, str) else ''}"
            )
    return GuestFault(ErrorCode.TRAP, f"{name} failed: {text or 'an error without a message'}")


def declared_memory(data: bytes) -> int:
    """Bytes of linear memory a component's core modules declare initially (nested
    components included): what an instance holds at least. The component API shows no
    memory of a live instance, so this is what its facet is counted at (the memory budget,
    ``usage.memory``); CPython's is 13 MiB, of which ~5.5 MB become resident after a request
    (bench/README.md, section components). Malformed input counts 0: the compiler has
    refused it already."""
    try:
        return _declared(data, 8, len(data), depth=0)
    except (BadModule, IndexError):
        return 0


def _declared(data: bytes, pos: int, end: int, depth: int) -> int:
    if depth > 8:  # components nest components; a bound, not a limit anyone meets
        return 0
    total = 0
    reader = _Reader(data, pos, end)
    while reader.pos < reader.end:
        section = reader.byte()
        size = reader.uleb()
        start, stop = reader.pos, reader.pos + size
        if section == 1:  # a core module: its memory section
            total += _module_memory(data, start + 8, stop)
        elif section == 4:  # a nested component
            total += _declared(data, start + 8, stop, depth + 1)
        reader.pos = stop
    return total


def _module_memory(data: bytes, pos: int, end: int) -> int:
    reader = _Reader(data, pos, end)
    while reader.pos < reader.end:
        section = reader.byte()
        size = reader.uleb()
        stop = reader.pos + size
        if section == 5:
            body = _Reader(data, reader.pos, stop)
            total = 0
            for _ in range(min(body.uleb(), 8)):
                flags, minimum = _limits(body, "memory")
                page = 1 << body.uleb() if flags & 0x08 else 65_536
                total += minimum * page
            return total
        reader.pos = stop
    return 0


def is_component(data: bytes) -> bool:
    """True for the binary of a WebAssembly component (not a core module)."""
    return len(data) >= 8 and data[:4] == b"\x00asm" and data[4:8] == _COMPONENT_VERSION


class ComponentRuntime:
    """Compiling, checking and instantiating components on the core seam's engine."""

    def __init__(self, wasm: WasmRuntime) -> None:
        self._wasm = wasm
        self.engine = wasm.engine
        self._linker = wcomponent.Linker(self.engine)
        self._linker.add_wasip2()
        with self._linker.root() as root, root.add_instance(abi.HOST_INTERFACE) as host:
            for name, callback in _HOST_FUNCTIONS.items():
                encoded = name.encode()
                error = capi._wasmtime_component_linker_instance_add_func(
                    host.ptr(), encoded, len(encoded), callback, None, _NO_FINALIZER
                )
                if error:
                    raise wasmtime.WasmtimeError._from_ptr(error)

    # -- compiling ----------------------------------------------------------------
    def compile_artifact(self, data: bytes) -> bytes:
        """Compile a component's bytes into a compiled artifact (what ``deserialize`` and the
        compiled cache take); ``BadModule`` when they are not a component.

        Compiling is done by a second engine with the same settings and parallel
        compilation (a 12-18 MB component took 16 s on one core, 9 s on two here): what it
        makes is handed to the supervisor's engine serialized, which is exactly what the
        compiled cache stores anyway.
        """
        if not is_component(data):
            raise BadModule("not a WebAssembly component (no component header)")
        if len(data) > MAX_COMPONENT_BYTES:
            raise BadModule(f"component is {len(data):,} bytes; components are limited to {MAX_COMPONENT_BYTES:,}")
        compiler = self._wasm.compiler_engine()
        try:
            return bytes(wcomponent.Component(compiler, data).serialize())
        except wasmtime.WasmtimeError as exc:
            raise BadModule(f"not a valid WebAssembly component: {first_line(exc)}") from None

    def serialize(self, component: wcomponent.Component) -> bytes:
        return bytes(component.serialize())

    def deserialize(self, artifact: bytes) -> wcomponent.Component:
        try:
            return wcomponent.Component.deserialize(self.engine, artifact)
        except wasmtime.WasmtimeError as exc:
            raise BadModule(f"cannot load the compiled component: {first_line(exc)}") from None

    def deserialize_file(self, path: str) -> wcomponent.Component | None:
        """Load a compiled artifact this supervisor wrote; None if it is unusable."""
        try:
            return wcomponent.Component.deserialize_file(self.engine, path)
        except wasmtime.WasmtimeError:
            return None

    def inspect(self, component: wcomponent.Component) -> ComponentShape:
        """Check ``component`` against ABI v2; raise ``BadModule`` naming what is wrong.

        Imports are read from its type; then one trial instantiation in a throwaway store
        (with tiny fuel and a deadline, so a start function cannot spin) proves the
        imports type-check against the host's definitions and finds the exports.
        """
        ty = component.type
        imports = tuple(sorted(ty.imports(self.engine)))
        for name in imports:
            # Any 2.x host: one built before 2.1.0 imports host@2.0.0, which the linker's
            # 2.1.0 satisfies (semver-compatible: see abi.HOST_INTERFACE); the trial
            # instantiation below proves the functions it imports exist.
            if not abi.HOST_INTERFACE_PATTERN.fullmatch(name) and not name.startswith(_WASI_PREFIX):
                raise BadModule(
                    f"import {name} is not part of the facet ABI v2 (allowed: {abi.HOST_INTERFACE} and WASI p2)"
                )
        exports = tuple(sorted(ty.exports(self.engine)))
        if not any(abi.GUEST_INTERFACE_PATTERN.fullmatch(name) for name in exports):
            raise BadModule(f"missing export: {abi.GUEST_INTERFACE} (build the app against sample_apps/wit)")
        uses_wasi = any(name.startswith(_WASI_PREFIX) for name in imports)
        guest = self.instantiate(
            PreparedComponent(component, uses_wasi), fuel=1_000_000_000, memory_limit=1 << 30, timeout_ms=10_000
        )
        del guest
        return ComponentShape(imports=imports, exports=exports, uses_wasi=uses_wasi)

    def prepare(self, component: wcomponent.Component, shape: ComponentShape, data: bytes) -> PreparedComponent:
        """``data``: the component's bytes, for what it declares (``declared_memory``)."""
        return PreparedComponent(component, shape.uses_wasi, declared_memory(data))

    # -- instances --------------------------------------------------------------------
    def instantiate(
        self, prepared: PreparedComponent, *, fuel: int, memory_limit: int, timeout_ms: int
    ) -> ComponentInstance:
        """A new store with its limits, and the component instantiated in it; ``GuestFault``
        when instantiation fails (a memory quota below what it needs, a trap in its start)."""
        if prepared.memory_min > memory_limit:
            raise GuestFault(
                ErrorCode.MEMORY_LIMIT,
                f"instantiation refused: the component's initial memory of {prepared.memory_min:,} bytes "
                f"is over the memory quota of {memory_limit:,} bytes",
            )
        store = wasmtime.Store(self.engine)
        _set_limits(store, memory_limit)
        store.set_fuel(fuel)
        store.set_epoch_deadline(self._wasm.deadline_ticks(timeout_ms))
        if prepared.uses_wasi:
            store.set_wasi(wasmtime.WasiConfig())  # no files, env, args, sockets; stdio discarded
        guest = ComponentInstance(self._wasm, store, memory_limit, prepared.memory_min)
        instance = capi.wasmtime_component_instance_t()
        started = time.monotonic()
        _active.guest = guest
        try:
            error = capi._wasmtime_component_linker_instantiate(
                self._linker.ptr(), guest._ctx, prepared.component.ptr(), ctypes.byref(instance)
            )
        finally:
            _active.guest = None
        if error:
            exc = wasmtime.WasmtimeError._from_ptr(error)
            raise guest._fault(exc, "instantiation", fuel, timeout_ms, started, instance=True) from None
        guest._bind(instance)
        guest.fuel_used = fuel - store.get_fuel()
        return guest


def _set_limits(store: wasmtime.Store, memory_limit: int) -> None:
    """Every store limit at once (``wasmtime_store_limiter`` replaces the whole limiter). A
    component holds several core instances, memories and tables: CPython's has 1 memory
    and a few tables; the counts only bound what a hostile component can declare."""
    store.set_limits(
        memory_size=memory_limit,
        table_elements=1_000_000,
        instances=64,
        tables=64,
        memories=8,
    )


class ComponentInstance:
    """One instantiated component in its own store, with the same surface as the core
    seam's ``GuestInstance`` (``FacetSlot`` drives both). Used by one thread at a time."""

    #: A component always has ``fetch`` (the SDKs route it to ``call`` when the app has none).
    serves_http = True

    def __init__(self, runtime: WasmRuntime, store: wasmtime.Store, memory_limit: int, declared: int = 0) -> None:
        self._runtime = runtime
        self._declared = declared
        self._store = store  # owned: a call with any other store's context aborts the process
        self._ctx = store._context()
        self.memory_limit = memory_limit
        self.host: ComponentHost | None = None
        self.fuel_used = 0
        self._abort: HostAbort | None = None
        self._funcs: dict[str, Any] = {}
        self._args = _Val2()
        self._result = _Val()
        self._fuel_out = ctypes.c_uint64()

    def _bind(self, instance: Any) -> None:
        """Look up the guest interface's functions once (export indexes are freed at once).
        The interface is found by its current name whatever 2.x the component exports
        (wasmtime's lookup is semver-aware); functions added since 2.0.0 are optional."""
        get_index = capi._wasmtime_component_instance_get_export_index
        name = abi.GUEST_INTERFACE.encode()
        interface = get_index(ctypes.byref(instance), self._ctx, None, name, len(name))
        if not interface:
            raise GuestFault(ErrorCode.BAD_MODULE, f"export {abi.GUEST_INTERFACE} not found after instantiation")
        try:
            for func_name in abi.GUEST_FUNCTIONS + abi.OPTIONAL_GUEST_FUNCTIONS:
                encoded = func_name.encode()
                index = get_index(ctypes.byref(instance), self._ctx, interface, encoded, len(encoded))
                if not index:
                    if func_name in abi.OPTIONAL_GUEST_FUNCTIONS:
                        continue
                    raise GuestFault(ErrorCode.BAD_MODULE, f"export {abi.GUEST_INTERFACE}#{func_name} not found")
                try:
                    func = capi.wasmtime_component_func_t()
                    if not capi._wasmtime_component_instance_get_func(
                        ctypes.byref(instance), self._ctx, index, ctypes.byref(func)
                    ):
                        raise GuestFault(ErrorCode.BAD_MODULE, f"{abi.GUEST_INTERFACE}#{func_name} is not a function")
                    self._funcs[func_name] = ctypes.pointer(func)
                finally:
                    capi._wasmtime_component_export_index_delete(index)
        finally:
            capi._wasmtime_component_export_index_delete(interface)

    # -- limits ---------------------------------------------------------------------
    def set_memory_limit(self, limit: int) -> None:
        _set_limits(self._store, limit)
        self.memory_limit = limit

    @property
    def memory_size(self) -> int:
        """The linear memory the component declares (``declared_memory``): a live instance's
        memories are internal to it, invisible through the component API, so its growth is
        not seen here (the store's limiter still enforces ``memory_limit`` on it)."""
        return self._declared

    # -- calls --------------------------------------------------------------------------
    def call_init(self, *, fuel: int, timeout_ms: int, host: ComponentHost | None) -> None:
        self._enter("init", (), fuel=fuel, timeout_ms=timeout_ms, host=host)

    @property
    def has_alarm(self) -> bool:
        """True when the component exports ``alarm`` (one built before 2.1.0 does not). An
        SDK app always exports it; the SDK refuses ``set-alarm`` when the app has no handler."""
        return "alarm" in self._funcs

    def alarm(self, *, fuel: int, timeout_ms: int, host: ComponentHost | None) -> None:
        """Run the alarm handler under the same limits, accounting and failure codes as
        ``handle``; its ``err`` is a ``trap`` ("alarm handler failed: ...") unless coded."""
        if "alarm" not in self._funcs:
            raise GuestFault(
                ErrorCode.BAD_MODULE, f"the component exports no alarm handler ({abi.GUEST_INTERFACE}#alarm)"
            )
        self._enter("alarm", (), fuel=fuel, timeout_ms=timeout_ms, host=host)

    def handle(
        self, body: bytes, *, fuel: int, timeout_ms: int, host: ComponentHost | None, http: bool = False
    ) -> bytes:
        """One request: ``http`` bodies are the v1 envelope (``runtime.http``), split into
        ``fetch``'s head and body and joined back from its answer; plain ones go to ``call``."""
        if not http:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise GuestFault(
                    ErrorCode.BAD_REQUEST, "a plain request to a component app must be UTF-8 text"
                ) from None
            answer = self._enter("call", (body,), fuel=fuel, timeout_ms=timeout_ms, host=host)
            assert isinstance(answer, bytes)
            return answer
        head, _, payload = body.partition(b"\n")
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            head = head[:-1] + b',"body_encoding":"base64"}'
            payload = base64.b64encode(payload)
        answer = self._enter("fetch", (head, payload), fuel=fuel, timeout_ms=timeout_ms, host=host)
        assert isinstance(answer, tuple)
        out_head, out_body = answer
        if b'"body_encoding"' in out_head:
            try:
                encoding = json.loads(out_head).get("body_encoding")
            except ValueError:
                encoding = None  # decode_response reports the head
            if encoding == "base64":
                try:
                    out_body = base64.b64decode(out_body, validate=True)
                except ValueError:
                    raise GuestFault(ErrorCode.BAD_RESPONSE, "fetch answered a body that is not base64") from None
        return out_head + b"\n" + out_body

    def _enter(
        self, name: str, args: tuple[bytes, ...], *, fuel: int, timeout_ms: int, host: ComponentHost | None
    ) -> bytes | tuple[bytes, bytes] | None:
        ctx = self._ctx
        func = self._funcs[name]
        error = _set_fuel(ctx, fuel)
        if error:
            raise GuestFault(ErrorCode.INTERNAL, str(wasmtime.WasmtimeError._from_ptr(error)))
        _set_epoch_deadline(ctx, self._runtime.deadline_ticks(timeout_ms))
        vals = self._args
        for index, data in enumerate(args):  # strings point at our bytes: no copy, no delete
            val = vals[index]
            val.kind = _STRING
            val.of.string.size = len(data)
            val.of.string.data = ctypes.cast(ctypes.c_char_p(data), _UBytePtr)
        result = self._result
        self.host = host
        self._abort = None
        _active.guest = self
        started = time.monotonic()
        try:
            error = _func_call(func, ctx, vals, len(args), ctypes.byref(result), 1)
        finally:
            _active.guest = None
            _get_fuel(ctx, ctypes.byref(self._fuel_out))
            self.fuel_used = fuel - self._fuel_out.value
        if error:
            exc = wasmtime.WasmtimeError._from_ptr(error)
            raise self._fault(exc, name, fuel, timeout_ms, started)
        try:
            answer = self._read_result(name, result)
        finally:
            # Freed, then zeroed: wasmtime assigns the next result over this slot, and Rust's
            # assignment drops the old value, which would free it a second time.
            _val_delete(ctypes.byref(result))
            ctypes.memset(ctypes.byref(result), 0, ctypes.sizeof(result))
        error = _post_return(func, ctx)
        if error:
            exc = wasmtime.WasmtimeError._from_ptr(error)
            raise self._fault(exc, name, fuel, timeout_ms, started)
        if self._abort is not None:  # a host function failed but the guest ran on
            raise GuestFault(self._abort.code, self._abort.message)
        return answer

    @staticmethod
    def _read_result(name: str, result: Any) -> bytes | tuple[bytes, bytes] | None:
        """The ``ok`` payload of ``result<...>``; an ``err`` is the guest's uncaught error."""
        if result.kind != _RESULT:
            raise GuestFault(ErrorCode.BAD_RESPONSE, f"{name} answered a value of kind {result.kind}, not a result")
        outcome = result.of.result
        payload = outcome.val.contents if outcome.val else None
        if not outcome.is_ok:
            text = _string(payload).decode("utf-8", "replace") if payload is not None else ""
            raise guest_error(_LABELS.get(name, name), text)
        if payload is None:
            return None
        if payload.kind == _STRING:
            return _string(payload)
        if payload.kind == _TUPLE and payload.of.tuple.size == 2:
            items = payload.of.tuple.data
            return _string(items[0]), _string(items[1])
        raise GuestFault(ErrorCode.BAD_RESPONSE, f"{name} answered an unexpected value of kind {payload.kind}")

    def _fault(
        self,
        exc: wasmtime.WasmtimeError,
        during: str,
        fuel: int,
        timeout_ms: int,
        started: float,
        *,
        instance: bool = False,
    ) -> GuestFault:
        """Classify a failed call by the store's state: the C API gives a component trap no
        code (see the top), so: a host function's own decision first, then no fuel left,
        then the deadline passed, then a WASI exit, else a plain trap."""
        if self._abort is not None:
            return GuestFault(self._abort.code, self._abort.message)
        _get_fuel(self._ctx, ctypes.byref(self._fuel_out))
        self.fuel_used = fuel - self._fuel_out.value
        if self._fuel_out.value == 0:
            return GuestFault(ErrorCode.FUEL_EXHAUSTED, f"fuel exhausted during {during}")
        tick = self._runtime.settings.epoch_tick_ms
        if (time.monotonic() - started) * 1000 >= timeout_ms - tick:
            return GuestFault(ErrorCode.TIMEOUT, f"deadline exceeded during {during}")
        if isinstance(exc, wasmtime.ExitTrap):  # WASI's proc_exit: sys.exit, os._exit
            return GuestFault(ErrorCode.TRAP, f"the guest exited (status {exc.code}) during {during}")
        if instance:
            return GuestFault(ErrorCode.MEMORY_LIMIT, f"instantiation refused: {first_line(exc)}")
        return GuestFault(ErrorCode.TRAP, f"guest trapped during {during}: {first_line(exc)}")


#: A type for what ``FacetSlot`` instantiates: a core module's or a component's.
Instantiate = Callable[..., Any]
