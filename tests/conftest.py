"""Shared fixtures: a supervisor on a temporary data directory and the WAT test modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime import Supervisor

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
COUNTER_WAT = ROOT / "sample_apps" / "counter" / "counter.wat"


def fixture(name: str) -> Path:
    return FIXTURES / name


def sql_body(sql: str, *params, op: str = "S") -> bytes:
    """A request for the probe module: forward one statement to the `sql` host call."""
    return (op + json.dumps({"sql": sql, "params": list(params)})).encode()


def sql_reply(result) -> dict:
    """Decode the probe's forwarded `sql` answer."""
    assert result.ok, (result.error, result.message)
    return json.loads(result.response)


@pytest.fixture
def sup(tmp_path):
    with Supervisor(tmp_path / "data", idle_timeout=3600) as supervisor:
        yield supervisor


@pytest.fixture
def probe(sup):
    """The supervisor with the probe module loaded as app `probe`."""
    sup.load_app(fixture("probe.wat"))
    return sup
