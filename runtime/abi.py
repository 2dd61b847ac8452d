"""The facet ABI v1 as data: export and import names, their signatures, packing.

See ``sample_apps/ABI.md`` for the page app authors read. This module is the single
place the runtime learns those names from; the loader validates a module
against it and the wasm seam binds host functions from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ABI_VERSION = 1

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
}
#: Host functions a module may import from ``facet``; all optional.
HOST_IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sql": (("i32", "i32"), ("i64",)),
    "log": (("i32", "i32", "i32"), ()),
    "now_ms": ((), ("i64",)),
    "random": (("i32", "i32"), ()),
}

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
