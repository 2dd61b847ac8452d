"""Quota keys, parsing of human values, and the three levels they are set at.

Keys (fixed names; every interface uses them):

============  =====================================  ==========================
key           meaning                                accepted values
============  =====================================  ==========================
fuel          wasm fuel per request                  integer, or 10k / 5M / 1G
timeout_ms    wall time per request                  250ms, 2s, or integer ms
memory        bytes of linear memory                 512KiB, 64MiB, 1GB, integer
storage       bytes of database                      512KiB, 64MiB, 1GB, integer
log_bytes     log bytes per request                  512KiB, 64MiB, 1GB, integer
rate          requests per second (token bucket)     number, or ``off``
queue         requests waiting for one facet         integer, or ``off``
max_facets    facets per app                         integer, or ``off``
============  =====================================  ==========================

``off`` (stored as 0) means unlimited. The value ``default`` removes the
setting at that level so the next less specific level applies.

Levels: the global defaults (target ``*``), per-app defaults (``APP``) and
per-facet overrides (``APP/FACET``); the effective value is the most specific.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .abi import is_valid_name
from .errors import QuotaError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_COUNT_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_DURATION_UNITS = {"": 1, "ms": 1, "s": 1000, "m": 60_000, "min": 60_000}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QUOTA_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Quotas))

_KINDS = {
    "fuel": "count", "timeout_ms": "duration", "memory": "size", "storage": "size",
    "log_bytes": "size", "rate": "rate", "queue": "count_off", "max_facets": "count_off",
}
_FORMS = {
    "count": "a whole number such as 5000000 or 5M",
    "count_off": "a whole number, or 'off' for no limit",
    "duration": "a duration such as 250ms or 2s (a plain number is milliseconds)",
    "size": "a size such as 512KiB, 64MiB, 1GB or a number of bytes",
    "rate": "requests per second such as 100 or 2.5, or 'off' for no limit",
}
#: Smallest sensible values: a limit of 0 fuel or 0 ms would only break the facet.
_MINIMUM = {"fuel": 1, "timeout_ms": 1, "memory": 65_536, "storage": 8_192, "log_bytes": 0}
_MAXIMUM = {"memory": 4 * 1024**3, "timeout_ms": 10 * 60_000}


def parse_quota(key: str, value: Any) -> int | float:
    """Parse one quota value; raise ``QuotaError`` naming the key and the accepted forms."""
    if key not in _KINDS:
        raise QuotaError(f"unknown quota key {key!r}; known keys: {', '.join(QUOTA_KEYS)}")
    kind = _KINDS[key]
    problem = f"bad value {value!r} for quota {key}: expected {_FORMS[kind]}"
    if isinstance(value, bool):
        raise QuotaError(problem)
    if kind in ("count_off", "rate") and isinstance(value, str) and value.strip().lower() in ("off", "unlimited"):
        return 0
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
        if number < 0:
            raise QuotaError(f"{problem} (negative)")
    else:
        match = _NUMBER.match(str(value))
        if not match:
            raise QuotaError(problem)
        number, unit = float(match.group(1)), match.group(2).lower()
    units = {"size": _SIZE_UNITS, "duration": _DURATION_UNITS, "count": _COUNT_UNITS,
             "count_off": _COUNT_UNITS, "rate": {"": 1}}[kind]
    if unit not in units:
        raise QuotaError(f"{problem} (unknown unit {unit!r})")
    result = number * units[unit]
    if kind == "rate":
        return float(result)
    if result != int(result):
        raise QuotaError(f"{problem} (not a whole number)")
    result = int(result)
    if key in _MINIMUM and result < _MINIMUM[key]:
        raise QuotaError(f"{problem} (at least {_MINIMUM[key]})")
    if key in _MAXIMUM and result > _MAXIMUM[key]:
        raise QuotaError(f"{problem} (at most {_MAXIMUM[key]})")
    return result


def parse_target(target: str) -> tuple[str | None, str | None]:
    """``*`` -> (None, None); ``APP`` -> (app, None); ``APP/FACET`` -> (app, facet)."""
    if target == "*":
        return None, None
    app, sep, facet = target.partition("/")
    if not is_valid_name(app) or (sep and not is_valid_name(facet)):
        raise QuotaError(f"bad quota target {target!r}: expected '*', APP or APP/FACET "
                         "(names match [a-z0-9][a-z0-9_-]{0,62})")
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

    def __init__(self, settings: dict[str, dict[str, Any]] | None = None,
                 base: Quotas | None = None) -> None:
        self._base = base or Quotas()
        self._lock = threading.Lock()
        self._state = _BookState({k: dict(v) for k, v in (settings or {}).items()})

    def effective(self, app: str | None = None, facet: str | None = None) -> Quotas:
        """The effective quotas (cached until the next change: this runs on every request)."""
        state = self._state   # one read: everything below uses this state only
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
                    raise QuotaError(f"'default' removes a per-app or per-facet setting; "
                                     f"the global {key} has no level below it")
                unsets.append(key)
            else:
                sets[key] = parse_quota(key, raw)
        return scope_of(app, facet), sets, unsets

    def apply(self, scope: str, sets: dict[str, Any], unsets: list[str]) -> None:
        with self._lock:
            settings = dict(self._state.settings)      # copies: the published state never changes
            current = {**settings.get(scope, {}), **sets}
            for key in unsets:
                current.pop(key, None)
            if current:
                settings[scope] = current
            else:
                settings.pop(scope, None)
            self._state = _BookState(settings)        # settings and an empty cache, one assignment

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
