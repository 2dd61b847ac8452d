"""The Facets benchmark suite: `make bench` (or `python bench/run.py [--quick] [--only NAME]`).

Every figure is a count or a ratio against a baseline measured in the same run,
so it holds on a noisy machine. Rounds of the supervisor and its baseline
alternate, and the median of the rounds is reported. Results go to
bench/results.json and a table on stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import wasmtime  # noqa: E402
from components_bench import TARGETS as COMPONENT_TARGETS  # noqa: E402
from components_bench import components_section  # noqa: E402
from history_bench import history_section  # noqa: E402
from http_bench import http_section  # noqa: E402
from lifecycle_bench import alarms_section, supervision_section  # noqa: E402

from bare_host import BareHost  # noqa: E402
from runtime import EngineSettings, Supervisor  # noqa: E402

WRITER = (ROOT / "bench" / "writer.wat").read_text()
COUNTER_WAT = ROOT / "sample_apps" / "counter" / "counter.wat"
TODO_WASM = ROOT / "sample_apps" / "todo" / "todo.wasm"
PROBE_WAT = ROOT / "tests" / "fixtures" / "probe.wat"
NOT_BINDING = {"rate": "1000000", "max_facets": "off"}  # quotas enforced, set above the load


def rate_for(seconds: float, step: Callable[[], Any]) -> float:
    """Calls of ``step`` per second over about ``seconds``."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            step()
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def alternate(rounds: int, seconds: float, **steps: Callable[[], Any]) -> dict[str, float]:
    """Median rate of each step, measured in alternating rounds."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            samples[name].append(rate_for(seconds, step))
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def map_count() -> int:
    with open("/proc/self/maps") as fh:
        return sum(1 for _ in fh)


def max_map_count() -> int:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except OSError:
        return 65530


def sqlite_alone(path: Path) -> Callable[[], None]:
    """The baseline for full durability: one ``BEGIN IMMEDIATE; INSERT; COMMIT`` per call
    from Python, ``synchronous=FULL`` in WAL mode, on the same disk."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")

    def step() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t(v) VALUES (?)", [42])
        conn.execute("COMMIT")

    return step


# -- the benchmarks ---------------------------------------------------------------------------
def warm_throughput(tmp: Path, durability: str, rounds: int, seconds: float) -> dict[str, Any]:
    wasm = bytes(wasmtime.wat2wasm(WRITER))
    synchronous = "NORMAL" if durability == "process" else "FULL"
    bare = BareHost(wasm, str(tmp / f"bare-{durability}.sqlite3"), synchronous=synchronous)
    with Supervisor(tmp / f"sup-{durability}", durability=durability) as sup:
        sup.load_app_bytes(wasm, "writer")
        sup.set_quotas("writer", NOT_BINDING)
        assert sup.call("writer/a", b"x").ok
        steps: dict[str, Callable[[], Any]] = {
            "bare": lambda: bare.handle(b"x"),
            "facets": lambda: sup.call("writer/a", b"x"),
        }
        if durability == "full":
            steps["sqlite_alone"] = sqlite_alone(tmp / "sqlite-alone.sqlite3")
        rates = alternate(rounds, seconds, **steps)
        committed = sup.query("writer/a", "SELECT count(*) FROM t")["rows"][0][0]
    bare.close()
    out = {
        "facets_rps": rates["facets"],
        "bare_rps": rates["bare"],
        "ratio_vs_bare": rates["facets"] / rates["bare"],
        "rows_committed": committed,
    }
    if "sqlite_alone" in rates:
        out["sqlite_alone_cps"] = rates["sqlite_alone"]
        out["ratio_vs_sqlite_alone"] = rates["facets"] / rates["sqlite_alone"]
    return out


