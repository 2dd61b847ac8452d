"""The wasm seam: every crossing between Python and WebAssembly lives here.

Engine configuration, the epoch ticker, compiling and caching modules, binding
the host functions, calling guest exports and reading/writing guest memory.
Nothing else in the runtime imports ``wasmtime``.

The hot path talks to wasmtime's C API directly through the ctypes bindings
wasmtime-py ships (``wasmtime._bindings``), instead of its object wrappers:

* guest exports are called with ``wasmtime_func_call_unchecked`` on a
  preallocated ``wasmtime_val_raw_t`` array (``Func.__call__`` rebuilds the
  function type and converts every value on each call: 6-13 us);
* host functions are ``wasmtime_linker_define_func_unchecked`` callbacks
  reading raw i32s (the stock trampoline builds a ``Caller`` and ``Val``s per
  call, and reports Python errors through a process-wide global, which is
  unsafe with concurrent facets);
* memory is read and written through ``wasmtime_memory_data`` with our own
  bounds checks.

The cold path (compiling, instantiating, inspecting modules) uses the stock
API. Threads: ctypes releases the GIL while wasm runs, so different facets run
in parallel and the epoch ticker keeps ticking while a guest spins. Host
functions run on the calling thread; the instance being entered is kept in a
thread-local so the linker's store-independent host functions find it.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import wasmtime
from wasmtime import _bindings as capi
from wasmtime import _ffi

from . import abi
from .errors import BadModule, ErrorCode

WASMTIME_VERSION = "50.0.1"

_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()
_VALTYPES = {"i32": _I32, "i64": _I64}
_GROWTH_STEP = 1024 * 1024


@dataclass(frozen=True)
class EngineSettings:
    """Engine-wide sandbox settings; they are part of the compiled-cache key."""

    #: Bytes of native stack a guest may use before ``stack_overflow``.
    max_wasm_stack: int = 512 * 1024
    #: Address space reserved per linear memory. The default 4 GiB reservation
    #: costs ~3 memory mappings and caps a process near 21,800 instances;
    #: a smaller reservation trades bounds-check elision for density.
    memory_reservation: int = 64 * 1024 * 1024
    #: Guard region after each memory.
    memory_guard_size: int = 64 * 1024
    #: Period of the epoch ticker; request deadlines are counted in ticks.
    epoch_tick_ms: int = 5

    def cache_key(self) -> str:
        text = (
            f"wasmtime={WASMTIME_VERSION};stack={self.max_wasm_stack};"
            f"res={self.memory_reservation};guard={self.memory_guard_size};fuel=1;epoch=1"
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class GuestFault(Exception):
    """A guest call ended abnormally; ``code`` is a stable ``ErrorCode``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HostAbort(Exception):
    """Raised inside a host function to end the guest call with ``code``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HostHandler(Protocol):
    """What a request context provides to the bound host functions."""

    def sql(self, guest: GuestInstance, ptr: int, length: int) -> int: ...
    def log(self, guest: GuestInstance, level: int, ptr: int, length: int) -> None: ...
    def now_ms(self, guest: GuestInstance) -> int: ...
    def random(self, guest: GuestInstance, ptr: int, length: int) -> None: ...
    def set_alarm(self, guest: GuestInstance, at_ms: int) -> int: ...
    def get_alarm(self, guest: GuestInstance) -> int: ...
    def delete_alarm(self, guest: GuestInstance) -> None: ...


_active = threading.local()


def _trap_address(message: str) -> int:
    """A new wasm trap (owned by wasmtime from here on) as the callback's return value."""
    data = message.encode("utf-8", errors="replace")
    return ctypes.cast(capi._wasmtime_trap_new(data, len(data)), ctypes.c_void_p).value or 0


def _trap_or_zero(message: str) -> int:
    """``_trap_address``, or 0 if even that fails (say, the stack ran out there).

    An exception must never leave a ctypes callback: ctypes then returns whatever was in
    the result slot, which wasmtime takes for a trap pointer and aborts the process. With 0
    the guest runs on, and the decision already recorded on the instance (``_abort``)
    still fails the request when the call returns (see ``GuestInstance._enter``).
    """
    try:
        return _trap_address(message)
    except BaseException:
        return 0


