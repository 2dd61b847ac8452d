"""A facet's input gate and its commit groups: who runs a facet's requests, and when.

One thread at a time runs a facet's requests: the one holding its ``Gate.lock``.
A request that finds the gate free and nobody queued runs at once (the fast path).
Otherwise it queues, at most ``queue`` (a quota) deep, and its thread sleeps:

* With commit groups (on with ``full`` durability), whoever takes the gate runs
  everything queued, up to ``MAX_GROUP``, as one group: one transaction, a
  savepoint per request, one COMMIT (see ``FacetSlot.run``). So a busy facet
  pays one disk sync per group, not per request. It then wakes each member of
  the group and the oldest request still queued, which takes the gate next.
* Without them (``process`` durability: a COMMIT costs no disk sync) each
  waiting thread takes the gate itself and runs its own request: cheaper under
  the GIL (bench/README.md). Its request is queued only to be counted.

Anyone else who holds the gate (eviction, deletion, an import, shutdown) leaves
through ``Gate.leave``, which wakes the next queued request: a request queued
behind an eviction would otherwise sleep until its ``max_wait``.

Thread-safety rules:

* Lock order: ``Gate.lock`` (held for a whole group, or an eviction) before the
  supervisor's locks (residency, registry, then the control database's), and
  ``Gate.queue_lock`` innermost: held for a few deque operations and flag
  flips, never while taking another lock. Nothing that holds a supervisor lock
  waits for a gate (eviction only tries one: ``try_enter``).
* ``Gate.queue`` is read without ``queue_lock`` for its truthiness and length
  (the fast path's "nobody waiting", the queue quota, listings): a stale answer
  only sends a request through the queue, or lets one more wait, never runs two
  at once, which only ``Gate.lock`` decides.
* ``Request.taken`` is written under ``queue_lock``; ``Request.done`` and
  ``result`` by the gate holder before it wakes the request's thread, which
  reads them after waking (the wake lock orders the two).
* Runs on: the calling thread (``Supervisor.call``, or a pool worker for
  ``submit``). The gate keeps no thread of its own.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from .errors import BadRequest, ErrorCode
from .hostcalls import UNCHANGED
from .http import HttpRequest
from .logs import LogRecord
from .quotas import Quotas
from .types import CallResult

#: At most this many queued requests share one COMMIT.
MAX_GROUP = 64

Owner = TypeVar("Owner")


class Request:
    """One request on its way through a facet's gate; ``result`` is set once it is answered."""

    __slots__ = (
        "alarm",
        "alarm_change",
        "body",
        "done",
        "http",
        "logs",
        "quotas",
        "request_id",
        "result",
        "storage",
        "taken",
        "wake",
        "woken",
    )

    def __init__(
        self, body: bytes, request_id: str, quotas: Quotas, http: HttpRequest | None = None, *, alarm: bool = False
    ) -> None:
        self.body = body
        #: An alarm's delivery (``runtime.alarms``): the guest's alarm handler runs, not a handler of requests.
        self.alarm = alarm
        #: The alarm change the guest made, applied after COMMIT (``hostcalls.UNCHANGED``: none).
        self.alarm_change: object = UNCHANGED
        #: An HTTP request (``Supervisor.fetch``): ``body`` is its body, and the guest gets
        #: it through ``facet_http`` when it exports that.
        self.http = http
        self.request_id = request_id
        self.quotas = quotas
        self.result: CallResult | None = None
        #: The guest's log records and the supervisor's events (instantiated, trapped...).
        self.logs: list[LogRecord] = []
        #: The facet's database size if this request changed the gauge, else None.
        self.storage: int | None = None
        #: Taken from the queue into a commit group (it can no longer be withdrawn).
        self.taken = False
        #: ``result`` is final and may be handed out (its COMMIT returned).
        self.done = False
        #: A queued request's thread sleeps on this (held) lock until ``Gate.wake``.
        self.wake: threading.Lock | None = None
        self.woken = False


