"""The public listener, end to end: a real uvicorn on a loopback port, a real client, a
statuses for every outcome the issue lists, ids, headers and routing."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import sql_body
from tests.server.conftest import Reply, Served, parse_raw, raw_exchange, request, wait_until


def envelope(status: int, headers: list[list[str]], body: bytes = b"") -> bytes:
    """What the echo app answers with: the guest's response envelope, verbatim."""
    return json.dumps({"status": status, "headers": headers}).encode() + b"\n" + body


def test_v1_counter_answers_json_with_id_and_nosniff(served: Served) -> None:
    first = request(served.port, "GET", "/counter/alice")
    second = request(served.port, "POST", "/counter/alice/anything?x=1", b"ignored")
    assert (first.status, first.json()) == (200, {"count": 1})
    assert (second.status, second.json()) == (200, {"count": 2})
    assert first.header("content-type") == "application/json"
    assert first.header("x-content-type-options") == "nosniff"
    assert first.header("x-request-id") and first.header("x-request-id") != second.header("x-request-id")
    assert first.header("server") is None  # uvicorn's own header is off


def test_request_id_is_the_one_in_the_facets_log(served: Served) -> None:
    reply = request(served.port, "POST", "/probe/logger", b"L\x01hello from the guest")
    assert reply.status == 200
    request_id = reply.header("x-request-id")
    records = [r for r in served.sup.logs("probe/logger") if r.message == "hello from the guest"]
    assert [r.request_id for r in records] == [request_id]


def test_not_routed_paths_are_404_json(served: Served) -> None:
    for path in ("/", "/counter", "/counter/", "//alice"):
        reply = request(served.port, "GET", path)
        assert reply.status == 404, path
        assert reply.error_code() == "not_found"
        assert reply.header("x-content-type-options") == "nosniff"


def test_bad_names_are_400_and_unknown_app_404(served: Served) -> None:
    for path in ("/Counter/alice", "/counter/al%20ice", "/counter/" + "x" * 64, "/-x/alice"):
        reply = request(served.port, "GET", path)
        assert (reply.status, reply.error_code()) == (400, "bad_request"), path
    missing = request(served.port, "GET", "/nosuchapp/alice")
    assert (missing.status, missing.error_code()) == (404, "not_found")
    assert served.sup.facet_list("counter") == []  # no facet was created for a bad name


def test_body_over_max_body_is_413_declared_or_streamed(served: Served) -> None:
    served.sup.set_quotas("probe/big", max_body="1KiB")
    assert request(served.port, "POST", "/probe/big", b"E" + b"x" * 1023).status == 200
    declared = request(served.port, "POST", "/probe/big", b"E" + b"x" * 1024)
    streamed = request(served.port, "POST", "/probe/big", b"E" + b"x" * 5000, chunked=True)
    for reply in (declared, streamed):
        assert (reply.status, reply.error_code()) == (413, "too_big")
    usage = served.sup.usage("probe/big")  # the server's own 413s are counted as the facet's
    assert (usage["requests"], usage["http_2xx"], usage["http_4xx"]) == (3, 1, 2)
    # The default is 1 MiB.
    assert request(served.port, "POST", "/probe/default", b"E" + b"x" * (1024 * 1024)).status == 413
    assert request(served.port, "POST", "/probe/default", b"E" + b"x" * 1000).status == 200
    usage = served.sup.usage("probe/default")  # refused before it existed: no meter for a name
    assert (usage["requests"], usage["http_4xx"]) == (1, 0)


def test_a_declared_body_far_over_the_limit_is_refused_unread(served: Served) -> None:
    # Beyond max_body + Limits.discard_body the server answers at once and closes.
    head = b"POST /probe/big HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\nexpect: 100-continue\r\n\r\n"
    reply = parse_raw(raw_exchange(served.port, head))
    assert (reply.status, reply.error_code()) == (413, "too_big")
    assert reply.header("connection") == "close"


