"""Which version of an app each facet runs: the active version, a canary, pins.

For facet ``APP/FACET`` the version is, first match wins:

1. its own pin (``pin APP/FACET VERSION``);
2. the app's canary version, when a canary is staged (``load PATH --canary N%``) and the
   facet's bucket (``canary_bucket``: a hash of its name, stable across processes and
   restarts) is below N%;
3. the app's active version: the one ``pin APP VERSION`` or ``rollback`` chose, else the
   latest loaded.

``load`` (no canary) makes the new version active unless the app is pinned; ``promote``
makes the canary active for everyone; ``rollback`` cancels a canary (its facets return to
the active version) or, with none staged, makes an older version active (the one before
the active one, or the one named). Every change is stored in the control database before
it is published, and bumps ``epoch``: a facet's slot caches its version per epoch, so the
request path pays one integer comparison.

A facet moves to its version at its next request: the warm instance is dropped and the
new version's ``facet_init`` runs in its own transaction (the migration). If that fails,
the transaction rolls back, the reason is logged, and the facet stays on the version it
ran before (``FacetSlot``), never half-migrated.

Thread-safety: ``_lock`` serialises changes (it is taken before the control database's,
with no other lock held); readers take none: each published state (``_rollouts``,
``_pins``) is replaced whole, never changed in place.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BadRequest, NotFound

if TYPE_CHECKING:
    from .control import ControlDB

#: Canary buckets: percentages have two decimals (0.01% .. 100%).
BUCKETS = 10_000


def canary_bucket(app: str, facet: str) -> int:
    """The facet's bucket in 0 .. BUCKETS-1: blake2b of its name, not Python's ``hash``
    (salted per process), so every process and restart puts a facet in the same one."""
    digest = hashlib.blake2b(f"{app}/{facet}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def parse_percent(raw: str | float) -> float:
    """``10%``, ``10`` or ``2.5%`` -> 10.0 / 2.5; ``BadRequest`` outside (0, 100]."""
    text = str(raw).strip()
    if text.endswith("%"):
        text = text[:-1].strip()
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"bad canary percentage {str(raw)[:40]!r}: expected a number such as 10%") from None
    if not 0 < value <= 100 or abs(round(value * 100) - value * 100) > 1e-6:
        raise BadRequest(
            f"bad canary percentage {str(raw)[:40]!r}: expected more than 0 and at most 100, in steps of 0.01"
        )
    return value


@dataclass(frozen=True)
class Rollout:
    """One app's rollout state. ``active`` 0 means the latest loaded version."""

    active: int = 0
    pinned: bool = False
    canary: int | None = None
    canary_percent: float = 0.0


