"""A real uvicorn on a loopback port 0 (``ServerThread``) in front of a supervisor, and a
real HTTP client (stdlib ``http.client`` and raw sockets)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runtime import QuotaPolicy, Quotas, Refusal, Supervisor
from server import Limits, Listen, PublicApp, ServerThread
from tests.conftest import COUNTER_WAT, fixture

HTTP_ECHO_WAT = Path(__file__).with_name("http_echo.wat")


def v1_probe() -> str:
    """tests/fixtures/probe.wat without its facet_http export: a body-only (v1) app, so
    over HTTP its ops answer as they do to ``call`` (``E<x>`` answers 200 ``x``)."""
    text = fixture("probe.wat").read_text()
    start = text.index('(func (export "facet_http")')
    module_end = text.rindex(")")  # facet_http is the module's last field
    stripped = text[:start] + text[module_end:]
    assert '(export "facet_http")' not in stripped
    return stripped


#: Short header and body timeouts, so the tests that wait for them finish soon.
LIMITS = Limits(header_timeout=3.0, body_timeout=1.0)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]

    def json(self) -> dict:
        return json.loads(self.body)

    def error_code(self) -> str:
        """The error body's code, after checking its shape and its id against the header."""
        assert self.header("content-type") == "application/json"
        body = self.json()
        assert set(body) == {"error", "request_id"}
        assert set(body["error"]) == {"code", "message"}
        assert body["request_id"] == self.header("x-request-id")
        return body["error"]["code"]


def request(
    port: int,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked:
            conn.request(method, path, body=iter([body or b""]), headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed before reading it all; its answer was sent
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_raw(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return Reply(status, headers, body)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition another thread makes true (checked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class HoldingPolicy(QuotaPolicy):
    """QuotaPolicy that can hold a facet's requests before its gate (on their fetch thread),
    so a test knows exactly how many are in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.release: dict[str, threading.Event] = {}
        self.arrived: dict[str, threading.Semaphore] = {}

    def hold(self, target: str) -> tuple[threading.Semaphore, threading.Event]:
        self.arrived[target] = threading.Semaphore(0)
        self.release[target] = threading.Event()
        return self.arrived[target], self.release[target]

    def admit_request(self, app: str, facet: str, quotas: Quotas) -> Refusal | None:
        target = f"{app}/{facet}"
        if target in self.release:
            self.arrived[target].release()
            self.release[target].wait(30)
        return super().admit_request(app, facet, quotas)


@dataclass
class Served:
    sup: Supervisor
    app: PublicApp
    port: int
    policy: HoldingPolicy


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    policy = HoldingPolicy()
    with Supervisor(tmp_path / "data", idle_timeout=3600, policy=policy) as sup:
        sup.load_app(COUNTER_WAT)
        sup.load_app_bytes(v1_probe(), "probe")
        sup.load_app(HTTP_ECHO_WAT, "echo")
        app = PublicApp(sup, base_domain="facets.test", limits=LIMITS)
        try:
            with ServerThread(app, Listen("127.0.0.1", 0), limits=LIMITS) as thread:
                assert thread.port
                try:
                    yield Served(sup, app, thread.port, policy)
                finally:  # let held requests finish before the server drains
                    for event in policy.release.values():
                        event.set()
        finally:
            app.close()
