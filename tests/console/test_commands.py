"""The operator command language: parsing, each command, each error path."""

from __future__ import annotations

import json
import sqlite3

import pytest

from console.commands import UsageError, parse, parse_when, run_line
from tests.conftest import COUNTER_WAT, fixture


@pytest.fixture
def loaded(sup):
    sup.load_app(COUNTER_WAT)
    sup.load_app(fixture("probe.wat"))
    return sup


def ok(sup, line, **kw):
    result = run_line(sup, line, **kw)
    assert result["ok"], result
    assert result["cmd"] == line.strip()
    return result


def fails(sup, line, code, **kw):
    result = run_line(sup, line, **kw)
    assert result["ok"] is False and result["error"]["code"] == code, result
    assert result["error"]["message"]
    return result


def test_parse_quoting_comments_and_options():
    cmd = parse('rows todo/a items limit=5 where="done = 0"  # first page')
    assert (cmd.name, cmd.args, cmd.options) == ("rows", ["todo/a", "items"], {"limit": "5", "where": "done = 0"})
    assert parse("   ") is None and parse("# only a comment") is None
    assert parse("call a/b x=1").args == ["a/b", "x=1"]  # a body, not an option
    assert parse("quota * fuel=1M").options == {"fuel": "1M"}


@pytest.mark.parametrize(
    "line",
    [
        "call 'unclosed",
        "frobnicate x",
        "load",
        "load a b",
        "load a as",
        "import x to a/b",
        "tables",
        "rows a/b",
        "delete a/b --force",
        "apps extra",
    ],
)
def test_parse_errors(line):
    with pytest.raises(UsageError):
        parse(line)


def test_load_and_idempotent_load(sup):
    first = ok(sup, f"load {COUNTER_WAT} as tally")
    assert (first["app"], first["version"], first["imports"]) == ("tally", 1, ["sql"])
    assert ok(sup, f"load {COUNTER_WAT} as tally")["version"] == 1
    fails(sup, "load /no/such/file.wasm", "not_found")
    fails(sup, f"load {fixture('unknown_import.wat')}", "bad_module")
    fails(sup, f"load {COUNTER_WAT} as Bad", "bad_request")


def test_call_parses_json_responses(loaded):
    assert ok(loaded, "call counter/a")["response"] == {"count": 1}
    echoed = ok(loaded, "call probe/a 'Enot json'")
    assert echoed["response"] == "not json" and echoed["usage"]["fuel"] > 0
    fails(loaded, "call probe/a X", "trap")
    fails(loaded, "call nothing/a", "not_found")
    fails(loaded, "call ../a", "bad_request")


def test_quota_command(loaded):
    result = ok(loaded, "quota counter/a fuel=5M memory=1MiB")
    assert result["quotas"]["fuel"] == 5_000_000 and result["explicit"] == {"fuel": 5_000_000, "memory": 1048576}
    assert ok(loaded, "quota counter/a")["quotas"]["memory"] == 1048576
    assert ok(loaded, "quota * rate=off")["quotas"]["rate"] == 0
    fails(loaded, "quota counter/a fuel=lots", "bad_quota")
    fails(loaded, "quota counter/a storage=1XB memory=2MiB", "bad_quota")
    assert ok(loaded, "quota counter/a")["quotas"]["memory"] == 1048576  # nothing changed
    fails(loaded, "quota Bad/x fuel=1", "bad_quota")


