"""A load generator for demos: realistic requests to the sample apps from background threads.

Toggled from the console (key ``t``) so the meters move. It only calls the
runtime's public API, at a bounded rate, and stops by itself when asked or
when the supervisor shuts down.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time

from runtime import Supervisor

#: Seconds ahead of schedule before the generator sleeps, and behind it before it gives up
#: catching up.
MIN_SLEEP = 0.002
MAX_CATCH_UP = 0.25

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


def _requests(rng: random.Random):
    """An endless, varied stream of (target, body) for the sample apps."""
    n = itertools.count(1)
    while True:
        user = rng.choice(USERS)
        i = next(n)
        pick = rng.random()
        if pick < 0.25:
            yield f"todo/{user}", {"op": "add", "list": rng.choice(["home", "work"]), "title": f"task {i}"}
        elif pick < 0.4:
            yield f"todo/{user}", {"op": "list", "list": "home"}
        elif pick < 0.55:
            yield "guestbook/lobby", {"op": "sign", "name": user, "message": f"message {i}"}
        elif pick < 0.65:
            yield "guestbook/lobby", {"op": "list", "limit": 10}
        elif pick < 0.75:
            yield f"counter/{user}", {"op": "incr"}
        elif pick < 0.85:
            yield "hits/site", {"op": "hit", "path": rng.choice(["/", "/about", "/pricing", "/docs"])}
        elif pick < 0.93:
            yield "shortener/acme", {"op": "shorten", "url": f"https://example.com/{rng.randrange(50)}"}
        else:
            yield "poll/team", {"op": "results", "poll": 1}


class TrafficGenerator:
    """Sends about ``rate`` requests per second from ``threads`` threads while running.

    One thread by default: unthrottled, one thread sent 6,100 requests/s of this mix
    here, two 3,300 and four 2,200, because threads that keep releasing the GIL (each
    wasm call and SQLite step does) spend their time handing it over (bench/README.md).
    """

    def __init__(self, sup: Supervisor, *, rate: float = 200.0, threads: int = 1, seed: int = 7) -> None:
        self._sup = sup
        self.rate = rate
        self._threads_n = threads
        self._seed = seed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent = 0

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True, name=f"facets-traffic-{i}")
            for i in range(self._threads_n)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def toggle(self) -> bool:
        if self.running:
            self.stop()
        else:
            self.start()
        return self.running

    def _run(self, index: int) -> None:
        rng = random.Random(self._seed + index)
        interval = self._threads_n / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        for target, body in _requests(rng):
            if self._stop.is_set():
                return
            result = self._sup.call(target, json.dumps(body))
            self.sent += 1
            if result.error == "overloaded" and "shut down" in result.message:
                return
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > MIN_SLEEP:
                # Sleeping only when well ahead keeps the average rate: a short sleep
                # overshoots (timer slack, and the GIL to get back), and the next
                # requests then catch up without sleeping.
                if self._stop.wait(delay):
                    return
            elif delay < -MAX_CATCH_UP:
                next_at = time.monotonic()  # far behind (a busy machine): no long burst
