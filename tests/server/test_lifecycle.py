"""Lifecycle: ``ServerThread`` (port 0, Unix socket, drain on stop) and ``facets serve`` as a
real process: SIGTERM drains the request in flight and exits 0 with usage flushed; kill -9
during load loses no acknowledged response."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime import Supervisor
from server import AdminApp, Listen, ServerThread
from tests.conftest import COUNTER_WAT, ROOT
from tests.server.conftest import Served, parse_raw, read_all, request, wait_until


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_unix_socket_is_private_and_removed_on_stop(served: Served, tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    app = AdminApp(served.sup)
    with ServerThread(app, Listen(path=path)) as thread:
        assert thread.port is None and thread.url == f"unix:{path}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            reply = parse_raw(read_all(sock))
        assert (reply.status, reply.json()["ok"]) == (200, True)
    app.close()
    assert not os.path.exists(path)


def test_a_port_in_use_is_an_oserror(served: Served) -> None:
    with pytest.raises(OSError):
        ServerThread(AdminApp(served.sup), Listen("127.0.0.1", served.port)).start()


def test_stop_drains_the_request_in_flight(served: Served, tmp_path: Path) -> None:
    # A second server for the same app, stopped while one of its requests is held.
    thread = ServerThread(served.app, Listen("127.0.0.1", 0)).start()
    assert thread.port
    arrived, release = served.policy.hold("probe/draining")
    with ThreadPoolExecutor(2) as pool:
        answer = pool.submit(request, thread.port, "POST", "/probe/draining", b"Edrained")
        assert arrived.acquire(timeout=30)
        stopping = pool.submit(thread.stop)
        wait_until(lambda: refuses_connections(thread.port or 0))  # no longer accepting
        assert not stopping.done()  # ...but waiting for the request
        release.set()
        reply = answer.result()
        stopping.result()
    assert (reply.status, reply.body) == (200, b"drained")


# -- facets serve, a real process ---------------------------------------------------


class Serving:
    def __init__(self, data: Path, *args: str) -> None:
        command = [sys.executable, "-m", "console", "--data", str(data), *args, "serve"]
        command += ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline().decode() for _ in range(2)]
        assert lines[0].startswith("public http://127.0.0.1:"), (lines, self.stderr())
        assert lines[1].startswith("admin  http://127.0.0.1:"), lines
        self.port = int(lines[0].split(":")[2].split("/")[0])
        self.admin = int(lines[1].split(":")[2].split("/")[0])

    def stderr(self) -> str:
        """What the process wrote to stderr, once it has exited (for failure messages)."""
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    with Supervisor(tmp_path / "data") as sup:
        sup.load_app(COUNTER_WAT)
    return tmp_path / "data"


@pytest.fixture
def serving(data: Path) -> Iterator[Serving]:
    server = Serving(data)
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
    server.proc.wait()


def test_sigterm_drains_the_request_in_flight_and_exits_0(serving: Serving, data: Path) -> None:
    first = request(serving.port, "GET", "/counter/alice")
    assert first.json() == {"count": 1}
    assert request(serving.admin, "GET", "/healthz").json()["facets"] == 1
    with socket.create_connection(("127.0.0.1", serving.port), timeout=30) as sock:
        # Expect: 100-continue: the "100 Continue" says the app is running and waiting for
        # the body, so the request is in flight when SIGTERM arrives.
        sock.sendall(b"POST /counter/alice HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        serving.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses_connections(serving.port), timeout=30)
        sock.sendall(b"{}")
        reply = parse_raw(read_all(sock))
    assert (reply.status, reply.json()) == (200, {"count": 2})
    assert serving.proc.wait(timeout=60) == 0, serving.stderr()
    with Supervisor(data) as sup:  # meters and logs were flushed before the exit
        usage = sup.usage("counter/alice")
        assert usage["requests"] == 2
        assert usage["http_2xx"] == 2
        # The facet's instantiation is logged under the request that caused it.
        assert first.header("x-request-id") in {r.request_id for r in sup.logs("counter/alice")}


def facets(data: Path, *args: str) -> dict:
    """Run one ``facets COMMAND --json`` in its own process and return its answer."""
    command = [sys.executable, "-m", "console", "--data", str(data), *args, "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_commands_from_other_processes_go_to_the_server_and_usage_adds_up(serving: Serving, data: Path) -> None:
    owner = json.loads((data / "owner.json").read_text())
    assert (owner["role"], owner["public_url"]) == ("serve", f"http://127.0.0.1:{serving.port}")
    with ThreadPoolExecutor(4) as pool:
        http_replies = pool.map(lambda _: request(serving.port, "POST", "/counter/shared"), range(20))
        cli = [pool.submit(facets, data, "call", "counter/shared") for _ in range(3)]
        assert {r.status for r in http_replies} == {200}
        assert all(c.result()["ok"] for c in cli)
    usage = facets(data, "usage", "counter/shared")["usage"]
    assert (usage["requests"], usage["http_2xx"]) == (23, 20)  # the three calls are not HTTP
    assert request(serving.port, "GET", "/counter/shared").json() == {"count": 24}


def test_the_control_api_on_the_admin_listener_needs_the_owners_token(serving: Serving, data: Path) -> None:
    line = json.dumps({"line": "quota counter fuel=7M"}).encode()
    for headers in ({}, {"authorization": "Bearer " + "x" * 43}, {"authorization": "Basic abc"}):
        refused = request(serving.admin, "POST", "/control/command", line, headers)
        assert (refused.status, refused.json()["error"]["code"]) == (401, "refused")
    token_file = data / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600  # only the owner's user reads it
    token = token_file.read_text().strip()
    reply = request(serving.admin, "POST", "/control/command", line, {"authorization": f"Bearer {token}"})
    assert reply.status == 200 and reply.json()["ok"] is True
    check = json.dumps({"line": "quota counter"}).encode()
    shown = request(serving.admin, "POST", "/control/command", check, {"authorization": f"Bearer {token}"})
    assert shown.json()["quotas"]["fuel"] == 7_000_000  # the server's own supervisor changed
    assert request(serving.port, "POST", "/control/command", line).status == 404  # never on the public side


def test_sigint_exits_0_too(serving: Serving) -> None:
    assert request(serving.port, "GET", "/counter/bob").status == 200
    serving.proc.send_signal(signal.SIGINT)
    assert serving.proc.wait(timeout=60) == 0, serving.stderr()


def test_kill_9_under_load_loses_no_acknowledged_response(data: Path) -> None:
    server = Serving(data, "--durability", "process")  # survives a killed process
    acked: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            while True:
                conn.request("POST", "/counter/load", body=b"")
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    with lock:
                        acked.append(json.loads(body)["count"])
                        if len(acked) >= 300:
                            enough.set()
        except (OSError, http.client.HTTPException):
            return  # the server is gone
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        assert enough.wait(120), server.stderr()
        server.proc.kill()  # SIGKILL while the clients keep sending
    finally:
        for thread in threads:
            thread.join(60)
        server.proc.kill()
        server.proc.wait()
    assert len(set(acked)) == len(acked) >= 300
    with Supervisor(data) as sup:
        stored = sup.query("counter/load", "SELECT n FROM counter")["rows"][0][0]
    assert max(acked) <= stored  # every count a client saw committed is in the database