def test_rate_limited_is_429_with_retry_after(served: Served) -> None:
    served.sup.set_quotas("probe/rated", rate="0.01")  # one token, refilled in 100 s
    assert request(served.port, "POST", "/probe/rated", b"Eok").status == 200
    reply = request(served.port, "POST", "/probe/rated", b"Eok")
    assert (reply.status, reply.error_code()) == (429, "rate_limited")
    assert reply.header("retry-after") == "100"


def test_a_facet_past_its_queue_is_503_on_the_loop_and_holds_only_one_thread(served: Served) -> None:
    served.sup.set_quotas("probe/runaway", queue="1")
    arrived, release = served.policy.hold("probe/runaway")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(request, served.port, "POST", "/probe/runaway", b"Eheld")
        assert arrived.acquire(timeout=30)  # on the facet's one pool job, held before its gate
        second = pool.submit(request, served.port, "POST", "/probe/runaway", b"Ewaiting")
        wait_until(lambda: served.app.in_flight("probe/runaway") == 2)  # waits in the facet's lane
        refused = request(served.port, "POST", "/probe/runaway", b"Enot submitted")
        assert (refused.status, refused.error_code()) == (503, "overloaded")
        assert refused.header("retry-after") == "1"
        other = request(served.port, "POST", "/probe/healthy", b"Eserved")  # the rest are served meanwhile
        assert (other.status, other.body) == (200, b"served")
        assert not arrived.acquire(blocking=False)  # the second waits on the loop, not on a thread
        release.set()
        assert [first.result().body, second.result().body] == [b"held", b"waiting"]
    assert served.app.in_flight("probe/runaway") == 0
    usage = served.sup.usage("probe/runaway")  # the loop's 503 is in the facet's meters
    assert (usage["http_2xx"], usage["http_5xx"], usage["errors"]) == (2, 1, {"overloaded": 1})
    assert arrived.acquire(timeout=30)  # the second was admitted once the first was done
    assert not arrived.acquire(blocking=False)  # the refused one never reached a thread


def test_overloaded_by_the_runtime_is_503_with_retry_after(served: Served) -> None:
    served.sup.close()  # a supervisor shutting down refuses every request with `overloaded`
    reply = request(served.port, "POST", "/probe/late", b"Etoo late")
    assert (reply.status, reply.error_code()) == (503, "overloaded")
    assert reply.header("retry-after") == "1"


def test_timeout_is_504_and_the_others_are_served(served: Served) -> None:
    served.sup.set_quotas("probe/loop", timeout_ms="200ms", fuel="1000G")  # the clock ends it, not fuel
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(request, served.port, "POST", "/probe/loop", b"I")
        assert request(served.port, "POST", "/probe/other", b"Efine").status == 200
        reply = stuck.result()
    assert (reply.status, reply.error_code()) == (504, "timeout")


def test_storage_full_is_507(served: Served) -> None:
    assert request(served.port, "POST", "/probe/s", sql_body("CREATE TABLE t(x)")).status == 200
    served.sup.set_quotas("probe/s", storage="64KiB")
    reply = request(served.port, "POST", "/probe/s", sql_body("INSERT INTO t VALUES (randomblob(100000))"))
    assert (reply.status, reply.error_code()) == (507, "storage_full")


def test_guest_fault_is_500_without_host_internals(served: Served) -> None:
    direct = served.sup.call("probe/crash", b"X")  # what the runtime knows about such a fault
    assert direct.error == "trap" and direct.message
    reply = request(served.port, "POST", "/probe/crash", b"X")
    assert (reply.status, reply.error_code()) == (500, "trap")
    message = reply.json()["error"]["message"]
    assert direct.message not in message and "Traceback" not in message and "/" not in message
    # The details are in the facet's log, under the same id.
    request_id = reply.header("x-request-id")
    assert any(r.request_id == request_id and "unreachable" in r.message for r in served.sup.logs("probe/crash"))


