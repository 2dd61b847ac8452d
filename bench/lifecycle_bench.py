"""The ``alarms`` and ``supervision`` sections of ``make bench``.

``alarms``: what 100,000 pending alarms cost while none is due, in a real supervisor with
its real scheduler thread, against the same supervisor with none pending, in alternating
rounds (these machines are noisy):

* the scheduler thread's CPU time over an idle stretch (``/proc/self/task/TID/stat``) and
  how often it woke;
* warm throughput of a facet doing one write per request, with and without them;
* the cost of setting one more alarm (heap push + control-database row), and of loading
  them all at start (heapify of the stored rows);
* the memory they hold (``tracemalloc``, the scheduler's own objects).

``supervision``: the overhead supervision adds to a healthy request is what the request
path runs for it: ``slot.health is not None`` at admission, and the verdict loop of
``Serving.run`` over a group of one. Each is timed on the real objects, against an
empty statement timed the same way; beside it, a warm request's own time for scale,
and how fast a facet in backoff is refused.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import timeit
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import Supervisor  # noqa: E402
from runtime.alarms import AlarmScheduler  # noqa: E402
from runtime.gate import Request  # noqa: E402

WRITER = ROOT / "bench" / "writer.wat"
NOT_BINDING = {"rate": "1000000", "max_facets": "off", "fuel": "10G"}
PENDING = 100_000
#: Serving.run's verdict loop, verbatim (keep the two in step).
VERDICTS = """
for request in group:
    result = request.result
    if result is not None and (result.error is not None or slot.health is not None):
        supervision.settled(slot, result)
