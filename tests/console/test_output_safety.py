"""Every JSON the CLI and scripts print is strict; hostile guest answers never crash output (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from console.commands import render, run_line
from console.format import MAX_JSON_DEPTH, dumps, parse_response
from console.headless import EXIT_OK
from console.render import pretty_response
from tests.conftest import ROOT, fixture
from tests.console.test_headless import FACETS, run


def strict(text: str):
    """json.loads that refuses the NaN/Infinity tokens Python would otherwise accept."""

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


DEEP = "[" * 100_000 + "]" * 100_000


def test_non_finite_numbers_are_never_printed_as_bare_tokens(probe):
    status, results = run(probe, "call probe/x 'E[1e999, -1e999, 2.5]'\ncall probe/x 'E[NaN, Infinity]'")
    assert status == EXIT_OK
    assert results[0]["response"] == [None, None, 2.5]  # out-of-range numbers: null
    assert results[1]["response"] == "[NaN, Infinity]"  # not JSON at all: text
    assert dumps({"a": [float("nan"), {"b": float("inf")}], "c": 1.5}) == '{"a": [null, {"b": null}], "c": 1.5}'


def test_the_cli_prints_strict_json(tmp_path):
    env = {**os.environ, "FACETS_DATA": str(tmp_path / "d")}
    script = f"load {fixture('probe.wat')}\ncall probe/x 'E[1e999, 2]'\ncall probe/x 'E{DEEP}'\n"
    proc = subprocess.run(
        [*FACETS, "run", "-"], input=script, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    results = [strict(line) for line in proc.stdout.splitlines()]
    assert results[1]["response"] == [None, 2]
    assert results[2]["response"] == DEEP
    one = subprocess.run(
        [*FACETS, "call", "probe/x", "E[1e999]", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert strict(one.stdout)["response"] == [None]
    deep_arg = "[" * 50_000 + "]" * 50_000  # one argv string is limited to 128 KiB
    table = subprocess.run(
        [*FACETS, "call", "probe/x", "E" + deep_arg], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert table.returncode == 0 and "Traceback" not in table.stderr, table.stderr[-2000:]


def test_a_deeply_nested_answer_is_shown_as_text_everywhere(probe):
    result = run_line(probe, f"call probe/x 'E{DEEP}'")
    assert result["ok"] and result["response"] == DEEP
    render(result)  # the Rich view
    assert pretty_response(DEEP.encode()) == DEEP  # what the console's Call tab can show
    assert strict(dumps(result))["response"] == DEEP


@pytest.mark.parametrize("depth, is_json", [(MAX_JSON_DEPTH, True), (MAX_JSON_DEPTH + 1, False)])
def test_the_depth_limit(depth, is_json):
    text = "[" * depth + "]" * depth
    value = parse_response(text.encode())
    assert isinstance(value, list) is is_json
    nested = '{"a": "[[[[[[", "b": ' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    assert isinstance(parse_response(nested.encode()), dict)  # brackets inside strings do not count
    assert pretty_response(b'{"a": [1, 2]}') == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert pretty_response(b"\xffnot utf-8") == "\ufffdnot utf-8"
