"""Facets runtime: a supervisor for generated WebAssembly apps.

Each facet (``APP/FACET``) runs in its own wasmtime sandbox with its own
SQLite database. This package is the whole supervisor as a plain library; it
never imports the console.

    from runtime import Supervisor
    with Supervisor("data") as sup:
        sup.load_app("sample_apps/counter/counter.wat")
        print(sup.call("counter/alice", b"").response)
"""

from .abi import ABI_VERSION
from .apps import AppVersion
from .errors import BadModule, BadRequest, ErrorCode, FacetsError, NotFound, QuotaError
from .logs import LogRecord, neutralize
from .policy import Policy, QuotaPolicy, Refusal
from .quotas import QUOTA_KEYS, Quotas, parse_quota
from .settings import SupervisorSettings
from .supervisor import Supervisor, default_data_dir, parse_facet_target
from .types import AppInfo, CallResult, FacetChanges, FacetInfo, Usage
from .wasm import EngineSettings

__all__ = [
    "ABI_VERSION",
    "QUOTA_KEYS",
    "AppInfo",
    "AppVersion",
    "BadModule",
    "BadRequest",
    "CallResult",
    "EngineSettings",
    "ErrorCode",
    "FacetChanges",
    "FacetInfo",
    "FacetsError",
    "LogRecord",
    "NotFound",
    "Policy",
    "QuotaError",
    "QuotaPolicy",
    "Quotas",
    "Refusal",
    "Supervisor",
    "SupervisorSettings",
    "Usage",
    "default_data_dir",
    "neutralize",
    "parse_facet_target",
    "parse_quota",
]