def test_apps_facets_tables_rows_sql(loaded):
    ok(loaded, "call counter/a")
    ok(loaded, "call counter/b")
    apps = ok(loaded, "apps")["apps"]
    assert {a["name"]: a["facets"] for a in apps} == {"counter": 2, "probe": 0}
    facets = ok(loaded, "facets counter")["facets"]
    assert [f["name"] for f in facets] == ["a", "b"] and facets[0]["usage"]["requests"] == 1
    fails(loaded, "facets nothing", "not_found")
    assert ok(loaded, "tables counter/a")["tables"] == [{"name": "counter", "count": 1, "columns": ["id", "n"]}]
    assert ok(loaded, "rows counter/a counter limit=1")["rows"] == [[1, 1]]
    assert ok(loaded, "rows counter/a counter where='n > 5'")["rows"] == []
    fails(loaded, "rows counter/a counter limit=many", "bad_request")
    fails(loaded, "rows counter/a nope", "not_found")
    assert ok(loaded, "sql counter/a 'SELECT n * 10 AS t FROM counter'")["rows"] == [[10]]
    fails(loaded, "sql counter/a 'UPDATE counter SET n = 0'", "bad_request")
    fails(loaded, "tables counter/zzz", "not_found")


def test_logs_usage_bill_metrics(loaded):
    ok(loaded, "call probe/l 'L2careful'")
    logs = ok(loaded, "logs probe/l level=warn")["logs"]
    assert [r["message"] for r in logs] == ["careful"]
    assert len(ok(loaded, "logs tail=1")["logs"]) == 1
    fails(loaded, "logs level=loud", "bad_request")
    fails(loaded, "logs tail=0", "bad_request")
    assert ok(loaded, "usage probe/l")["usage"]["requests"] == 1
    assert ok(loaded, "usage")["usage"]["requests"] == 1
    bill = ok(loaded, "bill probe since=7d")
    assert bill["facets"][0]["units"]["requests"] == 1
    fails(loaded, "bill since=yesterday-ish", "bad_request")
    assert "facets_requests_total" in ok(loaded, "metrics")["text"]


def test_parse_when():
    assert parse_when("2026-11-01") == 1793491200
    assert parse_when("7d", now=1_000_000) == 1_000_000 - 7 * 86400
    assert parse_when("1700000000") == 1_700_000_000


def test_evict_delete(loaded):
    ok(loaded, "call counter/a")
    assert ok(loaded, "evict counter/a")["was_warm"] is True
    fails(loaded, "delete counter/a", "refused")
    assert loaded.facet_exists("counter/a")
    assert ok(loaded, "delete counter/a --yes")["deleted"] is True
    assert not loaded.facet_exists("counter/a")
    fails(loaded, "delete counter/a --yes", "not_found")


def test_export_import_round_trip(loaded, tmp_path):
    for _ in range(3):
        ok(loaded, "call counter/a")
    path = tmp_path / "a.sqlite3"
    assert ok(loaded, f"export counter/a {path}")["bytes"] > 0
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT n FROM counter").fetchall() == [(3,)]
    conn.close()
    fails(loaded, f"export counter/a {path}", "bad_request")  # never overwrites
    assert ok(loaded, f"import {path} as counter/copy")["tables"] == ["counter"]
    assert ok(loaded, "call counter/copy")["response"] == {"count": 4}
    fails(loaded, f"import {path} as counter/copy", "bad_request")  # exists
    fails(loaded, f"import {tmp_path / 'none'} as counter/x", "not_found")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all" * 100)
    fails(loaded, f"import {garbage} as counter/g", "bad_request")
    assert not loaded.facet_exists("counter/g")
    reserved = tmp_path / "reserved.sqlite3"
    conn = sqlite3.connect(reserved)
    conn.execute("CREATE TABLE _facets_usage(x)")
    conn.commit()
    conn.close()
    fails(loaded, f"import {reserved} as counter/r", "bad_request")


def test_readonly_refuses_writes(loaded):
    for line in (
        "call counter/a",
        f"load {COUNTER_WAT}",
        "quota counter/a fuel=1M",
        "evict counter/a",
        "delete counter/a --yes",
        "import x as counter/b",
    ):
        fails(loaded, line, "refused", readonly=True)
    ok(loaded, "quota counter/a", readonly=True)
    ok(loaded, "apps", readonly=True)