def _host_callback(name: str, params: tuple[str, ...], results: tuple[str, ...]) -> Any:
    """Build the raw (unchecked) linker callback for host import ``name``, reading its
    params and writing its result by their wasm types (``abi.HOST_IMPORTS``).

    It never lets an exception reach wasmtime: a ``HostAbort`` (or any bug in
    a host function) is recorded on the instance and turned into a trap, so
    the outcome is decided per instance.
    """
    caller_context = capi._wasmtime_caller_context
    failed = HostAbort(ErrorCode.INTERNAL, f"host function {name} failed")
    mask = 0xFFFFFFFF  # every i32 param of the ABI is a pointer, a length or a level: unsigned
    nparams = len(params)
    # The raw slots are unions: an i64 param (an alarm time) is read signed, as the guest
    # wrote it, so a negative time is seen as one; the i32s are read unsigned.
    all_i32 = all(p == "i32" for p in params)
    wide = tuple(p == "i64" for p in params)
    result_kind = results[0] if results else None

    def callback(env: Any, caller: Any, args: Any, nargs: int) -> int:
        guest: GuestInstance | None = getattr(_active, "guest", None)
        if guest is None or guest.host is None:
            return _trap_or_zero(f"host function {name} called outside a request")
        if guest._allocating:
            # The host is placing a reply with the guest's facet_alloc, which called a host
            # function again: each sql reply would call facet_alloc again, without end.
            guest._abort = HostAbort(
                ErrorCode.BAD_RESPONSE,
                f"facet_alloc called host function {name} while the host was placing a reply "
                "in guest memory; facet_alloc must not call host functions there",
            )
            return _trap_or_zero(guest._abort.message)
        outer = guest._inside
        guest._inside = caller_context(caller)
        guest._span_cache = None  # the guest ran since we last looked: memory may have grown
        try:
            method = getattr(guest.host, name)
            if not all_i32:
                result = method(guest, *[args[i].i64 if wide[i] else args[i].i32 & mask for i in range(nparams)])
            elif nparams == 2:
                result = method(guest, args[0].i32 & mask, args[1].i32 & mask)
            elif nparams == 3:
                result = method(guest, args[0].i32 & mask, args[1].i32 & mask, args[2].i32 & mask)
            else:
                result = method(guest, *[args[i].i32 & mask for i in range(nparams)])
            if result_kind == "i64":
                args[0].i64 = result - (1 << 64) if result >= (1 << 63) else result
            elif result_kind == "i32":
                args[0].i32 = result - (1 << 32) if result >= (1 << 31) else result
            return 0
        except HostAbort as exc:
            guest._abort = exc
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # the guest trapped in a nested call
            fault = guest._fault(exc, during="facet_alloc")
            guest._abort = HostAbort(fault.code, fault.message)
        except BaseException as exc:  # a bug in a host function must not crash anything
            guest._abort = failed  # first, prebuilt: building the message may fail too
            guest._abort = HostAbort(ErrorCode.INTERNAL, f"host function {name} failed: {exc!r}")
        finally:
            guest._inside = outer
            guest._span_cache = None
        return _trap_or_zero(guest._abort.message)

    return capi.wasmtime_func_unchecked_callback_t(callback)


#: The callbacks must outlive every linker that uses them: keep them here.
_CALLBACKS = {name: _host_callback(name, params, results) for name, (params, results) in abi.HOST_IMPORTS.items()}
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda env: None)
_call_unchecked = capi._wasmtime_func_call_unchecked
_memory_data = capi._wasmtime_memory_data
_memory_size = capi._wasmtime_memory_data_size
_set_fuel = capi._wasmtime_context_set_fuel
_get_fuel = capi._wasmtime_context_get_fuel
_set_epoch_deadline = capi._wasmtime_context_set_epoch_deadline
_export_get = capi._wasmtime_instance_export_get
_EXTERN_FUNC = _ffi.WASMTIME_EXTERN_FUNC.value
_EXTERN_MEMORY = _ffi.WASMTIME_EXTERN_MEMORY.value
_TrapPtr = ctypes.POINTER(capi.wasm_trap_t)
_ValRaw2 = capi.wasmtime_val_raw_t * 2


class _Ticker(threading.Thread):
    def __init__(self, engine: wasmtime.Engine, period_s: float) -> None:
        super().__init__(name="facets-epoch-ticker", daemon=True)
        self._engine = engine
        self._period = period_s
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self._period):
            self._engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()


