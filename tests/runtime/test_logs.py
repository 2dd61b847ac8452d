"""Logs: guest and supervisor records, neutralising, filters, streaming, retention."""

from __future__ import annotations

import threading
import time

import pytest

from runtime import BadRequest, Supervisor, neutralize
from tests.conftest import COUNTER_WAT, fixture


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("line1\nfake: line2", "line1\\nfake: line2"),
        ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
        ("rtl \u202eevil", "rtl \\u202eevil"),
        ("[bold]markup[/bold] stays text", "[bold]markup[/bold] stays text"),
        ("tab\there", "tab\\there"),
        ("héllo ✓", "héllo ✓"),
    ],
)
def test_neutralize(raw, shown):
    assert neutralize(raw) == shown


def test_guest_logs_are_structured_and_neutralised(probe):
    result = probe.call("probe/l", b"L3\x1b]0;owned\x07boom")
    records = [r for r in probe.logs("probe/l") if r.source == "guest"]
    assert len(records) == 1
    record = records[0]
    assert (record.app, record.facet, record.level) == ("probe", "l", "error")
    assert record.request_id == result.request_id
    assert record.message == "\\x1b]0;owned\\x07boom"
    assert "\x1b" not in record.message


def test_invalid_utf8_in_logs_is_replaced(probe):
    probe.call("probe/u", b"L1ok \xff\xfe end")
    (record,) = [r for r in probe.logs("probe/u") if r.source == "guest"]
    assert record.message == "ok \ufffd\ufffd end"


def test_filters_level_tail_search_time(probe):
    for level in "0123":
        probe.call("probe/f", f"L{level}message {level}".encode())
    guest = lambda records: [r.message for r in records if r.source == "guest"]  # noqa: E731
    assert guest(probe.logs("probe/f", level="warn")) == ["message 2", "message 3"]
    assert guest(probe.logs("probe/f", search="message 1")) == ["message 1"]
    assert len(probe.logs("probe/f", limit=2)) == 2
    assert probe.logs("probe/f", since=time.time() + 60) == []
    assert guest(probe.logs("probe", level="error")) == ["message 3"]
    with pytest.raises(BadRequest):
        probe.logs("probe/f", level="loud")


def test_supervisor_events(sup):
    sup.load_app(COUNTER_WAT)
    sup.call("counter/a")
    sup.set_quotas("counter/a", fuel="5M")
    sup.evict("counter/a")
    sup.load_app(fixture("probe.wat"), "counter")
    sup.call("counter/a", b"X")
    sup.set_quotas("counter/a", rate="1")
    sup.call("counter/a", b"E")
    sup.call("counter/a", b"E")
    text = "\n".join(r.message for r in sup.logs(limit=1000))
    for expected in (
        "app counter loaded",
        "facet counter/a created",
        "instantiated version 1",
        "quota changed at counter/a: fuel=5000000",
        "evicted by operator",
        "app counter upgraded to version 2",
        "request failed (trap)",
        "quota breached (rate_limited)",
    ):
        assert expected in text, expected


def test_subscribers_stream_without_polling(probe):
    received: list = []
    arrived = threading.Event()

    def on_batch(batch):
        received.extend(batch)
        if any(r.source == "guest" for r in received):
            arrived.set()

    unsubscribe = probe.subscribe_logs(on_batch)
    probe.call("probe/s", b"L1streamed")
    assert arrived.wait(5)
    assert any(r.message == "streamed" for r in received)
    unsubscribe()
    count = len(received)
    probe.call("probe/s", b"L1after")
    probe.log_sink.flush()
    assert len(received) == count


def test_a_failing_subscriber_does_not_stop_logging(probe):
    probe.subscribe_logs(lambda batch: 1 / 0)
    probe.call("probe/s", b"L1kept")
    assert any(r.message == "kept" for r in probe.logs("probe/s"))


def test_retention_by_count_and_age(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        sup.load_app(fixture("probe.wat"))
        for i in range(30):
            sup.call("probe/a", f"L1n{i}".encode())
        sup.call("probe/b", b"L1other")
        sup.log_sink.flush()
        sup.control.prune_logs(keep_per_facet=10, max_age_s=3600)
        kept = [r.message for r in sup.logs("probe/a", limit=100)]
        assert len(kept) == 10 and kept[-1] == "n29"
        assert any(r.message == "other" for r in sup.logs("probe/b"))
        time.sleep(0.05)
        sup.control.prune_logs(keep_per_facet=10, max_age_s=0.01)
        assert sup.logs("probe/a") == []
