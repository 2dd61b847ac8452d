"""Build a JavaScript or TypeScript app into a WebAssembly component (ABI v2).

Two steps, both from the project's pinned ``node_modules`` (``make install``):

1. esbuild bundles a generated entry module -- which imports the SDK
   (``sample_apps/sdk/js/facets.js``) and then the user's app -- into one ES module.
   TypeScript is stripped by esbuild's loader. The WIT import ``facets:app/host@2.1.0``
   stays external; ``import ... from "facets"`` in an app is the SDK. esbuild's
   structured errors (file, line) become ``BuildFailed`` pointing into the user's file.
2. componentize-js turns that module into a component of the world ``app``, with every
   WASI feature it can disable disabled. Its wizer pre-initialisation runs the app's
   top-level code; an exception there is a ``BuildFailed`` with the exception's message.

Private: ``runtime.toolchain`` calls ``toolchain``, ``inputs`` and ``build`` and caches
by content hash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .abi import HOST_INTERFACE, SDK_DIR, WIT_DIR, WIT_WORLD
from .errors import BuildFailed, NotFound, ToolchainMissing

LANGUAGE = "javascript"
SUFFIX_LANGUAGE: dict[str, str] = {".js": "javascript", ".mjs": "javascript", ".ts": "typescript"}

#: The guest SDK every app is bundled with.
SDK_FILE = SDK_DIR / "js" / "facets.js"
#: The WIT interface the bundle imports (left to componentize-js).
HOST_MODULE = HOST_INTERFACE
#: What componentize-js leaves out: the component imports nothing but the host interface.
DISABLED_FEATURES = ("stdio", "random", "clocks", "http", "fetch-event")
#: Seconds a toolchain step may take before the build fails.
TIMEOUT = 300
#: Bump when the recipe below changes in a way that changes the component.
RECIPE = "facets-js-build 2"
#: At most this much toolchain text is kept in BuildFailed.output.
MAX_OUTPUT = 8000

_REPO_ROOT = Path(__file__).resolve().parent.parent

# The esbuild step, as a small node program: reads a JSON job on stdin, writes a JSON
# answer ({"errors": [...]} or {"code": "...", "map": "..."}) on stdout.
_BUNDLER = r"""
const path = require("path");
// Only files under the app's directory and the SDK's are read: an app cannot make the
// build read (and show in an error) any other file of the machine.
const confine = (roots) => ({
  name: "facets-confine",
  setup(build) {
    build.onLoad({ filter: /.*/ }, (args) => {
      const inside = roots.some((r) => args.path === r || args.path.startsWith(r + path.sep));
      if (!inside) return { errors: [{ text: `cannot import ${args.path}: outside the app's directory` }] };
      return undefined;
    });
  },
});
let job = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => { job += d; });
process.stdin.on("end", async () => {
  const j = JSON.parse(job);
  const esbuild = require(path.join(j.node_modules, "esbuild"));
  const answer = (v) => process.stdout.write(JSON.stringify(v));
  try {
    const r = await esbuild.build({
      stdin: { contents: j.entry, resolveDir: j.resolve_dir, sourcefile: "<facets-entry>", loader: "js" },
      absWorkingDir: j.resolve_dir,
      bundle: true,
      write: false,
      format: "esm",
      platform: "neutral",
      target: "es2022",
      // A facet has no modules to load at run time (StarlingMonkey traps on import()):
      // esbuild turns a dynamic import it cannot bundle into one that rejects.
      supported: { "dynamic-import": false },
      mainFields: ["module", "main"],
      external: [j.host_module],
      alias: { facets: j.sdk },
      outfile: "bundle.js",
      sourcemap: "external",
      sourcesContent: false,
      legalComments: "none",
      charset: "utf8",
      logLevel: "silent",
      plugins: [confine(j.roots)],
    });
    const out = {};
    for (const f of r.outputFiles) out[f.path.endsWith(".map") ? "map" : "code"] = f.text;
    answer(out);
  } catch (e) {
    if (!e.errors) { answer({ errors: [{ text: String(e && e.stack || e), location: null }] }); return; }
    answer({ errors: e.errors.map((m) => ({ text: m.text, location: m.location })) });
  }
});
"""


def _node_modules() -> Path:
    """The node_modules directory holding componentize-js and esbuild."""
    env = os.environ.get("FACETS_NODE_MODULES")
    return Path(env) if env else _REPO_ROOT / "node_modules"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ToolchainMissing("JavaScript apps need Node.js (node) on PATH, then `make install`")
    return node


def _package_version(package_dir: Path) -> str:
    try:
        data = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ToolchainMissing(
            f"the JavaScript toolchain is not installed ({package_dir} is missing): run `make install`"
        ) from e
    return str(data.get("version", "?"))


def toolchain() -> str:
    """The installed toolchain's versions; raises ToolchainMissing when it is absent."""
    nm = _node_modules()
    cjs = _package_version(nm / "@bytecodealliance" / "componentize-js")
    esb = _package_version(nm / "esbuild")
    _node()
    patched = "+facets-utf8" if ensure_fast_strings(nm) else ""
    return f"componentize-js {cjs}{patched}, esbuild {esb}"