"""


def _thread_cpu_s(native_id: int) -> float:
    """CPU seconds one thread of this process has run, in nanoseconds' resolution (the
    scheduler's own account, ``schedstat``; ``stat``'s ticks are 10 ms)."""
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) / 1e9


def _scheduler_thread(sup: Supervisor) -> threading.Thread:
    thread = sup.alarms._thread
    assert thread is not None and thread.native_id is not None
    return thread


def _rate(step: Any, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            step()
        done += 100
    return done / seconds


def alarms_section(tmp: Path, quick: bool) -> dict[str, Any]:
    pending = 10_000 if quick else PENDING
    rounds, seconds, idle_s = (2, 0.5, 1.0) if quick else (5, 1.5, 3.0)
    far = int(time.time() * 1000) + 86_400_000  # tomorrow: none is due while we measure
    with (
        Supervisor(tmp / "alarms-empty", durability="process") as empty,
        Supervisor(tmp / "alarms-full", durability="process") as full,
    ):
        for sup in (empty, full):
            sup.load_app(WRITER, "writer")
            sup.set_quotas("writer", NOT_BINDING)
            assert sup.call("writer/a", b"x").ok
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        started = time.perf_counter()
        full.alarms.set_many([("writer", f"f{i}", far + i) for i in range(pending)])
        bulk_s = time.perf_counter() - started
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        assert full.alarms.count == pending

        wakeups = {"empty": 0, "full": 0}
        for name, sup in (("empty", empty), ("full", full)):
            original = sup.alarms._next_wait

            def counted(name: str = name, original: Any = original) -> float | None:
                wakeups[name] += 1
                return original()

            sup.alarms._next_wait = counted  # type: ignore[method-assign]
        cpu = {"empty": [], "full": []}  # type: dict[str, list[float]]
        rps = {"empty": [], "full": []}  # type: dict[str, list[float]]
        for _ in range(rounds):
            for name, sup in (("empty", empty), ("full", full)):
                thread_id = _scheduler_thread(sup).native_id
                assert thread_id is not None
                cpu_before = _thread_cpu_s(thread_id)
                time.sleep(idle_s / rounds)
                cpu[name].append(_thread_cpu_s(thread_id) - cpu_before)
                rps[name].append(_rate(lambda sup=sup: sup.call("writer/a", b"x"), seconds))
        set_one = []
        for i in range(200):
            t = time.perf_counter()
            full.alarms.set("writer", f"extra{i}", far + pending + i)
            set_one.append((time.perf_counter() - t) * 1e6)
        set_empty = []
        for i in range(200):
            t = time.perf_counter()
            empty.alarms.set("writer", f"extra{i}", far + i)
            set_empty.append((time.perf_counter() - t) * 1e6)
        control = full.control
        t = time.perf_counter()
        loaded = AlarmScheduler(control, lambda alarm: None, lambda *a: None)
        load_s = time.perf_counter() - t
        assert loaded.count == pending + 200
    facets_full = statistics.median(rps["full"])
    facets_empty = statistics.median(rps["empty"])
    return {
        "pending": pending,
        "idle_s": idle_s,
        "scheduler_cpu_us_idle_pending": round(sum(cpu["full"]) * 1e6, 1),
        "scheduler_cpu_us_idle_none": round(sum(cpu["empty"]) * 1e6, 1),
        "scheduler_wakeups_pending": wakeups["full"],
        "scheduler_wakeups_none": wakeups["empty"],
        "warm_rps_pending": round(facets_full),
        "warm_rps_none": round(facets_empty),
        "warm_ratio_pending_vs_none": round(facets_full / facets_empty, 3),
        "set_one_p50_us_pending": round(statistics.median(set_one), 1),
        "set_one_p50_us_none": round(statistics.median(set_empty), 1),
        "bulk_set_s": round(bulk_s, 3),
        "load_at_start_s": round(load_s, 3),
        "memory_mib": round(held / 2**20, 1),
        "bytes_per_alarm": round(held / pending),
    }


def supervision_section(tmp: Path, quick: bool) -> dict[str, Any]:
    number = 200_000 if quick else 2_000_000
    with Supervisor(tmp / "supervision", durability="process") as sup:
        sup.load_app(WRITER, "writer")
        sup.set_quotas("writer", NOT_BINDING)
        result = sup.call("writer/a", b"x")
        assert result.ok
        slot = sup.registry.slots[("writer", "a")]
        assert slot.health is None
        request = Request(b"x", "r", sup.quotas("writer/a"))
        request.result = result
        scope = {"slot": slot, "group": [request], "supervision": sup.supervision}
        # What the request path runs for supervision, as written there: the test at
        # admission (Supervisor._admit) and the verdict loop over a group of one
        # (Serving.run), less a `pass` timed the same way (timeit's own loop).
        empty = min(timeit.repeat("pass", number=number, repeat=5))
        admit = min(timeit.repeat("slot.health is not None", globals=scope, number=number, repeat=5))
        settle = min(timeit.repeat(VERDICTS, globals=scope, number=number, repeat=5))
        overhead_ns = ((admit - empty) + (settle - empty)) / number * 1e9
        warm = []
        for _ in range(2000 if quick else 20_000):
            t = time.perf_counter()
            sup.call("writer/a", b"x")
            warm.append((time.perf_counter() - t) * 1e6)
        # A facet in backoff: refused at once, nothing instantiated.
        sup.load_app_bytes(
            '(module (memory (export "memory") 1)'
            ' (func (export "facet_alloc") (param i32) (result i32) (i32.const 1024))'
            ' (func (export "facet_handle") (param i32 i32) (result i64) unreachable))',
            "broken",
        )
        sup.set_quotas("broken", {**NOT_BINDING, "backoff_ms": "1h", "backoff_max_ms": "2h"})
        faulted = []
        for _ in range(3):
            t = time.perf_counter()
            assert sup.call("broken/a", b"x").error == "trap"
            faulted.append((time.perf_counter() - t) * 1e6)
        refused = []
        for _ in range(2000 if quick else 20_000):
            t = time.perf_counter()
            sup.call("broken/a", b"x")
            refused.append((time.perf_counter() - t) * 1e6)
        assert sup.call("broken/a", b"x").error == "backoff"
    warm_p50 = statistics.median(warm)
    return {
        "healthy_overhead_ns": round(overhead_ns, 1),
        "healthy_overhead_share_of_warm_request": round(overhead_ns / 1000 / warm_p50, 5),
        "warm_request_p50_us": round(warm_p50, 2),
        "faulting_request_us": [round(v) for v in faulted],
        "backoff_refusal_p50_us": round(statistics.median(refused), 2),
    }
