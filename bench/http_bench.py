"""make bench's ``http`` section: Facets behind its real front door (``facets serve``)
against the same one-write-per-request logic as a plain ASGI app on the same server, both
driven by ``wrk`` over loopback in the same run, rounds alternating.

* throughput and latency at 1, 16 and 256 connections: req/s, p50, p99 (``wrk --latency``);
  Facets serves the writer app (``bench/writer.wat``) at ``--durability process``, the plain
  app (``bench/plain_asgi.py``) commits with ``synchronous=NORMAL``, the same promise.
* runaway: p99 of a healthy facet (the writer, 16 connections) alone, and while another
  facet that loops until its timeout (``bench/runaway.wat``) is hammered by 16 more.

Every server is a subprocess on a port the kernel picked, in its own session, stopped
(SIGTERM, then SIGKILL) whatever happens. See bench/README.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WRITER_WAT = BENCH / "writer.wat"
RUNAWAY_WAT = BENCH / "runaway.wat"
CONNECTIONS = (1, 16, 256)
# Quotas set above the load (still checked on every request): the default rate (1,000/s)
# and queue (64 waiting at one facet; the server answers 503 beyond it) would otherwise be
# what is measured at 256 connections.
NOT_BINDING = {"rate": "1000000", "queue": "100000", "max_facets": "off"}
# The runaway loops until this wall-time quota stops it (fuel is set out of the way). 200 ms
# rather than the default 2 s so that the 16 requests queued at its gate when a round ends
# (16 x 200 ms = 3.2 s of spinning) are gone before the next round measures the healthy
# facet alone; the cost to the others while it spins is the same at any timeout.
RUNAWAY_QUOTAS = {"rate": "1000000", "timeout_ms": "200ms", "fuel": str(10**15)}
WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


# -- wrk ----------------------------------------------------------------------------------------
def parse_wrk(text: str) -> dict[str, Any]:
    """req/s, p50/p99 (ms), completed requests, non-2xx/3xx answers and socket errors from
    ``wrk --latency`` output; ``ValueError`` when the output has no result (wrk failed)."""
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    done = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if not rate or not done:
        raise ValueError(f"no result in wrk's output:\n{text}")
    latency = {
        m.group(1): float(m.group(2)) * WRK_UNITS[m.group(3)]
        for m in re.finditer(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rate.group(1)),
        "p50_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "requests": int(done.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def wrk_command(url: str, connections: int, seconds: float, timeout_s: float = 10.0) -> list[str]:
    # One wrk thread: the machine has 2 cores, shared with the server under test.
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        url,
    ]


def run_wrk(url: str, connections: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(wrk_command(url, connections, seconds), capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return parse_wrk(out.stdout)


# -- servers ------------------------------------------------------------------------------------
@dataclass
class Served:
    """A server subprocess: its base URL (no trailing slash) and, for Facets, the admin URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    admin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> int | None:
        """SIGTERM (Facets drains and exits 0), SIGKILL to the whole session after 15 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def _wait_listening(served: Served, timeout: float = 30.0) -> None:
    """Until ``served.url`` answers HTTP (any status), or the process has died."""
    deadline = time.monotonic() + timeout
    while True:
        if served.proc.poll() is not None:
            raise RuntimeError(f"server exited with {served.proc.returncode}:\n{_log_tail(served.log)}")
        try:
            with urllib.request.urlopen(served.url + "/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not answering after {timeout} s:\n{_log_tail(served.log)}") from None
            time.sleep(0.05)


def start_plain(tmp: Path, synchronous: str = "NORMAL") -> Served:
    """The plain app on uvicorn + httptools + uvloop, one process, on a port the kernel
    picks (``--port 0``; uvicorn logs the real one). Not ``--fd``: uvicorn wraps an inherited
    descriptor as a Unix socket, so uvloop leaves Nagle on and every request waits ~40 ms
    for a delayed ACK (23 req/s at 1 connection, measured)."""
    log = tmp / "plain-server.log"
    env = dict(os.environ, PLAIN_DB=str(tmp / "plain.sqlite3"), PLAIN_SYNCHRONOUS=synchronous)
    command = [
        *(sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH), "plain_asgi:app"),
        *("--host", "127.0.0.1", "--port", "0", "--loop", "uvloop", "--http", "httptools"),
        *("--no-access-log", "--log-level", "info", "--lifespan", "off", "--backlog", "2048"),
    ]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, env=env, stdout=err, stderr=err, start_new_session=True)
    served = Served(proc, "", log)
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", _log_tail(log))):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"plain server did not start ({proc.returncode}):\n{_log_tail(log)}")
            time.sleep(0.05)
        served.url = m.group(1)
        _wait_listening(served)
    except BaseException:
        served.stop()
        raise
    return served


def facets_server_available() -> bool:
    return importlib.util.find_spec("server") is not None


# ==== Facets' front door ========================================================================
# The one function that knows how `facets serve` is started and tells where it listens (the
# lines it prints when both listeners are up: "public URL/APP/FACET/", "admin URL/metrics").
def start_facets(data: Path, tmp: Path, durability: str) -> Served:
    """``facets --data DATA --durability D serve`` on ports the kernel picks, as a subprocess."""
    log = tmp / "facets-server.log"
    command = [
        *(sys.executable, "-m", "console", "--data", str(data), "--durability", durability),
        *("serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with log.open("wb") as err:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    served = Served(proc, "", log)
    try:
        public = admin = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        pending = b""
        while public is None or admin is None:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"facets serve did not start ({proc.returncode}):\n{_log_tail(log)}")
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            pending += chunk
            for line in pending.decode(errors="replace").splitlines():
                if m := re.match(r"public\s+(http://\S+?)/APP/FACET/", line):
                    public = m.group(1)
                if m := re.match(r"admin\s+(http://\S+?)/metrics", line):
                    admin = m.group(1)
        served.url, served.admin = public, admin
        _wait_listening(served)
    except BaseException:
        served.stop()
        raise
    return served


# ================================================================================================


def prepare_data(data: Path, durability: str) -> int:
    """Load the writer and the runaway into a fresh data directory (closed again before the
    server opens it: one owner per directory); returns the writer's rows after one call."""
    import wasmtime

    from runtime import Supervisor

    with Supervisor(data, durability=durability) as sup:
        sup.load_app_bytes(bytes(wasmtime.wat2wasm(WRITER_WAT.read_text())), "writer")
        sup.set_quotas("writer", NOT_BINDING)
        sup.load_app_bytes(bytes(wasmtime.wat2wasm(RUNAWAY_WAT.read_text())), "runaway")
        sup.set_quotas("runaway", RUNAWAY_QUOTAS)
        result = sup.call("writer/a", b"x")  # the facet exists and its table is created
        if not result.ok:
            raise RuntimeError(f"writer/a: {result.error}: {result.message}")
        return int(sup.query("writer/a", "SELECT count(*) FROM t")["rows"][0][0])