def test_results_are_json_serialisable(loaded):
    for line in ("apps", "facets", "usage", "bill", "help", "call probe/x 'E\x1b[2J'"):
        json.dumps(run_line(loaded, line))


# -- issue 12: hardening -----------------------------------------------------------------
def test_every_code_the_command_language_emits_is_an_error_code(loaded, tmp_path):
    from console.commands import CommandError, RefusedError
    from runtime import ErrorCode

    assert (ErrorCode.USAGE, ErrorCode.REFUSED, ErrorCode.IO_ERROR) == ("usage", "refused", "io_error")
    assert isinstance(UsageError("x").code, ErrorCode) and isinstance(RefusedError("x").code, ErrorCode)
    assert CommandError("x", "timeout").code is ErrorCode.TIMEOUT
    ok(loaded, "call counter/a")
    too_long = tmp_path / ("n" * 300)  # ENAMETOOLONG: an OSError, not a runtime error
    results = [
        fails(loaded, "frobnicate", "usage"),
        fails(loaded, "delete counter/a", "refused"),
        fails(loaded, f"export counter/a {too_long}", "io_error"),
        fails(loaded, "call nothing/a", "not_found"),
    ]
    assert all(r["error"]["code"] in set(ErrorCode) for r in results)


@pytest.mark.parametrize(
    "exc, code",
    [
        (OSError("no such table: full"), "io_error"),
        (sqlite3.OperationalError("database or disk is full"), "io_error"),  # by type, not by "full"
        (PermissionError("not found"), "io_error"),
    ],
)
def test_exceptions_map_to_codes_by_type_not_message(loaded, monkeypatch, exc, code):
    from runtime import ErrorCode, FacetsError

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(loaded, "tables", boom)
    assert fails(loaded, "tables counter/a", code)["error"]["code"] == code
    monkeypatch.setattr(
        loaded,
        "tables",
        lambda *a: (_ for _ in ()).throw(FacetsError("disk is full (not storage_full)", ErrorCode.NOT_FOUND)),
    )
    fails(loaded, "tables counter/a", "not_found")


def test_readonly_refuses_every_command_that_writes_anything_files_included(loaded, tmp_path):
    from console.commands import SPECS, is_write, parse

    ok(loaded, "call counter/a")
    path = tmp_path / "copy.sqlite3"
    for line in (f"export counter/a {path}", "evict counter/a"):
        fails(loaded, line, "refused", readonly=True)
    assert not path.exists()  # export wrote nothing
    assert loaded.warm_count == 1  # evict dropped nothing
    readers = {"quota", "apps", "facets", "tables", "rows", "sql", "logs", "usage", "bill", "metrics", "help"}
    readers |= {"health", "alarms", "rollout", "snapshots", "history"}
    assert {name for name, spec in SPECS.items() if spec.writes} == set(SPECS) - readers
    assert not is_write(parse("quota counter/a")) and is_write(parse("quota counter/a fuel=1M"))


def test_cli_readonly_export_writes_no_file(tmp_path):
    from tests.console.test_headless import cli

    data = tmp_path / "d"
    cli("load", str(COUNTER_WAT), data=data, check_status=0)
    cli("call", "counter/a", data=data, check_status=0)
    path = tmp_path / "copy.sqlite3"
    out = cli(
        "run", "--readonly", "-", data=data, stdin=f"export counter/a {path}\ncall counter/a\n", check_status=1
    ).stdout
    assert [json.loads(x)["error"]["code"] for x in out.splitlines()] == ["refused", "refused"]
    refused = cli("export", "counter/a", str(path), "--readonly", "--json", data=data, check_status=1).stdout
    assert json.loads(refused)["error"]["code"] == "refused"
    assert not path.exists()
    cli("tables", "counter/a", "--readonly", data=data, check_status=0)


