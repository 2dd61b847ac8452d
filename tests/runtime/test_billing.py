"""Billing arithmetic against hand-computed cases, price sheets, Prometheus text, policies."""

from __future__ import annotations

import json

import pytest

from runtime import BadRequest, ErrorCode, QuotaPolicy, Refusal, Supervisor
from runtime.billing import PriceSheet, compute_bill, facet_units, format_bill
from runtime.metering import SERIES_FIELDS
from tests.conftest import COUNTER_WAT


def bucket(**values):
    return [float(values.get(f, 0)) for f in SERIES_FIELDS]


def test_units_hand_computed():
    # Hours 10..13 of the epoch; the period is [10h, 14h).
    hourly = [
        (9, bucket(requests=100, storage=1e9)),  # before the period: only its size counts
        (11, bucket(requests=2_000_000, fuel=3e6, rows_read=5e6, rows_written=1e6, storage=3e9)),
        (15, bucket(requests=7)),  # after the period
    ]
    units = facet_units(hourly, since=10 * 3600, until=14 * 3600)
    assert units["requests"] == 2_000_000
    assert units["rows_read"] == 5e6 and units["rows_written"] == 1e6
    assert units["cpu_units"] == 3.0
    # 1 GB for hour 10, 3 GB for hours 11, 12, 13: 10 GB-hours = 10/730 GB-months
    assert units["storage_gb_months"] == pytest.approx(10 / 730)


def test_bill_hand_computed():
    sheet = PriceSheet(
        requests_per_million=0.15,
        rows_read_per_million=0.001,
        rows_written_per_million=1.0,
        storage_per_gb_month=0.2,
        cpu_units_per_million=0.02,
    )
    hourly = [(0, bucket(requests=4e6, rows_read=2e9, rows_written=3e6, fuel=5e12, storage=73e9))]
    bill = compute_bill([("todo", "a", hourly), ("todo", "b", [])], sheet, since=0, until=10 * 3600)
    cost = bill["facets"][0]["cost"]
    assert cost["requests"] == pytest.approx(0.60)  # 4M x 0.15/M
    assert cost["rows_read"] == pytest.approx(2.00)  # 2000M x 0.001/M
    assert cost["rows_written"] == pytest.approx(3.00)  # 3M x 1/M
    assert cost["cpu"] == pytest.approx(0.10)  # 5M units x 0.02/M
    assert cost["storage"] == pytest.approx(0.20)  # 73 GB x 10 h = 1 GB-month x 0.2
    assert cost["total"] == pytest.approx(5.90)
    (app,) = bill["apps"]
    assert app["facets"] == 2 and app["cost"]["total"] == pytest.approx(5.90)
    assert bill["total"] == pytest.approx(5.90)
    table = format_bill(bill)
    assert "todo/a" in table and "todo (total)" in table and "5.900000 USD" in table


def test_bill_from_real_requests(sup):
    sup.load_app(COUNTER_WAT)
    for _ in range(10):
        sup.call("counter/a")
    bill = sup.bill()
    (row,) = bill["facets"]
    assert row["units"]["requests"] == 10
    assert row["units"]["rows_written"] == 11  # the init's INSERT plus ten UPDATEs
    assert row["cost"]["requests"] == pytest.approx(10 / 1e6 * 0.15)
    assert row["units"]["storage_gb_months"] > 0
    json.dumps(bill)  # the JSON report
    assert sup.bill("counter")["total"] == pytest.approx(bill["total"])


def test_price_sheet_from_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"requests_per_million": 1.5, "currency": "EUR"}))
    sheet = PriceSheet.from_file(path)
    assert sheet.requests_per_million == 1.5 and sheet.rows_written_per_million == 1.0
    for bad in ({"requests_per_million": -1}, {"free_lunch": 1}, {"currency": 3}, []):
        path.write_text(json.dumps(bad))
        with pytest.raises(BadRequest):
            PriceSheet.from_file(path)
    path.write_text("{")
    with pytest.raises(BadRequest):
        PriceSheet.from_file(path)


def test_prometheus_text(sup):
    sup.load_app(COUNTER_WAT)
    sup.call("counter/a")
    sup.call("counter/a")
    sup.call("counter/b", 42)
    text = sup.prometheus()
    assert "# TYPE facets_requests_total counter" in text
    assert 'facets_requests_total{app="counter",facet="a"} 2' in text
    assert (
        'facets_errors_total{app="counter",facet="b",code="bad_request"} 1' in text
        or 'facets_requests_total{app="counter",facet="b"}' not in text
    )
    assert text.endswith("# EOF\n")


class DailyBudget(QuotaPolicy):
    """The docs' example: a per-app request budget on top of the quotas."""

    def __init__(self, per_app):
        super().__init__()
        self.per_app, self.used = per_app, {}

    def admit_request(self, app, facet, quotas):
        refusal = super().admit_request(app, facet, quotas)
        if refusal:
            return refusal
        if self.used.get(app, 0) >= self.per_app.get(app, float("inf")):
            return Refusal(ErrorCode.RATE_LIMITED, f"{app} used its daily budget")
        self.used[app] = self.used.get(app, 0) + 1
        return None


def test_custom_policy(tmp_path):
    observed = []

    class Watching(DailyBudget):
        def admit_facet(self, app, facet, existing, quotas):
            if facet.startswith("tmp"):
                return Refusal(ErrorCode.FACET_LIMIT, "no temporary facets")
            return super().admit_facet(app, facet, existing, quotas)

        def observe(self, app, facet, result):
            observed.append((facet, result.ok))

    with Supervisor(tmp_path / "d", policy=Watching({"counter": 3})) as sup:
        sup.load_app(COUNTER_WAT)
        assert [sup.call("counter/a").ok for _ in range(4)] == [True, True, True, False]
        assert sup.call("counter/b").error == "rate_limited"
        assert sup.call("counter/tmp1").error == "facet_limit"
        assert observed == [("a", True)] * 3
