"""The command language for supervision, alarms and rollouts: reset, health, alarms,
rollout, pin, unpin, promote, rollback and load --canary; parsed, run, as JSON, rendered,
refused read-only, and in scripts."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from console.commands import UsageError, parse, render, result_of, run_line
from console.headless import EXIT_OK, EXIT_USAGE, run_script
from runtime.rollout import canary_bucket
from tests.conftest import fixture
from tests.runtime.versioned import versioned_wat

FACETS = [f"f{i}" for i in range(40)]


def ok(sup, line, **kw):
    result = run_line(sup, line, **kw)
    assert result["ok"], result
    return result


def fails(sup, line, code, **kw):
    result = run_line(sup, line, **kw)
    assert result["ok"] is False and result["error"]["code"] == code, result
    return result


def text(result) -> str:
    """What the CLI without --json prints, after the reply went through JSON (as an
    attached console's does): the typed result is rebuilt by the command's name."""
    console = Console(width=160, record=True, color_system=None)
    console.print(render(json.loads(json.dumps(result))))
    return console.export_text()


@pytest.fixture
def looping(sup):
    """probe/a in backoff: three traps in a row (crash_faults defaults to 3)."""
    sup.load_app(fixture("probe.wat"))
    for _ in range(3):
        assert sup.call("probe/a", b"X").error == "trap"
    assert sup.call("probe/a", b"Eok").error == "backoff"
    return sup


def versions(sup, tmp_path, *, v2_traps=True):
    """app v1 on every facet of FACETS, then v2 (which traps) written to a file to load."""
    sup.load_app_bytes(versioned_wat("v1"), "app")
    for facet in FACETS:
        assert sup.call(f"app/{facet}").ok
    path = tmp_path / "v2.wat"
    path.write_text(versioned_wat("v2", handle_traps=v2_traps))
    return path


def test_parse_valued_flags_and_version_numbers():
    assert parse("load a.wasm --canary 10%").options == {"canary": "10%"}
    assert parse("load a.wasm as b --canary=2.5%").options == {"canary": "2.5%"}
    assert parse("load a.wasm canary=10%").options == {"canary": "10%"}
    load = parse("load a.wasm --canary 10% as b")
    assert (load.args, load.options) == (["a.wasm", "as", "b"], {"canary": "10%"})
    assert parse("pin app/x 3").args == ["app/x", "3"]
    assert parse("rollback app").args == ["app"]
    assert parse("alarms todo limit=5").options == {"limit": "5"}


@pytest.mark.parametrize(
    "line",
    [
        "load a.wasm --canary",  # the flag needs its value
        "pin app",
        "pin app two",
        "pin app -1",
        "rollback app v2",
        "promote",
        "promote a b",
        "unpin",
        "reset",
        "reset a/b c",
        "rollout",
        "alarms a b",
        "health a/b c",
    ],
)
def test_parse_errors(line):
    with pytest.raises(UsageError):
        parse(line)


def test_health_and_reset(looping):
    sup = looping
    fleet = ok(sup, "health")
    assert fleet["target"] == "*" and [h["target"] for h in fleet["facets"]] == ["probe/a"]
    one = ok(sup, "health probe/a")["facets"][0]
    assert (one["state"], one["faults"]) == ("backoff", 3)
    assert one["retry_at"] is not None and [f["code"] for f in one["last_faults"]] == ["trap"] * 3
    assert "backoff" in text(ok(sup, "health probe/a")) and "last faults" in text(ok(sup, "health probe/a"))
    assert [h["target"] for h in ok(sup, "health probe")["facets"]] == ["probe/a"]
    assert sup.call("probe/healthy", b"Eok").ok
    assert ok(sup, "health probe/healthy")["facets"][0]["state"] == "ok"  # a facet never faulting

    fails(sup, "reset probe/a", "refused", readonly=True)
    assert sup.health("probe/a") is not None  # refused: nothing cleared
    cleared = ok(sup, "reset probe/a")
    assert cleared["facet"] == "probe/a" and cleared["cleared"]["state"] == "backoff"
    assert "was backoff after 3 faults" in text(cleared)
    assert sup.call("probe/a", b"Eback").ok  # it runs again
    again = ok(sup, "reset probe/a")
    assert again["cleared"] is None and "was healthy" in text(again)
    assert ok(sup, "health")["facets"] == [] and "every facet is healthy" in text(ok(sup, "health"))

    fails(sup, "reset probe/missing", "not_found")
    fails(sup, "reset ../x", "bad_request")
    fails(sup, "health nope", "not_found")


def test_guest_text_in_faults_is_neutralised(sup):
    """A fault's message can carry a guest's text: rendered, escapes show as text."""
    sup.load_app(fixture("probe.wat"))
    sup.call("probe/a", b"X")
    record = ok(sup, "health probe/a")
    record["facets"][0]["last_faults"][0]["message"] = "boom \x1b]52;c;ZXZpbA==\x07 [bold]x[/]"
    shown = text(record)
    assert "\x1b" not in shown and "\x07" not in shown and "[bold]x[/]" in shown


def test_alarms_listing(sup):
    sup.load_app(fixture("probe.wat"))
    for facet in ("a", "b", "c"):
        sup.call(f"probe/{facet}", b"Eok")
    now_ms = 1_900_000_000_000
    sup.alarms.set("probe", "b", now_ms + 60_000)
    sup.alarms.set("probe", "a", now_ms)
    listed = ok(sup, "alarms")
    assert [a["target"] for a in listed["alarms"]] == ["probe/a", "probe/b"]
    first = listed["alarms"][0]
    assert (first["at_ms"], first["due_ms"], first["attempt"]) == (now_ms, now_ms, 0)
    assert first["at"] == "2030-03-17T17:46:40Z"  # UTC ISO, next to the ms
    assert [a["target"] for a in ok(sup, "alarms * limit=1")["alarms"]] == ["probe/a"]
    assert [a["target"] for a in ok(sup, "alarms probe/b")["alarms"]] == ["probe/b"]
    assert ok(sup, "alarms probe/c")["alarms"] == []
    assert len(ok(sup, "alarms probe")["alarms"]) == 2
    shown = text(listed)
    assert "2030-03-17T17:46:40Z" in shown and "in " in shown  # relative: in the future
    assert "no pending alarms" in text(ok(sup, "alarms probe/c"))
    fails(sup, "alarms nope/x", "not_found")
    fails(sup, "alarms probe limit=0", "bad_request")
    fails(sup, "alarms probe limit=many", "bad_request")


def test_canary_rollout_promote_and_rollback(sup, tmp_path):
    path = versions(sup, tmp_path)
    fails(sup, f"load {path} as app --canary 10%", "refused", readonly=True)
    fails(sup, f"load {path} as app --canary 0%", "bad_request")
    fails(sup, f"load {path} as app --canary lots", "bad_request")
    assert sup.rollout("app")["latest"] == 1  # nothing was stored by the refusals
    loaded = ok(sup, f"load {path} as app --canary 25%")
    assert (loaded["version"], loaded["active"], loaded["canary"], loaded["canary_percent"]) == (2, 1, 2, 25.0)
    canaries = {f for f in FACETS if canary_bucket("app", f) < 2500}
    assert canaries and canaries != set(FACETS)
    for facet in FACETS:
        sup.call(f"app/{facet}")
    rollout = ok(sup, "rollout app")
    assert (rollout["app"], rollout["active"], rollout["canary"], rollout["canary_percent"]) == ("app", 1, 2, 25.0)
    by_version = {v["version"]: v for v in rollout["versions"]}
    assert by_version[2]["facets"] == len(canaries) and by_version[2]["errors"] == len(canaries)
    assert by_version[2]["error_rate"] == 1.0 and by_version[1]["facets"] == len(FACETS) - len(canaries)
    assert by_version[1]["errors"] == 0
    shown = text(rollout)
    assert "canary 25%" in shown and "canary 2 at 25%" in shown and "100.0" in shown

    fails(sup, "rollback app", "refused", readonly=True)
    back = ok(sup, "rollback app")
    assert back["canary"] is None and {v["version"]: v["facets"] for v in back["versions"]} == {1: 40, 2: 0}
    ok(sup, f"load {path} as app canary=50%")  # staged again, the option's spelling
    promoted = ok(sup, "promote app")
    assert promoted["active"] == 2 and promoted["canary"] is None
    fails(sup, "promote app", "bad_request")  # no canary left to promote
    fails(sup, "promote nope", "not_found")
    assert ok(sup, "rollback app 1")["active"] == 1


def test_pin_and_unpin(sup, tmp_path):
    path = versions(sup, tmp_path, v2_traps=False)
    ok(sup, f"load {path} as app")  # v2 active everywhere
    fails(sup, "pin app/f1 1", "refused", readonly=True)
    pinned = ok(sup, "pin app/f1 1")
    assert pinned["facet_pins"] == {"f1": 1} and pinned["active"] == 2
    assert sup.call("app/f1").response == b"v1" and sup.call("app/f2").response == b"v2"
    assert "pinned facets: f1=1" in text(pinned)
    whole = ok(sup, "pin app 1")
    assert whole["pinned"] and whole["active"] == 1 and "active, pinned" in text(whole)
    fails(sup, "pin app 9", "not_found")  # no such version
    fails(sup, "pin app/nobody 1", "not_found")
    fails(sup, "unpin app", "refused", readonly=True)
    unpinned = ok(sup, "unpin app")
    assert unpinned["unpinned"] is True and unpinned["active"] == 2
    assert ok(sup, "unpin app")["unpinned"] is False
    assert "there was no pin to remove" in text(ok(sup, "unpin app"))
    assert ok(sup, "unpin app/f1")["facet_pins"] == {}


def test_typed_results_survive_json(looping):
    """Each reply rebuilds its typed result from JSON (a reply from an attached owner)."""
    sup = looping
    for line in ("health probe/a", "alarms", "rollout probe", "reset probe/a"):
        reply = json.loads(json.dumps(ok(sup, line)))
        assert result_of(reply) is not None, line


def test_script_lines(looping, tmp_path):
    sup = looping
    out = io.StringIO()
    script = ["health", "reset probe/a", "call probe/a Eback", "alarms", "rollout probe", "pin probe 1", "unpin probe"]
    assert run_script(sup, script, out) == EXIT_OK
    results = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["cmd"] for r in results] == script and all(r["ok"] for r in results)
    assert results[1]["cleared"]["faults"] == 3 and results[2]["response"] == "back"
    out = io.StringIO()
    assert run_script(sup, ["reset probe/a", "pin probe one"], out) == EXIT_USAGE  # parsed first: none ran
    assert len(out.getvalue().splitlines()) == 1


def test_cli_load_canary_and_rollout(tmp_path):
    """``facets load PATH --canary N%`` from a shell: the flag reaches the command language."""
    from tests.console.test_headless import cli

    data = tmp_path / "d"
    v1, v2 = tmp_path / "v1.wat", tmp_path / "v2.wat"
    v1.write_text(versioned_wat("v1"))
    v2.write_text(versioned_wat("v2"))
    cli("load", str(v1), "as", "app", data=data, check_status=0)
    out = cli("load", str(v2), "as", "app", "--canary", "10%", "--json", data=data, check_status=0).stdout
    assert (json.loads(out)["canary"], json.loads(out)["canary_percent"]) == (2, 10.0)
    shown = cli("rollout", "app", data=data, check_status=0).stdout
    assert "canary 2 at 10%" in shown and "canary 10%" in shown
    refused = cli("promote", "app", "--readonly", "--json", data=data, check_status=1).stdout
    assert json.loads(refused)["error"]["code"] == "refused"
