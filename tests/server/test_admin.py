"""The admin listener: /metrics, /healthz and mounted routes; the public listener serves
none of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from server import AdminApp, Listen, ServerThread
from tests.server.conftest import Served, request


async def control_app(scope: Any, receive: Any, send: Any) -> None:
    """A stand-in for the control API mounted at /control: says what it was given."""
    body = json.dumps({"path": scope["path"], "root_path": scope["root_path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def admin(served: Served) -> Iterator[int]:
    app = AdminApp(served.sup, mounts={"/control": control_app})
    with ServerThread(app, Listen("127.0.0.1", 0)) as thread:
        assert thread.port
        yield thread.port
    app.close()


def test_metrics_and_healthz(served: Served, admin: int) -> None:
    assert request(served.port, "GET", "/counter/alice").status == 200
    metrics = request(admin, "GET", "/metrics")
    assert metrics.status == 200
    assert (metrics.header("content-type") or "").startswith("text/plain; version=0.0.4")
    assert 'facet="alice"' in metrics.body.decode()
    assert metrics.header("x-request-id")
    health = request(admin, "GET", "/healthz")
    assert health.status == 200
    body = health.json()
    assert (body["ok"], body["facets"], body["warm"]) == (True, 1, 1)
    assert body["uptime"] >= 0


def test_mounted_routes_get_their_prefix_as_root_path(admin: int) -> None:
    assert request(admin, "GET", "/control/commands/run").json() == {"path": "/commands/run", "root_path": "/control"}
    assert request(admin, "GET", "/control").json() == {"path": "/", "root_path": "/control"}
    other = request(admin, "GET", "/controlx")
    assert (other.status, other.error_code()) == (404, "not_found")
    assert request(admin, "POST", "/metrics").status == 405


def test_the_public_listener_never_serves_admin_paths(served: Served, admin: int) -> None:
    for path in ("/metrics", "/healthz", "/control", "/control/commands/run", "/metrics/x", "/healthz/"):
        reply = request(served.port, "GET", path)
        assert reply.status == 404, path
        assert reply.error_code() == "not_found"
        assert b"facets_" not in reply.body and b"uptime" not in reply.body
