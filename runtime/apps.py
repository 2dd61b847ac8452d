"""The content-addressed app store and the compiled-module cache.

``load`` takes a ``.wasm`` binary or ``.wat`` text, checks it against the facet
ABI, stores the bytes once as ``DATA/modules/<sha256>.wasm`` and records a new
version of the app (loading the same bytes again is a no-op). Compiled code is
cached beside it as ``<sha256>.<engine-key>.cwasm``, keyed by wasmtime version
and engine settings, written atomically and only by the supervisor, so a cold
start deserializes (~25 us) instead of compiling (~1 ms and up).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .abi import is_valid_name
from .control import ControlDB
from .errors import BadModule, BadRequest, NotFound
from .wasm import Prepared, WasmRuntime

MAX_MODULE_BYTES = 64 * 1024 * 1024
_WASM_MAGIC = b"\x00asm"


@dataclass(frozen=True)
class AppVersion:
    """One loaded version of an app."""

    app: str
    version: int
    sha256: str
    size: int
    exports: tuple[str, ...]
    imports: tuple[str, ...]
    loaded_at: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "exports": list(self.exports),
            "imports": list(self.imports),
            "loaded_at": self.loaded_at,
            "source": self.source,
        }


@dataclass
class LoadedModule:
    """A compiled, linked module ready to instantiate."""

    version: AppVersion
    pre: Prepared  # opaque outside the seam


def _row_to_version(row: dict[str, Any]) -> AppVersion:
    return AppVersion(
        app=row["app"],
        version=row["version"],
        sha256=row["sha256"],
        size=row["size"],
        exports=tuple(row["exports"]),
        imports=tuple(row["imports"]),
        loaded_at=row["loaded_at"],
        source=row["source"],
    )


class AppStore:
    """The apps of one data directory. With ``readonly`` it writes nothing: no ``modules/``
    directory is made and a missing compiled cache is compiled in memory only."""

    def __init__(self, data_dir: Path, control: ControlDB, wasm: WasmRuntime, *, readonly: bool = False) -> None:
        self._dir = data_dir / "modules"
        self._readonly = readonly
        if not readonly:
            self._dir.mkdir(parents=True, exist_ok=True)
        self._control = control
        self._wasm = wasm
        self._lock = threading.Lock()
        self._pre_by_sha: dict[str, Prepared] = {}
        self._loaded: dict[str, LoadedModule] = {}
        self._current: dict[str, AppVersion] = {}
        for name in control.app_names():
            latest = control.latest_version(name)
            if latest:
                self._current[name] = _row_to_version(latest)

    # -- loading ----------------------------------------------------------------
    @staticmethod
    def read_source(path: str | os.PathLike) -> bytes:
        p = Path(path)
        if not p.is_file():
            raise NotFound(f"no module file at {str(p)!r}")
        size = p.stat().st_size
        if size > MAX_MODULE_BYTES:
            raise BadModule(f"{p.name} is {size} bytes; modules are limited to {MAX_MODULE_BYTES}")
        return p.read_bytes()

    @staticmethod
    def default_name(path: str | os.PathLike) -> str:
        stem = Path(path).name.split(".")[0].lower().replace(" ", "-")
        if not is_valid_name(stem):
            raise BadRequest(f"cannot use {stem!r} as an app name; pass a name matching [a-z0-9][a-z0-9_-]{{0,62}}")
        return stem

    def to_wasm(self, data: bytes) -> bytes:
        if data.startswith(_WASM_MAGIC):
            return data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadModule("neither a wasm binary (no \\0asm header) nor UTF-8 WAT text") from None
        if not text.lstrip().startswith(("(", ";;")):
            raise BadModule("neither a wasm binary (no \\0asm header) nor WAT text")
        return self._wasm.wat_to_wasm(text)

    def load(self, data: bytes, name: str, source: str = "") -> tuple[AppVersion, bool]:
        """Validate and store ``data`` as the newest version of ``name``.

        Returns the version and whether it is new (False: these exact bytes
        already are the app's current version).
        """
        if not is_valid_name(name):
            raise BadRequest(f"bad app name {name!r}: expected [a-z0-9][a-z0-9_-]{{0,62}}")
        if len(data) > MAX_MODULE_BYTES:
            raise BadModule(f"module is {len(data):,} bytes; modules are limited to {MAX_MODULE_BYTES:,}")
        wasm = self.to_wasm(data)
        sha = hashlib.sha256(wasm).hexdigest()
        module = self._wasm.compile(wasm)
        shape = self._wasm.inspect(module)
        with self._lock:
            current = self._current.get(name)
            # The directory may have been deleted under us (restored data dir, an operator):
            # loading the same bytes again is how its files are put back.
            self._dir.mkdir(parents=True, exist_ok=True)
            self._store_file(self._dir / f"{sha}.wasm", wasm)
            if not self._cache_path(sha).exists():
                self._store_file(self._cache_path(sha), self._wasm.serialize(module))
            if current is not None and current.sha256 == sha:
                return current, False
            version = AppVersion(
                app=name,
                version=(current.version + 1) if current else 1,
                sha256=sha,
                size=len(wasm),
                exports=shape.exports,
                imports=shape.imports,
                loaded_at=time.time(),
                source=source,
            )
            row = version.as_dict()
            self._control.add_app_version(row)
            self._current[name] = version
            if sha not in self._pre_by_sha:
                self._pre_by_sha[sha] = self._wasm.prepare(module)
            self._loaded.pop(name, None)
            return version, True

    @staticmethod
    def _store_file(path: Path, data: bytes) -> None:
        if path.exists():
            return
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _cache_path(self, sha: str) -> Path:
        return self._dir / f"{sha}.{self._wasm.cache_key}.cwasm"

    # -- lookups ------------------------------------------------------------------
    def current(self, app: str) -> AppVersion:
        version = self._current.get(app)
        if version is None:
            raise NotFound(f"no app named {app!r}; load it first")
        return version

    def has(self, app: str) -> bool:
        return app in self._current

    def names(self) -> list[str]:
        return sorted(self._current)

    def versions(self, app: str) -> list[AppVersion]:
        self.current(app)
        return [_row_to_version(r) for r in self._control.app_versions(app)]

    def module(self, app: str) -> LoadedModule:
        """The current version of ``app``, compiled and linked (from memory, the cache, or compiled)."""
        loaded = self._loaded.get(app)
        if loaded is not None:
            return loaded
        version = self.current(app)
        with self._lock:
            pre = self._pre_by_sha.get(version.sha256)
            if pre is None:
                module = self._wasm.deserialize_file(str(self._cache_path(version.sha256)))
                if module is None:  # missing or from another engine build: recompile once
                    module = self._wasm.compile(self._read_module(version))
                    self._cache(version.sha256, module)
                pre = self._pre_by_sha[version.sha256] = self._wasm.prepare(module)
            loaded = self._loaded[app] = LoadedModule(version, pre)
            return loaded

    def _read_module(self, version: AppVersion) -> bytes:
        """The stored bytes of ``version``; ``BadModule`` naming the file when they are gone
        (an operator deleted ``DATA/modules/``, a data directory restored without it) or
        damaged, so the caller gets a coded failure and everyone else is served on."""
        path = self._dir / f"{version.sha256}.wasm"
        try:
            wasm = path.read_bytes()
        except OSError as exc:
            raise BadModule(
                f"cannot read {path} (module of {version.app} version {version.version}): "
                f"{exc.strerror or exc}; load the app again"
            ) from None
        if hashlib.sha256(wasm).hexdigest() != version.sha256:
            raise BadModule(
                f"{path} (module of {version.app} version {version.version}) does not "
                "match its sha256: the file is damaged; load the app again"
            )
        return wasm

    def _cache(self, sha: str, module: Any) -> None:
        """Write the compiled cache of ``sha``; best effort: without it the next cold
        process compiles again, which is slower but correct."""
        if self._readonly:
            return
        cache = self._cache_path(sha)
        try:
            cache.unlink(missing_ok=True)
            self._store_file(cache, self._wasm.serialize(module))
        except OSError:
            pass
