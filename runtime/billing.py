"""Turning usage into money (``PriceSheet``, ``compute_bill``) and into Prometheus text.

Billable units, per facet over a period:

* requests, rows read, rows written: summed from the hourly usage series; rows read
  are the rows SQL statements visited (a full scan of N rows reads ~N, a key lookup 1,
  see ``storage.FacetDB.execute_guest``), as Durable Objects bill them;
* CPU units: one unit is 1,000,000 fuel (about a millisecond of wasm);
* storage in GB-months: the facet's database size integrated over the period,
  hour by hour (a size holds from the hour it was measured until the next
  measurement), divided by 730 hours per month; 1 GB = 10^9 bytes.

The period is counted in whole hours (the series' resolution): a bucket
belongs to the period when its hour starts inside ``[since, until)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import BadRequest
from .metering import SERIES_FIELDS

HOURS_PER_MONTH = 730
FUEL_PER_CPU_UNIT = 1_000_000


@dataclass(frozen=True)
class PriceSheet:
    """Prices in ``currency``. Defaults follow Cloudflare's public Durable Objects
    (SQLite) and Workers prices."""

    requests_per_million: float = 0.15
    rows_read_per_million: float = 0.001
    rows_written_per_million: float = 1.00
    storage_per_gb_month: float = 0.20
    cpu_units_per_million: float = 0.02
    currency: str = "USD"

    @classmethod
    def from_file(cls, path: str | Path) -> PriceSheet:
        """Read a JSON object overriding any of the fields; unknown keys and bad values are refused."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise BadRequest(f"no price sheet at {str(path)!r}") from None
        except ValueError as exc:
            raise BadRequest(f"price sheet {path} is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> PriceSheet:
        if not isinstance(data, dict):
            raise BadRequest("a price sheet is a JSON object")
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise BadRequest(f"unknown price {key!r}; known: {', '.join(sorted(known))}")
            if key == "currency":
                if not isinstance(value, str) or not value:
                    raise BadRequest("currency must be a non-empty string")
            elif (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value)
            ):
                raise BadRequest(f"price {key} must be a number >= 0, not {value!r}")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_REQ, _FUEL, _READ, _WRITTEN, _STORAGE = (
    SERIES_FIELDS.index(f) for f in ("requests", "fuel", "rows_read", "rows_written", "storage")
)


def facet_units(hourly: list[tuple[int, list[float]]], since: float, until: float) -> dict[str, float]:
    """Billable units of one facet from its hourly buckets ``(hour, values)``, sorted by hour."""
    first, last = math.floor(since / 3600), math.ceil(until / 3600)  # hours [first, last)
    units = {"requests": 0.0, "rows_read": 0.0, "rows_written": 0.0, "cpu_units": 0.0, "storage_gb_months": 0.0}
    size_bytes, size_from = 0.0, first
    byte_hours = 0.0
    for hour, values in hourly:
        if hour >= last:
            break
        if hour >= first:
            units["requests"] += values[_REQ]
            units["rows_read"] += values[_READ]
            units["rows_written"] += values[_WRITTEN]
            units["cpu_units"] += values[_FUEL] / FUEL_PER_CPU_UNIT
            byte_hours += size_bytes * (hour - size_from)
            size_from = hour
        size_bytes = values[_STORAGE]
    byte_hours += size_bytes * (last - max(size_from, first))
    units["storage_gb_months"] = byte_hours / 1e9 / HOURS_PER_MONTH
    return units


def price(units: dict[str, float], sheet: PriceSheet) -> dict[str, float]:
    cost = {
        "requests": units["requests"] / 1e6 * sheet.requests_per_million,
        "rows_read": units["rows_read"] / 1e6 * sheet.rows_read_per_million,
        "rows_written": units["rows_written"] / 1e6 * sheet.rows_written_per_million,
        "cpu": units["cpu_units"] / 1e6 * sheet.cpu_units_per_million,
        "storage": units["storage_gb_months"] * sheet.storage_per_gb_month,
    }
    cost["total"] = sum(cost.values())
    return cost


