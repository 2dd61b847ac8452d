"""The WAL archive's costs (``bench/run.py --only history``; figures in bench/README.md).

* ``archiver_ratio``: warm write throughput with archiving on, against the same
  supervisor with ``history=False``, in alternating rounds (this machine is noisy);
  ``process`` durability, where a request is cheapest and the archive's share largest.
* ``archive_bytes_per_million_writes``: the archive's size on disk after N small writes
  (one row each, the writer module), scaled to a million.
* ``restore_100mb``: a 100 MB facet with a day of history at one write per second
  (86,400 commits), restored to the middle of that day and to its end; wall time of
  ``Supervisor.restore`` (rebuild, integrity check, the undo snapshot, the swap).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime import Supervisor  # noqa: E402
from runtime.archive import archive_bytes, read_segments  # noqa: E402

WRITER = ROOT / "bench" / "writer.wat"
PROBE = ROOT / "tests" / "fixtures" / "probe.wat"
#: About 1 MB per request: 256 rows of 4,000 random bytes.
FILL_MB = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 256) "
    "INSERT INTO blob SELECT randomblob(4000) FROM n"
)
NOT_BINDING = {"rate": "1000000", "max_facets": "off", "fuel": "10G", "timeout_ms": "60s", "max_body": "64MiB"}


def _sql(sql: str, *params: Any) -> bytes:
    return ("S" + json.dumps({"sql": sql, "params": list(params)})).encode()


def _write_rate(data: Path, history: bool, seconds: float) -> tuple[float, float]:
    """Writes per second and p99 latency (us) on one warm facet."""
    with Supervisor(data, durability="process", history=history) as sup:
        sup.load_app(WRITER, "writer")
        sup.set_quotas("writer", NOT_BINDING)
        for _ in range(200):
            sup.call("writer/a", b"x")
        latencies = []
        start = time.perf_counter()
        deadline = start + seconds
        n = 0
        while True:
            t = time.perf_counter()
            sup.call("writer/a", b"x")
            latencies.append(time.perf_counter() - t)
            n += 1
            if t >= deadline:
                break
        rate = n / (time.perf_counter() - start)
    latencies.sort()
    return rate, latencies[int(len(latencies) * 0.99)] * 1e6


def history_section(tmp: Path, quick: bool) -> dict[str, Any]:
    rounds, seconds = (2, 1.0) if quick else (5, 3.0)
    on, off, p99_on, p99_off = [], [], [], []
    for index in range(rounds):
        for history in (False, True) if index % 2 == 0 else (True, False):
            rate, p99 = _write_rate(tmp / f"rate-{index}-{history}", history, seconds)
            (on if history else off).append(rate)
            (p99_on if history else p99_off).append(p99)
    result: dict[str, Any] = {
        "warm_writes_per_s_archived": round(statistics.median(on)),
        "warm_writes_per_s_not_archived": round(statistics.median(off)),
        "archiver_ratio": round(statistics.median(on) / statistics.median(off), 3),
        "p99_us_archived": round(statistics.median(p99_on), 1),
        "p99_us_not_archived": round(statistics.median(p99_off), 1),
    }
    # Archive size per million small writes.
    writes = 50_000 if quick else 200_000
    with Supervisor(tmp / "size", durability="process") as sup:
        sup.load_app(WRITER, "writer")
        sup.set_quotas("writer", NOT_BINDING)
        for _ in range(writes):
            sup.call("writer/a", b"x")
        assert sup.archiver is not None
        sup.archiver.drain_all()
        directory = sup.archiver.directory("writer", "a")
        size = archive_bytes(directory)
        db_size = sup.db_path("writer/a").stat().st_size
    result["size_writes"] = writes
    result["archive_bytes_per_million_writes"] = round(size * 1_000_000 / writes)
    result["archive_bytes_per_write"] = round(size / writes, 1)
    result["database_bytes_after"] = db_size
    result["restore_100mb"] = _restore_section(tmp, quick)
    return result


def _restore_section(tmp: Path, quick: bool) -> dict[str, Any]:
    megabytes = 20 if quick else 100
    commits = 8_640 if quick else 86_400
    with Supervisor(tmp / "restore", durability="process") as sup:
        sup.load_app(PROBE, "probe")
        sup.set_quotas("probe", NOT_BINDING)
        target = "probe/big"
        assert sup.call(target, _sql("CREATE TABLE blob(x)")).ok
        assert sup.call(target, _sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")).ok
        for _ in range(megabytes):
            assert sup.call(target, _sql(FILL_MB)).ok
        middle = 0.0
        for i in range(commits):
            assert sup.call(target, _sql("INSERT INTO t(v) VALUES (?)", i)).ok
            if i == commits // 2:
                middle = time.time()
        assert sup.archiver is not None
        sup.archiver.drain_all()
        directory = sup.archiver.directory("probe", "big")
        segments = len(read_segments(directory))
        db_bytes = sup.db_path(target).stat().st_size
        timings = {}
        for label, moment in (("middle", middle), ("end", time.time())):
            t = time.perf_counter()
            info = sup.restore(target, at=moment)
            timings[label] = round(time.perf_counter() - t, 2)
            assert info.restored_to is not None
        count = json.loads(sup.call(target, _sql("SELECT count(*) FROM t")).response)["rows"][0][0]
        assert count == commits
    return {
        "database_bytes": db_bytes,
        "commits_of_history": commits,
        "segments": segments,
        "restore_middle_s": timings["middle"],
        "restore_end_s": timings["end"],
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(history_section(Path(tmp), "--quick" in sys.argv), indent=2))
