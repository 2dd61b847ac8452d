"""The control API (``console/control_api.py``) as an ASGI app: routes, validation, the RPC
whitelist and its codecs; and over its Unix socket (``control_server``, ``remote``)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from console.control_api import MAX_BODY, RPC_METHODS, ControlAPI, decode, encode
from console.control_server import MAX_SOCKET_PATH, ControlServer, serve_control, socket_path
from console.remote import ControlClient, RemoteError, open_or_route
from runtime import DataDirBusy, ErrorCode, HttpRequest, HttpResponse, Supervisor, owner_of
from tests.conftest import COUNTER_WAT, fixture


def asgi(app: ControlAPI, method: str, path: str, body: bytes = b"", *, chunk: int = 0) -> tuple[int, bytes]:
    """One request through the ASGI app (``chunk``: send the body in pieces of that size)."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk and body else [body]
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        queue = [
            {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1} for i, piece in enumerate(pieces)
        ]
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        await app(scope, receive, send)

    asyncio.run(go())
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def post(app: ControlAPI, path: str, payload: Any) -> tuple[int, Any]:
    status, body = asgi(app, "POST", path, json.dumps(payload).encode())
    return status, json.loads(body)


@pytest.fixture
def api(sup):
    sup.load_app(COUNTER_WAT)
    app = ControlAPI(sup)
    yield app
    app.close()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/control/command", b"not json", 400, "bad_request"),
        ("/control/command", b"\xff\xfe", 400, "bad_request"),
        ("/control/command", b"[1, 2]", 400, "bad_request"),
        ("/control/command", b"{}", 400, "bad_request"),
        ("/control/command", b'{"line": 3}', 400, "bad_request"),
        ("/control/command", b'{"line": "apps", "readonly": 1}', 400, "bad_request"),
        ("/control/command", b'{"line": "apps", "extra": true}', 400, "bad_request"),
        ("/control/command", b'{"line": "   # only a comment"}', 400, "bad_request"),
        ("/control/command", b"[" * 100_000 + b"]" * 100_000, 400, "bad_request"),
        ("/control/script", b'{"lines": "apps"}', 400, "bad_request"),
        ("/control/script", b'{"lines": ["apps", 7]}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "close"}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "__init__"}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "usage", "args": ["counter/a", "extra", "more"]}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "usage", "kwargs": {"nope": 1}}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "call", "args": ["counter/a", {"$bytes": "***"}]}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "warm_count", "args": [1]}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "load_app", "args": ["sample_apps/counter/counter.wat"]}', 400, "bad_request"),
        ("/control/rpc", b'{"method": "export_facet", "args": ["counter/a", "out.sqlite3"]}', 400, "bad_request"),
        ("/control/nowhere", b"{}", 404, "not_found"),
        ("/metrics", b"{}", 404, "not_found"),
    ],
)
def test_bad_requests_get_a_json_error_and_run_nothing(api, path, body, status, code):
    got, raw = asgi(api, "POST", path, body)
    assert got == status
    error = json.loads(raw)["error"]
    assert error["code"] == code and error["message"]
    assert api.sup.facet_list() == []  # nothing ran


def test_a_body_over_the_limit_is_413_and_not_read_to_the_end(api):
    line = json.dumps({"line": "call counter/a " + "x" * (MAX_BODY + 10)}).encode()
    status, raw = asgi(api, "POST", "/control/command", line, chunk=64 * 1024)
    assert status == 413 and json.loads(raw)["error"]["code"] == "too_big"
    assert api.sup.facet_list() == []


def test_a_route_answers_only_its_method(api):
    status, raw = asgi(api, "GET", "/control/command")
    assert status == 405 and json.loads(raw)["error"]["code"] == "bad_request"
    assert asgi(api, "GET", "/control/owner")[0] == 200