# componentize-js's bindings lower every string a guest hands the host (a response, a log
# line, SQL text) with a function that first counts its UTF-8 length in a JS loop over
# charCodeAt. StarlingMonkey interprets it (no JIT): ~2,570 fuel per byte, 0.34 s per MB,
# measured here, so a 100 KB page cost 257M fuel. The loop's text lives in the splicer's
# data section; it is replaced by one of the same length that lets the native TextEncoder
# count, after which the function's own encodeInto writes the bytes as before (the
# ``codepoints`` it also returned is read nowhere in the generated bindings).
_SPLICER = Path("@bytecodealliance") / "componentize-js" / "lib" / "spidermonkey-embedding-splicer.core.wasm"
_SLOW_LENGTH = b"""// Compute the exact allocation size up front. Some older preview1
                          // adapters only support an initial allocation, not a subsequent shrink.
                          let len = 0;
                          let codepoints = 0;
                          for (let i = 0; i < s.length; i++) {
                              const ch = s.charCodeAt(i);
                              codepoints++;
                              if (ch < 0x80) { len += 1; }
                              else if (ch < 0x800) { len += 2; }
                              else if (ch >= 0xd800 && ch <= 0xdbff &&
                                       i + 1 < s.length &&
                                       (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
                                  len += 4;
                                  i++;
                              } else { len += 3; }
                          }"""
_FAST_LENGTH = (
    b"// facets: UTF-8 length counted natively (runtime/_build_js.py)\n"
    b"let len = (globalThis.__facetsUtf8 || (globalThis.__facetsUtf8 = new TextEncoder())).encode(s).length;\n"
    b"let codepoints = s.length; // returned, never read by the bindings"
)
_FAST_LENGTH = _FAST_LENGTH + b" " * (len(_SLOW_LENGTH) - len(_FAST_LENGTH))
assert len(_FAST_LENGTH) == len(_SLOW_LENGTH)


def ensure_fast_strings(node_modules: Path) -> bool:
    """Patch the installed splicer's string lowering (see above) once; True when the installed
    splicer has the fast version. Same length, so no offset in the module moves; written to
    a temporary file and renamed. An unknown splicer (another version) is left alone."""
    path = node_modules / _SPLICER
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if _FAST_LENGTH in data:
        return True
    if data.count(_SLOW_LENGTH) != 1:
        return False
    tmp = path.with_name(path.name + f".facets-{os.getpid()}")
    try:
        tmp.write_bytes(data.replace(_SLOW_LENGTH, _FAST_LENGTH))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


