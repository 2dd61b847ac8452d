"""The ABI page's v2 examples (sample_apps/ABI.md, "The SDKs") run as printed: each is cut
out of the page, built into a component and asked what the page says it answers."""

from __future__ import annotations

import json
import re

import pytest

from runtime import HttpRequest
from tests.conftest import ROOT

PAGE = (ROOT / "sample_apps" / "ABI.md").read_text()
V2 = PAGE[PAGE.index("# ABI v2") :]


def example(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", V2, re.S)
    assert len(blocks) == 1, f"expected one {language} example on the page"
    return blocks[0]


@pytest.mark.parametrize("language, suffix", [("js", ".js"), ("python", ".py")])
def test_the_sdk_examples_store_and_list_notes(sup, tmp_path, language, suffix):
    source = tmp_path / f"notes{suffix}"
    source.write_text(example(language))
    version = sup.load_app(source, "notes")
    assert version.kind == "component"
    created = sup.fetch("notes/a", HttpRequest("POST", "/", body=b"buy milk"))
    assert created.ok, created.message
    assert created.http.status == 201 and json.loads(created.http.body) == {"id": 1}
    sup.fetch("notes/a", HttpRequest("POST", "/", body="call mum ✓".encode()))
    listed = sup.fetch("notes/a", HttpRequest("GET", "/"))
    assert listed.http.status == 200
    assert json.loads(listed.http.body) == [{"id": 1, "text": "buy milk"}, {"id": 2, "text": "call mum ✓"}]
