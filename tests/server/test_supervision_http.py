"""Supervision over HTTP: a facet backing off answers 503 with Retry-After, at once."""

from __future__ import annotations

import time

from tests.server.conftest import Served, request


def test_a_facet_in_backoff_answers_503_with_retry_after(served: Served) -> None:
    served.sup.set_quotas("probe/loop", backoff_ms="30s", backoff_max_ms="1h")
    for _ in range(3):
        assert request(served.port, "POST", "/probe/loop", b"X").status == 500  # a trap
    reply = request(served.port, "POST", "/probe/loop", b"Eok")
    assert (reply.status, reply.error_code()) == (503, "backoff")
    assert 28 <= int(reply.header("retry-after") or 0) <= 30
    assert reply.header("x-request-id")
    assert request(served.port, "POST", "/probe/other", b"Eok").status == 200  # the others serve


def test_a_quarantined_facet_answers_503_until_reset(served: Served) -> None:
    served.sup.set_quotas("probe/q", quarantine_faults=2)
    for _ in range(2):
        request(served.port, "POST", "/probe/q", b"X")
    reply = request(served.port, "POST", "/probe/q", b"Eok")
    assert (reply.status, reply.error_code()) == (503, "quarantined")
    assert "reset" in reply.json()["error"]["message"]
    assert reply.header("retry-after") is None  # it ends when an operator says so
    served.sup.reset("probe/q")
    assert request(served.port, "POST", "/probe/q", b"Eback").status == 200


def test_the_probe_after_a_backoff_recovers_over_http(served: Served) -> None:
    served.sup.set_quotas("probe/r", backoff_ms="50ms")
    for _ in range(3):
        request(served.port, "POST", "/probe/r", b"X")
    time.sleep(0.1)
    assert request(served.port, "POST", "/probe/r", b"Eok").status == 200
    assert served.sup.health("probe/r") is None
