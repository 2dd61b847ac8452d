"""Console test fixtures: a supervisor with the sample apps, and a frozen one for snapshots."""

from __future__ import annotations

import random
import time
import types

import pytest
from textual.widgets import Input

import runtime.facet
import runtime.hostcalls
from console.samples import load_samples
from runtime import Supervisor

#: 2026-11-02 12:00:00 UTC: every clock the snapshots could show reads this.
FIXED_TIME = 1793620800.0


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch):
    """No blinking cursor in console tests: a focused input's cursor is drawn or not by a
    0.5 s timer, so a snapshot taken at a different moment differed (test_detail_call_tab
    failed in 4 of 5 runs of test_snapshots.py, test_detail_tabs[o] in 1 of 5)."""
    monkeypatch.setattr(Input, "cursor_blink", False)


@pytest.fixture
def seeded(tmp_path):
    with Supervisor(tmp_path / "data", idle_timeout=3600) as sup:
        load_samples(sup)
        yield sup


@pytest.fixture
def frozen(tmp_path, monkeypatch):
    """Seeded sample apps with deterministic clocks and latencies, for snapshot tests.

    Wall-clock time is pinned (Textual itself never reads ``time.time``), the
    request timer advances exactly 1 ms per request, the time zone is UTC, and
    the guest `random` call is seeded, and the data directory is a relative path so titles
    do not show temp paths.
    """
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "time", lambda: FIXED_TIME)
    ticks = iter(range(10**9))
    fake_clock = types.SimpleNamespace(
        perf_counter=lambda: next(ticks) * 0.0005, monotonic=time.monotonic, time=lambda: FIXED_TIME
    )
    monkeypatch.setattr(runtime.facet, "time", fake_clock)
    # the shortener draws its ids from `random`: make the bytes (and so the fuel) repeatable
    monkeypatch.setattr(runtime.hostcalls, "os", types.SimpleNamespace(urandom=random.Random(7).randbytes))
    with Supervisor("data", idle_timeout=3600) as sup:
        load_samples(sup)
        yield sup
    time.tzset()
