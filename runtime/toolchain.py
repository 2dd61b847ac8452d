"""Building JavaScript, TypeScript and Python apps into components, cached by content.

``facets load app.js`` (or ``.ts``, ``.py``) comes here first: the builder of the file's
language (``_build_js``: esbuild + componentize-js; ``_build_py``: componentize-py) turns
it into a component, and ``AppStore.load`` then compiles that once into the compiled
cache, like any ``.wasm``. A build takes 10-30 s (measured here: componentize-js 16 s,
componentize-py 9 s, compiling the result 9 s on two cores), so both steps are cached in
one place shared by every data directory and every ``facets`` process of the user:

    CACHE/builds/<key>.wasm       key = sha256(builder inputs, toolchain version, WIT world)
    CACHE/compiled/<sha>.<engine>.cwasm   written by AppStore, keyed as in DATA/modules

``CACHE`` is ``$FACETS_CACHE``, else ``$XDG_CACHE_HOME/facets``, else ``~/.cache/facets``.
Entries are written atomically (a temporary file, then a rename) and are content-addressed,
so two processes building the same app at once both succeed and agree.

Progress: a build reports ``BuildProgress`` events (step, an estimated fraction, elapsed
seconds) to a callback, from the calling thread while the toolchain runs; the estimate
comes from the last measured duration of that step (``CACHE/timings.json``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import abi
from .errors import BadRequest, NotFound

#: First-build estimates (seconds) before anything was measured on this machine.
_DEFAULT_SECONDS = {"componentize-js": 16.0, "componentize-py": 9.0, "compile": 9.0}
#: How often a running step reports its progress.
PROGRESS_PERIOD = 0.25


@dataclass(frozen=True)
class BuildProgress:
    """One progress report of a build or a compile."""

    #: "build" (the toolchain) or "compile" (wasmtime); "done" once, at the end.
    step: str
    #: What runs, for a person: "componentize-js todo.js".
    detail: str
    #: 0..1, estimated from the last run of this step (None: no estimate).
    fraction: float | None
    elapsed: float
    #: True when this step was answered from the cache.
    cached: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "step": self.step,
            "detail": self.detail,
            "fraction": None if self.fraction is None else round(self.fraction, 3),
            "elapsed": round(self.elapsed, 2),
            "cached": self.cached,
        }


Progress = Callable[[BuildProgress], None]


@dataclass(frozen=True)
class Built:
    """A component built from a source file."""

    component: bytes
    language: str
    toolchain: str
    cached: bool
    seconds: float


def cache_dir() -> Path:
    explicit = os.environ.get("FACETS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "facets"


#: The builder modules, one per toolchain (imported on first use: only a load of a source
#: file needs them).
_BUILDER_MODULES = ("runtime._build_js", "runtime._build_py")


def _builders() -> dict[str, ModuleType]:
    table: dict[str, ModuleType] = {}
    for module_name in _BUILDER_MODULES:
        try:
            builder = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for suffix in builder.SUFFIX_LANGUAGE:
            table[suffix] = builder
    return table


#: Source suffixes a builder takes (checked without importing the builders).
SOURCE_SUFFIXES = (".js", ".mjs", ".ts", ".mts", ".py")


def is_source(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a JS, TypeScript or Python app to build (not a .wasm/.wat)."""
    return Path(path).suffix.lower() in SOURCE_SUFFIXES


def language_of(path: str | os.PathLike[str]) -> str:
    builder = _builders().get(Path(path).suffix.lower())
    if builder is None:
        raise BadRequest(f"{Path(path).name}: not a JavaScript, TypeScript or Python source")
    return str(builder.SUFFIX_LANGUAGE[Path(path).suffix.lower()])


def _wit_digest() -> str:
    digest = hashlib.sha256()
    for wit in sorted(abi.WIT_DIR.glob("*.wit")):
        digest.update(wit.name.encode() + b"\0" + wit.read_bytes() + b"\0")
    return digest.hexdigest()


