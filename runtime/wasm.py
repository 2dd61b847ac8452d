"""The wasm seam: every crossing between Python and WebAssembly lives here.

Engine configuration, the epoch ticker, compiling and caching modules, binding
the host functions, calling guest exports and reading/writing guest memory.
Nothing else in the runtime imports ``wasmtime``, so a faster call path (for
example ctypes straight onto wasmtime's C API instead of ``Func.__call__``,
which rebuilds the function type on every call) can replace the stock
wrappers here without touching the rest.

Threads: wasmtime-py's calls go through ctypes, which releases the GIL while
wasm runs, so different facets run in parallel and the epoch ticker keeps
ticking while a guest spins. Host functions run on the calling thread; the
instance being entered is kept in a thread-local so the linker's
store-independent host functions find their request context.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import wasmtime

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
        text = f"wasmtime={WASMTIME_VERSION};stack={self.max_wasm_stack};" \
               f"res={self.memory_reservation};guard={self.memory_guard_size};fuel=1;epoch=1"
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

    def sql(self, guest: "GuestInstance", ptr: int, length: int) -> int: ...
    def log(self, guest: "GuestInstance", level: int, ptr: int, length: int) -> None: ...
    def now_ms(self, guest: "GuestInstance") -> int: ...
    def random(self, guest: "GuestInstance", ptr: int, length: int) -> None: ...


_active = threading.local()


def _host_function(name: str):
    """Build the linker callback for host import ``name``.

    The callback never lets an arbitrary exception reach wasmtime-py's
    trampoline (whose error slot is a process-wide global): it records the
    abort on the instance first, so the outcome is decided per instance.
    """

    def callback(caller, *args):
        guest: GuestInstance | None = getattr(_active, "guest", None)
        if guest is None or guest.host is None:
            raise HostAbort(ErrorCode.INTERNAL, f"host function {name} called outside a request")
        guest._caller = caller
        try:
            # Every i32 of the ABI is a pointer, a length or a level: unsigned.
            return getattr(guest.host, name)(guest, *(a & 0xFFFFFFFF for a in args))
        except HostAbort as exc:
            guest._abort = exc
            raise
        except Exception as exc:  # a bug in a host function must not crash anything
            guest._abort = HostAbort(ErrorCode.INTERNAL, f"host function {name} failed: {exc!r}")
            raise guest._abort from exc
        finally:
            guest._caller = None

    return callback


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
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.max_wasm_stack = self.settings.max_wasm_stack
        config.memory_reservation = self.settings.memory_reservation
        config.memory_guard_size = self.settings.memory_guard_size
        config.parallel_compilation = False
        self.engine = wasmtime.Engine(config)
        self.cache_key = self.settings.cache_key()
        self._linker = wasmtime.Linker(self.engine)
        for name, (params, results) in abi.HOST_IMPORTS.items():
            # FuncTypes are built per Engine: sharing one across engines aborts.
            ty = wasmtime.FuncType([_VALTYPES[p] for p in params], [_VALTYPES[r] for r in results])
            self._linker.define_func(abi.IMPORT_MODULE, name, ty, _host_function(name), access_caller=True)
        self._ticker = _Ticker(self.engine, self.settings.epoch_tick_ms / 1000)
        self._ticker.start()

    def close(self) -> None:
        self._ticker.stop()

    # -- modules -----------------------------------------------------------
    def compile(self, wasm: bytes) -> wasmtime.Module:
        """Compile wasm binary bytes; raise ``BadModule`` when they are not valid wasm."""
        try:
            return wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise BadModule(f"not a valid WebAssembly module: {_first_line(exc)}") from None

    @staticmethod
    def wat_to_wasm(text: str) -> bytes:
        try:
            return bytes(wasmtime.wat2wasm(text))
        except wasmtime.WasmtimeError as exc:
            raise BadModule(f"cannot parse WAT text: {_first_line(exc)}") from None

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
                raise BadModule(f"import {where} is not part of the facet ABI v1 "
                                f"(allowed: {', '.join('facet.' + n for n in abi.HOST_IMPORTS)})")
            params, results = abi.HOST_IMPORTS[imp.name]
            if not _func_type_is(imp.type, params, results):
                raise BadModule(f"import {where} has the wrong signature; expected "
                                f"({', '.join(params)}) -> ({', '.join(results)})")
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
                raise BadModule(f"export {name} has the wrong signature; expected "
                                f"({', '.join(params)}) -> ({', '.join(results)})")
        return abi.ModuleShape(exports=tuple(sorted(exports)), imports=tuple(sorted(imports)),
                               has_init="facet_init" in exports)

    def prepare(self, module: wasmtime.Module) -> wasmtime.InstancePre:
        return self._linker.instantiate_pre(module)

    def deadline_ticks(self, timeout_ms: int) -> int:
        return max(1, math.ceil(timeout_ms / self.settings.epoch_tick_ms)) + 1

    def instantiate(self, pre: wasmtime.InstancePre, *, fuel: int, memory_limit: int,
                    timeout_ms: int, table_limit: int = 100_000) -> "GuestInstance":
        """Create a store with its limits and instantiate; raise ``GuestFault`` on failure.

        Fuel and the epoch deadline are set before instantiation so that a
        start function cannot spin forever either.
        """
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=memory_limit, table_elements=table_limit,
                         instances=1, tables=4, memories=1)
        store.set_fuel(fuel)
        store.set_epoch_deadline(self.deadline_ticks(timeout_ms))
        guest = GuestInstance(self, store, memory_limit)
        _active.guest = guest
        try:
            instance = pre.instantiate(store)
        except Exception as exc:
            raise guest._fault(exc, during="instantiation") from None
        finally:
            _active.guest = None
        guest._bind(instance)
        guest.fuel_used = fuel - store.get_fuel()
        return guest


class GuestInstance:
    """One instantiated guest in its own store. Used by one thread at a time."""

    def __init__(self, runtime: WasmRuntime, store: wasmtime.Store, memory_limit: int) -> None:
        self._runtime = runtime
        self._store = store
        self.memory_limit = memory_limit
        self.host: HostHandler | None = None
        self.fuel_used = 0
        self._caller = None
        self._abort: HostAbort | None = None
        self._memory: wasmtime.Memory | None = None
        self._alloc = self._handle = self._init = None

    def _bind(self, instance: wasmtime.Instance) -> None:
        exports = instance.exports(self._store)
        self._memory = exports[abi.MEMORY_EXPORT]
        self._alloc = exports["facet_alloc"]
        self._handle = exports["facet_handle"]
        self._init = exports.get("facet_init")

    # -- limits -------------------------------------------------------------
    def set_memory_limit(self, limit: int) -> None:
        """Change the memory limit of the live store; growth beyond it fails from now on."""
        self._store.set_limits(memory_size=limit)
        self.memory_limit = limit

    @property
    def memory_size(self) -> int:
        return self._memory.data_len(self._store) if self._memory is not None else 0

    # -- entering the guest ------------------------------------------------
    def _enter(self, func, args: tuple, *, fuel: int, timeout_ms: int, host: HostHandler | None):
        store = self._store
        store.set_fuel(fuel)
        store.set_epoch_deadline(self._runtime.deadline_ticks(timeout_ms))
        self.host = host
        self._abort = None
        _active.guest = self
        try:
            return func(store, *args)
        except Exception as exc:
            raise self._fault(exc, during="call") from None
        finally:
            _active.guest = None
            self.fuel_used = fuel - store.get_fuel()

    def _fault(self, exc: Exception, during: str) -> GuestFault:
        if self._abort is not None:  # decided by our own host function, whatever surfaced
            return GuestFault(self._abort.code, self._abort.message)
        if isinstance(exc, HostAbort):
            return GuestFault(exc.code, exc.message)
        if isinstance(exc, wasmtime.Trap):
            code = exc.trap_code
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
                return GuestFault(ErrorCode.MEMORY_LIMIT,
                                  f"memory limit of {self.memory_limit} bytes reached ({_first_line(exc)})")
            return GuestFault(ErrorCode.TRAP, f"guest trapped: {_first_line(exc)}")
        if isinstance(exc, wasmtime.WasmtimeError):
            text = str(exc)
            if "exceeds memory limits" in text or "memory minimum size" in text \
                    or "table minimum size" in text or "resource limit exceeded" in text \
                    or "exceeds table limits" in text:
                return GuestFault(ErrorCode.MEMORY_LIMIT, f"{during} refused: {_first_line(exc)}")
            return GuestFault(ErrorCode.TRAP, f"{during} failed: {_first_line(exc)}")
        return GuestFault(ErrorCode.INTERNAL, f"{during} failed: {exc!r}")

    def call_init(self, *, fuel: int, timeout_ms: int, host: HostHandler | None) -> None:
        if self._init is not None:
            self._enter(self._init, (), fuel=fuel, timeout_ms=timeout_ms, host=host)
        else:
            self.fuel_used = 0

    def handle(self, body: bytes, *, fuel: int, timeout_ms: int, host: HostHandler | None) -> bytes:
        """Run one request through ``facet_alloc`` + ``facet_handle`` and return the response bytes."""
        def run(store):
            ptr = self._alloc(store, len(body)) & 0xFFFFFFFF
            if ptr == 0 and len(body) > 0:
                if self.memory_size + len(body) > self.memory_limit:
                    raise HostAbort(ErrorCode.MEMORY_LIMIT,
                                    f"a request of {len(body)} bytes does not fit in the memory "
                                    f"quota of {self.memory_limit} bytes")
                raise HostAbort(ErrorCode.BAD_RESPONSE, f"facet_alloc({len(body)}) returned 0")
            if body:
                self.write(ptr, body, store)
            packed = self._handle(store, ptr, len(body))
            resp_ptr, resp_len = abi.unpack(packed)
            try:
                return self.read(resp_ptr, resp_len, store)
            except IndexError:
                raise HostAbort(ErrorCode.BAD_RESPONSE,
                                f"response {resp_ptr}+{resp_len} lies outside guest memory "
                                f"({self.memory_size} bytes)") from None
        return self._enter(lambda store: run(store), (), fuel=fuel, timeout_ms=timeout_ms, host=host)

    # -- guest memory (bounds-checked) ---------------------------------------
    def _ctx(self, store=None):
        if store is not None:
            return store
        return self._caller if self._caller is not None else self._store

    def read(self, ptr: int, length: int, store=None) -> bytes:
        """Copy ``length`` bytes at ``ptr``; ``IndexError`` if any byte is outside memory."""
        ctx = self._ctx(store)
        size = self._memory.data_len(ctx)
        if ptr < 0 or length < 0 or ptr + length > size:
            raise IndexError(f"range {ptr}+{length} outside memory of {size} bytes")
        if length == 0:
            return b""
        base = ctypes.addressof(self._memory.data_ptr(ctx).contents)
        return ctypes.string_at(base + ptr, length)

    def write(self, ptr: int, data: bytes, store=None) -> None:
        ctx = self._ctx(store)
        size = self._memory.data_len(ctx)
        if ptr < 0 or ptr + len(data) > size:
            raise IndexError(f"range {ptr}+{len(data)} outside memory of {size} bytes")
        if data:
            base = ctypes.addressof(self._memory.data_ptr(ctx).contents)
            ctypes.memmove(base + ptr, data, len(data))

    def alloc(self, size: int) -> int:
        """Call the guest's ``facet_alloc`` from inside a host function."""
        return self._alloc(self._ctx(), size) & 0xFFFFFFFF


def _func_type_is(ty, params: tuple[str, ...], results: tuple[str, ...]) -> bool:
    if not isinstance(ty, wasmtime.FuncType):
        return False
    return [str(p) for p in ty.params] == list(params) and [str(r) for r in ty.results] == list(results)


def _first_line(exc: BaseException) -> str:
    """The informative line of a wasmtime error: the root cause, not the backtrace header."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "Caused by:" in lines:
        return lines[-1]
    return lines[0]


def monotonic_ms() -> float:
    return time.monotonic() * 1000