def test_guest_headers_pass_and_forbidden_ones_never_reach_the_client(served: Served) -> None:
    served.sup.set_quotas("echo/h", crash_faults="off")  # five bad responses in a row: no backoff
    good = envelope(201, [["content-type", "text/html"], ["set-cookie", "a=1"], ["x-app", "v"]], b"<p>hi</p>")
    reply = request(served.port, "POST", "/echo/h", good)
    assert (reply.status, reply.body) == (201, b"<p>hi</p>")
    assert [reply.header(name) for name in ("content-type", "set-cookie", "x-app")] == ["text/html", "a=1", "v"]
    assert reply.header("content-length") == "9"
    for name, value in (
        ("content-length", "1"),
        ("transfer-encoding", "chunked"),
        ("connection", "close"),
        ("x-request-id", "forged"),
        ("x-bad", "a\r\nset-cookie: injected=1"),
    ):
        reply = request(served.port, "POST", "/echo/h", envelope(200, [[name, value]], b"body"))
        assert (reply.status, reply.error_code()) == (500, "bad_response"), name
        assert reply.header("x-request-id") != "forged"
        assert reply.all("content-length") == [str(len(reply.body))]
        assert reply.header("transfer-encoding") is None
        assert reply.header("set-cookie") is None


def test_the_facet_sees_method_path_query_headers_and_base(served: Served) -> None:
    reply = request(served.port, "PUT", "/probe/v1/deep/path?q=1", b"Ebody", {"x-thing": "yes"})
    assert (reply.status, reply.body) == (200, b"body")  # a v1 app gets the body only
    # The echo app answers a request without a body with the request line it was given.
    seen = request(served.port, "DELETE", "/echo/x/a/b%20c?k=v&j", headers={"x-thing": "Yes"}).json()
    assert (seen["method"], seen["path"], seen["query"], seen["base"]) == ("DELETE", "/a/b c", "k=v&j", "/echo/x")
    assert ["x-thing", "Yes"] in seen["headers"]
    for path, below in (("/echo/x", "/"), ("/echo/x/", "/"), ("/echo/x//y/", "//y/")):
        assert request(served.port, "GET", path).json()["path"] == below, path
    by_host = request(served.port, "GET", "/p?q", headers={"host": "x.echo.facets.test"}).json()
    assert (by_host["path"], by_host["query"], by_host["base"]) == ("/p", "q", "")


def test_host_routing_under_the_base_domain(served: Served) -> None:
    reply = request(served.port, "GET", "/", headers={"host": "bob.counter.facets.test:8800"})
    assert (reply.status, reply.json()) == (200, {"count": 1})
    assert request(served.port, "GET", "/counter/bob").json() == {"count": 2}  # the same facet by path
    too_deep = request(served.port, "GET", "/", headers={"host": "a.b.counter.facets.test"})
    assert (too_deep.status, too_deep.error_code()) == (404, "not_found")
    bad = request(served.port, "GET", "/", headers={"host": "Bob_!.counter.facets.test"})
    assert bad.status == 400


def test_every_concurrent_request_is_answered_once(served: Served) -> None:
    barrier = threading.Barrier(8)

    def one(i: int) -> Reply:
        barrier.wait()
        return request(served.port, "POST", f"/probe/p{i % 3}", b"E%d" % i)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(one, range(64)))
    assert sorted(int(r.body) for r in replies) == list(range(64))
    assert len({r.header("x-request-id") for r in replies}) == 64


def test_a_failure_inside_the_server_is_a_json_500_without_details(served: Served) -> None:
    def broken(target: str, requests: object) -> None:
        raise RuntimeError("secret host detail /etc/passwd")

    served.app._fetch_many = broken  # type: ignore[assignment]
    reply = request(served.port, "POST", "/probe/any", b"Ex")
    assert (reply.status, reply.error_code()) == (500, "internal")
    assert b"secret" not in reply.body and b"passwd" not in reply.body
    assert served.app.in_flight("probe/any") == 0