def _store_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Timings:
    """The last measured seconds of each step on this machine (progress estimates)."""

    def __init__(self, root: Path) -> None:
        self._path = root / "timings.json"
        self._lock = threading.Lock()

    def expected(self, step: str) -> float:
        try:
            value = json.loads(self._path.read_text()).get(step)
        except (OSError, ValueError, AttributeError):
            value = None
        return float(value) if isinstance(value, (int, float)) and value > 0 else _DEFAULT_SECONDS.get(step, 10.0)

    def record(self, step: str, seconds: float) -> None:
        with self._lock:
            try:
                table = json.loads(self._path.read_text())
                if not isinstance(table, dict):
                    table = {}
            except (OSError, ValueError):
                table = {}
            table[step] = round(seconds, 2)
            try:
                _store_atomically(self._path, json.dumps(table).encode())
            except OSError:
                pass  # an estimate only


def run_with_progress(
    work: Callable[[], bytes], *, step: str, detail: str, estimate: str, progress: Progress | None, timings: Timings
) -> bytes:
    """Run ``work`` on a worker thread while this thread reports progress every
    ``PROGRESS_PERIOD``, estimated from the last duration of ``estimate``; then record
    this run's duration. Exceptions from ``work`` are raised here."""
    started = time.monotonic()
    if progress is None:
        result = work()
        timings.record(estimate, time.monotonic() - started)
        return result
    expected = timings.expected(estimate)
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"facets-{estimate}", daemon=True)
    worker.start()
    while True:
        worker.join(PROGRESS_PERIOD)
        elapsed = time.monotonic() - started
        if not worker.is_alive():
            break
        # An estimate never claims to be done before it is: it slows down near the end.
        fraction = min(0.95, elapsed / expected) if elapsed < expected else 0.95 + 0.04 * (1 - expected / elapsed)
        progress(BuildProgress(step, detail, fraction, elapsed))
    if "error" in outcome:
        error = outcome["error"]
        assert isinstance(error, BaseException)
        raise error
    timings.record(estimate, time.monotonic() - started)
    value = outcome["value"]
    assert isinstance(value, bytes)
    return value


def build(path: str | os.PathLike[str], *, progress: Progress | None = None) -> Built:
    """Build the app at ``path`` into a component, or take it from the cache.

    Raises ``NotFound`` (no such file), ``BuildFailed`` (the toolchain refused the source,
    with file and line), ``ToolchainMissing``.
    """
    source = Path(path)
    if not source.is_file():
        raise NotFound(f"no source file at {str(source)!r}")
    builder = _builders().get(source.suffix.lower())
    if builder is None:
        raise BadRequest(f"{source.name}: not a JavaScript, TypeScript or Python source")
    language = builder.SUFFIX_LANGUAGE[source.suffix.lower()]
    started = time.monotonic()
    toolchain = builder.toolchain()
    inputs = builder.inputs(source)
    key = hashlib.sha256(
        b"\0".join([language.encode(), toolchain.encode(), _wit_digest().encode(), inputs])
    ).hexdigest()
    root = cache_dir()
    cached_path = root / "builds" / f"{key}.wasm"
    tool = toolchain.split(" ", 1)[0]
    if cached_path.is_file():
        data = cached_path.read_bytes()
        if data[:4] == b"\x00asm":
            if progress is not None:
                progress(BuildProgress("build", f"{tool} {source.name}", 1.0, time.monotonic() - started, cached=True))
            return Built(data, language, toolchain, True, time.monotonic() - started)
    timings = Timings(root)
    workdir = Path(tempfile.mkdtemp(prefix="facets-build-"))
    try:
        data = run_with_progress(
            lambda: builder.build(source, workdir),
            step="build",
            detail=f"{tool} {source.name}",
            estimate=tool,
            progress=progress,
            timings=timings,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        _store_atomically(cached_path, data)
    except OSError:
        pass  # without the cache the next load builds again: slower, still correct
    if progress is not None:
        progress(BuildProgress("build", f"{tool} {source.name}", 1.0, time.monotonic() - started))
    return Built(data, language, toolchain, False, time.monotonic() - started)