def test_cli_readonly_opens_the_data_directory_without_writing(tmp_path):
    """The supervisor's side of --readonly: no orphan adoption, no mkdir, no control writes."""
    from tests.console.test_headless import cli

    data = tmp_path / "d"
    cli("load", str(COUNTER_WAT), data=data, check_status=0)
    orphan = data / "facets" / "counter" / "stray.sqlite3"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(orphan).close()

    def files() -> dict:  # -wal/-shm: SQLite may need them even to read a WAL database
        return {
            p: p.read_bytes() if p.is_file() else None for p in data.rglob("*") if not p.name.endswith(("-wal", "-shm"))
        }

    before = files()
    cli("run", "--readonly", "-", data=data, stdin="facets\napps\nusage\n", check_status=0)
    cli("facets", "--readonly", data=data, check_status=0)
    assert files() == before
    conn = sqlite3.connect(data / "control.sqlite3")
    assert conn.execute("SELECT count(*) FROM facets WHERE name = 'stray'").fetchone()[0] == 0
    conn.close()


RUNAWAY = "'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c'"


def test_an_operator_query_has_a_deadline(loaded, monkeypatch):
    import console.commands

    ok(loaded, "call counter/a")
    fails(loaded, f"sql counter/a {RUNAWAY} timeout=100ms", "timeout")
    monkeypatch.setattr(console.commands, "SQL_TIMEOUT_MS", 100)  # the default deadline
    fails(loaded, f"sql counter/a {RUNAWAY}", "timeout")
    fails(
        loaded,
        "rows counter/a counter where='(SELECT count(*) FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)) > 0'",
        "timeout",
    )
    assert ok(loaded, "sql counter/a 'SELECT n FROM counter' timeout=5s")["rows"] == [[1]]
    assert ok(loaded, "call counter/a")["response"] == {"count": 2}  # the facet still serves
    for bad in ("inf", "nan", "0", "1e400", "forever"):
        fails(loaded, f"sql counter/a 'SELECT 1' timeout={bad}", "bad_request")


def test_a_command_is_declared_once_with_its_spec_executor_and_typed_result(sup, monkeypatch):
    from dataclasses import dataclass

    from rich.text import Text

    import console.commands as commands
    from console.commands import render

    monkeypatch.setattr(commands, "COMMANDS", dict(commands.COMMANDS))
    monkeypatch.setattr(commands, "SPECS", dict(commands.SPECS))

    @dataclass
    class Echoed(commands.Result):
        said: str
        times: int

        def __rich__(self):
            return Text(f"echo {self.said} x{self.times}")

    @commands.command("echo", "echo TEXT [times=N]", "say it", (1, 1), result=Echoed, options=("times",))
    def _echo(sup, cmd):
        return Echoed(cmd.args[0], int(cmd.options.get("times", "1")))

    reply = run_line(sup, "echo hi times=2")
    assert reply == {"cmd": "echo hi times=2", "ok": True, "said": "hi", "times": 2}
    assert str(render(reply)) == "echo hi x2"  # rendered by its type
    assert str(render(json.loads(json.dumps(reply)))) == "echo hi x2"  # also after a JSON trip
    assert {"usage": "echo TEXT [times=N]", "summary": "say it"} in ok(sup, "help")["commands"]
    assert not commands.is_write(parse("echo hi"))
    with pytest.raises(ValueError, match="twice"):
        commands.command("echo", "echo", "again", (0, 0), result=Echoed)(_echo)


def test_every_command_has_a_typed_result_that_renders_itself(loaded):
    from console.commands import COMMANDS, SPECS, Result

    assert list(COMMANDS) == list(SPECS) and len(SPECS) == 31
    for name, registered in COMMANDS.items():
        assert registered.spec is SPECS[name] and issubclass(registered.result, Result)
    reply = ok(loaded, "call counter/a")
    assert isinstance(reply.result, COMMANDS["call"].result)
    assert reply.result.to_json() == {k: v for k, v in reply.items() if k not in ("cmd", "ok")}