def test_a_command_answers_the_embedded_reply(api):
    status, reply = post(api, "/control/command", {"line": "call counter/a"})
    assert status == 200 and reply["ok"] and reply["response"] == {"count": 1} and reply["cmd"] == "call counter/a"
    status, reply = post(api, "/control/command", {"line": "call counter/a", "readonly": True})
    assert status == 200 and not reply["ok"] and reply["error"]["code"] == "refused"
    status, reply = post(api, "/control/command", {"line": "bogus"})
    assert status == 200 and reply["error"]["code"] == "usage"
    assert api.sup.usage("counter/a")["requests"] == 1  # the read-only call never ran


def test_a_script_streams_json_lines_and_its_exit_status(api):
    script = {"lines": ["call counter/a", "call nope/x"]}
    status, raw = asgi(api, "POST", "/control/script", json.dumps(script).encode())
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    assert status == 200 and [x.get("ok") for x in lines[:2]] == [True, False]
    assert lines[2] == {"exit_status": 1}
    status, raw = asgi(api, "POST", "/control/script", json.dumps({"lines": ["call counter/a", "'open"]}).encode())
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    assert lines[0]["error"]["code"] == "usage" and lines[-1] == {"exit_status": 2}  # parsed first: nothing ran
    assert api.sup.usage("counter/a")["requests"] == 1


def test_a_script_whose_client_is_gone_stops_at_its_next_line(api):
    """Like an embedded `facets run` killed with its terminal: the owner does not run the
    rest of a script nobody reads."""
    api.sup.load_app(fixture("probe.wat"))
    api.sup.set_quotas("probe/spin", fuel="1000G", timeout_ms="1s")
    body = json.dumps({"lines": ["call probe/spin I", "call counter/a", "call counter/a"]}).encode()
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else await asyncio.Event().wait()  # type: ignore[func-returns-value]

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await api({"type": "http", "method": "POST", "path": "/control/script", "root_path": ""}, receive, send)

    asyncio.run(go())
    assert api.sup.usage("probe/spin")["requests"] == 1
    assert not api.sup.facet_exists("counter/a")  # the lines after the client left never ran


def test_rpc_results_decode_to_what_the_supervisor_returns(api):
    sup = api.sup
    status, answer = post(api, "/control/rpc", {"method": "call", "args": ["counter/a", encode(b"")]})
    assert status == 200 and answer["ok"]
    result = decode("call", answer["result"])
    assert result.ok and result.response == b'{"count":1}' and result.error is None
    fetched = sup.fetch("counter/a", HttpRequest("POST", "/"))  # a result carrying an HttpResponse
    assert isinstance(fetched.http, HttpResponse) and fetched.status == 200
    assert decode("call", json.loads(json.dumps(encode(fetched)))) == fetched
    failed = decode("call", post(api, "/control/rpc", {"method": "call", "args": ["nope/a"]})[1]["result"])
    assert not failed.ok and failed.error == ErrorCode.NOT_FOUND
    sup.set_quotas("counter", fuel="5M")
    sup.flush_usage()
    cases: list[tuple[str, list[Any], dict[str, Any]]] = [
        ("app_list", [], {}),
        ("app_versions", ["counter"], {}),
        ("facet_list", [], {}),
        ("facet_exists", ["counter/a"], {}),
        ("quotas", ["counter/a"], {}),
        ("explicit_quotas", ["counter"], {}),
        ("usage", ["counter/a"], {}),
        ("logs", [], {"limit": 5}),
        ("tables", ["counter/a"], {}),
        ("rows", ["counter/a", "counter"], {"limit": 3}),
        ("query", ["counter/a", "select n from counter"], {}),
        ("prometheus", [], {}),
        ("warm_count", [], {}),
        ("data_dir", [], {}),
    ]
    for method, args, kwargs in cases:
        status, answer = post(api, "/control/rpc", {"method": method, "args": args, "kwargs": kwargs})
        assert status == 200 and answer["ok"], (method, answer)
        value = getattr(sup, method)
        expected = value(*args, **kwargs) if callable(value) else value
        assert decode(method, json.loads(json.dumps(answer["result"]))) == (
            str(expected) if method == "data_dir" else expected
        ), method
    changes = decode("facet_changes", post(api, "/control/rpc", {"method": "facet_changes"})[1]["result"])
    assert changes.complete and [f.target for f in changes.facets] == ["counter/a"]


