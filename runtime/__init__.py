"""Facets runtime: a supervisor for generated WebAssembly apps.

Each facet (``APP/FACET``) runs in its own wasmtime sandbox with its own
SQLite database. This package is the whole supervisor as a plain library; it
never imports the console.

    from runtime import Supervisor
    with Supervisor("data") as sup:
        sup.load_app("sample_apps/counter/counter.wat")
        print(sup.call("counter/alice", b"").response)

``Supervisor`` (``supervisor``) is a façade over these parts:

* getting data back: ``history`` (snapshots, restore, fork, undelete) over ``archive``
  (every committed WAL frame, for point-in-time restore);
* a facet's life beyond one request: ``supervision`` (crash loops: backoff,
  quarantine, reset), ``alarms`` (a facet's own wake-up: the scheduler, at-least-once
  delivery), ``rollout`` (which version each facet runs: pins, canaries, rollbacks);
* requests: ``http`` (HTTP requests and responses, the ``facet_http`` envelope),
  ``registry`` (which facets exist, their creation and removal), ``gate``
  (who runs a facet's requests, commit groups), ``serving`` (running a group of
  requests, refusing one), ``facet`` (a facet's instance, database and
  transaction), ``residency`` (which facets stay warm or keep their database open);
* operators: ``admin`` (what they change: apps, evictions, deletions, ``transfer``,
  quotas; refused read-only), ``reports`` (listings, usage, series, bills, logs),
  ``browse`` (facet databases, read-only);
* the rest: ``housekeeper`` (the background thread: usage flushes, idle evictions,
  retention), ``events`` (the supervisor's own log records), ``settings``, and
  beneath them ``apps``, ``toolchain`` (building JS/TS/Python sources into components),
  ``abi``, ``wasm`` and ``components`` (the two seams: core modules, components),
  ``hostcalls``, ``storage``, ``control``,
  ``quotas``, ``policy``, ``metering``, ``billing``, ``logs``, ``changes``, ``faults``,
  ``errors``, ``types``, and ``owner`` (one process owns a data directory: its file lock).
"""

from .abi import ABI_VERSION
from .apps import AppVersion
from .errors import (
    BadModule,
    BadRequest,
    BuildFailed,
    DataDirBusy,
    ErrorCode,
    FacetsError,
    NotFound,
    QuotaError,
    ToolchainMissing,
)
from .history import parse_when
from .http import HttpRequest, HttpResponse, error_body, public_message, status_for
from .logs import LogRecord, neutralize
from .owner import OwnerInfo, owner_of
from .policy import Policy, QuotaPolicy, Refusal
from .quotas import QUOTA_KEYS, Quotas, parse_quota
from .registry import parse_facet_target
from .settings import SupervisorSettings, default_data_dir
from .supervision import HealthInfo
from .supervisor import Supervisor
from .toolchain import BuildProgress, Built, is_source
from .types import AppInfo, CallResult, FacetChanges, FacetInfo, HistoryInfo, RestoreInfo, SnapshotInfo, Usage
from .wasm import EngineSettings

__all__ = [
    "ABI_VERSION",
    "QUOTA_KEYS",
    "AppInfo",
    "AppVersion",
    "BadModule",
    "BadRequest",
    "BuildFailed",
    "BuildProgress",
    "Built",
    "CallResult",
    "DataDirBusy",
    "EngineSettings",
    "ErrorCode",
    "FacetChanges",
    "FacetInfo",
    "FacetsError",
    "HealthInfo",
    "HistoryInfo",
    "HttpRequest",
    "HttpResponse",
    "LogRecord",
    "NotFound",
    "OwnerInfo",
    "Policy",
    "QuotaError",
    "QuotaPolicy",
    "Quotas",
    "Refusal",
    "RestoreInfo",
    "SnapshotInfo",
    "Supervisor",
    "SupervisorSettings",
    "ToolchainMissing",
    "Usage",
    "default_data_dir",
    "error_body",
    "is_source",
    "neutralize",
    "owner_of",
    "parse_facet_target",
    "parse_quota",
    "parse_when",
    "public_message",
    "status_for",
]