class WasmRuntime:
    """One engine, one linker with the ABI's host functions, one epoch ticker."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.engine = wasmtime.Engine(self._config(parallel=False))
        self._compiler: wasmtime.Engine | None = None
        self.cache_key = self.settings.cache_key()
        self._ticks: dict[int, int] = {}
        self._linker = wasmtime.Linker(self.engine)
        self._func_types = []
        module = abi.IMPORT_MODULE.encode()
        for name, (params, results) in abi.HOST_IMPORTS.items():
            # FuncTypes are built per Engine: sharing one across engines aborts.
            ty = wasmtime.FuncType([_VALTYPES[p] for p in params], [_VALTYPES[r] for r in results])
            self._func_types.append(ty)
            error = capi._wasmtime_linker_define_func_unchecked(
                self._linker.ptr(),
                module,
                len(module),
                name.encode(),
                len(name),
                ty.ptr(),
                _CALLBACKS[name],
                None,
                _NO_FINALIZER,
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        self._ticker = _Ticker(self.engine, self.settings.epoch_tick_ms / 1000)
        self._ticker.start()

    def _config(self, *, parallel: bool) -> wasmtime.Config:
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.max_wasm_stack = self.settings.max_wasm_stack
        config.memory_reservation = self.settings.memory_reservation
        config.memory_guard_size = self.settings.memory_guard_size
        # Core modules are small and compiled where a request waits: one thread is enough.
        config.parallel_compilation = parallel
        return config

    def compiler_engine(self) -> wasmtime.Engine:
        """An engine with the same settings and parallel compilation, for big components
        (``runtime.components``); what it compiles is handed over serialized, as the
        compiled cache stores it (an artifact from an engine of the same settings)."""
        if self._compiler is None:
            self._compiler = wasmtime.Engine(self._config(parallel=True))
        return self._compiler

    def close(self) -> None:
        self._ticker.stop()

    # -- modules -----------------------------------------------------------
    def compile(self, wasm: bytes) -> wasmtime.Module:
        """Compile wasm binary bytes; raise ``BadModule`` when they are not valid wasm or
        exceed a load limit (checked first, on the section headers: see ``scan_module``)."""
        scan_module(wasm)
        try:
            return wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise BadModule(f"not a valid WebAssembly module: {first_line(exc)}") from None

    @staticmethod
    def wat_to_wasm(text: str) -> bytes:
        try:
            return bytes(wasmtime.wat2wasm(text))
        except wasmtime.WasmtimeError as exc:
            raise BadModule(f"cannot parse WAT text: {first_line(exc)}") from None

    def serialize(self, module: wasmtime.Module) -> bytes:
        return bytes(module.serialize())

    def deserialize_file(self, path: str) -> wasmtime.Module | None:
        """Load a compiled artifact this supervisor wrote; None if it is unusable."""
        try:
            return wasmtime.Module.deserialize_file(self.engine, path)
        except wasmtime.WasmtimeError:
            return None

    def inspect(self, module: wasmtime.Module) -> abi.ModuleShape:
        """Check ``module`` against the facet ABI v1; raise ``BadModule`` naming what is wrong."""
        imports: list[str] = []
        for imp in module.imports:
            where = f"{imp.module}.{imp.name}"
            if imp.module != abi.IMPORT_MODULE or imp.name not in abi.HOST_IMPORTS:
                raise BadModule(
                    f"import {where} is not part of the facet ABI v1 "
                    f"(allowed: {', '.join('facet.' + n for n in abi.HOST_IMPORTS)})"
                )
            params, results = abi.HOST_IMPORTS[imp.name]
            if not _func_type_is(imp.type, params, results):
                raise BadModule(
                    f"import {where} has the wrong signature; expected ({', '.join(params)}) -> ({', '.join(results)})"
                )
            imports.append(imp.name)
        exports = {exp.name: exp.type for exp in module.exports}
        if not isinstance(exports.get(abi.MEMORY_EXPORT), wasmtime.MemoryType):
            raise BadModule(f"missing export: {abi.MEMORY_EXPORT} (a linear memory)")
        wanted = dict(abi.REQUIRED_FUNC_EXPORTS)
        for name, sig in abi.OPTIONAL_FUNC_EXPORTS.items():
            if name in exports:
                wanted[name] = sig
        for name, (params, results) in wanted.items():
            if name not in exports:
                raise BadModule(f"missing export: {name}")
            if not _func_type_is(exports[name], params, results):
                raise BadModule(
                    f"export {name} has the wrong signature; expected ({', '.join(params)}) -> ({', '.join(results)})"
                )
        return abi.ModuleShape(
            exports=tuple(sorted(exports)),
            imports=tuple(sorted(imports)),
            has_init="facet_init" in exports,
            has_http="facet_http" in exports,
            has_alarm="facet_alarm" in exports,
        )

    def prepare(self, module: wasmtime.Module) -> Prepared:
        """Link ``module`` once; what ``instantiate`` takes."""
        memory_min = 0
        for exp in module.exports:
            if exp.name == abi.MEMORY_EXPORT and isinstance(exp.type, wasmtime.MemoryType):
                memory_min = exp.type.limits.min * exp.type.page_size
        return Prepared(self._linker.instantiate_pre(module), memory_min)

    def deadline_ticks(self, timeout_ms: int) -> int:
        """Epoch ticks for a deadline of ``timeout_ms`` (one extra: the current tick is partial)."""
        ticks = self._ticks.get(timeout_ms)
        if ticks is None:
            ticks = self._ticks[timeout_ms] = max(1, math.ceil(timeout_ms / self.settings.epoch_tick_ms)) + 1
        return ticks

    def instantiate(self, prepared: Prepared, *, fuel: int, memory_limit: int, timeout_ms: int) -> GuestInstance:
        """Create a store with its limits and instantiate; raise ``GuestFault`` on failure.

        Fuel and the epoch deadline are set before instantiation so that a
        start function cannot spin forever either. A store limit that refuses
        instantiation gives a ``WasmtimeError`` with no code (wasmtime's C API
        has none for it: ``wasmtime_error_t`` carries only a message, an exit
        status and a trace), so the limits are checked here first, exactly, on
        what the module declares: its initial memory against the quota here,
        its tables and counts at load (``scan_module``).
        """
        if prepared.memory_min > memory_limit:
            raise GuestFault(
                ErrorCode.MEMORY_LIMIT,
                f"instantiation refused: the module's initial memory of "
                f"{prepared.memory_min:,} bytes is over the memory quota of "
                f"{memory_limit:,} bytes",
            )
        store = wasmtime.Store(self.engine)
        _set_limits(store, memory_limit)
        store.set_fuel(fuel)
        store.set_epoch_deadline(self.deadline_ticks(timeout_ms))
        guest = GuestInstance(self, store, memory_limit)
        _active.guest = guest
        try:
            instance = prepared.pre.instantiate(store)
        except Exception as exc:
            raise guest._fault(exc, during="instantiation") from None
        finally:
            _active.guest = None
        guest._bind(instance)
        guest.fuel_used = fuel - store.get_fuel()
        return guest


@dataclass(frozen=True, slots=True)
class Prepared:
    """A linked module, ready to instantiate, and what instantiation checks first."""

    pre: wasmtime.InstancePre
    #: Bytes of linear memory the module declares initially.
    memory_min: int


def _set_limits(store: wasmtime.Store, memory_limit: int) -> None:
    """Every store limit at once: wasmtime_store_limiter replaces the whole limiter, so a
    limit left out is not kept but lifted (a memory-only update dropped the table limit)."""
    store.set_limits(
        memory_size=memory_limit,
        table_elements=abi.MAX_TABLE_ELEMENTS,
        instances=1,
        tables=abi.MAX_TABLES,
        memories=abi.MAX_MEMORIES,
    )


def _own(handle: Any) -> Any:
    """A pointer to a copy of an export's handle. Handles are small value structs, meant
    to be copied; a pointer to wasmtime-py's own would keep its extern wrappers alive,
    two more objects per export for the garbage collector to walk in every warm facet."""
    return ctypes.pointer(type(handle).from_buffer_copy(handle))


class GuestInstance:
    """One instantiated guest in its own store. Used by one thread at a time."""

    def __init__(self, runtime: WasmRuntime, store: wasmtime.Store, memory_limit: int) -> None:
        self._runtime = runtime
        self._store = store
        self._ctx = store._context()
        #: The caller's context while a host function runs (wasmtime wants that one
        #: used for re-entering the guest and touching its memory), else None.
        self._inside = None
        self.memory_limit = memory_limit
        self.host: HostHandler | None = None
        self.fuel_used = 0
        self._abort: HostAbort | None = None
        #: True while the host runs the guest's facet_alloc from inside a host function.
        self._allocating = False
        self._memory = None
        self._alloc = self._handle = self._init = self._http = self._alarm = None
        self._raw = _ValRaw2()
        self._raw_nested = _ValRaw2()
        #: (base address, size) of linear memory, valid until the guest runs again.
        self._span_cache: tuple[int, int] | None = None
        #: the last (base, size) seen, reused while the size stays the same
        self._span_known: tuple[int, int] | None = None
        self._fuel_out = ctypes.c_uint64()
        self._fuel_ref = ctypes.byref(self._fuel_out)
        self._trap = _TrapPtr()
        self._trap_ref = ctypes.byref(self._trap)

    def _bind(self, instance: wasmtime.Instance) -> None:
        """Look up the ABI's exports by name: ``instance.exports()`` wraps every export,
        and a module with 100,000 of them took minutes per cold start that way."""
        self._memory = self._export(instance, abi.MEMORY_EXPORT, _EXTERN_MEMORY)
        self._alloc = self._export(instance, "facet_alloc", _EXTERN_FUNC)
        self._handle = self._export(instance, "facet_handle", _EXTERN_FUNC)
        self._init = self._export(instance, "facet_init", _EXTERN_FUNC, required=False)
        self._http = self._export(instance, "facet_http", _EXTERN_FUNC, required=False)
        self._alarm = self._export(instance, "facet_alarm", _EXTERN_FUNC, required=False)

    def _export(self, instance: wasmtime.Instance, name: str, kind: int, required: bool = True) -> Any:
        """A pointer to our own copy of export ``name``'s handle (see ``_own``), or None."""
        item = capi.wasmtime_extern_t()
        encoded = name.encode()
        if not _export_get(self._ctx, ctypes.byref(instance._instance), encoded, len(encoded), ctypes.byref(item)):
            if required:  # inspect() checked this at load: only a bug gets here
                raise GuestFault(ErrorCode.INTERNAL, f"export {name} not found after instantiation")
            return None
        try:
            if item.kind != kind:
                raise GuestFault(ErrorCode.INTERNAL, f"export {name} has an unexpected kind {item.kind}")
            handle = item.of.memory if kind == _EXTERN_MEMORY else item.of.func
            return _own(handle)
        finally:
            capi._wasmtime_extern_delete(ctypes.byref(item))

    # -- limits -------------------------------------------------------------
    def set_memory_limit(self, limit: int) -> None:
        """Change the memory limit of the live store; growth beyond it fails from now on."""
        _set_limits(self._store, limit)
        self.memory_limit = limit

    @property
    def memory_size(self) -> int:
        if self._memory is None:
            return 0
        return self._memory_span()[1]

    def _memory_span(self) -> tuple[int, int]:
        """(base address, size) of linear memory, asked of wasmtime once per guest run."""
        if self._memory is None:
            raise IndexError("guest memory is not available yet")
        cached = self._span_cache
        if cached is None:
            ctx = self._inside or self._ctx
            size = _memory_size(ctx, self._memory)
            known = self._span_known
            if known is not None and known[1] == size:
                # Linear memory only moves when it grows, and then its size changes.
                cached = known
            else:
                cached = (ctypes.addressof(_memory_data(ctx, self._memory).contents), size)
            self._span_cache = self._span_known = cached
        return cached

    # -- calls ------------------------------------------------------------------
    def _call(self, ctx: Any, func: Any, raw: Any, nargs: int) -> None:
        """Call a guest function on raw values; wasmtime errors and traps are raised."""
        error = _call_unchecked(ctx, func, raw, nargs, self._trap_ref)
        self._span_cache = None  # the guest may have grown (and so moved) its memory
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        trap = self._trap
        if trap:
            # the Trap object owns the pointer from now on: take a fresh out-slot
            self._trap = _TrapPtr()
            self._trap_ref = ctypes.byref(self._trap)
            raise wasmtime.Trap._from_ptr(trap)

    def _enter(
        self,
        run: Callable[..., Any],
        *args: Any,
        fuel: int,
        timeout_ms: int,
        host: HostHandler | None,
        during: str = "call",
    ) -> Any:
        ctx = self._ctx
        error = _set_fuel(ctx, fuel)
        if error:
            raise GuestFault(ErrorCode.INTERNAL, str(wasmtime.WasmtimeError._from_ptr(error)))
        _set_epoch_deadline(ctx, self._runtime.deadline_ticks(timeout_ms))
        self.host = host
        self._abort = None
        _active.guest = self
        try:
            result = run(*args)
        except GuestFault:
            raise
        except Exception as exc:
            raise self._fault(exc, during=during) from None
        finally:
            _active.guest = None
            self._inside = None
            self._allocating = False
            _get_fuel(ctx, self._fuel_ref)
            self.fuel_used = fuel - self._fuel_out.value
        if self._abort is not None:
            # A host function decided the request's fate but the guest ran on: its trap was
            # lost (an exception escaped the ctypes callback, which then returns no trap).
            raise GuestFault(self._abort.code, self._abort.message)
        return result

    def _fault(self, exc: Exception, during: str) -> GuestFault:
        if self._abort is not None:  # decided by our own host function, whatever surfaced
            return GuestFault(self._abort.code, self._abort.message)
        if isinstance(exc, HostAbort):
            return GuestFault(exc.code, exc.message)
        if isinstance(exc, wasmtime.Trap):
            try:
                code = exc.trap_code
            except ValueError:  # a code newer than wasmtime-py's TrapCode enum: a plain trap
                code = None
            if code == wasmtime.TrapCode.OUT_OF_FUEL:
                return GuestFault(ErrorCode.FUEL_EXHAUSTED, f"fuel exhausted during {during}")
            if code == wasmtime.TrapCode.INTERRUPT:
                return GuestFault(ErrorCode.TIMEOUT, f"deadline exceeded during {during}")
            if code == wasmtime.TrapCode.STACK_OVERFLOW:
                return GuestFault(ErrorCode.STACK_OVERFLOW, "wasm stack overflow")
            # memory.grow returns -1 at the limit rather than trapping, and the C API has no
            # hook to see the refusal. A guest that traps while its memory is within 1 MiB of
            # the quota (where a typical allocator's next growth step is refused, and it
            # traps on out-of-memory) is reported as memory_limit.
            if self._memory is not None and self.memory_size + _GROWTH_STEP > self.memory_limit:
                return GuestFault(
                    ErrorCode.MEMORY_LIMIT, f"memory limit of {self.memory_limit} bytes reached ({first_line(exc)})"
                )
            return GuestFault(ErrorCode.TRAP, f"guest trapped: {first_line(exc)}")
        if isinstance(exc, wasmtime.WasmtimeError):
            return _untyped_error(exc, during)
        return GuestFault(ErrorCode.INTERNAL, f"{during} failed: {exc!r}")

    def call_init(self, *, fuel: int, timeout_ms: int, host: HostHandler | None) -> None:
        if self._init is not None:
            self._enter(self._call, self._ctx, self._init, self._raw, 0, fuel=fuel, timeout_ms=timeout_ms, host=host)
        else:
            self.fuel_used = 0

    def handle(self, body: bytes, *, fuel: int, timeout_ms: int, host: HostHandler | None, http: bool = False) -> bytes:
        """Run one request through ``facet_alloc`` + ``facet_handle`` (``http``: ``facet_http``,
        which the caller checked the module exports) and return the response bytes."""
        entry = self._http if http else self._handle
        return self._enter(self._handle_request, body, entry, fuel=fuel, timeout_ms=timeout_ms, host=host)

    @property
    def serves_http(self) -> bool:
        """True when the module exports ``facet_http``."""
        return self._http is not None

    @property
    def has_alarm(self) -> bool:
        """True when the module exports the alarm handler ``facet_alarm``."""
        return self._alarm is not None

    def alarm(self, *, fuel: int, timeout_ms: int, host: HostHandler | None) -> None:
        """Run the alarm handler ``facet_alarm`` under the same limits, accounting
        (``fuel_used``) and failure codes as ``handle``; a trap is a failed delivery."""
        if self._alarm is None:
            raise GuestFault(ErrorCode.BAD_MODULE, "the module exports no alarm handler (facet_alarm)")
        call, ctx, raw = self._call, self._ctx, self._raw
        self._enter(call, ctx, self._alarm, raw, 0, fuel=fuel, timeout_ms=timeout_ms, host=host, during="alarm")

    def _handle_request(self, body: bytes, entry: Any) -> bytes:
        raw, ctx, length = self._raw, self._ctx, len(body)
        raw[0].i32 = length
        self._call(ctx, self._alloc, raw, 1)
        ptr = raw[0].i32 & 0xFFFFFFFF
        if ptr == 0 and length > 0:
            if self.memory_size + length > self.memory_limit:
                raise HostAbort(
                    ErrorCode.MEMORY_LIMIT,
                    f"a request of {length} bytes does not fit in the memory quota of {self.memory_limit} bytes",
                )
            raise HostAbort(ErrorCode.BAD_RESPONSE, f"facet_alloc({length}) returned 0")
        if length:
            try:
                self.write(ptr, body)
            except IndexError:
                raise HostAbort(
                    ErrorCode.BAD_RESPONSE, f"facet_alloc returned {ptr}, which cannot hold {length} bytes"
                ) from None
        raw[0].i32 = ptr
        raw[1].i32 = length
        self._call(ctx, entry, raw, 2)
        resp_ptr, resp_len = abi.unpack(raw[0].i64)
        try:
            return self.read(resp_ptr, resp_len)
        except IndexError:
            raise HostAbort(
                ErrorCode.BAD_RESPONSE,
                f"response {resp_ptr}+{resp_len} lies outside guest memory ({self.memory_size} bytes)",
            ) from None

    # -- guest memory (bounds-checked) ---------------------------------------
    def read(self, ptr: int, length: int) -> bytes:
        """Copy ``length`` bytes at ``ptr``; ``IndexError`` if any byte is outside memory."""
        base, size = self._span_cache or self._memory_span()
        if ptr < 0 or length < 0 or ptr + length > size:
            raise IndexError(f"range {ptr}+{length} outside memory of {size} bytes")
        return ctypes.string_at(base + ptr, length) if length else b""

    def write(self, ptr: int, data: bytes) -> None:
        """Copy ``data`` to ``ptr``; ``IndexError`` if any byte would land outside memory."""
        base, size = self._span_cache or self._memory_span()
        length = len(data)
        if ptr < 0 or ptr + length > size:
            raise IndexError(f"range {ptr}+{length} outside memory of {size} bytes")
        if length:
            ctypes.memmove(base + ptr, data, length)

    def alloc(self, size: int) -> int:
        """Call the guest's ``facet_alloc`` from inside a host function."""
        raw = self._raw_nested
        raw[0].i32 = size
        self._allocating = True
        try:
            self._call(self._inside or self._ctx, self._alloc, raw, 1)
        finally:
            self._allocating = False
        return raw[0].i32 & 0xFFFFFFFF