def _run_node(cmd: list[str], workdir: Path, stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """A toolchain step: a minimal environment, ``workdir`` as its directory, its output
    captured (never the terminal), at most ``TIMEOUT`` seconds (``TimeoutExpired``)."""
    return subprocess.run(
        cmd,
        input=stdin_text,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=_minimal_env(workdir),
        cwd=workdir,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL if stdin_text is None else None,
    )


def _minimal_env(workdir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
    }


def _neutral(text: str) -> str:
    """Toolchain text with control characters (but newlines and tabs) made visible, and cut."""
    text = "".join(c if c in "\n\t" or (c >= " " and c != "\x7f") else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + "\n[... cut]"


def _entry(source: Path) -> str:
    # The SDK first, so that console, Date and Math.random are the SDK's before the app's
    # top-level code runs; then the app, whose default export (or named exports) it serves.
    return (
        f"import {{ serve }} from {json.dumps(str(SDK_FILE))};\n"
        f"import * as app from {json.dumps(str(source.resolve()))};\n"
        "export const guest = serve(app);\n"
    )


def _check_source(source: Path) -> None:
    if not source.is_file():
        raise NotFound(f"no such file: {source}")
    if source.suffix not in SUFFIX_LANGUAGE:
        raise BuildFailed(f"not a JavaScript or TypeScript file: {source}", file=str(source))


def _bundle(source: Path, scratch: Path) -> tuple[str, str]:
    """esbuild: (bundle code, source map JSON); BuildFailed at the user's file and line."""
    nm = _node_modules()
    toolchain()
    job = {
        "node_modules": str(nm),
        "entry": _entry(source),
        "resolve_dir": str(source.resolve().parent),
        "sdk": str(SDK_FILE),
        "host_module": HOST_MODULE,
        "roots": [str(source.resolve().parent), str(SDK_FILE.parent)],
    }
    try:
        proc = _run_node([_node(), "-e", _BUNDLER], scratch, stdin_text=json.dumps(job))
    except subprocess.TimeoutExpired as e:
        raise BuildFailed(f"esbuild took over {TIMEOUT} s", file=str(source)) from e
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        output = _neutral(proc.stderr + proc.stdout)
        if "Cannot find module" in proc.stderr:
            raise ToolchainMissing(f"esbuild is not installed in {nm}: run `make install`") from None
        raise BuildFailed(f"esbuild failed: {output.strip()[:500]}", file=str(source), output=output) from None
    errors = answer.get("errors")
    if errors:
        raise _esbuild_failure(source, errors)
    return str(answer["code"]), str(answer.get("map", ""))


def _esbuild_failure(source: Path, errors: list[dict[str, object]]) -> BuildFailed:
    lines = []
    first_file: str | None = None
    first_line: int | None = None
    for err in errors:
        loc = err.get("location")
        text = str(err.get("text", ""))
        if isinstance(loc, dict) and loc.get("file"):
            shown = _shown_path(source, str(loc["file"]))
            line = int(loc.get("line") or 0) or None
            col = int(loc.get("column") or 0) + 1
            lines.append(f"{shown}:{line}:{col}: {text}")
            if first_file is None:
                first_file, first_line = shown, line
        else:
            lines.append(text)
    output = _neutral("\n".join(lines))
    message = output.splitlines()[0] if output else "esbuild failed"
    return BuildFailed(message, file=first_file or str(source), line=first_line, output=output)


def _shown_path(source: Path, esbuild_file: str) -> str:
    """esbuild's path (relative to the source's directory) as the operator would name it."""
    resolved = (source.resolve().parent / esbuild_file).resolve()
    if resolved == source.resolve():
        return str(source)
    return str(resolved)


def inputs(source: Path) -> bytes:
    """Every byte the component depends on besides the toolchain: the recipe and the bundle
    (the app, what it imports, the SDK and the entry, as esbuild joined them)."""
    _check_source(source)
    with tempfile.TemporaryDirectory(prefix="facets-js-") as scratch:
        code, _ = _bundle(source, Path(scratch))
    recipe = f"{RECIPE}\nworld {WIT_WORLD}\ndisabled {' '.join(DISABLED_FEATURES)}\n"
    return recipe.encode() + b"\0" + code.encode("utf-8")


def build(source: Path, workdir: Path) -> bytes:
    """The component's bytes; BuildFailed with the toolchain's message, file and line."""
    _check_source(source)
    nm = _node_modules()
    toolchain()
    code, source_map = _bundle(source, workdir)
    bundle = workdir / "bundle.js"
    bundle.write_text(code, encoding="utf-8")
    (workdir / "bundle.js.map").write_text(source_map, encoding="utf-8")
    out = workdir / "app.wasm"
    cli = nm / "@bytecodealliance" / "componentize-js" / "src" / "cli.js"
    if not cli.is_file():
        raise ToolchainMissing(f"componentize-js is not installed in {nm}: run `make install`")
    cmd = [_node(), str(cli), str(bundle), "-w", str(WIT_DIR), "-n", WIT_WORLD, "-d", *DISABLED_FEATURES]
    cmd += ["-o", str(out)]
    try:
        proc = _run_node(cmd, workdir)
    except subprocess.TimeoutExpired as e:
        raise BuildFailed(f"componentize-js took over {TIMEOUT} s", file=str(source)) from e
    if proc.returncode != 0 or not out.is_file():
        raise _componentize_failure(source, proc.stdout + proc.stderr, source_map)
    return out.read_bytes()


def _componentize_failure(source: Path, text: str, source_map: str) -> BuildFailed:
    output = _neutral(text)
    if "Cannot find package" in text or "Cannot find module" in text:
        raise ToolchainMissing(f"the JavaScript toolchain is incomplete ({_first_line(output)}): run `make install`")
    # componentize-js reports an exception in the app's top-level code (run by wizer) as
    # "Exception while evaluating top-level script\nbundle.js:LINE:COL TypeError: ...".
    top = _TOP_LEVEL.search(output)
    if top is None:
        return BuildFailed(f"componentize-js failed: {_first_line(output)}", file=str(source), output=output)
    # The first position in the app's own code: the throw itself, or the app's frame that
    # called into the SDK (e.g. Date.now() at top level).
    line = None
    for m in _BUNDLE_POSITION.finditer(output, top.start()):
        line = _original_line(source_map, int(m.group(1)), source)
        if line is not None:
            break
    return BuildFailed(
        f"the app's top-level code threw while the component was pre-initialised: {top.group(3).strip()[:500]}",
        file=str(source),
        line=line,
        output=output,
    )


_TOP_LEVEL = re.compile(r"Exception while evaluating top-level script\s*\n\S*?bundle\.js:(\d+):(\d+) ([^\n]*)")


_BUNDLE_POSITION = re.compile(r"bundle\.js:(\d+):\d+")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _vlq(segment: str) -> list[int]:
    values: list[int] = []
    value = shift = 0
    for ch in segment:
        digit = _B64[ch]
        value += (digit & 31) << shift
        if digit & 32:
            shift += 5
            continue
        values.append(-(value >> 1) if value & 1 else value >> 1)
        value = shift = 0
    return values


def _original_line(source_map: str, bundle_line: int, source: Path) -> int | None:
    """The 1-based line of ``source`` that the bundle's 1-based ``bundle_line`` came from
    (None when that bundle line is not the app's own code)."""
    try:
        data = json.loads(source_map)
        mappings = str(data["mappings"])
        sources = [str(s) for s in data["sources"]]
    except (ValueError, KeyError, TypeError):
        return None
    src = orig_line = 0
    for index, group in enumerate(mappings.split(";")):
        found: tuple[int, int] | None = None
        for segment in group.split(","):
            if not segment:
                continue
            fields = _vlq(segment)
            if len(fields) >= 4:
                src += fields[1]
                orig_line += fields[2]
                if found is None:
                    found = (src, orig_line)
        if index == bundle_line - 1:
            if found is None or not 0 <= found[0] < len(sources):
                return None
            if (source.resolve().parent / sources[found[0]]).resolve() != source.resolve():
                return None
            return found[1] + 1
    return None
