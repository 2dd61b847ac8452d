"""The command language for issue 16: snapshot, snapshots, restore (SNAPSHOT or at=WHEN,
--yes), fork, undelete, history; parsed, run on a real Supervisor, as JSON, rendered,
refused read-only and without --yes, in scripts and from a shell."""

from __future__ import annotations

import io
import json
import time

import pytest
from rich.console import Console

from console.commands import UsageError, parse, render, result_of
from console.headless import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_script
from tests.console.test_headless import COUNTER_WAT, cli
from tests.console.test_operate_commands import fails, ok


def text(result) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(render(json.loads(json.dumps(result))))
    return console.export_text()


@pytest.fixture
def counter(sup):
    sup.load_app(COUNTER_WAT)
    return sup


def test_parse_history_commands():
    assert parse("snapshot a/b").args == ["a/b"]
    assert parse("snapshot a/b before-migration").args == ["a/b", "before-migration"]
    restore = parse("restore a/b at=-15m --yes")
    assert (restore.args, restore.options, restore.flags) == (["a/b"], {"at": "-15m"}, {"--yes"})
    assert parse("restore a/b nightly --yes").args == ["a/b", "nightly"]
    assert parse("restore a/b at=2026-12-01T14:05:00Z").options == {"at": "2026-12-01T14:05:00Z"}
    fork = parse("fork a/b as a/c at=1733000000")
    assert (fork.args, fork.options) == (["a/b", "as", "a/c"], {"at": "1733000000"})
    assert parse("fork a/b as a/c snap").args == ["a/b", "as", "a/c", "snap"]
    assert parse("fork a/b as a/c").options == {}
    assert parse("undelete a/b").args == ["a/b"] and parse("history a/b").args == ["a/b"]


@pytest.mark.parametrize(
    "line",
    [
        "snapshot",
        "snapshot a/b c d",
        "snapshots",
        "restore a/b",  # which state?
        "restore a/b snap at=-5m",  # both
        "restore a/b at=yesterday-ish",  # a WHEN the runtime cannot read: refused when parsed
        "restore a/b --force",
        "fork a/b",
        "fork a/b a/c",
        "fork a/b to a/c",
        "fork a/b as a/c snap at=-5m",
        "fork a/b as a/c at=soon",
        "undelete",
        "history a/b c",
    ],
)
def test_parse_errors(line):
    with pytest.raises(UsageError):
        parse(line)


def test_snapshot_list_and_restore_it(counter):
    sup = counter
    for _ in range(3):
        assert sup.call("counter/a").ok
    fails(sup, "snapshot counter/a three", "refused", readonly=True)
    taken = ok(sup, "snapshot counter/a three")
    assert (taken["target"], taken["name"], taken["reason"]) == ("counter/a", "three", "manual")
    assert taken["size"] > 0 and "snapshot three of counter/a" in text(taken)
    for _ in range(2):
        assert sup.call("counter/a").ok
    listed = ok(sup, "snapshots counter/a")
    assert [s["name"] for s in listed["snapshots"]] == ["three"] and "three" in text(listed)

    refused = fails(sup, "restore counter/a three", "refused")
    assert "--yes" in refused["error"]["message"]
    assert json.loads(sup.call("counter/a").response)["count"] == 6  # nothing restored: 5 + this call
    fails(sup, "restore counter/a three --yes", "refused", readonly=True)
    restored = ok(sup, "restore counter/a three --yes")
    assert restored["target"] == "counter/a" and restored["source"] == "snapshot three"
    assert restored["undo_snapshot"] and restored["size"] > 0
    assert json.loads(sup.call("counter/a").response)["count"] == 4  # 3 restored, then this call
    assert "undoes this" in text(restored)
    names = [s["name"] for s in ok(sup, "snapshots counter/a")["snapshots"]]
    assert restored["undo_snapshot"] in names and "three" in names
    undo = ok(sup, f"restore counter/a {restored['undo_snapshot']} --yes")
    assert json.loads(sup.call("counter/a").response)["count"] == 7 and undo["undo_snapshot"]
    fails(sup, "restore counter/a nosuch --yes", "not_found")
    fails(sup, "snapshots ../x", "bad_request")


