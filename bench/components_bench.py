"""The ``components`` section of ``make bench``: JavaScript and Python apps as components.

For each language, on the hostile fixture's ``ok`` request (one SQL write, the request the
issue's targets name), at ``process`` durability:

* the first load from an empty build cache (build + compile) and a load into a new data
  directory in a new process with the caches warm;
* warm requests through the supervisor, p50 and p99, alternating with the same request
  through wasmtime-py's stock component API (``component.Func.__call__`` and stock host
  functions doing the same SQL), and with a core module doing one write (writer.wat);
* cold starts (evict, then one request; the compiled component is in memory);
* RSS per warm instance, in a fresh interpreter (``--rss`` child);
* a 1 MiB body each way (POST /echo).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component as wcomponent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import HttpRequest, Supervisor, abi  # noqa: E402
from runtime.hostcalls import RequestContext  # noqa: E402
from runtime.storage import FacetDB  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "components"
SOURCES = {"js": FIXTURES / "hostile.js", "python": FIXTURES / "hostile.py"}
WRITER = ROOT / "bench" / "writer.wat"
#: The issue's targets: warm p50 (us), cold p50 (ms), RSS per warm instance (MB).
TARGETS = {"js": (100, 3.0, 2.5), "python": (150, 5.0, 6.0)}
NOT_BINDING = {"rate": "1000000", "max_facets": "off", "fuel": "10G"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latencies(step: Callable[[], Any], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        step()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def alternate_latency(rounds: int, count: int, **steps: Callable[[], Any]) -> dict[str, dict[str, float]]:
    """p50/p99 (us) of each step over alternating rounds (the median of the rounds' p50s)."""
    p50: dict[str, list[float]] = {name: [] for name in steps}
    p99: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            values = latencies(step, count)
            p50[name].append(percentile(values, 50))
            p99[name].append(percentile(values, 99))
    return {name: {"p50_us": statistics.median(p50[name]), "p99_us": statistics.median(p99[name])} for name in steps}


class StockHost:
    """The same component, instantiated and called through wasmtime-py's stock component API,
    its host functions doing the same work through a ``RequestContext`` on a real database."""

    def __init__(self, component_bytes: bytes, db_path: Path, uses_wasi: bool) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.component = wcomponent.Component(self.engine, component_bytes)
        self.db = FacetDB(str(db_path), durability="process")
        self.ctx = self._context()
        linker = wcomponent.Linker(self.engine)
        linker.add_wasip2()
        with linker.root() as root, root.add_instance(abi.HOST_INTERFACE) as host:
            host.add_func("sql", lambda store, statement, params: self.ctx.sql_text(statement, params).decode())
            host.add_func("log", lambda store, level, message: self.ctx.log_text(level, message.encode()))
            host.add_func("now-ms", lambda store: int(time.time() * 1000))
            host.add_func("random", lambda store, n: os.urandom(n))
            # The SDKs import the alarm functions too (ABI 2.1.0); the bench never calls them.
            host.add_func("set-alarm", lambda store, at_ms: False)
            host.add_func("get-alarm", lambda store: None)
            host.add_func("delete-alarm", lambda store: None)
        self.store = wasmtime.Store(self.engine)
        self.store.set_fuel(10**12)
        self.store.set_epoch_deadline(10**9)
        if uses_wasi:
            self.store.set_wasi(wasmtime.WasiConfig())
        self.instance = linker.instantiate(self.store, self.component)
        guest = self.instance.get_export_index(self.store, abi.GUEST_INTERFACE)
        self.funcs = {
            name: self.instance.get_func(self.store, self.instance.get_export_index(self.store, name, guest))
            for name in ("init", "call")
        }
        self.db.begin()
        self._invoke("init")
        self.db.commit()

    def _context(self) -> RequestContext:
        return RequestContext("stock", "a", "r", self.db, log_limit=65536, max_result_bytes=1 << 22)

    def _invoke(self, name: str, *args: Any) -> Any:
        func = self.funcs[name]
        result = func(self.store, *args)
        func.post_return(self.store)
        return result

    def call(self, body: str) -> Any:
        self.ctx = self._context()
        self.db.begin()
        result = self._invoke("call", body)
        self.db.commit()
        return result


def first_loads(language: str, source: Path, tmp: Path) -> dict[str, Any]:
    """Load from an empty cache, then in a new process into a new data directory."""
    cache = tmp / f"cache-{language}"
    env = {**os.environ, "FACETS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    timings = {}
    for label, data in (("first_load_s", tmp / f"first-{language}"), ("warm_cache_load_s", tmp / f"again-{language}")):
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "console", "--data", str(data), "load", str(source), "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=900,
        )
        timings[label] = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout + proc.stderr)
        reports = [json.loads(x)["progress"] for x in proc.stderr.splitlines() if x.startswith('{"progress"')]
        timings[label.replace("_s", "_cached_steps")] = sorted({r["step"] for r in reports if r["cached"]})
    return timings


