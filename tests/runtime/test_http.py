"""HTTP requests through ``Supervisor.fetch``: the ``facet_http`` envelope both ways, the
checks every guest response passes, body-only (v1) apps, statuses and their meters."""

from __future__ import annotations

import json

import pytest

from runtime import ErrorCode, HttpRequest, error_body, status_for
from runtime.http import FORBIDDEN_RESPONSE_HEADERS, BadHttpResponse, decode_response

from ..conftest import COUNTER_WAT, sql_body


def answer(head: dict, body: bytes = b"") -> bytes:
    """A probe request whose answer (``E``: echo) is this response envelope."""
    return b"E" + json.dumps(head).encode() + b"\n" + body


def test_the_guest_sees_method_path_query_headers_body_and_base(probe):
    request = HttpRequest(
        "POST", "/items/3", "a=1&b=%20", (("content-type", "text/plain"), ("x-y", "z")), b"V\x00\xffraw", "/probe/a"
    )
    result = probe.fetch("probe/a", request)
    assert result.ok, result.message
    assert result.status == 200
    head, _, body = result.http.body.partition(b"\n")
    assert json.loads(head) == {
        "method": "POST",
        "path": "/items/3",
        "query": "a=1&b=%20",
        "base": "/probe/a",
        "headers": [["content-type", "text/plain"], ["x-y", "z"]],
    }
    assert body == b"V\x00\xffraw"  # the body as sent, byte for byte


def test_status_headers_and_body_come_from_the_guest(probe):
    result = probe.fetch("probe/a", HttpRequest("GET", body=answer({"status": 302, "headers": [["Location", "/x"]]})))
    assert (result.ok, result.status) == (True, 302)
    assert result.http.headers == (("location", "/x"),)  # names lower-cased
    assert result.http.body == b""


@pytest.mark.parametrize(
    "head",
    [
        {"status": 200, "headers": [["x-a", "one\r\nset-cookie: evil=1"]]},
        {"status": 200, "headers": [["x-a", "nul\x00"]]},
        {"status": 200, "headers": [["bad name", "v"]]},
        {"status": 200, "headers": [["x-a", "v" * 9000]]},
        {"status": 200, "headers": [["x-a"]]},
        {"status": 200, "headers": [["x", "v"]] * 65},
        {"status": 99},
        {"status": 600},
        {"status": "200"},
        {"status": 200.0},
        ["not", "an", "object"],
    ]
    + [{"status": 200, "headers": [[name.title(), "1"]]} for name in sorted(FORBIDDEN_RESPONSE_HEADERS)],
)
def test_a_bad_response_fails_with_bad_response(probe, head):
    result = probe.fetch("probe/a", HttpRequest("GET", body=b"E" + json.dumps(head).encode() + b"\nbody"))
    assert (result.ok, result.error, result.status) == (False, ErrorCode.BAD_RESPONSE, 500)
    assert result.http is None and result.response == b""


def test_a_bad_response_rolls_back_what_the_request_wrote(probe):
    probe.call("probe/a", sql_body("CREATE TABLE t(x)"))
    # D: two sql calls, answering the second's JSON reply: no envelope, after a write
    write, read = sql_body("INSERT INTO t VALUES (1)")[1:], sql_body("SELECT 1")[1:]
    result = probe.fetch("probe/a", HttpRequest("POST", body=b"D" + bytes([len(write)]) + write + read))
    assert (result.error, result.status) == (ErrorCode.BAD_RESPONSE, 500)
    assert probe.query("probe/a", "SELECT count(*) FROM t")["rows"] == [[0]]
    assert probe.call("probe/a", b"D" + bytes([len(write)]) + write + read).ok  # the same as a call commits
    assert probe.query("probe/a", "SELECT count(*) FROM t")["rows"] == [[1]]


def test_no_head_line_is_a_bad_response(probe):
    result = probe.fetch("probe/a", HttpRequest("GET", body=b"Ejust a body"))
    assert result.error == ErrorCode.BAD_RESPONSE


