"""Operator input that no command can mean: NUL bytes, non-UTF-8 bytes, huge lines (issue 12).

Each must fail with ``usage`` (exit status 2) or ``bad_request`` (1) and a clear message,
never with a traceback. Subprocess cases pass raw bytes with ``os.fsencode``, as a shell would.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess

import pytest

from console.commands import MAX_LINE_CHARS, UsageError, parse, run_line, split_line
from console.headless import EXIT_FAILED, EXIT_USAGE
from tests.conftest import COUNTER_WAT, ROOT
from tests.console.test_headless import FACETS, run


def facets(data, *args: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACETS_DATA": str(data)}
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in (*FACETS, *args)]
    return subprocess.run(argv, input=stdin, capture_output=True, cwd=ROOT, env=env, timeout=120)


def one_failure(proc: subprocess.CompletedProcess, status: int, code: str) -> dict:
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stdout.decode("ascii").splitlines()  # ensure_ascii: strict, printable JSON
    result = json.loads(lines[-1])
    assert result["ok"] is False and result["error"]["code"] == code, result
    assert result["error"]["message"]
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = tmp_path_factory.mktemp("input") / "d"
    assert facets(data, "load", str(COUNTER_WAT)).returncode == 0
    return data


@pytest.mark.parametrize(
    "args",
    [
        [b"call", b"counter/a", b"\xff\xfe"],  # the body
        [b"call", b"counter/\xff"],  # the target
        [b"quota", b"*", b"fuel=\xff"],
        [b"sql", b"counter/a", b"SELECT '\xff'"],
        [b"export", b"counter/a", b"/tmp/\xff.sqlite3"],
        [b"load", b"/tmp/\xc3(.wat"],
        [b"rows", b"counter/a", b"counter", b"where=\xe2\x82"],
        [b"logs", b"search=\xff"],
    ],
)
@pytest.mark.parametrize("as_json", [True, False])
def test_non_utf8_arguments_are_a_usage_error(data, args, as_json):
    proc = facets(data, *args, *([b"--json"] if as_json else []))
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode == EXIT_USAGE, (proc.stdout, proc.stderr)
    if as_json:
        result = one_failure(proc, EXIT_USAGE, "usage")
        assert "UTF-8" in result["error"]["message"]
    else:
        assert b"[usage]" in proc.stdout and b"UTF-8" in proc.stdout


@pytest.mark.parametrize(
    "script",
    [
        b"call counter/a\x00/b\n",
        b"call counter/a '\x00'\n",
        b"export counter/a /tmp/x\x00y\n",
        b"load /tmp/x\x00y\n",
        b"call counter/a\ncall counter/a '\xff'\n",  # not UTF-8 (line 2)
        b"# \xc3\x28 a comment is still bytes that are not UTF-8\n",
    ],
)
@pytest.mark.parametrize("source", ["stdin", "file"])
def test_scripts_with_nul_or_non_utf8_bytes_run_nothing(data, tmp_path, script, source):
    before = json.loads(facets(data, "usage", "counter", "--json").stdout)["usage"]["requests"]
    if source == "stdin":
        proc = facets(data, "run", "-", stdin=script)
    else:
        path = tmp_path / "s.facets"
        path.write_bytes(script)
        proc = facets(data, "run", str(path))
    result = one_failure(proc, EXIT_USAGE, "usage")
    assert "NUL" in result["error"]["message"] or "UTF-8" in result["error"]["message"]
    assert "line" in result["error"]["message"]
    after = json.loads(facets(data, "usage", "counter", "--json").stdout)["usage"]["requests"]
    assert after == before  # the whole script was refused


def test_a_script_path_that_is_not_utf8_is_read_as_bytes(data, tmp_path):
    path = os.path.join(os.fsencode(tmp_path), b"\xff.facets")
    with open(path, "wb") as f:
        f.write(b"apps\n")
    proc = facets(data, "run", path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"], proc.stderr


@pytest.mark.parametrize(
    "line", ["call counter/a\x00", "export counter/a /tmp/x\x00y", "call counter/a \udcff", "quota * fuel=\ud800"]
)
def test_run_line_and_scripts_refuse_nul_and_surrogates(sup, line):
    sup.load_app(COUNTER_WAT)
    result = run_line(sup, line)
    assert result["error"]["code"] == "usage"
    json.dumps(result, ensure_ascii=False).encode("utf-8")  # printable as strict UTF-8
    status, results = run(sup, f"apps\n{line}\n")
    assert status == EXIT_USAGE and len(results) == 1 and "line 2" in results[0]["error"]["message"]


def test_library_value_errors_map_to_bad_request(sup, monkeypatch):
    sup.load_app(COUNTER_WAT)
    monkeypatch.setattr(sup, "tables", lambda *a: (_ for _ in ()).throw(ValueError("embedded null byte")))
    assert run_line(sup, "tables counter/a")["error"]["code"] == "bad_request"
    assert EXIT_FAILED == 1


# -- long lines (issue 12: parsing a 1 MB line took 16 s) -----------------------------------
def test_a_one_megabyte_line_parses_and_a_longer_one_is_a_usage_error():
    body = "x" * 1_000_000
    cmd = parse(f"call counter/a {body}")
    assert cmd is not None and cmd.args == ["counter/a", body]
    quoted = parse(f"call counter/a '{body}'")
    assert quoted is not None and quoted.args[1] == body
    with pytest.raises(UsageError, match="too long"):
        parse("call counter/a " + "x" * MAX_LINE_CHARS)


def test_a_long_script_line_is_refused_with_usage(sup):
    status, results = run(sup, "apps\ncall counter/a " + "y" * (MAX_LINE_CHARS + 1))
    assert status == EXIT_USAGE and results[0]["error"]["code"] == "usage"
    assert len(json.dumps(results[0])) < 1000  # the refusal does not echo the megabyte


ALPHABET = ["a", "b", " ", "\t", "'", '"', "\\", "#", "=", "\n", "é", "$", "`"]


def test_split_line_agrees_with_shlex_on_random_lines():
    rng = random.Random(12)
    for _ in range(5000):
        line = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 16)))
        try:
            expected: list[str] | str = shlex.split(line, comments=True)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: list[str] | str = split_line(line)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, repr(line)
