"""``SupervisorSettings``: every knob of a ``Supervisor`` in one frozen dataclass, and the
limits derived from the machine when a knob is left at None (descriptors, memory)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .billing import PriceSheet
from .errors import BadRequest, NotFound

if TYPE_CHECKING:
    from .policy import Policy
    from .wasm import EngineSettings

DURABILITIES = ("full", "process")
DEFAULT_MAX_OPEN_DBS = 1024


@dataclass(frozen=True)
class SupervisorSettings:
    """How a supervisor runs.

    Attributes:
        durability: ``"full"`` (synchronous=FULL: a commit survives power loss) or
            ``"process"`` (synchronous=NORMAL in WAL: survives a killed process).
        idle_timeout: seconds after which an idle warm instance is evicted.
        max_warm: at most this many warm instances; the least recently used go first.
        workers: threads of the pool behind ``submit``.
        policy: decisions in front of every request; ``QuotaPolicy`` by default.
        engine: wasm engine settings.
        usage_flush_interval: seconds between flushes of usage counters.
        log_retention_count: log records kept per facet.
        log_retention_age: seconds a log record is kept.
        prices: a ``PriceSheet`` or a JSON file of prices; default ``DATA/prices.json``
            when it exists, else the built-in sheet.
        max_open_dbs: facet databases kept open at once (default: what the file descriptor
            limit allows, after raising the soft limit to the hard one; see ``open_db_budget``).
        commit_groups: run the requests queued at a facet as one transaction with one
            COMMIT (see gate.py); default on with ``full`` durability, where a COMMIT
            costs a disk sync, and off with ``process``, where it costs little.
        memory_budget: bytes of linear memory all warm instances may hold together; beyond
            it the least recently used are evicted (see ``default_memory_budget``).
        readonly: open without writing anything (no adoption of stray databases, no
            housekeeping); every write is refused. A read-only open takes no owner lock.
        role: what the owner of the data directory is (``serve``, ``console``, ``run``,
            ``command``, ``python``): written to ``owner.json`` for whoever is refused
            (``runtime.owner``).
        history: archive every facet's committed WAL frames in ``DATA/archive`` for
            point-in-time restore (``runtime.archive``, kept for the ``history_ms`` quota).
    """

    durability: str = "full"
    idle_timeout: float = 300.0
    max_warm: int = 1000
    workers: int | None = None
    policy: Policy | None = None
    engine: EngineSettings | None = None
    usage_flush_interval: float = 1.0
    log_retention_count: int = 10_000
    log_retention_age: float = 7 * 86400
    prices: PriceSheet | str | os.PathLike[str] | None = None
    max_open_dbs: int | None = None
    commit_groups: bool | None = None
    memory_budget: int | None = None
    readonly: bool = False
    role: str = "python"
    history: bool = True

    def validate(self) -> None:
        if self.durability not in DURABILITIES:
            raise BadRequest(f"durability must be one of {', '.join(DURABILITIES)}, not {self.durability!r}")

    def prepare_data_dir(self, data_dir: Path) -> None:
        """Make ``data_dir`` and its ``facets/`` if missing; read-only, create nothing and
        require its control database (``NotFound`` otherwise)."""
        if self.readonly:
            if not (data_dir / "control.sqlite3").is_file():
                raise NotFound(f"no data directory at {data_dir} (no control.sqlite3) to open read-only")
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / "facets").mkdir(exist_ok=True)

    def price_sheet(self, data_dir: Path) -> PriceSheet:
        """``prices``, or ``DATA/prices.json`` when it exists, or the built-in sheet."""
        prices = self.prices
        if prices is None and (data_dir / "prices.json").exists():
            prices = data_dir / "prices.json"
        if isinstance(prices, PriceSheet):
            return prices
        return PriceSheet.from_file(Path(prices)) if prices is not None else PriceSheet()

    def open_db_limit(self) -> int:
        """``max_open_dbs``, or what the descriptor limit allows (see ``open_db_budget``)."""
        return self.max_open_dbs or open_db_budget(raise_fd_limit(), open_descriptors())

    def memory_limit(self) -> int:
        """``memory_budget``, or ``default_memory_budget()``."""
        return self.memory_budget or default_memory_budget()

    def groups_commits(self) -> bool:
        """Whether queued requests share one COMMIT (see ``commit_groups``)."""
        return self.durability == "full" if self.commit_groups is None else self.commit_groups


def default_data_dir() -> Path:
    """``$FACETS_DATA`` or ``.facets-data`` in the current directory."""
    return Path(os.environ.get("FACETS_DATA") or ".facets-data")


#: File descriptors an open facet database holds: the file, its -wal and its -shm.
FDS_PER_DB = 3


def open_db_budget(fd_limit: int, in_use: int) -> int:
    """How many facet databases may be open at once under ``fd_limit`` descriptors, with
    ``in_use`` already open. A reserve stays free for what the process opens besides:
    an operator's reader (3), an import's source and copy (up to 6), a module being read,
    the console's files; a quarter of the limit, at least 8 and at most 256 (the reserve
    the old fixed formula kept, which left 256 databases at the usual limit of 1024). Under
    a tiny limit that is fewer than 16 databases, down to 1: `ulimit -n 32` leaves
    (32 - 9 - 8) // 3 = 5, where the old floor of 16 needed 48 descriptors."""
    reserve = max(8, min(256, fd_limit // 4))
    return max(1, min(DEFAULT_MAX_OPEN_DBS, (fd_limit - in_use - reserve) // FDS_PER_DB))


def open_descriptors() -> int:
    """File descriptors this process has open now (0 where the OS does not say)."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(listing)) - 1)  # minus the listing's own
        except OSError:
            continue
    return 0


def default_memory_budget() -> int:
    """A quarter of physical memory (2 GiB where the OS does not say). Warm instances are
    a cache: a cold start costs ~25 us plus the guest's init, while a facet's memory stays
    resident for as long as it is warm (a 32 MiB default quota; max_warm=1000 could hold
    ~30 GiB). A quarter leaves the rest to SQLite's page caches (~140 KiB per open
    database), the requests running (up to a memory quota each, per worker) and the host."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    except (ImportError, ValueError, OSError):
        return 1024