def test_an_http_write_commits(sup):
    sup.load_app(COUNTER_WAT)
    for _ in range(2):
        result = sup.fetch("counter/a", HttpRequest("POST", body=b'{"op": "incr"}'))
    assert json.loads(result.http.body) == {"count": 2}
    # both HTTP increments committed: the next (a call) counts on from them
    assert json.loads(sup.call("counter/a", b"").response) == {"count": 3}


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b'{"op": "get"}', "application/json"), (b"", "text/plain; charset=utf-8")],
)
def test_a_body_only_app_gets_the_body_and_answers_200(sup, body, kind):
    sup.load_app(COUNTER_WAT)
    result = sup.fetch("counter/a", HttpRequest("POST", "/anything", body=body))
    assert result.ok, result.message
    assert result.status == 200
    assert result.http.header("content-type") in ("application/json", kind)
    assert json.loads(result.http.body) == json.loads(sup.call("counter/b", body).response)


def test_body_only_content_type_follows_the_bytes():
    from runtime.http import body_only_response

    assert body_only_response(b'{"a": 1}').header("content-type") == "application/json"
    assert body_only_response(b"hello").header("content-type") == "text/plain; charset=utf-8"
    assert body_only_response(b"\xff\xfe").header("content-type") == "application/octet-stream"


def test_a_body_over_max_body_is_too_big_without_running_the_guest(probe):
    probe.set_quotas("probe", max_body="1KiB")
    result = probe.fetch("probe/a", HttpRequest("POST", body=b"E" + b"x" * 2000))
    assert (result.ok, result.error, result.status) == (False, ErrorCode.TOO_BIG, 413)
    assert result.usage.fuel == 0
    assert probe.call("probe/a", b"E" + b"x" * 2000).ok  # call bodies are not HTTP bodies


def test_statuses_are_counted_per_class(probe):
    probe.fetch("probe/a", HttpRequest("GET", body=answer({"status": 200})))
    probe.fetch("probe/a", HttpRequest("GET", body=answer({"status": 204})))
    probe.fetch("probe/a", HttpRequest("GET", body=answer({"status": 303})))
    probe.fetch("probe/a", HttpRequest("GET", body=answer({"status": 404})))
    probe.fetch("probe/a", HttpRequest("GET", body=b"X"))  # trap: 500
    probe.call("probe/a", b"E")  # a call counts in no class
    usage = probe.usage("probe/a")
    assert (usage["http_2xx"], usage["http_3xx"], usage["http_4xx"], usage["http_5xx"]) == (2, 1, 1, 1)
    assert usage["requests"] == 6
    assert probe.usage("probe")["http_2xx"] == 2  # the app's aggregate too


def test_refusals_before_the_facet_carry_their_status(sup):
    sup.load_app(COUNTER_WAT)
    assert sup.fetch("nope/a", HttpRequest("GET")).status == 404
    assert sup.fetch("counter/Bad Name", HttpRequest("GET")).status == 400
    sup.set_quotas("counter", rate=0.001)
    sup.fetch("counter/a", HttpRequest("GET"))  # the bucket's one token
    limited = sup.fetch("counter/a", HttpRequest("GET"))
    assert (limited.error, limited.status) == (ErrorCode.RATE_LIMITED, 429)
    assert sup.usage("counter/a")["http_4xx"] == 1


def test_fetch_takes_only_an_http_request(sup):
    with pytest.raises(TypeError):
        sup.fetch("counter/a", b"body")  # type: ignore[arg-type]


def test_status_map_and_error_body():
    assert [status_for(c) for c in (None, "bad_request", "not_found", "too_big", "rate_limited")] == [
        200,
        400,
        404,
        413,
        429,
    ]
    assert [status_for(c) for c in ("overloaded", "timeout", "storage_full", "trap", "internal")] == [
        503,
        504,
        507,
        500,
        500,
    ]
    body = json.loads(error_body(ErrorCode.TRAP, "wasm trap: /home/op/secret.rs:12 unreachable", "r-1"))
    assert body["request_id"] == "r-1" and body["error"]["code"] == "trap"
    assert "secret" not in body["error"]["message"]  # host internals stay in the log
    assert json.loads(error_body("not_found", "no app named 'x'", "r-2"))["error"]["message"] == "no app named 'x'"


