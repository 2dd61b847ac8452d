"""Quota keys, parsing of human values, and the three levels they are set at.

Keys (fixed names; every interface uses them):

============  =====================================  ==========================
key           meaning                                accepted values
============  =====================================  ==========================
fuel          wasm fuel per request                  integer, or 10k / 5M / 1G
timeout_ms    wall time per request                  250ms, 2s, or integer ms
memory        bytes of linear memory                 512KiB, 64MiB, 1GB, integer
storage       bytes of database                      512KiB, 64MiB, 1GB, integer
log_bytes     log bytes (and log_bytes/64 records)   512KiB, 64MiB, 1GB, integer
              per request
rate          requests per second (token bucket)     number, or ``off``
queue         requests waiting for one facet         integer, or ``off``
max_facets    facets per app                         integer, or ``off``
max_body      bytes of an HTTP request body          512KiB, 64MiB, 1GB, integer
crash_faults  consecutive faults that put a facet    integer, or ``off``
              into backoff (``runtime.supervision``)
backoff_ms    the first backoff delay; it doubles    250ms, 2s, or integer ms
              with each further fault
backoff_max_ms  the longest backoff delay            250ms, 5min, or integer ms
quarantine_faults  consecutive faults after which    integer, or ``off``
              it is quarantined until reset
history_ms    how far back data can be restored    7d, 36h, or integer ms
============  =====================================  ==========================

Every value is finite and within its key's accepted range (``accepted_range``:
fuel 1 to 10**15, timeout_ms 1 to 600000, memory 64 KiB to 4 GiB, storage 8 KiB
to 1 TiB, log_bytes 0 to 16 MiB, rate 0.001 to 1000000, queue 1 to 100000,
max_facets 1 to 10000000, max_body 0 to 1 GiB, crash_faults 1 to 10000, backoff_ms and
backoff_max_ms 1 ms to 1 day, quarantine_faults 1 to 1000000, history_ms 1 min to 90
days); anything else (inf, NaN, 1e400, a negative number, a value past the range) is
refused with a ``QuotaError`` naming the key and the range.

``off`` (stored as 0) means unlimited (for crash_faults and quarantine_faults: never). The value ``default`` removes the
setting at that level so the next less specific level applies.

Levels: the global defaults (target ``*``), per-app defaults (``APP``) and
per-facet overrides (``APP/FACET``); the effective value is the most specific.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

from .abi import is_valid_name
from .errors import QuotaError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
}
_COUNT_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_DURATION_UNITS = {"": 1, "ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$", re.ASCII)


@dataclass(frozen=True)
class Quotas:
    """Effective limits of one facet. 0 means unlimited for rate, queue and max_facets."""

    fuel: int = 200_000_000
    timeout_ms: int = 2_000
    memory: int = 32 * 1024 * 1024
    storage: int = 256 * 1024 * 1024
    log_bytes: int = 64 * 1024
    rate: float = 1_000.0
    queue: int = 64
    max_facets: int = 10_000
    max_body: int = 1024 * 1024
    crash_faults: int = 3
    backoff_ms: int = 1_000
    backoff_max_ms: int = 300_000
    quarantine_faults: int = 10
    #: How far back the facet's data can be restored (``runtime.archive``): 7 days.
    history_ms: int = 7 * 86_400_000

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QUOTA_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Quotas))

_KINDS = {
    "fuel": "count",
    "timeout_ms": "duration",
    "memory": "size",
    "storage": "size",
    "log_bytes": "size",
    "rate": "rate",
    "queue": "count_off",
    "max_facets": "count_off",
    "max_body": "size",
    "crash_faults": "count_off",
    "backoff_ms": "duration",
    "backoff_max_ms": "duration",
    "quarantine_faults": "count_off",
    "history_ms": "duration",
}
_FORMS = {
    "count": "a whole number such as 5000000 or 5M",
    "count_off": "a whole number, or 'off' for no limit",
    "duration": "a duration such as 250ms or 2s (a plain number is milliseconds)",
    "size": "a size such as 512KiB, 64MiB, 1GB or a number of bytes",
    "rate": "requests per second such as 100 or 2.5, or 'off' for no limit",
}
#: Accepted range of every key, inclusive; ``off`` (0) is accepted besides for rate, queue
#: and max_facets. Every bound is finite, so no interface can store inf, NaN or an integer
#: SQLite (i64) or wasmtime (u64 fuel) cannot hold.
#:   fuel        1 .. 10**15: wasmtime burns about one unit per wasm instruction, ~1e9/s, so
#:               the 10-minute timeout maximum allows ~6e11; 10**15 is 1,000 times that and
#:               far below u64's 1.8e19.
#:   timeout_ms  1 ms .. 10 minutes: a limit of 0 ms would only break the facet.
#:   memory      64 KiB (one wasm page) .. 4 GiB (wasm32's address space).
#:   storage     8 KiB (two 4 KiB pages) .. 1 TiB.
#:   log_bytes   0 .. 16 MiB per request: every byte reaches the control database.
#:   rate        0.001 (one request per ~17 minutes) .. 1,000,000 requests/s.
#:   queue       1 .. 100,000 waiting requests; max_facets 1 .. 10,000,000 facets per app.
#:   max_body    0 .. 1 GiB per HTTP request body: the server holds a whole body in memory
#:               and copies it into the guest's (at most 4 GiB) before the guest runs.
#:   crash_faults 1 .. 10,000 consecutive faults before a backoff; quarantine_faults 1 ..
#:               1,000,000 before quarantine (runtime/supervision.py has the defaults' why).
#:   backoff_ms, backoff_max_ms  1 ms .. 1 day: a facet refused for longer than a day is
#:               better quarantined, where an operator sees it.
#:   history_ms  1 minute .. 90 days of restorable history (Cloudflare keeps 30 days).
_RANGE: dict[str, tuple[Fraction, Fraction]] = {
    "fuel": (Fraction(1), Fraction(10**15)),
    "timeout_ms": (Fraction(1), Fraction(10 * 60_000)),
    "memory": (Fraction(65_536), Fraction(4 * 1024**3)),
    "storage": (Fraction(8_192), Fraction(1024**4)),
    "log_bytes": (Fraction(0), Fraction(16 * 1024**2)),
    "rate": (Fraction(1, 1000), Fraction(1_000_000)),
    "queue": (Fraction(1), Fraction(100_000)),
    "max_facets": (Fraction(1), Fraction(10_000_000)),
    "max_body": (Fraction(0), Fraction(1024**3)),
    "crash_faults": (Fraction(1), Fraction(10_000)),
    "backoff_ms": (Fraction(1), Fraction(86_400_000)),
    "backoff_max_ms": (Fraction(1), Fraction(86_400_000)),
    "quarantine_faults": (Fraction(1), Fraction(1_000_000)),
    "history_ms": (Fraction(60_000), Fraction(90 * 86_400_000)),
}
#: A value written by hand is short; a longer string is refused before it is parsed
#: (Python refuses int() of more than 4,300 digits, and the message quotes the value).
_MAX_VALUE_CHARS = 64


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else f"{text[:_MAX_VALUE_CHARS]}... ({len(text)} chars)"


def _bound(n: Fraction) -> str:
    return str(int(n)) if n.denominator == 1 else f"{float(n):g}"


def accepted_range(key: str) -> str:
    """The accepted range of ``key``, as the error messages and the README show it."""
    low, high = _RANGE[key]
    text = f"{_bound(low)} to {_bound(high)}"
    return f"{text}, or off" if _KINDS[key] in ("count_off", "rate") else text


def parse_quota(key: str, value: Any) -> int | float:
    """Parse one quota value; raise ``QuotaError`` naming the key, the accepted forms and range.

    Exact arithmetic (``Fraction``): no float rounds ``12345678901234567891`` or turns
    ``1e400`` into infinity; inf and NaN are refused, and so is every value out of range.
    """
    if key not in _KINDS:
        raise QuotaError(f"unknown quota key {key!r}; known keys: {', '.join(QUOTA_KEYS)}")
    kind = _KINDS[key]
    problem = (
        f"bad value {_shown(value)} for quota {key}: expected {_FORMS[kind]} (accepted range {accepted_range(key)})"
    )
    if isinstance(value, bool):
        raise QuotaError(problem)
    off = kind in ("count_off", "rate")
    if off and isinstance(value, str) and value.strip().lower() in ("off", "unlimited"):
        return 0
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise QuotaError(f"{problem}; not a finite number")
        number, unit = Fraction(value), ""
        if number < 0:
            raise QuotaError(f"{problem}; negative")
    else:
        text = str(value)
        match = _NUMBER.match(text) if len(text) <= _MAX_VALUE_CHARS else None
        if not match:
            raise QuotaError(problem)
        number, unit = Fraction(match.group(1)), match.group(2).lower()
    units = {
        "size": _SIZE_UNITS,
        "duration": _DURATION_UNITS,
        "count": _COUNT_UNITS,
        "count_off": _COUNT_UNITS,
        "rate": {"": 1},
    }[kind]
    if unit not in units:
        raise QuotaError(f"{problem}; unknown unit {unit!r}")
    result = number * units[unit]
    if off and result == 0:
        return 0.0 if kind == "rate" else 0
    if kind != "rate" and result.denominator != 1:
        raise QuotaError(f"{problem}; not a whole number")
    low, high = _RANGE[key]
    if result < low:
        raise QuotaError(f"{problem}; at least {_bound(low)}")
    if result > high:
        raise QuotaError(f"{problem}; at most {_bound(high)}")
    return float(result) if kind == "rate" else int(result)


def parse_target(target: str) -> tuple[str | None, str | None]:
    """``*`` -> (None, None); ``APP`` -> (app, None); ``APP/FACET`` -> (app, facet)."""
    if target == "*":
        return None, None
    app, sep, facet = target.partition("/")
    if not is_valid_name(app) or (sep and not is_valid_name(facet)):
        raise QuotaError(
            f"bad quota target {target!r}: expected '*', APP or APP/FACET (names match [a-z0-9][a-z0-9_-]{{0,62}})"
        )
    return app, (facet if sep else None)


def scope_of(app: str | None, facet: str | None) -> str:
    if app is None:
        return "*"
    return f"{app}/{facet}" if facet else app


@dataclass(frozen=True)
class _BookState:
    """One immutable version of the settings, with the cache computed from it alone.

    ``settings`` is never changed after the state is published (writers copy it);
    ``cache`` belongs to this state only, so a reader that computed from an older
    state can only write into that older (discarded) state's cache.
    """

    settings: dict[str, dict[str, Any]]
    cache: dict[tuple[str | None, str | None], Quotas] = field(default_factory=dict)


class QuotaBook:
    """The three levels of quota settings, held in memory and persisted by a callback.

    ``settings`` maps a scope (``*``, ``APP``, ``APP/FACET``) to its explicit
    key -> value settings.

    Thread safety: readers (``effective``, on every request) take no lock. They
    read ``self._state`` once and use only that state. Writers (``apply``,
    ``forget``) are serialised by ``_lock``, build new settings and a fresh, empty
    cache, and publish both in one assignment. A reader that raced with a writer
    returns the quotas in force when it started (as if it had run just before the
    change) and can never leave them cached past the change.
    """

    #: Bound on the cached (app, facet) pairs, so a scan over many names cannot grow it forever.
    _CACHE_LIMIT = 100_000

    def __init__(self, settings: dict[str, dict[str, Any]] | None = None, base: Quotas | None = None) -> None:
        self._base = base or Quotas()
        self._lock = threading.Lock()
        #: Stored settings refused when the book was opened (written by an older version
        #: before the ranges existed, say ``rate=inf``): "scope key=value: why" each. They
        #: are left out, so the next level applies, rather than failing every request.
        self.rejected: list[str] = []
        checked: dict[str, dict[str, Any]] = {}
        for scope, values in (settings or {}).items():
            kept = {}
            for key, value in values.items():
                try:  # the checks a change gets (scope, key, level, range), one at a time
                    kept.update(self.plan(scope, {key: value})[1])
                except QuotaError as exc:
                    self.rejected.append(f"{scope} {key}={value!r}: {exc.message}")
            if kept:
                checked[scope] = kept
        self._state = _BookState(checked)

    def effective(self, app: str | None = None, facet: str | None = None) -> Quotas:
        """The effective quotas (cached until the next change: this runs on every request)."""
        state = self._state  # one read: everything below uses this state only
        key = (app, facet)
        cached = state.cache.get(key)
        if cached is not None:
            return cached
        merged: dict[str, Any] = {}
        for scope in ("*", app, f"{app}/{facet}" if app and facet else None):
            if scope is not None:
                merged.update(state.settings.get(scope, {}))
        quotas = replace(self._base, **merged) if merged else self._base
        if len(state.cache) > self._CACHE_LIMIT:
            state.cache.clear()
        state.cache[key] = quotas
        return quotas

    def explicit(self, scope: str) -> dict[str, Any]:
        return dict(self._state.settings.get(scope, {}))

    def plan(self, target: str, changes: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
        """Validate every change before anything is applied; return (scope, sets, unsets)."""
        app, facet = parse_target(target)
        sets: dict[str, Any] = {}
        unsets: list[str] = []
        for key, raw in changes.items():
            if key not in _KINDS:
                raise QuotaError(f"unknown quota key {key!r}; known keys: {', '.join(QUOTA_KEYS)}")
            if key == "max_facets" and facet is not None:
                raise QuotaError("max_facets is a per-app quota: set it on APP or '*', not on a facet")
            if isinstance(raw, str) and raw.strip().lower() == "default":
                if app is None:
                    raise QuotaError(
                        f"'default' removes a per-app or per-facet setting; the global {key} has no level below it"
                    )
                unsets.append(key)
            else:
                sets[key] = parse_quota(key, raw)
        return scope_of(app, facet), sets, unsets

    def apply(self, scope: str, sets: dict[str, Any], unsets: list[str]) -> None:
        with self._lock:
            settings = dict(self._state.settings)  # copies: the published state never changes
            current = {**settings.get(scope, {}), **sets}
            for key in unsets:
                current.pop(key, None)
            if current:
                settings[scope] = current
            else:
                settings.pop(scope, None)
            self._state = _BookState(settings)  # settings and an empty cache, one assignment

    def forget(self, scope: str) -> None:
        with self._lock:
            settings = dict(self._state.settings)
            settings.pop(scope, None)
            self._state = _BookState(settings)


def format_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