def concurrent_full(tmp: Path, callers: int, rounds: int, seconds: float) -> dict[str, Any]:
    """One facet, ``full`` durability, ``callers`` threads calling it at once (commit groups)
    against SQLite alone committing one transaction at a time, in alternating rounds."""
    import threading

    wasm = bytes(wasmtime.wat2wasm(WRITER))
    alone_step = sqlite_alone(tmp / "sqlite-alone-concurrent.sqlite3")
    with Supervisor(tmp / "sup-concurrent", durability="full") as sup:
        sup.load_app_bytes(wasm, "writer")
        sup.set_quotas("writer", {**NOT_BINDING, "queue": "off"})
        assert sup.call("writer/a", b"x").ok

        def facets_round() -> tuple[float, float]:
            stop = time.perf_counter() + seconds
            counts, grouped = [0] * callers, [0] * callers

            def caller(i: int) -> None:
                while time.perf_counter() < stop:
                    result = sup.call("writer/a", b"x")
                    assert result.ok, result.message
                    counts[i] += 1
                    grouped[i] += result.usage.commit_group

            threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(counts) / (time.perf_counter() - started), sum(grouped) / sum(counts)

        facets, alone, groups = [], [], []
        for _ in range(rounds):
            rate, group = facets_round()
            facets.append(rate)
            groups.append(group)
            alone.append(rate_for(seconds, alone_step))
        committed = sup.query("writer/a", "SELECT count(*) FROM t")["rows"][0][0]
    return {
        "callers": callers,
        "facets_rps": statistics.median(facets),
        "sqlite_alone_cps": statistics.median(alone),
        "ratio_vs_sqlite_alone": statistics.median(facets) / statistics.median(alone),
        "mean_commit_group": statistics.median(groups),
        "rows_committed": committed,
    }


def many_facets(tmp: Path, count: int, rounds: int, seconds: float) -> dict[str, Any]:
    wasm = bytes(wasmtime.wat2wasm(WRITER))
    names = [f"writer/f{i:04d}" for i in range(count)]
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wasm)
    bares = [BareHost(wasm, str(tmp / f"bare-many-{i}.sqlite3"), engine=engine, module=module) for i in range(count)]
    with Supervisor(tmp / "sup-many", durability="process", max_warm=count * 2) as sup:
        sup.load_app_bytes(wasm, "writer")
        sup.set_quotas("writer", NOT_BINDING)
        for name in names:
            assert sup.call(name, b"x").ok
        position = {"bare": 0, "facets": 0}

        def bare_step() -> None:
            i = position["bare"] = (position["bare"] + 1) % count
            bares[i].handle(b"x")

        def facets_step() -> None:
            i = position["facets"] = (position["facets"] + 1) % count
            sup.call(names[i], b"x")

        rates = alternate(rounds, seconds, bare=bare_step, facets=facets_step)
        warm = sup.warm_count
    for bare in bares:
        bare.close()
    return {
        "facets": count,
        "warm": warm,
        "facets_rps": rates["facets"],
        "bare_rps": rates["bare"],
        "ratio_vs_bare": rates["facets"] / rates["bare"],
    }