def test_rpc_errors_carry_their_code_and_writes_are_refused_read_only(api):
    status, answer = post(api, "/control/rpc", {"method": "usage", "args": ["no/such/target"]})
    assert status == 200 and not answer["ok"] and answer["error"]["code"] == "bad_request"
    status, answer = post(api, "/control/rpc", {"method": "set_quotas", "args": ["counter"], "kwargs": {"fuel": "x"}})
    assert status == 200 and answer["error"]["code"] == "bad_quota"
    status, answer = post(api, "/control/rpc", {"method": "delete", "args": ["counter/a"], "readonly": True})
    assert answer["error"]["code"] == "refused"
    assert all(isinstance(m.writes, bool) for m in RPC_METHODS.values())
    assert "reader" not in RPC_METHODS and "close" not in RPC_METHODS


# -- over the socket ---------------------------------------------------------------------------
def test_the_socket_is_owner_only_and_recorded_in_the_note(sup):
    with ControlServer(sup) as server:
        info = owner_of(sup.data_dir)
        assert info is not None and info.control == str(server.path)
        assert server.path.stat().st_mode & 0o777 == 0o600
        client = ControlClient(str(server.path))
        assert client.rpc("warm_count") == 0
        with pytest.raises(RemoteError) as caught:
            client.rpc("delete", "nope/a", readonly=True)
        assert caught.value.code == "refused"
    assert not server.path.exists()
    info = owner_of(sup.data_dir)
    assert info is not None and info.control is None  # still the owner; serves no socket now


