"""The facet ABI v1 as data: export and import names, their signatures, packing.

See ``sample_apps/ABI.md`` for the page app authors read. This module is the single
place the runtime learns those names from; the loader validates a module
against it and the wasm seam binds host functions from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ABI_VERSION = 1

# -- ABI v2: components (sample_apps/wit/facets.wit) -------------------------------------
#: The component ABI's version; core modules stay on ABI_VERSION (v1), side by side.
COMPONENT_ABI_VERSION = 2
SAMPLE_APPS_DIR = Path(__file__).resolve().parent.parent / "sample_apps"
#: The WIT world every component app is built against, and the guest SDKs.
WIT_DIR = SAMPLE_APPS_DIR / "wit"
WIT_WORLD = "app"
SDK_DIR = SAMPLE_APPS_DIR / "sdk"
#: The one interface a component may import (besides WASI, which is stubbed: see
#: ``runtime.components``), and the one it must export.
#:
#: 2.1.0 added the alarm functions (host: ``set-alarm``, ``get-alarm``, ``delete-alarm``;
#: guest: ``alarm``). Adding functions is a semver-minor change, and wasmtime's component
#: Linker is semver-aware (wasmtime PR #7994, measured with wasmtime-py 50 here): a
#: component built against 2.0.0 imports ``host@2.0.0``, which the host's ``@2.1.0``
#: definition satisfies, and its ``guest@2.0.0`` export is found by the ``@2.1.0`` name.
#: So components built before alarms keep loading and running, without ``alarm``.
HOST_INTERFACE = "facets:app/host@2.1.0"
GUEST_INTERFACE = "facets:app/guest@2.1.0"
#: The guest interface's functions every component has.
GUEST_FUNCTIONS = ("init", "call", "fetch")
#: Functions a guest interface may lack: those added after 2.0.0 (looked up as optional).
OPTIONAL_GUEST_FUNCTIONS = ("alarm",)
#: What a component may call the two interfaces: any 2.x (semver-compatible with ours).
HOST_INTERFACE_PATTERN = re.compile(r"facets:app/host@2\.\d+\.\d+")
GUEST_INTERFACE_PATTERN = re.compile(r"facets:app/guest@2\.\d+\.\d+")

IMPORT_MODULE = "facet"

#: Required exports: name -> (params, results) in wasm value types.
REQUIRED_FUNC_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "facet_alloc": (("i32",), ("i32",)),
    "facet_handle": (("i32", "i32"), ("i64",)),
}
MEMORY_EXPORT = "memory"
#: Optional exports.
OPTIONAL_FUNC_EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "facet_init": ((), ()),
    # HTTP requests (runtime/http.py: the envelope); without it, an app gets the HTTP
    # body in facet_handle.
    "facet_http": (("i32", "i32"), ("i64",)),
    # The alarm handler (see ``set_alarm``); a trap is a failed delivery, retried.
    "facet_alarm": ((), ()),
}
#: Host functions a module may import from ``facet``; all optional.
HOST_IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sql": (("i32", "i32"), ("i64",)),
    "log": (("i32", "i32", "i32"), ()),
    "now_ms": ((), ("i64",)),
    "random": (("i32", "i32"), ()),
    # Alarms: at most one pending per facet, as Durable Objects. ``at_ms`` is signed, so a
    # negative time is seen (and refused) as one.
    "set_alarm": (("i64",), ("i32",)),
    "get_alarm": ((), ("i64",)),
    "delete_alarm": ((), ()),
}

#: ``set_alarm``'s answers.
ALARM_SET = 0
ALARM_NO_HANDLER = 1  # the module exports no handler: the alarm could never be delivered
ALARM_BAD_TIME = 2  # negative, or past MAX_ALARM_MS
#: The latest alarm time: 9999-12-31T23:59:59.999Z. Later times are refused (2): nothing
#: can mean them, and every date library a guest might use stops at year 9999.
MAX_ALARM_MS = 253_402_300_799_999
#: ``get_alarm``'s answer when no alarm is pending (v1; v2 answers ``none``).
NO_ALARM = -1


def valid_alarm_time(at_ms: int) -> bool:
    """True for a time ``set_alarm`` accepts: 0 to ``MAX_ALARM_MS`` ms since the epoch."""
    return 0 <= at_ms <= MAX_ALARM_MS


#: Guest log levels (the ``level`` argument of ``log``).
LOG_LEVELS = {0: "debug", 1: "info", 2: "warn", 3: "error"}

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def pack(ptr: int, length: int) -> int:
    """Pack a pointer and a length as the ABI's unsigned i64."""
    return ((ptr & 0xFFFFFFFF) << 32) | (length & 0xFFFFFFFF)


def unpack(value: int) -> tuple[int, int]:
    """Split the ABI's i64 (which wasmtime hands over signed) into (ptr, len)."""
    value &= 0xFFFFFFFFFFFFFFFF
    return value >> 32, value & 0xFFFFFFFF


def is_valid_name(name: str) -> bool:
    """True when ``name`` is usable as an APP or FACET name (and so as a path part)."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True)
class ModuleShape:
    """What the loader found in a module: its ABI-relevant imports and exports."""

    exports: tuple[str, ...]
    imports: tuple[str, ...]
    has_init: bool
    has_http: bool = False
    #: True when it exports the alarm handler ``facet_alarm``.
    has_alarm: bool = False


# -- load limits --------------------------------------------------------------
# Checked on the wasm binary's section headers before it is compiled (see
# ``wasm.scan_module``): compiling is where a hostile module costs (100,000 empty
# functions, 0.5 MB, took 11 s and 617 MiB to compile here; 10,000 take 1.1 s and
# 87 MiB), and the store limits make anything bigger fail at every instantiation.
# The committed samples (Zig and C, sample_apps/) have at most 196 functions, 31
# types, 4 imports, 6 exports, 1 global, 2 data and 1 element segments, 1 table of
# 13 elements, 128 KiB of initial memory, about 120 KB of code and an 11 KB largest
# function; every limit below leaves them 10x headroom or (where a generated app may
# bundle libraries) much more. ABI.md lists them for app authors.
MAX_TYPES = 1_000  # samples: 31
MAX_IMPORTS = 64  # the ABI has 7 host functions (duplicates are legal)
MAX_FUNCTIONS = 10_000  # samples: 196; the compile cost is ~0.1 ms and ~6 KiB each
MAX_FUNCTION_BYTES = 1024 * 1024  # samples: 11 KB; a 6 MB body compiled in 0.7 s, 221 MiB
MAX_CODE_BYTES = 8 * 1024 * 1024  # samples: ~90 KB; all function bodies together
MAX_EXPORTS = 10_000  # samples: 6; enough to export every function
MAX_GLOBALS = 1_000  # samples: 1
MAX_ELEMENT_SEGMENTS = 100  # samples: 1
MAX_DATA_SEGMENTS = 1_000  # samples: 2
MAX_TAGS = 100  # samples: 0 (exception tags)
MAX_TABLES = 4  # samples: 1; also the store's limit on tables
MAX_MEMORIES = 1  # the ABI's one exported memory; also the store's limit
#: Elements per table, declared or grown (the store limit; 8 bytes each). Samples: 13.
MAX_TABLE_ELEMENTS = 100_000
#: Initial linear memory a module may declare: the largest memory quota. Whether it
#: fits the facet's own quota is checked before each instantiation.
MAX_MEMORY_MIN_BYTES = 4 * 1024**3