def test_decode_response_keeps_body_bytes_after_the_first_newline():
    response = decode_response(b'{"status": 200, "headers": [["x-a", " padded\\t"]]}\nline1\nline2')
    assert response.body == b"line1\nline2"
    assert response.headers == (("x-a", "padded"),)
    with pytest.raises(BadHttpResponse):
        decode_response(b'{"status": 200}')  # no newline: no head


# -- fetch_many: one gate pass for a server's batch of one facet's requests ------------


def test_fetch_many_answers_in_order_and_counts_each(sup):
    sup.load_app(COUNTER_WAT)
    results = sup.fetch_many("counter/a", [HttpRequest("POST", body=b'{"op": "incr"}') for _ in range(5)])
    assert [json.loads(r.http.body)["count"] for r in results] == [1, 2, 3, 4, 5]
    assert len({r.request_id for r in results}) == 5
    usage = sup.usage("counter/a")
    assert (usage["requests"], usage["http_2xx"]) == (5, 5)


def test_fetch_many_refuses_one_and_runs_the_others(probe):
    probe.set_quotas("probe", max_body="1KiB")
    ok, big = HttpRequest("GET", body=answer({"status": 200}, b"fine")), HttpRequest("POST", body=b"E" + b"x" * 2000)
    results = probe.fetch_many("probe/a", [ok, big, HttpRequest("GET", body=b"X"), ok])
    assert [r.status for r in results] == [200, 413, 500, 200]
    assert [r.error for r in results] == [None, ErrorCode.TOO_BIG, ErrorCode.TRAP, None]


def test_fetch_many_shares_commits_with_commit_groups(tmp_path):
    from runtime import Supervisor

    with Supervisor(tmp_path / "d", durability="full") as sup:
        assert sup.commit_groups
        sup.load_app(COUNTER_WAT)
        sup.call("counter/a")  # warm: the batch below is one group of three
        results = sup.fetch_many("counter/a", [HttpRequest("POST", body=b"{}") for _ in range(3)])
        assert [r.usage.commit_group for r in results] == [3, 3, 3]
        assert [json.loads(r.http.body)["count"] for r in results] == [2, 3, 4]


def test_fetch_many_gives_up_on_a_gate_held_too_long(probe):
    import threading

    probe.set_quotas("probe/a", timeout_ms=20)  # waits at most (waiting + 1) x 2 x 20 ms
    probe.call("probe/a", b"E")
    slot = probe.registry.slot("probe", "a")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with slot.gate.held():
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        results = probe.fetch_many("probe/a", [HttpRequest("GET", body=b"E" + b"\n") for _ in range(3)])
    finally:
        release.set()
        holder.join()
    assert [(r.error, r.status) for r in results] == [(ErrorCode.OVERLOADED, 503)] * 3
    assert probe.fetch_many("probe/a", [HttpRequest("GET", body=answer({"status": 200}))])[0].ok  # the gate is free


def test_fetch_many_takes_only_http_requests(sup):
    with pytest.raises(TypeError):
        sup.fetch_many("counter/a", [b"body"])  # type: ignore[list-item]


def test_count_refused_counts_a_server_refusal_of_an_existing_facet_only(probe):
    probe.fetch("probe/a", HttpRequest("GET", body=answer({"status": 200})))
    assert probe.count_refused("probe/a", ErrorCode.TOO_BIG, "body over max_body", "s-1")
    assert probe.count_refused("probe/a", ErrorCode.TIMEOUT, "no body data", "s-2", status=408)
    assert probe.count_refused("probe/a", ErrorCode.OVERLOADED, "lane full", "s-3")
    usage = probe.usage("probe/a")
    assert (usage["requests"], usage["http_2xx"], usage["http_4xx"], usage["http_5xx"]) == (4, 1, 2, 1)
    assert usage["errors"] == {"too_big": 1, "timeout": 1, "overloaded": 1}
    assert not probe.count_refused("probe/never-created", ErrorCode.TOO_BIG, "x", "s-4")
    assert not probe.count_refused("not a target", ErrorCode.TOO_BIG, "x", "s-5")
    assert "probe/never-created" not in {f.target for f in probe.facet_list()}