# -- the binary pre-scan ---------------------------------------------------------
@dataclass(frozen=True)
class ModuleCounts:
    """What the pre-scan read from a wasm binary's section headers."""

    types: int = 0
    imports: int = 0
    functions: int = 0
    tables: int = 0
    memories: int = 0
    globals: int = 0
    exports: int = 0
    elements: int = 0
    data: int = 0
    tags: int = 0
    #: The largest function body, in bytes.
    largest_function: int = 0
    #: The largest declared minimum of a table, in elements.
    table_min: int = 0
    #: The declared minimum of the linear memory, in bytes (0 without one).
    memory_min: int = 0


_COMPONENT_VERSION = b"\x0d\x00\x01\x00"
_CORE_VERSION = b"\x01\x00\x00\x00"
#: Section id -> (ModuleCounts field, the abi limit on it, what to call it).
_COUNTED_SECTIONS: dict[int, tuple[str, int, str]] = {
    1: ("types", abi.MAX_TYPES, "types"),
    2: ("imports", abi.MAX_IMPORTS, "imports"),
    3: ("functions", abi.MAX_FUNCTIONS, "functions"),
    4: ("tables", abi.MAX_TABLES, "tables"),
    5: ("memories", abi.MAX_MEMORIES, "memories"),
    6: ("globals", abi.MAX_GLOBALS, "globals"),
    7: ("exports", abi.MAX_EXPORTS, "exports"),
    9: ("elements", abi.MAX_ELEMENT_SEGMENTS, "element segments"),
    10: ("functions", abi.MAX_FUNCTIONS, "function bodies"),
    11: ("data", abi.MAX_DATA_SEGMENTS, "data segments"),
    12: ("data", abi.MAX_DATA_SEGMENTS, "data segments (data count)"),
    13: ("tags", abi.MAX_TAGS, "tags"),
}