def cold_start(tmp: Path, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Supervisor(tmp / "sup-cold", durability="process") as sup:
        for app, path, body in (("counter", COUNTER_WAT, b""), ("todo", TODO_WASM, b'{"op":"lists"}')):
            started = time.perf_counter()
            sup.load_app(path, app)
            load_ms = (time.perf_counter() - started) * 1000
            sup.call(f"{app}/c", body)
            times = []
            for _ in range(samples):
                sup.evict(f"{app}/c")
                started = time.perf_counter()
                result = sup.call(f"{app}/c", body)
                times.append((time.perf_counter() - started) * 1000)
                assert result.ok and result.usage.cold_start
            out[app] = {
                "cold_p50_ms": percentile(times, 50),
                "cold_p99_ms": percentile(times, 99),
                "first_load_ms": load_ms,
            }
        # compile vs. the cached artifact, for the larger (Zig) module
        engine_sup = sup.wasm
        wasm = TODO_WASM.read_bytes()
        started = time.perf_counter()
        module = engine_sup.compile(wasm)
        compile_ms = (time.perf_counter() - started) * 1000
        artifact = tmp / "todo.cwasm"
        artifact.write_bytes(engine_sup.serialize(module))
        started = time.perf_counter()
        for _ in range(50):
            engine_sup.deserialize_file(str(artifact))
        deserialize_ms = (time.perf_counter() - started) * 1000 / 50
    out["todo_compile_ms"] = compile_ms
    out["todo_deserialize_ms"] = deserialize_ms
    return out


def density(tmp: Path, count: int) -> tuple[dict[str, Any], Supervisor]:
    """Warm ``count`` small facets; returns the figures and the (open) supervisor for the console."""
    sup = Supervisor(tmp / "sup-density", durability="process", max_warm=count + 1000)
    sup.load_app(COUNTER_WAT, "hello")
    sup.set_quotas("hello", NOT_BINDING)
    sup.call("hello/warmup")
    rss0, maps0, objects0 = rss_bytes(), map_count(), len(gc.get_objects())
    started = time.perf_counter()
    first = min(count, sup.max_open_dbs)
    for i in range(count):
        sup.call(f"hello/f{i:05d}")
        if i + 1 == first:
            rss_first = rss_bytes()  # every one of these facets still has its database open
    elapsed = time.perf_counter() - started
    rss1, maps1 = rss_bytes(), map_count()
    objects_per_facet = (len(gc.get_objects()) - objects0) / count
    gc_started = time.perf_counter()
    gc.collect()  # what a full collection costs with this many warm facets: it stops everything
    full_gc_ms = (time.perf_counter() - gc_started) * 1000
    per_facet = (rss1 - rss0) / count
    maps_per = (maps1 - maps0) / count
    reservation = sup.wasm.settings.memory_reservation + sup.wasm.settings.memory_guard_size
    limit_maps = max_map_count()
    by_maps = int((limit_maps - maps1) / max(maps_per, 0.01)) + count
    by_address_space = int((1 << 47) // reservation)
    return {
        "warm_facets": sup.warm_count,
        "open_databases": len(sup._open_dbs),
        "rss_per_warm_facet_kib": per_facet / 1024,
        "rss_per_facet_with_open_database_kib": (rss_first - rss0) / first / 1024,
        "max_open_databases": sup.max_open_dbs,
        "maps_per_facet": maps_per,
        "provision_per_facet_ms": elapsed * 1000 / count,
        "max_facets_by_mappings": by_maps,
        "max_facets_by_address_space": by_address_space,
        "vm_max_map_count": limit_maps,
        "memory_reservation_mib": sup.wasm.settings.memory_reservation / 2**20,
        "gc_objects_per_facet": objects_per_facet,
        "full_gc_ms": full_gc_ms,
    }, sup


def reservation_trade(tmp: Path, count: int) -> dict[str, Any]:
    """Mappings, address space and instantiation cost per instance for two reservations."""
    from runtime.wasm import WasmRuntime

    out = {}
    for label, settings in (
        ("64MiB", EngineSettings()),
        ("4GiB (wasmtime's default)", EngineSettings(memory_reservation=4 << 30, memory_guard_size=32 << 20)),
    ):
        runtime = WasmRuntime(settings)
        pre = runtime.prepare(runtime.compile(runtime.wat_to_wasm(COUNTER_WAT.read_text())))
        maps0 = map_count()
        started = time.perf_counter()
        guests = [runtime.instantiate(pre, fuel=10**6, memory_limit=32 << 20, timeout_ms=1000) for _ in range(count)]
        elapsed = time.perf_counter() - started
        out[label] = {
            "maps_per_instance": (map_count() - maps0) / count,
            "instantiate_us": elapsed * 1e6 / count,
            "address_space_per_instance_gib": (settings.memory_reservation + settings.memory_guard_size) / 2**30,
        }
        del guests
        runtime.close()
    return out


async def key_latency(pilot, key: str, done: Callable[[], Any], timeout: float = 10.0) -> float:
    """Milliseconds from a key press until ``done()`` holds and the screen has refreshed.

    The key goes to the app the way the terminal driver delivers one, and the state is
    polled every millisecond. ``Pilot.press`` would also wait, twice per key, for the
    whole process to go idle (up to 1 s each with traffic running), which is not what a
    person at the keyboard waits for.
    """
    from textual import events

    app = pilot.app
    event = events.Key(key, None)
    event.set_sender(app)
    started = time.perf_counter()
    app._driver.send_message(event)
    while not done():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{key}: no response in {timeout} s")
        await asyncio.sleep(0.001)
    app.screen._compositor_refresh()  # the repaint the key caused
    return (time.perf_counter() - started) * 1000


def console_latency(sup: Supervisor, presses: int) -> dict[str, Any]:
    """Key-press-to-repaint latency of the home view with every facet of ``sup`` and traffic on."""
    from textual.widgets import DataTable

    from console.app import FacetsConsole
    from console.samples import SAMPLES

    for name, path in SAMPLES:  # the traffic generator's targets
        sup.load_app(path, name)
    sup.set_quotas("*", NOT_BINDING)
    facets = len(sup.facet_list())
    app = FacetsConsole(sup, traffic_rate=5000)
    result: dict[str, Any] = {"facets": facets}

    async def run() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            table = app.screen.query_one("#facets-table", DataTable)
            started = time.perf_counter()
            while table.row_count < facets:
                await pilot.pause(0.1)
            result["first_paint_s"] = time.perf_counter() - started
            traffic_started = time.perf_counter()
            app.traffic.start()
            await pilot.pause(2.0)
            latencies = []
            for i in range(presses):
                row = table.cursor_row
                latencies.append(
                    await key_latency(pilot, "down" if i % 2 == 0 else "up", lambda row=row: table.cursor_row != row)
                )
                await pilot.pause(0.05)
            result["traffic_rps"] = app.traffic.sent / (time.perf_counter() - traffic_started)
            app.traffic.stop()
            result["key_p50_ms"] = percentile(latencies, 50)
            result["key_p99_ms"] = percentile(latencies, 99)

    asyncio.run(run())
    return result


def table_browsing(tmp: Path, rows: int) -> dict[str, Any]:
    from textual.widgets import DataTable

    from console.app import FacetsConsole
    from console.screens.facet_detail import FacetDetailScreen
    from console.widgets.table_browser import TableBrowser

    out: dict[str, Any] = {"rows": rows}
    with Supervisor(tmp / "sup-table", durability="process") as sup:
        sup.load_app(PROBE_WAT, "probe")
        sup.set_quotas("probe/big", timeout_ms="60s", storage="4GiB")
        sql = lambda text: b"S" + json.dumps({"sql": text}).encode()  # noqa: E731
        sup.call("probe/big", sql("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score INTEGER)"))
        result = sup.call(
            "probe/big",
            sql(
                f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < {rows}) "
                "INSERT INTO t(name, score) SELECT 'row ' || n, n % 1000 FROM r"
            ),
        )
        assert result.ok, result.message
        app = FacetsConsole(sup)

        async def run() -> None:
            async with app.run_test(size=(140, 40)) as pilot:
                app.open_facet("probe/big")
                while not (
                    isinstance(app.screen, FacetDetailScreen)
                    and app.screen.query("#tables-list")
                    and app.screen.query_one("#tables-list", DataTable).row_count == 1
                ):
                    await pilot.pause(0.01)
                await pilot.pause(0.5)
                out["first_page_ms"] = await key_latency(
                    pilot,
                    "enter",
                    lambda: (
                        app.screen.query(TableBrowser)
                        and "rowid 1–100" in str(app.screen.query_one(TableBrowser).status)
                    ),
                )
                started = time.perf_counter()
                while f"{rows:,} rows" not in str(app.screen.query_one(TableBrowser).status):
                    await asyncio.sleep(0.001)
                out["count_shown_ms"] = out["first_page_ms"] + (time.perf_counter() - started) * 1000
                await pilot.pause(0.5)  # let the first page settle: a person reads it first
                out["last_page_ms"] = await key_latency(
                    pilot, "G", lambda: f"rowid {rows - 99}–{rows}" in str(app.screen.query_one(TableBrowser).status)
                )

        asyncio.run(run())
    return out


# -- report ------------------------------------------------------------------------------------
TARGETS = [
    # (label, path into results, format, target description, met?)
    (
        "warm throughput, process durability",
        ("warm_process", "ratio_vs_bare"),
        "{:.2f}x bare",
        ">= 2x (goal 3x)",
        lambda v: v >= 2.0,
    ),
    (
        "full durability, one caller",
        ("warm_full", "ratio_vs_sqlite_alone"),
        "{:.2f}x SQLite alone",
        ">= 0.90x",
        lambda v: v >= 0.9,
    ),
    (
        "full durability, 16 callers on one facet",
        ("concurrent_full", "ratio_vs_sqlite_alone"),
        "{:.2f}x SQLite alone",
        ">= 0.90x",
        lambda v: v >= 0.9,
    ),
    ("1,000 facets round-robin", ("many_facets", "ratio_vs_bare"), "{:.2f}x bare", ">= 2x", lambda v: v >= 2.0),
    ("cold start p50 (todo, Zig)", ("cold_start", "todo", "cold_p50_ms"), "{:.3f} ms", "< 1 ms", lambda v: v < 1),
    ("cold start p50 (counter, WAT)", ("cold_start", "counter", "cold_p50_ms"), "{:.3f} ms", "< 1 ms", lambda v: v < 1),
    (
        "resident memory per warm facet",
        ("density", "rss_per_warm_facet_kib"),
        "{:.1f} KiB",
        "< 150 KB",
        lambda v: v * 1024 < 150_000,
    ),
    (
        "console key latency p99 (10k facets, traffic)",
        ("console", "key_p99_ms"),
        "{:.1f} ms",
        "< 100 ms",
        lambda v: v < 100,
    ),
    ("first page of a 1M-row table", ("table", "first_page_ms"), "{:.1f} ms", "< 100 ms", lambda v: v < 100),
    (
        "HTTP, 16 connections (facets serve vs plain ASGI)",
        ("http", "c16", "ratio_rps"),
        "{:.2f}x plain",
        ">= 0.7x (goal 1x)",
        lambda v: v >= 0.7,
    ),
    ("HTTP, 1 connection", ("http", "c1", "ratio_rps"), "{:.2f}x plain", ">= 0.7x", lambda v: v >= 0.7),
    ("HTTP, 256 connections", ("http", "c256", "ratio_rps"), "{:.2f}x plain", ">= 0.7x", lambda v: v >= 0.7),
    (
        "healthy p99 beside a hammered runaway",
        ("http", "runaway", "p99_ratio"),
        "{:.2f}x alone",
        "<= 2x",
        lambda v: v <= 2.0,
    ),
]


def _component_targets(language: str, label: str) -> list[Any]:
    """The issue's targets for one component language (bench/components_bench.py, TARGETS)."""
    warm, cold, rss = COMPONENT_TARGETS[language]

    def at_most(limit: float) -> Callable[[float], bool]:
        return lambda v: v <= limit

    return [
        (f"{label} component, warm request with one write, p50", ("components", language, "warm_p50_us"),
         "{:.0f} us", f"<= {warm} us", at_most(warm)),
        (f"{label} component, cold start p50", ("components", language, "cold_p50_ms"),
         "{:.2f} ms", f"<= {cold:g} ms", at_most(cold)),
        (f"{label} component, RSS per warm instance", ("components", language, "rss_per_warm_instance_mb"),
         "{:.2f} MB", f"<= {rss:g} MB", at_most(rss)),
        (f"{label} component, 1 MiB body each way (POST /echo)", ("components", language, "echo_1mib_ms"),
         "{:.1f} ms", "< 2 ms (1 ms each way)", lambda v: v < 2),
    ]  # fmt: skip


TARGETS += _component_targets("js", "JS") + _component_targets("python", "Python")
TARGETS += [
    ("supervision's overhead on a healthy request", ("supervision", "healthy_overhead_ns"),
     "{:.0f} ns", "< 1 us", lambda v: v < 1000),
    ("a facet in backoff refused, p50", ("supervision", "backoff_refusal_p50_us"),
     "{:.1f} us", "at once (no instance)", lambda v: v < 100),
    ("100,000 pending alarms, scheduler CPU while none is due", ("alarms", "scheduler_cpu_us_idle_pending"),
     "{:.0f} us", "~0 (asleep)", lambda v: v < 1000),
    ("100,000 pending alarms, warm throughput vs none", ("alarms", "warm_ratio_pending_vs_none"),
     "{:.2f}x", ">= 0.95x", lambda v: v >= 0.95),
    ("WAL archive on, warm write throughput vs off", ("history", "archiver_ratio"),
     "{:.2f}x", ">= 0.95x (< 5% cost)", lambda v: v >= 0.95),
    ("WAL archive size per million small writes", ("history", "archive_bytes_per_million_writes"),
     "{:,.0f} B", "reported", lambda v: True),
    ("restore of a 100 MB facet with a day of history", ("history", "restore_100mb", "restore_middle_s"),
     "{:.1f} s", "reported", lambda v: True),
]  # fmt: skip


def dig(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results


def table(results: dict[str, Any]) -> str:
    rows = [("figure", "measured", "target", "met")]
    for label, path, fmt, target, ok in TARGETS:
        value = dig(results, path)
        if value is None:
            continue
        rows.append((label, fmt.format(value), target, "yes" if ok(value) else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and facets (a smoke run)")
    parser.add_argument("--only", action="append", help="run only these sections")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    rounds, seconds = (2, 0.5) if quick else (5, 1.5)
    n_facets = 1000 if quick else 10_000
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "wasmtime": wasmtime.__version__ if hasattr(wasmtime, "__version__") else "50.0.1",
            "sqlite": sqlite3.sqlite_version,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    wanted = set(
        args.only
        or [
            "warm_process",
            "warm_full",
            "concurrent_full",
            "many_facets",
            "cold_start",
            "density",
            "reservation",
            "console",
            "table",
            "http",
            "components",
            "supervision",
            "alarms",
            "history",
        ]
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facets-bench-") as tmp_name:
        tmp = Path(tmp_name)

        def section(name: str, fn: Callable[[], Any]) -> None:
            if name in wanted:
                t = time.perf_counter()
                results[name] = fn()
                print(f"[{time.perf_counter() - t:6.1f}s] {name}: {json.dumps(results[name], default=str)}", flush=True)

        section("warm_process", lambda: warm_throughput(tmp, "process", rounds, seconds))
        section("warm_full", lambda: warm_throughput(tmp, "full", max(2, rounds - 2), seconds))
        section("concurrent_full", lambda: concurrent_full(tmp, 16, max(2, rounds - 2), seconds))
        section("many_facets", lambda: many_facets(tmp, 1000, rounds, seconds))
        section("cold_start", lambda: cold_start(tmp, 100 if quick else 300))
        section("reservation", lambda: reservation_trade(tmp, 500))
        density_sup = None
        if not args.child and ("density" in wanted or "console" in wanted):
            # Memory is measured in a fresh interpreter: memory freed by the sections
            # above would be reused by the heap and hide what warm facets cost.
            child_out = tmp / "density.json"
            command = [
                sys.executable,
                __file__,
                "--child",
                "--out",
                str(child_out),
                *(["--quick"] if quick else []),
                *[a for name in ("density", "console") if name in wanted for a in ("--only", name)],
            ]
            import subprocess

            subprocess.run(command, check=True)
            child = json.loads(child_out.read_text())
            for name in ("density", "console"):
                if name in child:
                    results[name] = child[name]
        elif "density" in wanted or "console" in wanted:
            t = time.perf_counter()
            results["density"], density_sup = density(tmp, n_facets)
            print(f"[{time.perf_counter() - t:6.1f}s] density: {json.dumps(results['density'])}", flush=True)
        if density_sup is not None:
            try:
                section("console", lambda: console_latency(density_sup, 20 if quick else 60))
            finally:
                density_sup.close()
        section("table", lambda: table_browsing(tmp, 100_000 if quick else 1_000_000))
        section("supervision", lambda: supervision_section(tmp, quick))
        section("alarms", lambda: alarms_section(tmp, quick))
        section("history", lambda: history_section(tmp, quick))
        # Servers in subprocesses driven by wrk: last, so nothing of theirs runs beside the
        # in-process sections. 2 s per wrk run: 3 rounds take about a minute.
        section("http", lambda: http_section(tmp, 1 if quick else 3, 1 if quick else 2))
        section("components", lambda: components_section(tmp, quick))
    results["elapsed_s"] = time.perf_counter() - started
    out = Path(args.out)
    if args.only and not args.child and out.exists():
        # A partial run updates its own sections in the last full run's file: writing only
        # them would throw every other figure away (the README quotes the full run).
        previous = json.loads(out.read_text())
        ran = {name: value for name, value in results.items() if name not in ("machine", "started", "elapsed_s")}
        previous.update(ran)
        previous.setdefault("sections_rerun", {}).update(dict.fromkeys(ran, results["started"]))
        results = previous
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.child:
        return 0
    print()
    print(table(results))
    print(f"\n{results['elapsed_s']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