def committed_rows(data: Path, durability: str) -> int:
    from runtime import Supervisor

    with Supervisor(data, durability=durability) as sup:
        return int(sup.query("writer/a", "SELECT count(*) FROM t")["rows"][0][0])


def _runaway_progress(admin: str) -> float:
    """Sum of the runaway facet's counters in /metrics (requests, errors, wall time): it
    stops moving once no request of it is running or queued."""
    with urllib.request.urlopen(admin + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("facets_") and 'app="runaway"' in line
    )


def wait_runaway_idle(admin: str, timeout_s: float, limit_s: float = 60.0) -> None:
    """Until the runaway's counters have not moved for twice its timeout: every request
    that still ran would have ended (and been counted) within one timeout."""
    quiet_for = 2 * timeout_s
    deadline = time.monotonic() + limit_s
    last, since = _runaway_progress(admin), time.monotonic()
    while time.monotonic() - since < quiet_for:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the runaway facet was still busy {limit_s} s after its load stopped")
        time.sleep(0.1)
        now = _runaway_progress(admin)
        if now != last:
            last, since = now, time.monotonic()


@contextlib.contextmanager
def background_wrk(url: str, connections: int, seconds: float) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(wrk_command(url, connections, seconds), stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate()


def _median(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("rps", "p50_ms", "p99_ms"):
        values = [s[key] for s in samples if s.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["non_2xx"] = sum(s["non_2xx"] for s in samples)
    out["socket_errors"] = sum(s["socket_errors"] for s in samples)
    out["requests"] = sum(s["requests"] for s in samples)
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("uvicorn", "httptools", "uvloop"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    out["wrk"] = (wrk.stdout or wrk.stderr).split("[")[0].strip()
    return out


# -- the section --------------------------------------------------------------------------------
def http_section(tmp: Path, rounds: int, seconds: float) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("the http section needs wrk (Debian package wrk; make bench installs it)")
    tmp = tmp / "http"
    tmp.mkdir()
    durability = "process"  # = the plain app's synchronous=NORMAL in WAL
    out: dict[str, Any] = {
        "server": _versions(),
        "durability": "facets --durability process; plain app synchronous=NORMAL (WAL)",
        "processes": "one server process each (the supervisor is one process)",
        "wrk": " ".join(wrk_command("URL", 0, seconds)).replace("-c0", "-cN"),
        "rounds": rounds,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    plain = start_plain(tmp, "NORMAL")
    facets: Served | None = None
    try:
        targets = {"plain": plain.url + "/"}
        if facets_server_available():
            data = tmp / "facets-data"
            rows_before = prepare_data(data, durability)
            facets = start_facets(data, tmp, durability)
            targets["facets"] = facets.url + "/writer/a/"
        else:
            out["facets"] = "not measured: the server package is not in this tree"
        samples: dict[str, dict[int, list[dict[str, Any]]]] = {n: {c: [] for c in CONNECTIONS} for n in targets}
        warmup = {name: run_wrk(url, 16, 1) for name, url in targets.items()}  # imports, caches
        healthy_runs: list[dict[str, Any]] = []  # the runaway scenario's runs on writer/a
        for _ in range(rounds):
            for connections in CONNECTIONS:
                for name, url in targets.items():
                    samples[name][connections].append(run_wrk(url, connections, seconds))
        for connections in CONNECTIONS:
            row = {name: _median(samples[name][connections]) for name in targets}
            if "facets" in row:
                row["ratio_rps"] = row["facets"]["rps"] / row["plain"]["rps"]
            out[f"c{connections}"] = row
        if facets is not None:
            assert facets.admin is not None
            out["runaway"] = runaway_scenario(facets, rounds, seconds, healthy_runs)
    finally:
        codes = {"plain": plain.stop()}
        if facets is not None:
            codes["facets"] = facets.stop()
    out["exit_codes"] = codes
    out["rows_committed"] = {"plain": _plain_rows(tmp / "plain.sqlite3")}
    # Every 2xx answer wrk counted is a committed row (warm-up included), or a write was lost.
    runs = {name: [warmup[name], *(s for per in samples[name].values() for s in per)] for name in samples}
    runs.get("facets", []).extend(healthy_runs)
    out["acknowledged_2xx"] = {name: sum(s["requests"] - s["non_2xx"] for s in runs[name]) for name in runs}
    if facets is not None:
        out["rows_committed"]["facets"] = committed_rows(tmp / "facets-data", durability) - rows_before
        out["ratio_vs_plain_c16"] = out["c16"]["ratio_rps"]
    committed = out["rows_committed"]
    out["acknowledged_all_committed"] = all(committed[n] >= out["acknowledged_2xx"][n] for n in committed)
    return out


def _plain_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def runaway_scenario(facets: Served, rounds: int, seconds: float, healthy_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Healthy facet at 16 connections alone, then with the runaway hammered by 16 more
    (every run on the healthy facet is also appended to ``healthy_runs``)."""
    assert facets.admin is not None
    healthy, runaway = facets.url + "/writer/a/", facets.url + "/runaway/x/"
    timeout_s = int(RUNAWAY_QUOTAS["timeout_ms"].removesuffix("ms")) / 1000
    alone: list[dict[str, Any]] = []
    beside: list[dict[str, Any]] = []
    hammer: list[dict[str, Any]] = []
    for _ in range(rounds):
        wait_runaway_idle(facets.admin, timeout_s)
        alone.append(run_wrk(healthy, 16, seconds))
        # The runaway's load starts first and outlasts the healthy one, so every healthy
        # request of the round is measured while the runaway spins.
        with background_wrk(runaway, 16, seconds + 2) as proc:
            time.sleep(0.5)
            beside.append(run_wrk(healthy, 16, seconds))
            stdout, _ = proc.communicate(timeout=seconds + 60)
            hammer.append(parse_wrk(stdout))
    healthy_runs.extend(alone + beside)
    alone_m, beside_m = _median(alone), _median(beside)
    return {
        "healthy_alone": alone_m,
        "healthy_beside_runaway": beside_m,
        "runaway": _median(hammer),
        "runaway_timeout_ms": int(timeout_s * 1000),
        "p99_ratio": beside_m["p99_ms"] / alone_m["p99_ms"],
    }


if __name__ == "__main__":  # the section alone: python bench/http_bench.py [--quick]
    import tempfile

    sys.path.insert(0, str(ROOT))
    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory(prefix="facets-http-bench-") as name:
        print(json.dumps(http_section(Path(name), 1 if quick else 3, 1 if quick else 3), indent=2))