class Rollouts:
    def __init__(self, control: ControlDB, latest: dict[str, int]) -> None:
        self._control = control
        self._lock = threading.Lock()
        #: The latest loaded version of each app (kept by ``loaded``).
        self._latest = dict(latest)
        rows, pins = control.rollout_rows()
        self._rollouts: dict[str, Rollout] = {
            r["app"]: Rollout(r["active"] or 0, bool(r["pinned"]), r["canary"], r["canary_percent"] or 0.0)
            for r in rows
        }
        self._pins: dict[tuple[str, str], int] = {(app, facet): version for app, facet, version in pins}
        #: Bumped by every change: slots cache their version per epoch.
        self.epoch = 1

    # -- reading --------------------------------------------------------------------
    def get(self, app: str) -> Rollout:
        return self._rollouts.get(app) or Rollout()

    def active(self, app: str) -> int:
        rollout = self._rollouts.get(app)
        return rollout.active if rollout is not None and rollout.active else self._latest.get(app, 0)

    def pin_of(self, app: str, facet: str) -> int | None:
        return self._pins.get((app, facet))

    def version_for(self, app: str, facet: str) -> int:
        pinned = self._pins.get((app, facet))
        if pinned is not None:
            return pinned
        rollout = self._rollouts.get(app)
        if rollout is None:
            return self._latest.get(app, 0)
        if rollout.canary is not None and canary_bucket(app, facet) < round(rollout.canary_percent * 100):
            return rollout.canary
        return rollout.active or self._latest.get(app, 0)

    def pins(self, app: str) -> dict[str, int]:
        return {facet: version for (a, facet), version in self._pins.items() if a == app}

    # -- changing -------------------------------------------------------------------
    def loaded(self, app: str, version: int, canary_percent: float | None = None) -> Rollout:
        """A new version of ``app`` was stored: make it the latest, and either stage it as
        the canary (everyone else stays on the version they ran) or, unless the app is
        pinned, make it active for everyone (a staged canary is dropped: superseded)."""
        with self._lock:
            before = self.active(app)  # what the non-canaries ran until now
            current = self.get(app)
            self._latest[app] = version
            if canary_percent is not None:
                active = current.active if current.pinned else before
                return self._publish(app, Rollout(active, current.pinned, version, canary_percent))
            if current.pinned:
                self.epoch += 1  # the latest changed: what the listings show
                return current
            return self._publish(app, Rollout())

    def pin(self, app: str, facet: str | None, version: int, known: list[int]) -> Rollout:
        """Pin the app (everyone not pinned on their own) or one facet to ``version``."""
        if version not in known:
            raise NotFound(f"{app} has no version {version} (versions: {', '.join(map(str, known))})")
        with self._lock:
            if facet is not None:
                self._control.save_pin(app, facet, version)
                pins = dict(self._pins)
                pins[(app, facet)] = version
                self._pins = pins
                self.epoch += 1
                return self.get(app)
            current = self.get(app)
            return self._publish(app, Rollout(version, True, current.canary, current.canary_percent))

    def unpin(self, app: str, facet: str | None) -> bool:
        """Remove a pin; True if there was one. The app unpinned runs the latest version."""
        with self._lock:
            if facet is not None:
                if (app, facet) not in self._pins:
                    return False
                self._control.save_pin(app, facet, None)
                pins = dict(self._pins)
                del pins[(app, facet)]
                self._pins = pins
                self.epoch += 1
                return True
            current = self.get(app)
            if not current.pinned:
                return False
            # Unpinned, an app follows its latest version, unless a canary is staged: the
            # latest is the canary then, and the others stay where they are until promote.
            active = current.active if current.canary is not None else 0
            self._publish(app, Rollout(active, False, current.canary, current.canary_percent))
            return True

    def promote(self, app: str) -> Rollout:
        """Everyone (but facets pinned on their own) moves to the canary version."""
        with self._lock:
            current = self.get(app)
            if current.canary is None:
                raise BadRequest(f"{app} has no canary to promote (load a version with --canary N% first)")
            latest = self._latest.get(app, 0)
            # Active 0 follows the latest loaded; a canary older than that stays explicit.
            active = 0 if current.canary == latest and not current.pinned else current.canary
            return self._publish(app, Rollout(active, current.pinned))

    def rollback(self, app: str, version: int | None, known: list[int]) -> Rollout:
        """Cancel the canary; or, with none (or with ``version`` named), make an older
        version active: the one before the active version, or ``version``."""
        with self._lock:
            current = self.get(app)
            if version is None and current.canary is not None:
                return self._publish(app, Rollout(current.active, current.pinned))
            active = current.active or self._latest.get(app, 0)
            if version is None:
                older = [v for v in known if v < active]
                if not older:
                    raise BadRequest(f"{app} version {active} is its oldest: there is nothing to roll back to")
                version = older[-1]
            elif version not in known:
                raise NotFound(f"{app} has no version {version} (versions: {', '.join(map(str, known))})")
            # A rollback holds: a later load does not move the app forward on its own.
            return self._publish(app, Rollout(version, True))

    def forget_facet(self, app: str, facet: str) -> None:
        with self._lock:
            if (app, facet) in self._pins:
                pins = dict(self._pins)
                del pins[(app, facet)]
                self._pins = pins
                self.epoch += 1

    def _publish(self, app: str, rollout: Rollout) -> Rollout:
        """Store, then publish (``_lock`` held)."""
        self._control.save_rollout(app, rollout.active, rollout.pinned, rollout.canary, rollout.canary_percent)
        rollouts = dict(self._rollouts)
        rollouts[app] = rollout
        self._rollouts = rollouts
        self.epoch += 1
        return rollout

    def describe(self, app: str) -> dict[str, Any]:
        rollout = self.get(app)
        return {
            "active": self.active(app),
            "latest": self._latest.get(app, 0),
            "pinned": rollout.pinned,
            "canary": rollout.canary,
            "canary_percent": rollout.canary_percent if rollout.canary is not None else None,
            "facet_pins": self.pins(app),
        }