def _malformed(detail: str) -> BadModule:
    return BadModule(f"not a valid WebAssembly module: {detail}")


class _Reader:
    """A bounds-checked cursor over ``data[pos:end]``; every read past ``end`` is a BadModule."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _malformed("a section ends in the middle of an entry")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self, bits: int = 32) -> int:
        """An unsigned LEB128 of at most ``bits`` bits (and so at most ceil(bits / 7) bytes)."""
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= bits:
                raise _malformed(f"an integer longer than {bits} bits")
        if result >> bits:
            raise _malformed(f"an integer longer than {bits} bits")
        return result

    def skip_sleb(self, bits: int) -> None:
        for _ in range((bits + 6) // 7):
            if not self.byte() & 0x80:
                return
        raise _malformed(f"an integer longer than {bits} bits")

    def skip(self, count: int) -> None:
        if count > self.end - self.pos:
            raise _malformed("a section ends in the middle of an entry")
        self.pos += count


def _limits(reader: _Reader, what: str) -> tuple[int, int]:
    """Read ``limits`` (memory or table); return (flags, declared minimum)."""
    flags = reader.uleb()
    if flags & ~0x0F:
        raise _malformed(f"unknown {what} limits flags {flags:#x}")
    wide = 64 if flags & 0x04 else 32
    minimum = reader.uleb(wide)
    if flags & 0x01:
        reader.uleb(wide)
    return flags, minimum


def _ref_type(reader: _Reader) -> None:
    kind = reader.byte()
    if kind in (0x63, 0x64):  # (ref null? heaptype): a heap type follows, an s33
        reader.skip_sleb(33)


def _const_expr(reader: _Reader) -> None:
    """Skip a constant expression (a table's initializer): the instructions allowed there."""
    for _ in range(1000):  # a guard: a constant expression is a handful of instructions
        op = reader.byte()
        if op == 0x0B:  # end
            return
        if op in (0x41, 0x42, 0x23, 0xD2):  # i32.const, i64.const, global.get, ref.func
            reader.skip_sleb(64)
        elif op == 0xD0:  # ref.null heaptype
            reader.skip_sleb(33)
        elif op in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const add/sub/mul
            continue
        else:
            raise BadModule(
                f"table initializer uses instruction {op:#04x}; "
                "only i32/i64.const, global.get, ref.null and ref.func are supported"
            )
    raise _malformed("a table initializer that does not end")


def scan_module(wasm: bytes) -> ModuleCounts:
    """Check a wasm binary's shape against the load limits in ``abi`` before compiling it.

    Compiling is where a hostile module costs: 100,000 empty functions (0.5 MB) took 5 s
    and 600 MiB to compile, and 100,000 exports made every cold start take minutes. This
    reads only section headers and the few entries that bound a cost (the count of each
    counted section, each function body's size, table and memory limits) and raises
    ``BadModule`` naming the first limit passed. Counts are bounds to check, never sizes
    to allocate or loop over unchecked: a count over its limit is refused before anything
    is read, and every read is bounds-checked against its section (the compiler then
    validates the rest exactly).
    """
    if len(wasm) < 8 or wasm[:4] != b"\x00asm":
        raise _malformed("no \\0asm header")
    version = wasm[4:8]
    if version == _COMPONENT_VERSION:
        raise BadModule("a WebAssembly component, not a core module: the facet ABI v1 takes core modules")
    if version != _CORE_VERSION:
        raise _malformed(f"unsupported binary version {version.hex()}")
    counts: dict[str, int] = {}
    reader = _Reader(wasm, 8, len(wasm))
    while reader.pos < reader.end:
        section = reader.byte()
        size = reader.uleb()
        start, end = reader.pos, reader.pos + size
        if end > len(wasm):
            raise _malformed(f"section {section} runs past the end of the module")
        body = _Reader(wasm, start, end)
        counted = _COUNTED_SECTIONS.get(section)
        if counted is not None:
            field, limit, what = counted
            count = body.uleb()
            if count > limit:
                raise BadModule(f"module declares {count:,} {what}; at most {limit:,} are allowed")
            counts[field] = max(counts.get(field, 0), count)
            if section == 4:
                for _ in range(count):
                    if body.end - body.pos >= 2 and wasm[body.pos : body.pos + 2] == b"\x40\x00":
                        # a table with an initializer expression
                        body.skip(2)
                        _ref_type(body)
                        _, minimum = _limits(body, "table")
                        _const_expr(body)
                    else:
                        _ref_type(body)
                        _, minimum = _limits(body, "table")
                    if minimum > abi.MAX_TABLE_ELEMENTS:
                        raise BadModule(
                            f"a table declares {minimum:,} initial elements; "
                            f"at most {abi.MAX_TABLE_ELEMENTS:,} are allowed"
                        )
                    counts["table_min"] = max(counts.get("table_min", 0), minimum)
            elif section == 5:
                for _ in range(count):
                    flags, minimum = _limits(body, "memory")
                    if flags & 0x02:
                        raise BadModule("shared memories are not supported (no threads in the facet ABI v1)")
                    page = 65_536
                    if flags & 0x08:  # custom-page-sizes: log2 of the page size, 0 or 16
                        page_log2 = body.uleb()
                        if page_log2 > 16:
                            raise _malformed(f"a memory page size of 2**{page_log2} bytes")
                        page = 1 << page_log2
                    if minimum * page > abi.MAX_MEMORY_MIN_BYTES:
                        raise BadModule(
                            f"the memory declares {minimum * page:,} initial bytes; "
                            f"at most {abi.MAX_MEMORY_MIN_BYTES:,} are allowed"
                        )
                    counts["memory_min"] = max(counts.get("memory_min", 0), minimum * page)
            elif section == 10:
                largest = 0
                if size > abi.MAX_CODE_BYTES:
                    raise BadModule(f"module has {size:,} bytes of code; at most {abi.MAX_CODE_BYTES:,} are allowed")
                for _ in range(count):
                    length = body.uleb()
                    if length > abi.MAX_FUNCTION_BYTES:
                        raise BadModule(
                            f"a function body of {length:,} bytes; at most {abi.MAX_FUNCTION_BYTES:,} are allowed"
                        )
                    body.skip(length)
                    largest = max(largest, length)
                counts["largest_function"] = largest
        reader.pos = end
    return ModuleCounts(**counts)


def _untyped_error(exc: wasmtime.WasmtimeError, during: str) -> GuestFault:
    """Classify a ``WasmtimeError``: an error that is not a trap, so it has no trap code.

    wasmtime's C API gives such an error nothing to classify it by (``wasmtime_error_t``
    has a message, an exit status for WASI's proc_exit, and a trace), so it is classified
    by where it happened, never by its text. Instantiating an ``InstancePre`` (imports
    already resolved) fails without a trap only when the store's resource limiter
    refuses a memory or a table, or the host cannot map one: a memory limit. The limits a
    guest can reach that way are checked before, exactly, on what the module declares
    (``WasmRuntime.instantiate``, ``scan_module``); this is the fallback for what those
    cannot see (a module stored before the load limits existed). During a call, wasmtime
    reports what stops a guest as traps; anything else is reported as a trap too.
    """
    if during == "instantiation":
        return GuestFault(ErrorCode.MEMORY_LIMIT, f"instantiation refused: {first_line(exc)}")
    return GuestFault(ErrorCode.TRAP, f"{during} failed: {first_line(exc)}")


def _func_type_is(ty: object, params: tuple[str, ...], results: tuple[str, ...]) -> bool:
    if not isinstance(ty, wasmtime.FuncType):
        return False
    return [str(p) for p in ty.params] == list(params) and [str(r) for r in ty.results] == list(results)


def first_line(exc: BaseException) -> str:
    """The informative line of a wasmtime error: the root cause, not the backtrace header."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "Caused by:" in lines:
        return lines[-1]
    return lines[0]
