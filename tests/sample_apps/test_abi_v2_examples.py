"""The ABI page's v2 examples (sample_apps/ABI.md, "The SDKs") run as printed: each is cut
out of the page, built into a component and asked what the page says it answers.

The alarm examples are driven at the seam (as tests/runtime/test_alarm_abi.py does): the
request stages its alarm on its context, and the handler is called as the scheduler
would call it when the time has come.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from runtime import HttpRequest, toolchain
from runtime.components import ComponentRuntime
from runtime.storage import FacetDB
from runtime.wasm import WasmRuntime
from tests.conftest import ROOT
from tests.runtime.test_alarm_abi import Alarms, Component

PAGE = (ROOT / "sample_apps" / "ABI.md").read_text()
V2 = PAGE[PAGE.index("# ABI v2") :]
LANGUAGES = [("js", ".js"), ("python", ".py")]


def examples(language: str) -> list[str]:
    """The page's v2 examples in ``language``: the notes app, then the reminders app."""
    blocks = re.findall(rf"```{language}\n(.*?)```", V2, re.S)
    assert len(blocks) == 2, f"expected two {language} examples on the page (notes, reminders)"
    return blocks


@pytest.mark.parametrize("language, suffix", LANGUAGES)
def test_the_sdk_examples_store_and_list_notes(sup, tmp_path, language, suffix):
    source = tmp_path / f"notes{suffix}"
    source.write_text(examples(language)[0])
    version = sup.load_app(source, "notes")
    assert version.kind == "component"
    created = sup.fetch("notes/a", HttpRequest("POST", "/", body=b"buy milk"))
    assert created.ok, created.message
    assert created.http.status == 201 and json.loads(created.http.body) == {"id": 1}
    sup.fetch("notes/a", HttpRequest("POST", "/", body="call mum ✓".encode()))
    listed = sup.fetch("notes/a", HttpRequest("GET", "/"))
    assert listed.http.status == 200
    assert json.loads(listed.http.body) == [{"id": 1, "text": "buy milk"}, {"id": 2, "text": "call mum ✓"}]


@pytest.mark.parametrize("language, suffix", LANGUAGES)
def test_the_sdk_alarm_examples_remind_when_due(tmp_path, language, suffix):
    source = tmp_path / f"reminders{suffix}"
    source.write_text(examples(language)[1])
    wasm = WasmRuntime()
    db = FacetDB(str(tmp_path / "facet.db"))
    try:
        alarms = Alarms()  # the scheduler's store: what committed requests set
        app = Component(ComponentRuntime(wasm), toolchain.build(source).component, db, alarms)
        before = int(time.time() * 1000)
        answer, ctx = app.call("3600000 call mum")
        assert answer == "ok"
        assert isinstance(ctx.alarm_change, int) and before + 3_600_000 <= ctx.alarm_change
        alarms.pending[("app", "f")] = later = ctx.alarm_change
        answer, ctx = app.call("0 buy milk")  # sooner: it replaces the pending alarm
        assert answer == "ok"
        assert isinstance(ctx.alarm_change, int) and before <= ctx.alarm_change < later
        # The scheduler delivers it (a delivered alarm is no longer pending while it runs).
        ctx = app.alarm()
        assert ctx.alarm_change == later  # the next reminder's time
        db.begin()
        sent = db.execute_guest("SELECT text, sent FROM reminders ORDER BY id", [], max_result_bytes=1 << 20).rows
        db.rollback()
        assert sent == [["call mum", 0], ["buy milk", 1]]
    finally:
        db.close()
        wasm.close()
