"""UsagePanel: one facet's meters against its quotas, and sparklines of the last minutes."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

from ..format import human_bytes, human_count, plain
from ..host import ConsoleSupervisor
from .meter_bar import MeterBar

#: (series field, label, how a value reads)
SPARKLINES = (
    ("requests", "req/s", human_count),
    ("wall_ms", "latency ms", lambda v: f"{v:.2f}"),
    ("fuel", "fuel/s", human_count),
    ("rows_read", "rows read/s", human_count),
    ("rows_written", "rows written/s", human_count),
    ("storage", "storage", human_bytes),
)


def carry_forward(values: list[float], current: float) -> list[float]:
    """Fill the empty (0) buckets of a gauge with the last value seen before them."""
    last = next((v for v in values if v), current)
    out = []
    for v in values:
        last = v or last
        out.append(last)
    return out


class UsagePanel(Vertical):
    DEFAULT_CSS = """
    UsagePanel { height: 1fr; padding: 0 1; }
    UsagePanel #usage-counters { height: auto; margin-bottom: 1; }
    UsagePanel .spark-row { height: 1; }
    UsagePanel .spark-row Label { width: 16; }
    UsagePanel .spark-row Sparkline { width: 1fr; }
    UsagePanel .spark-row .spark-value { width: 14; text-align: right; }
    """

    POINTS = 120

    def __init__(self, sup: ConsoleSupervisor, target: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sup = sup
        self.target = target
        self._busy = False

    def compose(self) -> ComposeResult:
        yield MeterBar("storage", id="meter-storage")
        yield MeterBar("memory", id="meter-memory")
        yield MeterBar("fuel/request", id="meter-fuel")
        yield MeterBar("p99 latency", id="meter-latency")
        yield MeterBar("rate", id="meter-rate")
        yield Static("", id="usage-counters")
        for field, label, _ in SPARKLINES:
            with Horizontal(classes="spark-row"):
                yield Label(label)
                yield Sparkline([0.0], id=f"spark-{field}")
                yield Static("", id=f"value-{field}", classes="spark-value")

    def on_mount(self) -> None:
        self.refresh_usage()
        self.set_interval(1.0, self.refresh_usage)

    def refresh_usage(self) -> None:
        if not self._busy:  # never overlap refreshes
            self._busy = True
            self._collect()

    @work(thread=True, group="usage-panel")
    def _collect(self) -> None:
        try:
            usage = self.sup.usage(self.target)
            quotas = self.sup.quotas(self.target)
            # drop the bucket of the current, unfinished second
            series = {f: self.sup.series(self.target, f, points=self.POINTS + 1)[:-1] for f, _, _ in SPARKLINES}
        except Exception as exc:  # the facet was deleted meanwhile
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, usage, quotas.as_dict(), series)

    def _failed(self, message: str) -> None:
        if not self.is_attached:
            return
        self._busy = False
        self.query_one("#usage-counters", Static).update(plain(message))

    def _show(self, usage: dict[str, Any], quotas: dict[str, Any], series: dict[str, list[float]]) -> None:
        if not self.is_attached:
            return
        self._busy = False
        requests = usage["requests"] or 0

        def meter(id_: str, used: float, limit: float, text: str) -> None:
            widget = self.query_one(f"#{id_}", MeterBar)
            widget.used, widget.limit, widget.text = used, limit, text

        meter(
            "meter-storage",
            usage["storage"],
            quotas["storage"],
            f"{human_bytes(usage['storage'])} / {human_bytes(quotas['storage'])}",
        )
        meter(
            "meter-memory",
            usage["memory"],
            quotas["memory"],
            f"{human_bytes(usage['memory'])} / {human_bytes(quotas['memory'])}",
        )
        avg_fuel = usage["fuel"] / requests if requests else 0
        meter("meter-fuel", avg_fuel, quotas["fuel"], f"{human_count(avg_fuel)} avg / {human_count(quotas['fuel'])}")
        meter(
            "meter-latency",
            usage["p99_ms"],
            quotas["timeout_ms"],
            f"{usage['p99_ms']:.2f} ms / {quotas['timeout_ms']} ms",
        )
        meter(
            "meter-rate",
            usage["rps"],
            quotas["rate"],
            f"{usage['rps']:.0f} / {quotas['rate']:g} req/s" if quotas["rate"] else f"{usage['rps']:.0f} req/s",
        )
        errors = ", ".join(f"{code} {n}" for code, n in sorted(usage["errors"].items())) or "none"
        self.query_one("#usage-counters", Static).update(
            plain(
                f"requests {requests:,}   errors: {errors}   p50 {usage['p50_ms']:.2f} ms   "
                f"rows read {usage['rows_read']:,}   rows written {usage['rows_written']:,}   "
                f"cold starts {usage['cold_starts']:,}   log bytes {usage['log_bytes']:,}"
                f" (truncated {usage['logs_truncated']})"
            )
        )
        requests_series = series["requests"]
        for field, _, fmt in SPARKLINES:
            values = series[field]
            if field == "wall_ms":  # per-second latency = wall time / requests in that second
                values = [w / r if r else 0.0 for w, r in zip(values, requests_series, strict=True)]
            elif field == "storage":  # a gauge, recorded only when requests come: carry it over
                values = carry_forward(values, usage["storage"])
            self.query_one(f"#spark-{field}", Sparkline).data = values
            self.query_one(f"#value-{field}", Static).update(Text(fmt(values[-1] if values else 0)))