def test_a_data_directory_too_deep_for_a_socket_path_serves_from_the_temp_dir(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path, private = socket_path(deep)
    assert private is not None and len(str(path)) <= MAX_SOCKET_PATH
    private.rmdir()
    with Supervisor(deep) as sup:
        server = serve_control(sup)
        assert server is not None
        try:
            info = owner_of(deep)
            assert info is not None and info.control == str(server.path) and len(info.control) <= MAX_SOCKET_PATH
            assert ControlClient(info.control).command("apps")["ok"]
        finally:
            server.close()
        assert not server.path.parent.exists()  # the private directory goes with it


def test_an_owner_without_a_socket_refuses_after_the_wait_but_allows_readers(sup):
    sup.load_app(COUNTER_WAT)
    with pytest.raises(DataDirBusy) as caught:
        open_or_route(sup.data_dir, role="command", wait=0.2)
    assert caught.value.code == ErrorCode.REFUSED and caught.value.owner is not None
    reader = open_or_route(sup.data_dir, role="command", readonly=True, wait=0.2)
    assert isinstance(reader, Supervisor) and reader.readonly
    with reader:
        assert [a.name for a in reader.app_list()] == ["counter"]
    with ControlServer(sup):
        assert isinstance(open_or_route(sup.data_dir, role="command", wait=0.2), ControlClient)


@pytest.mark.parametrize(
    "line",
    [
        "call counter/a",
        "call probe/x 'E[1, 2.5, \"x\"]'",
        "call probe/x 'Eplain text'",
        "call probe/x 'E{\"a\": null}'",
    ],
)
def test_a_reply_that_went_through_json_renders_as_the_typed_one(api, line):
    """What `facets call` prints (rich) is rebuilt from the owner's JSON: the same rendering
    as the embedded typed result, for each shape of guest answer."""
    from rich.console import Console

    from console.commands import render, run_line
    from console.format import dumps

    api.sup.load_app(fixture("probe.wat"))
    reply = run_line(api.sup, line)
    assert reply is not None and reply["ok"]

    def shown(result: Any) -> str:
        with open(os.devnull, "w") as sink:
            console = Console(width=160, record=True, file=sink)
            console.print(render(result))
            return console.export_text(styles=True)

    assert shown(json.loads(dumps(reply, ensure_ascii=True))) == shown(reply)


def test_rpc_supervision_alarms_and_rollouts_decode_to_what_the_supervisor_returns(api):
    """The methods the views call for issue 15, through JSON, equal the embedded answers."""
    from runtime.supervision import HealthInfo
    from tests.runtime.versioned import versioned_wat

    sup = api.sup
    sup.load_app(fixture("probe.wat"))
    for _ in range(3):
        sup.call("probe/a", b"X")
    sup.alarms.set("probe", "a", 1_900_000_000_000)
    sup.load_app_bytes(versioned_wat("v1"), "app")
    sup.call("app/x")
    sup.load_app_bytes(versioned_wat("v2"), "app", canary="50%")

    def rpc(method: str, *args: Any, **kwargs: Any) -> Any:
        status, answer = post(api, "/control/rpc", {"method": method, "args": list(args), "kwargs": kwargs})
        assert status == 200 and answer["ok"], (method, answer)
        return decode(method, json.loads(json.dumps(answer["result"])))

    health = rpc("health", "probe/a")
    assert isinstance(health, HealthInfo) and health == sup.health("probe/a") and health.state == "backoff"
    _, answer = post(api, "/control/rpc", {"method": "health", "args": ["counter/nobody"]})
    assert answer["error"]["code"] == "not_found"
    assert rpc("faulting") == sup.faulting()
    assert rpc("alarm_list", None, limit=5) == sup.alarm_list(None, limit=5)
    assert rpc("rollout", "app") == sup.rollout("app")
    apps = {a.name: a for a in rpc("app_list")}
    assert (apps["app"].active, apps["app"].canary, apps["app"].canary_percent) == (1, 2, 50.0)
    assert apps == {a.name: a for a in sup.app_list()}
    refused = rpc("call", "probe/a", encode(b"Eok"))
    assert refused.error == ErrorCode.BACKOFF and refused.retry_after > 0
    assert rpc("call", "app/x", encode(b"")).version in (1, 2)
    _, answer = post(api, "/control/rpc", {"method": "reset", "args": ["probe/a"], "readonly": True})
    assert answer["error"]["code"] == "refused" and sup.health("probe/a") is not None
    cleared = rpc("reset", "probe/a")
    assert isinstance(cleared, HealthInfo) and cleared.faults == 3 and sup.health("probe/a") is None
    assert rpc("reset", "probe/a") is None
    assert rpc("pin", "app/x", 1)["facet_pins"] == {"x": 1}
    assert rpc("unpin", "app/x") is True
    assert rpc("promote", "app")["active"] == 2
    assert rpc("rollback", "app", None)["active"] == 1


def test_rpc_history_methods_decode_to_what_the_supervisor_returns(api):
    """snapshot, snapshots, history, restore, fork, undelete, delete_snapshot through JSON."""
    from runtime import HistoryInfo, RestoreInfo, SnapshotInfo

    sup = api.sup
    sup.call("counter/a")

    def rpc(method: str, *args: Any, **kwargs: Any) -> Any:
        status, answer = post(api, "/control/rpc", {"method": method, "args": list(args), "kwargs": kwargs})
        assert status == 200 and answer["ok"], (method, answer)
        return decode(method, json.loads(json.dumps(answer["result"])))

    taken = rpc("snapshot", "counter/a", "one")
    assert isinstance(taken, SnapshotInfo) and taken.name == "one"
    assert rpc("snapshots", "counter/a") == sup.snapshots("counter/a")
    history = rpc("history", "counter/a")
    assert isinstance(history, HistoryInfo) and history == sup.history("counter/a")
    _, answer = post(
        api,
        "/control/rpc",
        {"method": "restore", "args": ["counter/a"], "kwargs": {"snapshot": "one"}, "readonly": True},
    )
    assert answer["error"]["code"] == "refused"
    restored = rpc("restore", "counter/a", snapshot="one")
    assert isinstance(restored, RestoreInfo) and restored.source == "snapshot one"
    forked = rpc("fork", "counter/a", "counter/b")
    assert isinstance(forked, RestoreInfo) and forked.target == "counter/b"
    sup.call("counter/b")  # a commit of its own: the fork is archived
    sup.delete("counter/b")
    assert rpc("undelete", "counter/b").target == "counter/b"
    assert rpc("delete_snapshot", "counter/a", "one") is None
    assert "one" not in [s.name for s in sup.snapshots("counter/a")]