def test_restore_at_a_moment_and_fork(counter):
    sup = counter
    for _ in range(2):
        assert sup.call("counter/a").ok
    time.sleep(0.05)  # the moment sits between two commits: no timing is asserted
    between = time.time()
    time.sleep(0.05)
    for _ in range(3):
        assert sup.call("counter/a").ok
    forked = ok(sup, f"fork counter/a as counter/b at={between}")
    assert forked["target"] == "counter/b" and forked["restored_to"] <= between
    assert json.loads(sup.call("counter/b").response)["count"] == 3  # 2 at the moment, then this call
    assert json.loads(sup.call("counter/a").response)["count"] == 6  # the original untouched
    assert "forked counter/b" in text(forked)
    ok(sup, "fork counter/a as counter/c")  # from the current data
    assert json.loads(sup.call("counter/c").response)["count"] == 7
    fails(sup, "fork counter/a as other/c", "bad_request")  # a fork stays in its app
    fails(sup, "fork counter/a as counter/b", "refused", readonly=True)

    restored = ok(sup, f"restore counter/a at={between} --yes")
    assert restored["restored_to"] <= between and "includes every commit up to" in text(restored)
    assert json.loads(sup.call("counter/a").response)["count"] == 3
    assert json.loads(sup.call("counter/b").response)["count"] == 4  # the fork's data is its own


def test_history_delete_and_undelete(counter):
    sup = counter
    assert sup.call("counter/a").ok
    ok(sup, "snapshot counter/a one")
    history = ok(sup, "history counter/a")
    assert history["target"] == "counter/a" and history["deleted"] is False
    assert history["window_start"] is not None and history["window_end"] >= history["window_start"]
    assert history["archive_bytes"] > 0 and history["retention_s"] == 7 * 86400
    assert [s["name"] for s in history["snapshots"]] == ["one"] and history["snapshot_bytes"] > 0
    shown = text(history)
    assert "restorable" in shown and " .. " in shown and "7d00h" in shown and "one" in shown

    refused = fails(sup, "delete counter/a", "refused")["error"]["message"]
    assert "history is kept for the retention window" in refused and "undelete counter/a" in refused
    deleted = ok(sup, "delete counter/a --yes")
    assert "undelete counter/a brings it back" in text(deleted)
    gone = ok(sup, "history counter/a")
    assert gone["deleted"] is True and "undelete counter/a brings it back" in text(gone)
    fails(sup, "undelete counter/a", "refused", readonly=True)
    back = ok(sup, "undelete counter/a")
    assert back["target"] == "counter/a" and "undeleted counter/a" in text(back)
    assert json.loads(sup.call("counter/a").response)["count"] == 2
    fails(sup, "undelete counter/a", "bad_request")  # it is not deleted (the runtime's word)


def test_typed_results_survive_json(counter):
    sup = counter
    sup.call("counter/a")
    for line in ("snapshot counter/a s", "snapshots counter/a", "history counter/a", "fork counter/a as counter/f"):
        reply = json.loads(json.dumps(ok(sup, line)))
        assert result_of(reply) is not None, line
        assert text(reply)


def test_script_parsed_first_and_json_lines(counter):
    sup = counter
    sup.call("counter/a")
    out = io.StringIO()
    assert run_script(sup, ["snapshot counter/a s", "restore counter/a at=whenever --yes"], out) == EXIT_USAGE
    assert len(out.getvalue().splitlines()) == 1 and sup.snapshots("counter/a") == []  # nothing ran
    out = io.StringIO()
    script = ["snapshot counter/a s", "call counter/a", "restore counter/a s", "restore counter/a s --yes"]
    assert run_script(sup, script, out) == EXIT_FAILED  # the restore without --yes
    results = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["ok"] for r in results] == [True, True, False, True]
    assert results[2]["error"]["code"] == "refused" and results[3]["source"] == "snapshot s"
    out = io.StringIO()
    assert run_script(sup, ["history counter/a", "snapshots counter/a"], out) == EXIT_OK


def test_cli_restore_needs_yes(tmp_path):
    data = tmp_path / "d"
    cli("load", str(COUNTER_WAT), data=data, check_status=0)
    cli("call", "counter/a", data=data, check_status=0)
    taken = json.loads(cli("snapshot", "counter/a", "one", "--json", data=data, check_status=0).stdout)
    assert taken["name"] == "one"
    cli("call", "counter/a", data=data, check_status=0)
    refused = json.loads(cli("restore", "counter/a", "one", "--json", data=data, check_status=1).stdout)
    assert refused["error"]["code"] == "refused"
    restored = json.loads(cli("restore", "counter/a", "one", "--yes", "--json", data=data, check_status=0).stdout)
    assert restored["source"] == "snapshot one" and restored["undo_snapshot"]
    out = json.loads(cli("call", "counter/a", "--json", data=data, check_status=0).stdout)
    assert out["response"] == {"count": 2}
    history = json.loads(cli("history", "counter/a", "--json", data=data, check_status=0).stdout)
    assert len(history["snapshots"]) == 2
