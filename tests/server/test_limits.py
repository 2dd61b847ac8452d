"""Hostile clients: idle and slow connections, oversized and malformed headers, slow
bodies, the connection cap. The limits are uvicorn's own knobs plus ``GuardedProtocol``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import Supervisor
from server import Limits, Listen, PublicApp, ServerThread
from tests.conftest import COUNTER_WAT
from tests.server.conftest import LIMITS, Served, parse_raw, raw_exchange, read_all, request, wait_until


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def test_a_hundred_idle_and_slow_connections_do_not_delay_a_real_request(served: Served) -> None:
    idle = [connect(served.port) for _ in range(50)]
    slow = [connect(served.port) for _ in range(50)]
    opened = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:  # one header byte a second on every slow connection
        line = b"GET /counter/slow HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 100
        for byte in line:
            for sock in slow:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    pass  # closed by the server's header timeout
            if stop.wait(1.0):
                return

    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        reply = request(served.port, "GET", "/counter/alice")
        assert (reply.status, reply.json()) == (200, {"count": 1})
        # Answered while every one of the hundred was still held open by the server.
        for sock in idle + slow:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
            sock.settimeout(30)
        # Then each is answered 408 and closed once its header time runs out, although the
        # slow ones keep sending.
        for sock in idle + slow:
            answer = parse_raw(read_all(sock))
            assert (answer.status, answer.error_code()) == (408, "timeout")
            assert answer.header("connection") == "close"
        elapsed = time.monotonic() - opened
        assert LIMITS.header_timeout * 0.9 <= elapsed < LIMITS.header_timeout + 20
    finally:
        stop.set()
        writer.join()
        for sock in idle + slow:
            sock.close()
    assert request(served.port, "GET", "/counter/alice").json() == {"count": 2}


def test_too_many_headers_is_431(served: Served) -> None:
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(LIMITS.max_headers + 1))
    reply = parse_raw(raw_exchange(served.port, b"GET /counter/a HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n"))
    assert (reply.status, reply.error_code()) == (431, "too_big")
    assert not served.sup.facet_exists("counter/a")


def test_headers_over_the_byte_limit_are_431(served: Served) -> None:
    big = b"x-big: " + b"v" * LIMITS.max_header_bytes + b"\r\n"
    reply = parse_raw(raw_exchange(served.port, b"GET /counter/a HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n"))
    assert (reply.status, reply.error_code()) == (431, "too_big")
    long_url = b"GET /counter/a?" + b"q" * LIMITS.max_header_bytes + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    assert parse_raw(raw_exchange(served.port, long_url)).status == 431


def test_an_endless_header_line_is_cut_off(served: Served) -> None:
    # httptools buffers an unfinished header; the protocol counts what arrives meanwhile.
    with connect(served.port) as sock:
        sock.sendall(b"GET /counter/a HTTP/1.1\r\nx-endless: ")
        sent = 0
        try:
            while sent < 50 * LIMITS.max_header_bytes:
                sock.sendall(b"v" * 4096)
                sent += 4096
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    # 431 at once (without the limit, httptools would buffer it all and the header
    # timeout would end it with a 408).
    assert parse_raw(answer).status == 431


def test_malformed_http_is_400_json(served: Served) -> None:
    reply = parse_raw(raw_exchange(served.port, b"NOT HTTP AT ALL\r\n\r\n"))
    assert (reply.status, reply.error_code()) == (400, "bad_request")
    bad_length = b"POST /probe/a HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n"
    assert parse_raw(raw_exchange(served.port, bad_length)).status == 400


def test_a_body_slower_than_the_body_timeout_is_408(served: Served) -> None:
    assert request(served.port, "POST", "/probe/slow", b"Efirst").body == b"first"
    with connect(served.port) as sock:
        sock.sendall(b"POST /probe/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nE12")
        answer = parse_raw(read_all(sock))
    assert (answer.status, answer.error_code()) == (408, "timeout")
    assert answer.header("connection") == "close"
    assert request(served.port, "POST", "/probe/slow", b"Efine").body == b"fine"
    usage = served.sup.usage("probe/slow")  # counted as the client's fault (4xx), not a timeout's 504
    assert (usage["http_2xx"], usage["http_4xx"], usage["http_5xx"]) == (2, 1, 0)


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[int]:
    limits = Limits(connections=3)
    with Supervisor(tmp_path / "data", idle_timeout=3600) as sup:
        sup.load_app(COUNTER_WAT)
        app = PublicApp(sup, limits=limits)
        with ServerThread(app, Listen("127.0.0.1", 0), limits=limits) as thread:
            assert thread.port
            yield thread.port
        app.close()


def test_requests_beyond_the_connection_cap_are_503_json(capped: int) -> None:
    held = [connect(capped) for _ in range(3)]
    try:
        reply = request(capped, "GET", "/counter/alice")
        assert (reply.status, reply.error_code()) == (503, "overloaded")
        assert reply.header("retry-after") == "1"
    finally:
        for sock in held:
            sock.close()

    def served_again() -> bool:
        return request(capped, "GET", "/counter/alice").status == 200

    wait_until(served_again)  # the server sees the closes on its own time
