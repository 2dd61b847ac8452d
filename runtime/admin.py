"""What operators change: loading apps, evicting and deleting facets, exporting and
importing their databases (``transfer``), changing quotas. A supervisor opened
read-only refuses each of them here (``ErrorCode.REFUSED``), before anything is
touched; its requests are refused in ``Supervisor.call``.

Thread-safety: no lock of its own. ``evict`` and ``delete`` wait for the facet's gate
(``Residency.close``), then take residency's lock inside it (``delete`` the
registry's first, in ``FacetRegistry.remove``).
``set_quotas`` saves and applies a change under the registry's lock, taking the
control database's and the quota book's inside it: two changes, or a change and a
deletion's ``QuotaBook.forget``, are stored and applied in the same order. Runs on
the operator's thread (the console's workers, the CLI, a script).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import toolchain
from .apps import AppStore, AppVersion
from .errors import ErrorCode, FacetsError
from .registry import parse_facet_target
from .transfer import Transfer

if TYPE_CHECKING:
    from .control import ControlDB
    from .events import SupervisorLog
    from .metering import Meters
    from .policy import Policy
    from .quotas import QuotaBook
    from .registry import FacetRegistry
    from .residency import Residency
    from .storage import FacetReader


class Admin:
    def __init__(
        self,
        *,
        readonly: bool,
        apps: AppStore,
        registry: FacetRegistry,
        residency: Residency,
        reader: Callable[[str], FacetReader],
        meters: Meters,
        policy: Policy,
        quota_book: QuotaBook,
        control: ControlDB,
        log: SupervisorLog,
    ) -> None:
        self.readonly = readonly
        self._apps = apps
        self._registry = registry
        self._residency = residency
        self.transfer = Transfer(registry, apps, quota_book, reader, log)
        self._meters = meters
        self._policy = policy
        self._quota_book = quota_book
        self._control = control
        self._log = log

    def refuse_if_readonly(self, what: str) -> None:
        if self.readonly:
            raise FacetsError(f"{what} refused: the supervisor was opened read-only", ErrorCode.REFUSED)

    # -- apps -------------------------------------------------------------------
    def load_app(
        self, path: str | os.PathLike[str], name: str | None = None, *, progress: toolchain.Progress | None = None
    ) -> AppVersion:
        self.refuse_if_readonly("loading an app")
        name = name or AppStore.default_name(path)
        if toolchain.is_source(path):  # JS, TypeScript, Python: build a component first
            built = toolchain.build(path, progress=progress)
            return self.load_app_bytes(
                built.component,
                name,
                source=str(path),
                language=built.language,
                toolchain_version=built.toolchain,
                progress=progress,
            )
        data = AppStore.read_source(path)
        return self.load_app_bytes(data, name, source=str(path), progress=progress)

    def load_app_bytes(
        self,
        data: bytes | str,
        name: str,
        source: str = "",
        *,
        language: str | None = None,
        toolchain_version: str = "",
        progress: toolchain.Progress | None = None,
    ) -> AppVersion:
        self.refuse_if_readonly("loading an app")
        if isinstance(data, str):
            data = data.encode("utf-8")
        version, is_new = self._apps.load(
            data, name, source=source, language=language, toolchain_version=toolchain_version, progress=progress
        )
        if is_new:
            what = "loaded" if version.version == 1 else f"upgraded to version {version.version}"
            self._log(name, "", "info", f"app {name} {what} (sha256 {version.sha256[:12]})")
        return version

    # -- facets -----------------------------------------------------------------
    def evict(self, target: str) -> bool:
        self.refuse_if_readonly("evict")
        app, facet = self._registry.known(target)
        slot = self._registry.slots.get((app, facet))
        was_warm = slot is not None and self._residency.evict(slot)
        if was_warm:
            self._log(app, facet, "info", "evicted by operator")
        return was_warm

    def delete(self, target: str) -> None:
        self.refuse_if_readonly("delete")
        app, facet = self._registry.known(target)
        slot = self._registry.slot(app, facet)
        # Under the gate, after closing: a request queued meanwhile finds it deleted.
        self._residency.close(slot, then=lambda: self._registry.remove(slot), deleted=True)
        self._meters.remove(app, facet)
        self._policy.forget(app, facet)
        self._log(app, facet, "warn", f"facet {app}/{facet} deleted")

    def export_facet(self, target: str, path: str | os.PathLike[str]) -> int:
        self.refuse_if_readonly("export")
        return self.transfer.export(target, path)

    def import_facet(self, path: str | os.PathLike[str], target: str) -> list[str]:
        self.refuse_if_readonly("import")
        app, facet = parse_facet_target(target)
        tables = self.transfer.import_(path, app, facet)
        self._residency.touch((app, facet))
        return tables

    # -- quotas -------------------------------------------------------------------
    def set_quotas(self, target: str, changes: dict[str, Any]) -> None:
        """Validate every value of ``changes`` (``QuotaBook.plan``), then store and apply
        them all; a running facet sees them at its next request."""
        self.refuse_if_readonly("changing quotas")
        scope, sets, unsets = self._quota_book.plan(target, changes)
        with self._registry.lock:
            self._control.save_quotas(scope, sets, unsets)
            self._quota_book.apply(scope, sets, unsets)
        self._residency.touch_everything()  # a storage quota shows on every row of its scope
        app, _, facet = scope.partition("/")
        described = ", ".join([f"{k}={v}" for k, v in sets.items()] + [f"{k}=default" for k in unsets])
        self._log(app if scope != "*" else "", facet, "info", f"quota changed at {scope}: {described}")