def as_body(body: object) -> bytes:
    """A request body that is neither ``bytes`` nor ``str`` (those ``Supervisor.call``
    takes as they are): a bytes-like copy, else ``BadRequest``."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadRequest(f"body must be bytes or str, not {type(body).__name__}")
    return bytes(body)


def fail_all(group: list[Request], code: ErrorCode, message: str) -> None:
    """Answer every request of ``group`` with the same failure (none of them ran)."""
    for request in group:
        request.result = CallResult.failure(code, message, request.request_id)


class Gate:
    """One facet's input gate: ``lock`` and the requests queued behind it."""

    __slots__ = ("lock", "queue", "queue_lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: Requests waiting for the gate, oldest first (guarded by ``queue_lock``).
        self.queue: deque[Request] = deque()
        self.queue_lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """Requests queued behind the gate (not counting those already running)."""
        return len(self.queue)

    # -- holding the gate for something other than requests ---------------------------
    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the gate (eviction, deletion, import, shutdown); leave through ``leave``."""
        self.lock.acquire()
        try:
            yield
        finally:
            self.leave()

    def try_enter(self) -> bool:
        """Take the gate if it is free (then ``leave`` it); held means the facet is busy."""
        return self.lock.acquire(blocking=False)

    def leave(self) -> None:
        """Release the gate and wake the next queued request: every holder leaves this way."""
        self.lock.release()
        self.wake_next()

    # -- the queue ------------------------------------------------------------------
    def enqueue(self, request: Request, sleeps: bool = True) -> None:
        """Queue a request; its thread then ``sleep``s until woken, unless not ``sleeps``
        (it waits on the gate itself and is only counted)."""
        if sleeps:
            request.wake = threading.Lock()
            request.wake.acquire()
        with self.queue_lock:
            self.queue.append(request)

    def wake(self, request: Request) -> None:
        """Wake a queued request's thread (once until it slept again; see ``sleep``)."""
        if request.wake is None:  # never slept: it ran on the fast path or waits on the gate
            return
        with self.queue_lock:
            if request.wake is not None and not request.woken:
                request.woken = True
                request.wake.release()

    def wake_next(self) -> None:
        """After the gate was released: wake the oldest queued request, whose thread then
        takes the gate and runs the next group (unless someone else took it first)."""
        if self.queue:
            try:
                self.wake(self.queue[0])
            except IndexError:  # emptied meanwhile: nobody to wake
                pass

    def sleep(self, request: Request, timeout: float | None) -> bool:
        """Sleep until woken (True) or ``timeout`` seconds passed (False)."""
        assert request.wake is not None
        if not request.wake.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        with self.queue_lock:
            request.woken = False
        return True

    def withdraw(self, request: Request) -> bool:
        """Take a request that gave up waiting out of the queue; False if it already runs."""
        with self.queue_lock:
            if request.taken:
                return False
            self.queue.remove(request)
            return True

    def take_group(self) -> list[Request]:
        """The oldest queued requests, up to ``MAX_GROUP``, for one commit group."""
        with self.queue_lock:
            queue = self.queue
            group = [queue.popleft() for _ in range(min(len(queue), MAX_GROUP))]
            for request in group:
                request.taken = True
        return group


def pass_gate(
    gate: Gate, request: Request, run: Callable[[Owner, list[Request]], None], owner: Owner, *, groups: bool
) -> float | None:
    """Get ``request`` answered through ``gate``: ``run(owner, group)`` runs a group while
    the gate is held and sets each member's ``result``. Returns None once ``request`` is
    done, or the seconds it waited before giving up, still queued."""
    if not gate.queue and gate.lock.acquire(blocking=False):
        run_and_leave(gate, [request], run, owner)  # nobody waiting: no queue to go through
        return None
    # Each group ahead holds the gate for at most its requests' instantiation + init and
    # handling, each bounded by timeout_ms; waiting longer means something is wrong.
    max_wait = (gate.waiting + 1) * 2 * request.quotas.timeout_ms / 1000
    if not groups:
        gate.enqueue(request, sleeps=False)  # counted in `waiting` only
        acquired = gate.lock.acquire(timeout=max_wait)
        gate.withdraw(request)
        if not acquired:
            return max_wait
        run_and_leave(gate, [request], run, owner)
        return None
    gate.enqueue(request)
    deadline = time.monotonic() + max_wait
    while not request.done:
        if not request.taken and gate.lock.acquire(blocking=False):
            run_and_leave(gate, gate.take_group(), run, owner)
            continue
        if request.taken:
            gate.sleep(request, None)  # in a running group: woken when it is done
        elif not gate.sleep(request, deadline - time.monotonic()) and gate.withdraw(request):
            return max_wait  # gave up still queued (withdraw fails once a group took it)
    return None


def run_and_leave(gate: Gate, group: list[Request], run: Callable[[Owner, list[Request]], None], owner: Owner) -> None:
    """Run ``group`` under ``gate``, which the caller acquired; mark it done, release the
    gate, then wake the group's waiting callers and the next queued request."""
    try:
        if group:
            run(owner, group)
    finally:
        for request in group:
            request.done = True
        gate.lock.release()
        for request in group:
            gate.wake(request)
        gate.wake_next()  # as `leave` does, after the group's own wake-ups


def pass_batch(
    gate: Gate, batch: list[Request], run: Callable[[Owner, list[Request]], None], owner: Owner, *, groups: bool
) -> float | None:
    """Get every request of ``batch`` (one caller's, oldest first) answered through ``gate``:
    the caller waits for the gate once, as one request would, then runs the whole batch
    before it leaves: with ``groups`` in commit groups of up to ``MAX_GROUP``, else one
    transaction each. Returns None once all are done, or the seconds waited before giving
    up (then none of them ran).

    With groups the batch is not queued: a holder would take queued requests into its own
    group, and this caller runs its requests itself. Without, the first is queued only to
    be counted, as ``pass_gate`` does.
    """
    first = batch[0]
    max_wait = (gate.waiting + 1) * 2 * first.quotas.timeout_ms / 1000
    if gate.queue or not gate.lock.acquire(blocking=False):
        if not groups:
            gate.enqueue(first, sleeps=False)
        acquired = gate.lock.acquire(timeout=max_wait)
        if not groups:
            gate.withdraw(first)
        if not acquired:
            return max_wait
    size = MAX_GROUP if groups else 1
    try:
        for start in range(0, len(batch), size):
            run(owner, batch[start : start + size])
    finally:
        for request in batch:
            request.done = True
        gate.leave()
    return None
