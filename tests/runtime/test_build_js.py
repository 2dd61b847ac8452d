"""The JavaScript/TypeScript builder (runtime/_build_js.py): esbuild + componentize-js.

Full builds take ~15 s each, so the few that succeed share module-scoped fixtures; the
syntax-error tests fail in esbuild, before componentize-js runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import _build_js
from runtime.errors import BuildFailed, NotFound, ToolchainMissing

ROOT = Path(__file__).resolve().parent.parent.parent
HOSTILE = ROOT / "tests" / "fixtures" / "components" / "hostile.js"
COMPONENT_HEADER = b"\x00asm\x0d\x00\x01\x00"


def _toolchain_present() -> bool:
    try:
        _build_js.toolchain()
    except ToolchainMissing:
        return False
    return True


needs_toolchain = pytest.mark.skipif(not _toolchain_present(), reason="JS toolchain not installed (make install)")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TS_APP = """\
interface Note { id: number; text: string }

const greeting: string = "hello";
console.log("top-level output is dropped, not a failed build");

function render(notes: Note[]): string {
  return notes.map((n: Note) => `${n.id}:${n.text}`).join(",");
}

export default {
  migrations: ["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)"],
  call(body: string, env: any): string {
    env.sql.run("INSERT INTO notes (text) VALUES (?)", body);
    return greeting + " " + render(env.sql("SELECT id, text FROM notes ORDER BY id") as Note[]);
  },
};
"""


@pytest.fixture(scope="module")
def hostile_component(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _build_js.build(HOSTILE, tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def ts_component(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    source = write(tmp_path_factory.mktemp("ts-src") / "notes.ts", TS_APP)
    return _build_js.build(source, tmp_path_factory.mktemp("ts-build"))


def test_languages_are_decided_by_suffix():
    assert _build_js.SUFFIX_LANGUAGE[".js"] == "javascript"
    assert _build_js.SUFFIX_LANGUAGE[".mjs"] == "javascript"
    assert _build_js.SUFFIX_LANGUAGE[".ts"] == "typescript"


@needs_toolchain
def test_toolchain_names_the_installed_versions():
    text = _build_js.toolchain()
    assert text.startswith("componentize-js ") and ", esbuild " in text
    assert all(part.split()[-1][0].isdigit() for part in text.split(", "))


@needs_toolchain
def test_the_splicers_string_lowering_is_patched_once_and_in_place(tmp_path):
    """The patch keeps the splicer's length (no offset moves), is applied once, and leaves an
    unknown splicer alone."""
    installed = _build_js._node_modules() / _build_js._SPLICER
    nm = tmp_path / "node_modules"
    copy = nm / _build_js._SPLICER
    copy.parent.mkdir(parents=True)
    original = installed.read_bytes().replace(_build_js._FAST_LENGTH, _build_js._SLOW_LENGTH)
    copy.write_bytes(original)
    assert _build_js.ensure_fast_strings(nm) is True
    patched = copy.read_bytes()
    assert len(patched) == len(original) and patched != original
    assert _build_js._FAST_LENGTH in patched and _build_js._SLOW_LENGTH not in patched
    assert _build_js.ensure_fast_strings(nm) is True and copy.read_bytes() == patched  # idempotent
    copy.write_bytes(b"\x00asm unknown splicer")
    assert _build_js.ensure_fast_strings(nm) is False and copy.read_bytes() == b"\x00asm unknown splicer"


@needs_toolchain
def test_builds_a_component(hostile_component: bytes):
    assert hostile_component.startswith(COMPONENT_HEADER)


@needs_toolchain
def test_builds_a_typescript_app_with_type_annotations(ts_component: bytes):
    assert ts_component.startswith(COMPONENT_HEADER)


@needs_toolchain
@pytest.mark.parametrize(
    "name, text, line",
    [
        ("app.js", "export default {\n  call(body) {\n    return body +;\n  },\n};\n", 3),
        ("app.mjs", "const a = 1;\nconst a = 2;\nexport default { call: () => String(a) };\n", 2),
        (
            "app.ts",
            "type T = { a: number };\nconst x: T = { a: 1 };\n\nexport default {\n  call(b: string): string {\n"
            "    return b ) ;\n  },\n};\n",
            6,
        ),
    ],
)
def test_a_syntax_error_names_the_users_file_and_line(tmp_path: Path, name: str, text: str, line: int):
    source = write(tmp_path / "src" / name, text)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(BuildFailed) as caught:
        _build_js.build(source, workdir)
    assert caught.value.file == str(source)
    assert caught.value.line == line
    assert caught.value.output
    assert not (workdir / "app.wasm").exists()  # failed in esbuild, componentize-js never ran
    # inputs() refuses it the same way (the cache key cannot be computed for it).
    with pytest.raises(BuildFailed) as again:
        _build_js.inputs(source)
    assert (again.value.file, again.value.line) == (str(source), line)


@needs_toolchain
def test_an_error_in_an_imported_module_names_that_module(tmp_path: Path):
    write(tmp_path / "lib.js", "export const f = () => {\n  return (;\n};\n")
    source = write(tmp_path / "app.js", 'import { f } from "./lib.js";\nexport default { call: f };\n')
    with pytest.raises(BuildFailed) as caught:
        _build_js.inputs(source)
    assert caught.value.file is not None and Path(caught.value.file).name == "lib.js"
    assert caught.value.line == 2


@needs_toolchain
def test_an_unresolvable_import_fails_the_build(tmp_path: Path):
    source = write(tmp_path / "app.js", 'import x from "./missing.js";\nexport default { call: () => x };\n')
    with pytest.raises(BuildFailed) as caught:
        _build_js.inputs(source)
    assert caught.value.file == str(source) and caught.value.line == 1


@needs_toolchain
def test_the_build_reads_no_file_outside_the_apps_directory(tmp_path: Path):
    source = write(tmp_path / "app" / "app.js", 'import x from "/etc/passwd";\nexport default { call: () => x };\n')
    with pytest.raises(BuildFailed) as caught:
        _build_js.inputs(source)
    assert "outside the app's directory" in caught.value.message
    assert "root:" not in caught.value.output


@needs_toolchain
def test_top_level_code_that_throws_fails_the_build_with_its_message(tmp_path: Path):
    text = "const table = {};\n\nfunction boom() {\n  throw new Error('top-level boom');\n}\nboom();\n"
    source = write(tmp_path / "src" / "app.js", text + "export default { call: () => 'x' };\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(BuildFailed) as caught:
        _build_js.build(source, workdir)
    assert "top-level boom" in caught.value.message
    assert caught.value.file == str(source)
    assert caught.value.line == 4


@needs_toolchain
def test_top_level_use_of_the_clock_fails_the_build_at_the_users_line(tmp_path: Path):
    # The host is not there at build time: the SDK says so rather than freezing the build's time.
    source = write(
        tmp_path / "app.js", "const x = 1;\nconst started = Date.now();\nexport default { call: () => 'x' };\n"
    )
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(BuildFailed) as caught:
        _build_js.build(source, workdir)
    assert "Date.now()" in caught.value.message and "top-level" in caught.value.message
    assert (caught.value.file, caught.value.line) == (str(source), 2)


@needs_toolchain
def test_inputs_are_deterministic_and_follow_the_source(tmp_path: Path):
    source = write(tmp_path / "app.js", "export default { call: (b) => 'one:' + b };\n")
    first = _build_js.inputs(source)
    assert first == _build_js.inputs(source)
    write(tmp_path / "app.js", "export default { call: (b) => 'two:' + b };\n")
    assert _build_js.inputs(source) != first


@needs_toolchain
def test_inputs_follow_an_imported_module(tmp_path: Path):
    lib = write(tmp_path / "lib.js", "export const word = 'one';\n")
    source = write(tmp_path / "app.js", 'import { word } from "./lib.js";\nexport default { call: () => word };\n')
    first = _build_js.inputs(source)
    lib.write_text("export const word = 'two';\n", encoding="utf-8")
    assert _build_js.inputs(source) != first


@needs_toolchain
def test_inputs_of_typescript_ignore_nothing_that_runs(tmp_path: Path):
    source = write(tmp_path / "app.ts", TS_APP)
    first = _build_js.inputs(source)
    write(tmp_path / "app.ts", TS_APP.replace('"hello"', '"bonjour"'))
    assert _build_js.inputs(source) != first


def test_a_missing_source_is_not_found(tmp_path: Path):
    with pytest.raises(NotFound):
        _build_js.inputs(tmp_path / "nope.js")


def test_a_missing_toolchain_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    empty = tmp_path / "node_modules"
    empty.mkdir()
    monkeypatch.setenv("FACETS_NODE_MODULES", str(empty))
    source = write(tmp_path / "app.js", "export default { call: () => 'x' };\n")
    for attempt in (_build_js.toolchain, lambda: _build_js.inputs(source)):
        with pytest.raises(ToolchainMissing) as caught:
            attempt()
        assert "make install" in caught.value.message
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(ToolchainMissing):
        _build_js.build(source, workdir)