def compute_bill(
    per_facet: Iterable[tuple[str, str, list[tuple[int, list[float]]]]], sheet: PriceSheet, since: float, until: float
) -> dict[str, Any]:
    """The bill as a JSON-ready dict: per facet, per app, and the total."""
    facets: list[dict[str, Any]] = []
    apps: dict[str, dict[str, Any]] = {}
    for app, facet, hourly in per_facet:
        units = facet_units(hourly, since, until)
        cost = price(units, sheet)
        facets.append({"app": app, "facet": facet, "units": units, "cost": cost})
        total = apps.setdefault(
            app, {"app": app, "facets": 0, "units": dict.fromkeys(units, 0.0), "cost": dict.fromkeys(cost, 0.0)}
        )
        total["facets"] += 1
        for k, v in units.items():
            total["units"][k] += v
        for k, v in cost.items():
            total["cost"][k] += v
    return {
        "since": since,
        "until": until,
        "currency": sheet.currency,
        "prices": sheet.as_dict(),
        "facets": facets,
        "apps": list(apps.values()),
        "total": sum(a["cost"]["total"] for a in apps.values()),
    }


def format_bill(bill: dict[str, Any]) -> str:
    """A plain-text table of a bill, one row per facet and a total per app."""
    header = ("facet", "requests", "rows read", "rows written", "cpu units", "GB-months", "cost")
    lines: list[tuple[str, ...]] = [header]
    for app in bill["apps"]:
        for row in (f for f in bill["facets"] if f["app"] == app["app"]):
            lines.append(_bill_row(f"{row['app']}/{row['facet']}", row, bill["currency"]))
        lines.append(_bill_row(f"{app['app']} (total)", app, bill["currency"]))
    lines.append(("total", "", "", "", "", "", f"{bill['total']:.6f} {bill['currency']}"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=False))
        )
        for line in lines
    )


def _bill_row(label: str, row: dict[str, Any], currency: str) -> tuple[str, ...]:
    u = row["units"]
    return (
        label,
        f"{u['requests']:.0f}",
        f"{u['rows_read']:.0f}",
        f"{u['rows_written']:.0f}",
        f"{u['cpu_units']:.3f}",
        f"{u['storage_gb_months']:.6f}",
        f"{row['cost']['total']:.6f} {currency}",
    )


# -- Prometheus / OpenMetrics text ---------------------------------------------------
_METRICS = (
    ("requests", "facets_requests_total", "counter", "Requests that reached the facet."),
    ("fuel", "facets_fuel_total", "counter", "Wasm fuel consumed."),
    ("wall_ms", "facets_wall_seconds_total", "counter", "Wall time spent handling requests."),
    ("rows_read", "facets_rows_read_total", "counter", "Rows read (rows visited by SQL statements)."),
    ("rows_written", "facets_rows_written_total", "counter", "Rows written by committed requests."),
    ("log_bytes", "facets_log_bytes_total", "counter", "Guest log bytes kept."),
    ("logs_truncated", "facets_logs_truncated_total", "counter", "Guest log calls cut by the log_bytes quota."),
    ("cold_starts", "facets_cold_starts_total", "counter", "Instantiations."),
    ("storage", "facets_storage_bytes", "gauge", "Database size."),
    ("memory", "facets_memory_bytes", "gauge", "Linear memory of the warm instance."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(snapshots: Iterable[tuple[str, str, dict[str, Any]]]) -> str:
    """Prometheus text exposition of per-facet usage snapshots ``(app, facet, snapshot)``."""
    snapshots = list(snapshots)
    out: list[str] = []
    for key, name, kind, help_text in _METRICS:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for app, facet, snap in snapshots:
            value = snap.get(key, 0) or 0
            if key == "wall_ms":
                value = value / 1000
            out.append(f'{name}{{app="{_label(app)}",facet="{_label(facet)}"}} {value:g}')
    out.append("# HELP facets_errors_total Failed requests by error code.")
    out.append("# TYPE facets_errors_total counter")
    for app, facet, snap in snapshots:
        for code, n in sorted(snap.get("errors", {}).items()):
            out.append(f'facets_errors_total{{app="{_label(app)}",facet="{_label(facet)}",code="{_label(code)}"}} {n}')
    out.append("# EOF")
    return "\n".join(out) + "\n"
