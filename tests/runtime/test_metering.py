"""Metering: counters against known work, scans, latency, series, durability across restarts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from runtime import Supervisor
from runtime.metering import Meter, Meters, Usage
from tests.conftest import COUNTER_WAT, ROOT, sql_body


def test_counters_match_known_work(probe):
    probe.set_quotas("probe/w", crash_faults="off")  # three faults in a row below: no backoff
    probe.call("probe/w", sql_body("CREATE TABLE t(x)"))
    for _ in range(10):
        probe.call("probe/w", sql_body("INSERT INTO t VALUES (1), (2), (3)"))
    probe.call("probe/w", b"X")
    probe.call("probe/w", b"X")
    probe.call("probe/w", b"P")
    for _ in range(4):
        probe.call("probe/w", b"K\x03")  # 3 logs of 4 bytes each
    u = probe.usage("probe/w")
    assert u["requests"] == 1 + 10 + 4 + 3
    assert u["rows_written"] == 30
    assert u["log_bytes"] == 4 * 3 * 4
    assert u["errors"] == {"trap": 2, "bad_response": 1}
    assert u["error_count"] == 3
    assert u["cold_starts"] == 1 + 3  # the first call, then after each failure
    assert u["sql_calls"] == 11
    assert u["fuel"] > 0 and u["p50_ms"] > 0 and u["p99_ms"] >= u["p50_ms"]
    assert u["storage"] > 0 and u["memory"] > 0
    app = probe.usage("probe")
    assert app["requests"] == u["requests"] and app["rows_written"] == 30


def test_app_and_fleet_aggregate_facets(probe):
    probe.load_app(COUNTER_WAT)
    for _ in range(3):
        probe.call("counter/a")
    probe.call("counter/b")
    probe.call("probe/x", b"E")
    assert probe.usage("counter")["requests"] == 4
    assert probe.usage("counter/b")["requests"] == 1
    assert probe.usage()["requests"] == 5


def test_full_table_scan_shows_in_rows_read(probe):
    probe.call("probe/scan", sql_body("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)"))
    probe.call(
        "probe/scan",
        sql_body(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10000) "
            "INSERT INTO t(v) SELECT n FROM r"
        ),
    )
    by_key = probe.call("probe/scan", sql_body("SELECT v FROM t WHERE id = 5000"))
    scan = probe.call("probe/scan", sql_body("SELECT id FROM t WHERE v = 5000"))
    assert by_key.usage.rows_read < 5
    assert scan.usage.rows_read >= 100, scan.usage  # 10,000 rows visited, one returned


def test_series_counts_requests(probe):
    for _ in range(7):
        probe.call("probe/s", b"E")
    points = probe.series("probe/s", "requests", points=120)
    assert len(points) == 120 and sum(points) == 7
    assert sum(probe.series("probe", "requests", points=120)) == 7
    assert sum(probe.series(None, "requests", resolution=60, points=5)) == 7
    assert probe.series("probe/none", "requests", points=3) == [0.0, 0.0, 0.0]


def test_minute_and_hour_series_hold_every_request_including_the_current_second():
    meter = Meter()
    usage = Usage(fuel=10, wall_ms=1.0, rows_written=1)
    # seconds 120, 120, 121, 179 fall in minute 2; second 180 opens minute 3
    for now in (120.1, 120.5, 121.2, 179.9, 180.0):
        meter.record(usage, None, now, storage=4096)
    assert meter.sparkline("requests", 60, points=2, now=180.5) == [4.0, 1.0]
    assert meter.sparkline("fuel", 3600, points=1, now=180.5) == [50.0]
    # more requests in a second already read: each is counted once
    meter.record(usage, "trap", 180.7, storage=8192)
    assert meter.sparkline("requests", 60, points=2, now=180.9) == [4.0, 2.0]
    assert meter.sparkline("errors", 60, points=2, now=180.9) == [0.0, 1.0]
    assert meter.sparkline("storage", 60, points=2, now=180.9) == [4096.0, 8192.0]
    assert meter.sparkline("requests", 1, points=62, now=180.9)[-1] == 2.0


def test_flusher_gets_the_current_seconds_requests_in_minute_and_hour_buckets(monkeypatch):
    clock = [7200.2]
    monkeypatch.setattr("runtime.metering.time.time", lambda: clock[0])
    meters = Meters()
    for _ in range(3):
        meters.record("a", "f", Usage(fuel=5), None)
    rows, series = meters.collect_dirty()
    assert [r[:2] for r in rows] == [("a", "f")]
    assert sorted((res, bucket, values[0]) for _, _, res, bucket, values in series) == [(60, 120, 3.0), (3600, 2, 3.0)]
    clock[0] = 7200.6  # the same second: the flusher sends the buckets again, with all four
    meters.record("a", "f", Usage(fuel=5), None)
    _, series = meters.collect_dirty()
    assert sorted((res, values[0], values[2]) for _, _, res, _, values in series) == [
        (60, 4.0, 20.0),
        (3600, 4.0, 20.0),
    ]
    assert meters.collect_dirty() == ([], [])  # nothing new: nothing to write


def test_snapshot_follows_requests_and_the_clock_and_is_a_copy(monkeypatch):
    clock = [100.2]
    monkeypatch.setattr("runtime.metering.time.time", lambda: clock[0])
    meter = Meter()
    meter.record(Usage(fuel=7), None, clock[0])
    assert meter.snapshot()["rps"] == 0  # second 100 is not complete yet
    clock[0] = 101.5
    first = meter.snapshot()
    assert (first["rps"], first["requests"], first["fuel"]) == (1, 1, 7)
    first["requests"] = 99
    first["errors"]["trap"] = 5
    meter.record(Usage(fuel=3), "trap", clock[0])
    again = meter.snapshot()
    assert (again["requests"], again["fuel"], again["errors"]) == (2, 10, {"trap": 1})
    clock[0] = 103.5  # no requests in second 102: the rate falls to 0
    assert meter.snapshot()["rps"] == 0


def test_a_busy_facets_meter_stays_small_however_long_it_runs(monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr("runtime.metering.time.time", lambda: clock[0])
    meters = Meters()
    stored: dict[tuple[int, int], list[float]] = {}
    for second in range(3 * 3600):  # three hours, a request a second, a flush a second
        clock[0] = 1_000_000 + second + 0.5
        meters.record("a", "f", Usage(fuel=2), None)
        for _, _, res, bucket, values in meters.collect_dirty()[1]:
            stored[(res, bucket)] = values  # what the control database keeps
    meter = meters.facet("a", "f")
    assert len(meter.series[1]) <= 121
    assert len(meter.series[60]) == 1 and len(meter.series[3600]) == 1
    # nothing was lost on the way to the database
    assert sum(v[0] for (res, _), v in stored.items() if res == 60) == 3 * 3600
    assert sum(v[2] for (res, _), v in stored.items() if res == 3600) == 2 * 3 * 3600


def test_a_clock_going_back_never_overwrites_a_stored_bucket(monkeypatch):
    clock = [130.0]
    monkeypatch.setattr("runtime.metering.time.time", lambda: clock[0])
    meters = Meters()
    meters.record("a", "f", Usage(), None)  # minute 2
    clock[0] = 190.0
    meters.record("a", "f", Usage(), None)  # minute 3
    sent = {(res, bucket): values[0] for _, _, res, bucket, values in meters.collect_dirty()[1]}
    assert sent[(60, 2)] == 1 and sent[(60, 3)] == 1
    clock[0] = 135.0  # back into minute 2, already stored
    meters.record("a", "f", Usage(), None)
    clock[0] = 136.0
    sent = {(res, bucket): values[0] for _, _, res, bucket, values in meters.collect_dirty()[1]}
    assert (60, 2) not in sent and sent[(60, 3)] == 2  # counted in the newest bucket


def test_minute_and_hour_series_come_from_the_control_database(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        sup.load_app(COUNTER_WAT)
        for _ in range(4):
            sup.call("counter/a")
        sup.call("counter/b")
        assert sum(sup.series("counter/a", "requests", resolution=60, points=3)) == 4
        assert sum(sup.series("counter", "requests", resolution=3600, points=2)) == 5
    with Supervisor(tmp_path / "d") as sup:  # a restart keeps them (the live ones are gone)
        assert sum(sup.series(None, "requests", resolution=60, points=3)) == 5
        assert sum(sup.series("counter/b", "fuel", resolution=3600, points=2)) > 0


def test_stored_series_are_pruned_to_their_retention(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        now_minute, now_hour = int(time.time()) // 60, int(time.time()) // 3600
        sup.control.save_usage(
            [],
            [
                ("x", "y", 60, now_minute - 2000, [1.0] * 8),
                ("x", "y", 60, now_minute - 10, [1.0] * 8),
                ("x", "y", 3600, now_hour - 10_000, [1.0] * 8),
                ("x", "y", 3600, now_hour - 5, [1.0] * 8),
            ],
        )
        assert sup.control.prune_series({60: 1440, 3600: 24 * 400}) == 2
        assert sorted(sup.control.series_totals("x", "y", 60, 0)) == [now_minute - 10]
        assert sorted(sup.control.series_totals("x", None, 3600, 0)) == [now_hour - 5]


def test_usage_and_logs_survive_restart(tmp_path):
    with Supervisor(tmp_path / "d") as sup:
        sup.load_app(COUNTER_WAT)
        for _ in range(5):
            sup.call("counter/a")
    with Supervisor(tmp_path / "d") as sup:
        assert sup.usage("counter/a")["requests"] == 5
        assert sup.usage("counter")["requests"] == 5
        assert any("created" in r.message for r in sup.logs("counter/a"))
        sup.call("counter/a")
        assert sup.usage("counter/a")["requests"] == 6


def test_crash_loses_at_most_one_second_of_counters(tmp_path):
    """Kill the process without any shutdown: counters older than the flush interval are kept."""
    data = tmp_path / "d"
    script = textwrap.dedent(f"""
        import os, time, sys
        sys.path.insert(0, {str(ROOT)!r})
        from runtime import Supervisor
        sup = Supervisor({str(data)!r}, usage_flush_interval=1.0)
        sup.load_app({str(COUNTER_WAT)!r})
        for _ in range(20):
            sup.call("counter/a")
        time.sleep(2.5)                   # more than one flush interval
        for _ in range(5):
            sup.call("counter/a")
        os._exit(9)                       # crash: no close(), no final flush
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    with Supervisor(data) as sup:
        requests = sup.usage("counter/a")["requests"]
        committed = int(sup.call("counter/a").response.decode().split(":")[1].rstrip("}")) - 1
    assert committed == 25  # every committed request's data is there
    assert 20 <= requests <= 25  # counters: at most the last second lost
