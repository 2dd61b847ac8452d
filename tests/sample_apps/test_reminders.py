"""The reminders sample (JavaScript, alarms): reminders fire by the facet's own alarm,
once each, across eviction and restarts, and bad input is refused."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from runtime import HttpRequest, Supervisor
from tests.conftest import ROOT

SOURCE = ROOT / "sample_apps" / "reminders" / "reminders.js"


def ask(sup: Supervisor, target: str, body: dict) -> dict:
    result = sup.call(target, json.dumps(body))
    assert result.ok, (result.error, result.message)
    return json.loads(result.response)


def _wait(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def reminders(sup):
    assert sup.load_app(SOURCE, "reminders").kind == "component"
    return sup


def _fired(sup: Supervisor, target: str) -> list[str]:
    return [r["text"] for r in ask(sup, target, {"op": "list"})["reminders"] if r["fired"]]


def test_reminders_fire_in_order_and_the_alarm_follows_the_next_one(reminders):
    soon = ask(reminders, "reminders/alice", {"op": "add", "text": "tea", "in": 0.2})
    later = ask(reminders, "reminders/alice", {"op": "add", "text": "call mum", "in": 3600})
    assert soon["fired"] is None and later["text"] == "call mum"
    [pending] = reminders.alarm_list("reminders/alice")
    due = datetime.fromisoformat(soon["due"].replace("Z", "+00:00"))
    assert pending["at_ms"] == round(due.timestamp() * 1000)  # the earliest pending reminder
    _wait(lambda: _fired(reminders, "reminders/alice") == ["tea"])
    listing = ask(reminders, "reminders/alice", {"op": "list"})
    assert listing["alarm"] == later["due"]  # the alarm moved to the next pending one
    assert [r["text"] for r in listing["reminders"]] == ["call mum", "tea"]  # pending first
    assert any(r.message == "reminder 1: tea" for r in reminders.logs("reminders/alice"))
    assert reminders.usage("reminders/alice")["alarms"] == 1


def test_deleting_the_last_pending_reminder_deletes_the_alarm(reminders):
    made = ask(reminders, "reminders/bob", {"op": "add", "text": "x", "in": 3600})
    assert len(reminders.alarm_list("reminders/bob")) == 1
    assert ask(reminders, "reminders/bob", {"op": "delete", "id": made["id"]}) == {"id": made["id"], "deleted": True}
    assert reminders.alarm_list("reminders/bob") == []


def test_a_reminder_fires_on_an_evicted_facet_and_after_a_restart(tmp_path):
    data = tmp_path / "data"
    with Supervisor(data) as sup:
        sup.load_app(SOURCE, "reminders")
        ask(sup, "reminders/carol", {"op": "add", "text": "while cold", "in": 0.3})
        ask(sup, "reminders/dave", {"op": "add", "text": "while down", "in": 0.3})
        sup.evict("reminders/carol")
        _wait(lambda: _fired(sup, "reminders/carol") == ["while cold"])
    with Supervisor(data) as sup:  # dave's came due while nobody ran, or fired before the stop
        _wait(lambda: _fired(sup, "reminders/dave") == ["while down"])


@pytest.mark.parametrize(
    "body",
    [
        {"op": "add", "text": "", "in": 5},
        {"op": "add", "text": "x" * 501, "in": 5},
        {"op": "add", "text": "t", "in": -1},
        {"op": "add", "text": "t", "at": "not a time"},
        {"op": "add", "text": "t", "at": "9999-01-01T00:00:00Z"},
        {"op": "add", "text": "t"},
        {"op": "nope"},
    ],
)
def test_bad_input_is_refused_and_sets_no_alarm(reminders, body):
    assert "error" in ask(reminders, "reminders/eve", body)
    assert reminders.alarm_list("reminders/eve") == []


def test_the_http_api(reminders):
    made = reminders.fetch("reminders/h", HttpRequest("POST", "/reminders", body=b'{"text": "stretch", "in": 3600}'))
    assert made.http is not None and made.http.status == 201
    listed = reminders.fetch("reminders/h", HttpRequest("GET", "/reminders"))
    assert listed.http is not None and [r["text"] for r in json.loads(listed.http.body)["reminders"]] == ["stretch"]
    gone = reminders.fetch("reminders/h", HttpRequest("DELETE", "/reminders/1"))
    assert gone.http is not None and gone.http.status == 200
    assert reminders.fetch("reminders/h", HttpRequest("DELETE", "/reminders/1")).http.status == 404  # type: ignore[union-attr]
    bad = reminders.fetch("reminders/h", HttpRequest("POST", "/reminders", body=b"{"))
    assert bad.http is not None and bad.http.status == 400
