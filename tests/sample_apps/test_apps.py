"""The sample apps end to end through the supervisor: protocol, bad input, isolation,
upgrades, steady memory, and reproducible builds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from console.samples import SAMPLES, load_samples
from tests.conftest import ROOT

APPS = ROOT / "sample_apps"


def ask(sup, target, body):
    result = sup.call(target, json.dumps(body) if not isinstance(body, (str, bytes)) else body)
    assert result.ok, (result.error, result.message)
    return json.loads(result.response)


@pytest.fixture
def apps(sup):
    for name, path in SAMPLES:
        sup.load_app(path, name)
    return sup


#: The samples with a twin in another language: the protocol tests run against both.
TWINS = {"todo": APPS / "todo" / "todo.js", "guestbook": APPS / "guestbook" / "guestbook.py"}


@pytest.fixture(params=["zig", "components"])
def twin_apps(apps, request):
    """The samples, with todo and guestbook either as their Zig modules or as their JS and
    Python twins (components, built from source on first use, then from the build cache)."""
    if request.param == "components":
        for name, source in TWINS.items():
            assert apps.load_app(source, name).kind == "component"
    return apps


def test_todo_protocol(twin_apps):
    apps = twin_apps
    a = ask(apps, "todo/alice", {"op": "add", "list": "home", "title": "milk"})
    assert a == {"id": 1, "list": "home", "title": "milk", "position": 1, "done": False}
    ask(apps, "todo/alice", {"op": "add", "list": "home", "title": "eggs"})
    ask(apps, "todo/alice", {"op": "add", "list": "home", "title": "bread"})
    ask(apps, "todo/alice", {"op": "add", "list": "work", "title": "report"})
    assert ask(apps, "todo/alice", {"op": "done", "id": 2}) == {"id": 2, "done": True}
    assert ask(apps, "todo/alice", {"op": "move", "id": 3, "position": 1}) == {"id": 3, "position": 1}
    assert ask(apps, "todo/alice", {"op": "rename", "id": 1, "title": "oat milk"})["title"] == "oat milk"
    items = ask(apps, "todo/alice", {"op": "list", "list": "home"})["items"]
    assert [(i["title"], i["done"], i["position"]) for i in items] == [
        ("bread", False, 1),
        ("oat milk", False, 2),
        ("eggs", True, 3),
    ]
    assert ask(apps, "todo/alice", {"op": "undone", "id": 2})["done"] is False
    assert ask(apps, "todo/alice", {"op": "delete", "id": 1}) == {"id": 1, "deleted": True}
    assert ask(apps, "todo/alice", {"op": "lists"})["lists"] == [
        {"name": "home", "items": 2, "done": 0},
        {"name": "work", "items": 1, "done": 0},
    ]
    for bad in (
        {"op": "fly"},
        {"op": "add", "list": "home"},
        {"op": "add", "list": "home", "title": ""},
        {"op": "add", "list": "home", "title": "x" * 501},
        {"op": "done", "id": 99},
        {"op": "list", "list": "nope"},
        {"nothing": 1},
        "not json",
    ):
        assert "error" in ask(apps, "todo/alice", bad), bad


def test_guestbook_paging(twin_apps):
    apps = twin_apps
    for i in range(45):
        ask(apps, "guestbook/lobby", {"op": "sign", "name": f"guest{i}", "message": f"hello {i}"})
    page = ask(apps, "guestbook/lobby", {"op": "list"})
    assert len(page["entries"]) == 20 and page["entries"][0]["name"] == "guest44"
    seen = [e["id"] for e in page["entries"]]
    while page["next"] is not None:
        page = ask(apps, "guestbook/lobby", {"op": "list", "before": page["next"]})
        seen += [e["id"] for e in page["entries"]]
    assert seen == list(range(45, 0, -1))
    assert ask(apps, "guestbook/lobby", {"op": "count"}) == {"count": 45}
    for bad in (
        {"op": "sign", "name": "", "message": "x"},
        {"op": "sign", "name": "x"},
        {"op": "sign", "name": "x", "message": "m" * 2001},
        {"op": "list", "limit": 0},
        {"op": "list", "limit": 101},
        {"op": "erase"},
    ):
        assert "error" in ask(apps, "guestbook/lobby", bad), bad


def test_shortener_random_ids_and_hits(apps):
    a = ask(apps, "shortener/acme", {"op": "shorten", "url": "https://example.com/a"})
    b = ask(apps, "shortener/acme", {"op": "shorten", "url": "https://example.com/b"})
    assert a["new"] and b["new"] and a["id"] != b["id"] and len(a["id"]) == 7
    again = ask(apps, "shortener/acme", {"op": "shorten", "url": "https://example.com/a"})
    assert again == {"id": a["id"], "url": "https://example.com/a", "new": False}
    for _ in range(3):
        ask(apps, "shortener/acme", {"op": "resolve", "id": b["id"]})
    assert ask(apps, "shortener/acme", {"op": "stats", "id": b["id"]})["hits"] == 3
    top = ask(apps, "shortener/acme", {"op": "top"})["links"]
    assert [link["id"] for link in top] == [b["id"], a["id"]]
    for bad in (
        {"op": "shorten", "url": "ftp://x"},
        {"op": "shorten", "url": "https://a b"},
        {"op": "shorten"},
        {"op": "resolve", "id": "nope"},
        {"op": "top", "limit": 1000},
    ):
        assert "error" in ask(apps, "shortener/acme", bad), bad


def test_poll_one_vote_per_voter(apps):
    poll = ask(apps, "poll/team", {"op": "create", "question": "Lunch?", "options": ["pizza", "sushi"]})["poll"]
    assert ask(apps, "poll/team", {"op": "vote", "poll": poll, "voter": "ada", "option": 1})["option"] == 1
    assert ask(apps, "poll/team", {"op": "vote", "poll": poll, "voter": "bob", "option": 1})
    assert ask(apps, "poll/team", {"op": "vote", "poll": poll, "voter": "ada", "option": 0}) == {
        "error": "already voted"
    }
    results = ask(apps, "poll/team", {"op": "results", "poll": poll})
    assert results["options"] == [{"text": "pizza", "votes": 0}, {"text": "sushi", "votes": 2}]
    assert results["total"] == 2 and results["closed"] is False
    ask(apps, "poll/team", {"op": "close", "poll": poll})
    assert ask(apps, "poll/team", {"op": "vote", "poll": poll, "voter": "cy", "option": 0}) == {
        "error": "poll is closed"
    }
    assert ask(apps, "poll/team", {"op": "polls"})["polls"][0]["votes"] == 2
    for bad in (
        {"op": "create", "question": "Q", "options": ["only one"]},
        {"op": "vote", "poll": 99, "voter": "x", "option": 0},
        {"op": "vote", "poll": poll, "voter": "x", "option": 7},
        {"op": "results", "poll": 42},
    ):
        assert "error" in ask(apps, "poll/team", bad), bad


def test_hits_c_app(apps):
    assert ask(apps, "hits/site", {"op": "hit", "path": "/"}) == {"path": "/", "hits": 1}
    assert ask(apps, "hits/site", {"op": "hit", "path": "/"}) == {"path": "/", "hits": 2}
    ask(apps, "hits/site", {"op": "hit", "path": "/about"})
    assert ask(apps, "hits/site", {"op": "get", "path": "/about"})["hits"] == 1
    assert ask(apps, "hits/site", {"op": "top"})["rows"] == [["/", 2], ["/about", 1]]
    for bad in ({"op": "hit", "path": "about"}, {"op": "hit"}, {"op": "zap"}, "garbage"):
        assert "error" in ask(apps, "hits/site", bad), bad


def test_counter_zig_protocol(apps):
    assert ask(apps, "counter/c", "") == {"count": 1}
    assert ask(apps, "counter/c", {"op": "incr", "by": 10}) == {"count": 11}
    assert ask(apps, "counter/c", {"op": "get"})["count"] == 11
    assert ask(apps, "counter/c", {"op": "reset"}) == {"count": 0}
    assert "error" in ask(apps, "counter/c", {"op": "incr", "by": 10**9})


def test_facets_of_one_app_are_isolated(twin_apps):
    apps = twin_apps
    ask(apps, "todo/alice", {"op": "add", "list": "home", "title": "alice's"})
    ask(apps, "todo/bob", {"op": "add", "list": "home", "title": "bob's"})
    assert [i["title"] for i in ask(apps, "todo/alice", {"op": "list", "list": "home"})["items"]] == ["alice's"]
    assert [i["title"] for i in ask(apps, "todo/bob", {"op": "list", "list": "home"})["items"]] == ["bob's"]


def test_upgrade_keeps_data_and_migrates_schema(sup):
    """counter.wat (v1) -> counter.wasm (v2): the count survives, updated_ms appears."""
    sup.load_app(APPS / "counter" / "counter.wat", "counter")
    for _ in range(3):
        sup.call("counter/a")
    assert [c["name"] for c in sup.tables("counter/a")] == ["counter"]
    assert sup.load_app(APPS / "counter" / "counter.wasm", "counter").version == 2
    assert ask(sup, "counter/a", {"op": "incr"}) == {"count": 4}
    assert "updated_ms" in sup.tables("counter/a")[0]["columns"]
    assert sup.query("counter/a", "SELECT version FROM schema_version")["rows"] == [[2]]
    assert any("schema migrated to version 2" in r.message for r in sup.logs("counter/a"))


@pytest.mark.parametrize(
    "target, body",
    [
        ("todo/mem", {"op": "add", "list": "l", "title": "t" * 200}),
        ("guestbook/mem", {"op": "sign", "name": "n", "message": "m" * 200}),
        ("shortener/mem", {"op": "resolve", "id": "missing"}),
        ("poll/mem", {"op": "polls"}),
        ("hits/mem", {"op": "hit", "path": "/x"}),
        ("counter/mem", {"op": "incr"}),
    ],
)
def test_memory_is_steady_over_ten_thousand_requests(apps, target, body):
    apps.set_quotas(target, rate="off")
    payload = json.dumps(body)
    first = apps.call(target, payload)
    assert first.ok
    sizes = []
    for i in range(10_000):
        result = apps.call(target, payload)
        assert result.ok
        if i % 1000 == 999:
            sizes.append(result.usage.memory)
    assert not result.usage.cold_start
    # Linear memory never shrinks, so "steady" means: it stopped growing early.
    assert sizes[-1] == sizes[1], sizes
    assert sizes[-1] <= 4 * 1024 * 1024


def test_load_samples_seeds_an_empty_data_directory(sup):
    assert load_samples(sup) is True
    assert {a.name for a in sup.app_list()} == {name for name, _ in SAMPLES}
    assert sup.tables("todo/alice")
    assert sup.rows("guestbook/lobby", "entries")["rows"]
    assert load_samples(sup) is False  # never twice


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None, reason="the Zig toolchain is not installed")
def test_committed_wasm_matches_sources():
    proc = subprocess.run(
        [sys.executable, str(APPS / "build.py"), "--check"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
