"""The Python builder (runtime/_build_py.py): componentize-py turns one app module and
the guest SDK into a component; build errors name the user's file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import _build_py
from runtime.errors import BuildFailed, NotFound, ToolchainMissing
from tests.conftest import ROOT

GUESTBOOK = ROOT / "sample_apps" / "guestbook" / "guestbook.py"
COMPONENT_MAGIC = b"\x00asm\x0d\x00\x01\x00"
PAGE = 65536


def toolchain_or_skip() -> str:
    try:
        return _build_py.toolchain()
    except ToolchainMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def guestbook_component(tmp_path_factory) -> bytes:
    toolchain_or_skip()
    return _build_py.build(GUESTBOOK, tmp_path_factory.mktemp("build"))


def _leb(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _memory_minimums(component: bytes) -> list[int]:
    """The initial page counts of the memories the component's core modules define."""
    found = []

    def sections(data: bytes):
        i = 8
        while i < len(data):
            sid = data[i]
            size, i = _leb(data, i + 1)
            yield sid, data[i : i + size]
            i += size

    for sid, module in sections(component):
        if sid != 1:  # a core module
            continue
        for msid, body in sections(module):
            if msid == 5:  # its memory section
                count, j = _leb(body, 0)
                for _ in range(count):
                    flags = body[j]
                    minimum, j = _leb(body, j + 1)
                    if flags & 1:
                        _, j = _leb(body, j)
                    found.append(minimum)
    return found


def test_toolchain_names_the_installed_version():
    assert toolchain_or_skip().startswith("componentize-py ")


def test_build_gives_a_component(guestbook_component):
    assert guestbook_component.startswith(COMPONENT_MAGIC)


def test_initial_memory_fits_the_default_memory_quota(guestbook_component):
    minimums = _memory_minimums(guestbook_component)
    assert minimums, "the component defines no memory"
    assert max(minimums) * PAGE <= 32 * 1024 * 1024


def build_failure(tmp_path, name: str, text: str) -> tuple[Path, BuildFailed]:
    """Build ``text`` as app ``name``, which must fail; its source path and the failure."""
    toolchain_or_skip()
    source = tmp_path / name
    source.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BuildFailed) as caught:
        _build_py.build(source, work)
    return source, caught.value


def test_syntax_error_names_the_file_and_line(tmp_path):
    source, failure = build_failure(
        tmp_path, "broken.py", "import facets\n\n\ndef call(body, env):\n    return body +\n"
    )
    assert failure.file == str(source)
    assert failure.line == 5
    assert "SyntaxError" in str(failure)
    assert "broken.py" in str(failure)


def test_exception_at_import_names_the_file_and_line(tmp_path):
    source, failure = build_failure(
        tmp_path,
        "raises.py",
        "SETTINGS = {}\n"
        "\n"
        "\n"
        "def setting(name):\n"
        "    return SETTINGS[name]\n"
        "\n"
        "\n"
        "LIMIT = setting('limit')\n"
        "\n"
        "\n"
        "def call(body, env):\n"
        "    return body\n",
    )
    assert failure.file == str(source)
    assert failure.line == 5  # where the KeyError was raised, in the user's file
    assert "KeyError" in str(failure) and "limit" in str(failure)
    assert 'File "raises.py", line 8' in failure.output  # the whole traceback, the caller too


def test_packages_of_the_building_python_are_not_bundled(tmp_path):
    """Only the stdlib and the SDK: pytest is installed where the builder runs, not in the app."""
    _, failure = build_failure(tmp_path, "needs.py", "import pytest\n\n\ndef call(body, env):\n    return body\n")
    assert "No module named 'pytest'" in str(failure)
    assert failure.line == 1


def test_inputs_are_deterministic_and_follow_the_source(tmp_path):
    source = tmp_path / "app.py"
    source.write_text("def call(body, env):\n    return body\n")
    first = _build_py.inputs(source)
    assert _build_py.inputs(source) == first
    assert source.read_bytes() in first
    for sdk_file in (_build_py.SDK_PYTHON_DIR / "facets").glob("*.py"):
        assert sdk_file.read_bytes() in first
    source.write_text("def call(body, env):\n    return body + '!'\n")
    assert _build_py.inputs(source) != first
    renamed = tmp_path / "other.py"
    renamed.write_bytes(source.read_bytes())
    assert _build_py.inputs(renamed) != _build_py.inputs(source)  # tracebacks name the file


def test_inputs_of_a_missing_file(tmp_path):
    with pytest.raises(NotFound):
        _build_py.inputs(tmp_path / "nope.py")


def test_missing_toolchain(tmp_path, monkeypatch):
    monkeypatch.setattr(_build_py, "executable", lambda: tmp_path / "bin" / "componentize-py")
    with pytest.raises(ToolchainMissing, match="make install"):
        _build_py.toolchain()
    source = tmp_path / "app.py"
    source.write_text("def call(body, env):\n    return body\n")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ToolchainMissing):
        _build_py.build(source, work)