def rss_child(language: str, count: int) -> dict[str, Any]:
    """In this (fresh) interpreter: warm ``count`` facets and measure RSS per instance."""
    sys.path.insert(0, str(ROOT / "bench"))
    from run import rss_bytes  # the suite's own reading of VmRSS

    with tempfile.TemporaryDirectory() as tmp, Supervisor(tmp, durability="process", max_warm=count + 10) as sup:
        sup.load_app(SOURCES[language], "app")
        sup.set_quotas("app", NOT_BINDING)
        sup.call("app/warmup", "ok")
        before = rss_bytes()
        for i in range(count):
            assert sup.call(f"app/f{i}", "ok").ok
        after = rss_bytes()
        return {"rss_per_warm_instance_mb": (after - before) / count / 1e6, "instances": count}


def language_figures(language: str, source: Path, tmp: Path, quick: bool) -> dict[str, Any]:
    """One language's figures (see the top)."""
    rounds, count = (2, 300) if quick else (5, 1000)
    writer = WRITER.read_text()
    figures: dict[str, Any] = {}
    if not quick:
        figures.update(first_loads(language, source, tmp))
    with Supervisor(tmp / f"sup-{language}", durability="process") as sup:
        version = sup.load_app(source, "app")
        sup.load_app_bytes(writer, "writer")
        for app in ("app", "writer"):
            sup.set_quotas(app, NOT_BINDING)
        assert sup.call("app/a", "ok").ok and sup.call("writer/a", b"x").ok
        stock = StockHost(
            (sup.data_dir / "modules" / f"{version.sha256}.wasm").read_bytes(),
            tmp / f"stock-{language}.sqlite3",
            uses_wasi=any(name.startswith("wasi:") for name in version.imports),
        )
        stock.call("ok")
        warm = alternate_latency(
            rounds,
            count,
            facets=lambda: sup.call("app/a", "ok"),
            stock_api=lambda: stock.call("ok"),
            core_module=lambda: sup.call("writer/a", b"x"),
        )
        result = sup.call("app/a", "ok")
        figures["fuel_per_request"] = result.usage.fuel
        figures["warm"] = warm
        figures["warm_p50_us"] = warm["facets"]["p50_us"]
        figures["ratio_vs_stock_api"] = warm["stock_api"]["p50_us"] / warm["facets"]["p50_us"]
        figures["ratio_vs_core_module"] = warm["facets"]["p50_us"] / warm["core_module"]["p50_us"]
        cold = []
        assert sup.call("app/c", "ok").ok
        for _ in range(50 if quick else 200):
            sup.evict("app/c")
            started = time.perf_counter()
            answer = sup.call("app/c", "ok")
            cold.append((time.perf_counter() - started) * 1000)
            assert answer.ok and answer.usage.cold_start
        figures["cold_p50_ms"] = percentile(cold, 50)
        figures["cold_p99_ms"] = percentile(cold, 99)
        body = b"z" * (1 << 20)
        # 128 MiB: SpiderMonkey's collector lets 1 MiB requests pile up (with the default
        # 32 MiB every 5th such request ran out of memory, with 64 MiB every 11th)
        sup.set_quotas("app/echo", memory="128MiB")
        echoes = [sup.fetch("app/echo", HttpRequest("POST", "/echo", body=body)) for _ in range(3)]
        assert all(e.ok and e.http is not None and e.http.body == body for e in echoes)
        echo = latencies(lambda: sup.fetch("app/echo", HttpRequest("POST", "/echo", body=body)), 20)
        check = sup.fetch("app/echo", HttpRequest("POST", "/echo", body=body))
        assert check.ok and check.http is not None and check.http.body == body
        figures["echo_1mib_ms"] = percentile(echo, 50) / 1000
        figures["echo_1mib_fuel"] = check.usage.fuel
        figures["size_mb"] = version.size / 1e6
        figures["declared_memory_mib"] = result.usage.memory / 2**20
    child = subprocess.run(
        [sys.executable, __file__, "--rss", language, str(100 if quick else 300)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=True,
    )
    figures.update(json.loads(child.stdout.strip().splitlines()[-1]))
    figures["targets"] = dict(zip(("warm_p50_us", "cold_p50_ms", "rss_mb"), TARGETS[language], strict=True))
    return figures


def components_section(tmp: Path, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for language, source in SOURCES.items():
        out[language] = language_figures(language, source, tmp, quick)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    out["warm_js_facets_that_fit_in_memory"] = int(memory / (out["js"]["rss_per_warm_instance_mb"] * 1e6))
    return out


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--rss":
    print(json.dumps(rss_child(sys.argv[2], int(sys.argv[3]))))
