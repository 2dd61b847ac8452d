"""The content-addressed app store and the compiled-module cache.

``load`` takes a ``.wasm`` binary (a core module or a component) or ``.wat`` text,
checks it against the facet ABI (v1 for modules, v2 for components), stores the bytes
once as ``DATA/modules/<sha256>.wasm`` and records a new version of the app (loading
the same bytes again is a no-op). Compiled code is cached beside it as
``<sha256>.<engine-key>.cwasm``, keyed by wasmtime version and engine settings, written
atomically and only by the supervisor, so a cold start deserializes (~25 us for a
module, 1-6 ms for a component) instead of compiling (~1 ms and up; 9 s for a 12 MB
JS component). A component's compiled artifact is also kept in the user's build cache
(``runtime.toolchain``), so a new data directory or a later process compiles nothing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import toolchain
from .abi import is_valid_name
from .components import ComponentRuntime, PreparedComponent, is_component
from .control import ControlDB
from .errors import BadModule, BadRequest, NotFound
from .wasm import EngineSettings, Prepared, WasmRuntime

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
    #: "module" (a core module, ABI v1) or "component" (ABI v2).
    kind: str = "module"
    #: What it was written in, as far as the loader knows: "javascript", "typescript",
    #: "python" (built here), "wat", or "wasm" (a binary from elsewhere).
    language: str = "wasm"
    #: The toolchain that built it here ("componentize-js 0.23.0, esbuild 0.25.0"), or "".
    toolchain: str = ""

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
            "kind": self.kind,
            "language": self.language,
            "toolchain": self.toolchain,
        }


@dataclass
class LoadedModule:
    """A compiled, linked module (or component) ready to instantiate."""

    version: AppVersion
    pre: Prepared | PreparedComponent  # opaque outside the seams
    runtime: WasmRuntime | ComponentRuntime

    def instantiate(self, *, fuel: int, memory_limit: int, timeout_ms: int) -> Any:
        """A new instance in its own store (``GuestInstance`` or ``ComponentInstance``,
        which ``FacetSlot`` drives alike); raises ``GuestFault``."""
        return self.runtime.instantiate(self.pre, fuel=fuel, memory_limit=memory_limit, timeout_ms=timeout_ms)  # type: ignore[arg-type]


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
        kind=row.get("kind") or "module",
        language=row.get("language") or ("wat" if str(row["source"]).endswith(".wat") else "wasm"),
        toolchain=row.get("toolchain") or "",
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
        self._components_runtime: ComponentRuntime | None = None
        self._lock = threading.Lock()
        self._pre_by_sha: dict[str, Prepared | PreparedComponent] = {}
        #: (app, version) -> its module, compiled and linked (each version a facet runs).
        self._loaded: dict[tuple[str, int], LoadedModule] = {}
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

    @property
    def components(self) -> ComponentRuntime:
        """The component seam, made on first use (a linker with WASI and the host)."""
        if self._components_runtime is None:
            self._components_runtime = ComponentRuntime(self._wasm)
        return self._components_runtime

    def load(
        self,
        data: bytes,
        name: str,
        source: str = "",
        *,
        language: str | None = None,
        toolchain_version: str = "",
        progress: toolchain.Progress | None = None,
    ) -> tuple[AppVersion, bool]:
        """Validate and store ``data`` as the newest version of ``name``.

        Returns the version and whether it is new (False: these exact bytes
        already are the app's current version).
        """
        if not is_valid_name(name):
            raise BadRequest(f"bad app name {name!r}: expected [a-z0-9][a-z0-9_-]{{0,62}}")
        if len(data) > MAX_MODULE_BYTES:
            raise BadModule(f"module is {len(data):,} bytes; modules are limited to {MAX_MODULE_BYTES:,}")
        if is_component(data):
            return self._load_component(data, name, source, language or "wasm", toolchain_version, progress)
        wasm = self.to_wasm(data)
        sha = hashlib.sha256(wasm).hexdigest()
        module = self._wasm.compile(wasm)
        shape = self._wasm.inspect(module)
        with self._lock:
            # The directory may have been deleted under us (restored data dir, an operator):
            # loading the same bytes again is how its files are put back.
            self._dir.mkdir(parents=True, exist_ok=True)
            self._store_file(self._dir / f"{sha}.wasm", wasm)
            if not self._cache_path(sha).exists():
                self._store_file(self._cache_path(sha), self._wasm.serialize(module))
            if sha not in self._pre_by_sha:
                self._pre_by_sha[sha] = self._wasm.prepare(module)
            kind_language = language or ("wasm" if data.startswith(_WASM_MAGIC) else "wat")
            return self._add_version(
                name, sha, len(wasm), shape.exports, shape.imports, source, "module", kind_language, ""
            )

    def _load_component(
        self,
        data: bytes,
        name: str,
        source: str,
        language: str,
        toolchain_version: str,
        progress: toolchain.Progress | None,
    ) -> tuple[AppVersion, bool]:
        sha = hashlib.sha256(data).hexdigest()
        component = self._compiled_component(sha, data, progress)
        shape = self.components.inspect(component)
        with self._lock:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._store_file(self._dir / f"{sha}.wasm", data)
            if sha not in self._pre_by_sha:
                self._pre_by_sha[sha] = self.components.prepare(component, shape, data)
            return self._add_version(
                name, sha, len(data), shape.exports, shape.imports, source, "component", language, toolchain_version
            )

    def _compiled_component(self, sha: str, data: bytes, progress: toolchain.Progress | None) -> Any:
        """The compiled component, from this data directory's cache, else the user's shared
        cache (copied into this one), else compiled now (and written to both). Reading a
        31 MB artifact takes 1-6 ms; serializing one again takes ~0.3 s, so files are copied."""
        own = self._cache_path(sha)
        shared = toolchain.cache_dir() / "compiled" / own.name
        for path in (own, shared):
            if not path.is_file():
                continue
            component = self.components.deserialize_file(str(path))
            if component is None:
                continue
            if path is shared and not self._readonly:
                try:
                    self._dir.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(shared, own)
                except OSError:
                    pass  # the shared cache is read again next time
            if progress is not None:
                progress(toolchain.BuildProgress("compile", "wasmtime", 1.0, 0.0, cached=True))
            return component
        paths = [shared] if self._readonly else [shared, own]
        artifact = _compile_into(self.components, data, paths, progress)
        return self.components.deserialize(artifact)

    def _add_version(
        self,
        name: str,
        sha: str,
        size: int,
        exports: tuple[str, ...],
        imports: tuple[str, ...],
        source: str,
        kind: str,
        language: str,
        toolchain_version: str,
    ) -> tuple[AppVersion, bool]:
        """Record a new version (the store's lock held); the current one if ``sha`` is it."""
        current = self._current.get(name)
        if current is not None and current.sha256 == sha:
            return current, False
        version = AppVersion(
            app=name,
            version=(current.version + 1) if current else 1,
            sha256=sha,
            size=size,
            exports=exports,
            imports=imports,
            loaded_at=time.time(),
            source=source,
            kind=kind,
            language=language,
            toolchain=toolchain_version,
        )
        self._control.add_app_version(version.as_dict())
        self._current[name] = version
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

    def version(self, app: str, version: int) -> AppVersion:
        """One stored version of ``app``; ``NotFound`` if it has none such."""
        current = self.current(app)
        if version == current.version:
            return current
        for candidate in self.versions(app):
            if candidate.version == version:
                return candidate
        raise NotFound(f"{app} has no version {version}")

    def module(self, app: str, version: int = 0) -> LoadedModule:
        """Version ``version`` of ``app`` (0: the latest), compiled and linked (from memory,
        the cache, or compiled)."""
        loaded = self._loaded.get((app, version))
        if loaded is not None:
            return loaded
        stored = self.version(app, version) if version else self.current(app)
        with self._lock:
            pre = self._pre_by_sha.get(stored.sha256)
            if pre is None:
                pre = self._pre_by_sha[stored.sha256] = self._prepare_stored(stored)
            runtime: WasmRuntime | ComponentRuntime = (
                self.components if isinstance(pre, PreparedComponent) else self._wasm
            )
            loaded = LoadedModule(stored, pre, runtime)
            self._loaded[(app, stored.version)] = loaded
            return loaded

    def _prepare_stored(self, version: AppVersion) -> Prepared | PreparedComponent:
        """Prepare a stored version from the compiled cache, recompiling once when the cache
        is missing or from another engine build."""
        if version.kind == "component":
            data = self._read_module(version)
            component = self.components.deserialize_file(str(self._cache_path(version.sha256)))
            if component is None:
                component = self._compiled_component(version.sha256, data, None)
            return self.components.prepare(component, self.components.inspect(component), data)
        module = self._wasm.deserialize_file(str(self._cache_path(version.sha256)))
        if module is None:
            module = self._wasm.compile(self._read_module(version))
            self._cache(version.sha256, module)
        return self._wasm.prepare(module)

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


def _link_or_copy(source: Path, target: Path) -> None:
    """Put ``source``'s bytes at ``target`` atomically: a hard link when both are on one file
    system (a 31 MB artifact, in no time), else a copy. Cache files are replaced, never
    written in place, so a link never sees a change."""
    tmp = target.with_suffix(target.suffix + f".tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        AppStore._store_file(tmp, source.read_bytes())
    os.replace(tmp, target)


def _compile_into(
    components: ComponentRuntime, data: bytes, paths: list[Path], progress: toolchain.Progress | None
) -> bytes:
    """Compile a component (its progress reported), write the artifact to each of ``paths``
    (best effort: without one the next process compiles again, slower but correct) and
    return it."""
    artifact = toolchain.run_with_progress(
        lambda: components.compile_artifact(data),
        step="compile",
        detail=f"wasmtime {len(data) / 1e6:.1f} MB",
        estimate="compile",
        progress=progress,
        timings=toolchain.Timings(toolchain.cache_dir()),
    )
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            AppStore._store_file(path, artifact)
        except OSError:
            pass
    if progress is not None:
        progress(toolchain.BuildProgress("compile", "wasmtime", 1.0, 0.0))
    return artifact


def precompile(path: str | os.PathLike[str], *, progress: toolchain.Progress | None = None) -> toolchain.Built:
    """Build a JS/TS/Python source and compile the component into the user's shared cache,
    without a data directory: what a ``facets load`` sent to another process's supervisor
    does first, here, where its progress can be shown (the owner then finds both caches
    warm). Compiled with the default engine settings, the ones ``facets`` runs with."""
    built = toolchain.build(path, progress=progress)
    wasm = WasmRuntime(EngineSettings())
    try:
        components = ComponentRuntime(wasm)
        key = EngineSettings().cache_key()
        sha = hashlib.sha256(built.component).hexdigest()
        shared = toolchain.cache_dir() / "compiled" / f"{sha}.{key}.cwasm"
        if shared.is_file() and components.deserialize_file(str(shared)) is not None:
            if progress is not None:
                progress(toolchain.BuildProgress("compile", "wasmtime", 1.0, 0.0, cached=True))
            return built
        _compile_into(components, built.component, [shared], progress)
        return built
    finally:
        wasm.close()
