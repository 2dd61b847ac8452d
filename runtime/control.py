"""The supervisor's own database: apps, versions, facets, quotas, usage and logs, and the
facets' lives beyond a request: supervision records, pending alarms, rollouts and pins.

One SQLite file (``DATA/control.sqlite3``) behind one connection and a lock,
schema managed with sqlite-utils. Request paths never write here directly:
logs and usage arrive in batches from background threads.

Thread-safety: ``_lock`` (re-entrant) serialises every use of the one connection
(Python's sqlite3 connection must not be used by two threads at once). It is the
innermost of the supervisor's locks: callers may hold the registry's lock around a
write (``add_facet``, ``remove_facet``, ``save_quotas``); nothing is acquired while
it is held. Runs on: the log writer thread (``write_logs``), the housekeeper
(``save_usage``, pruning), request threads on a facet's creation, operators.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from .errors import ErrorCode, FacetsError
from .faults import SQLITE_CORRUPT, SQLITE_NOTADB, sqlite_code
from .logs import LEVEL_RANK, LogRecord

SCHEMA_VERSION = 1


class ControlDBError(FacetsError):
    """The control database cannot be used (damaged, not SQLite, unreadable)."""

    code = ErrorCode.INTERNAL


class ControlDB:
    """Args:
    path: the database file.
    readonly: open without writing anything: no schema upgrade, no journal-mode change,
        every write refused by SQLite (``query_only``). A cleanly closed database has no
        ``-wal``/``-shm`` beside it, and opening it ``mode=ro`` would create both; it is
        opened ``immutable`` instead (nobody writes it). With a writer running (its
        ``-wal`` exists), ``mode=ro`` reads its committed changes as they come.
    """

    def __init__(self, path: str, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        if readonly:
            mode = "mode=ro" if os.path.exists(f"{path}-wal") else "immutable=1"
            conn = sqlite3.connect(
                f"file:{urllib.parse.quote(path)}?{mode}", uri=True, check_same_thread=False, isolation_level=None
            )
        else:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            if readonly:
                conn.execute("PRAGMA query_only=1")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # is it SQLite?
                self._conn = conn
                self.db = sqlite_utils.Database(conn)
                self._lock = threading.RLock()
                return
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: survives a killed process; a power cut may lose the last changes (a facet
            # created just before it is re-registered from its file at the next start).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._conn = conn
            self.db = sqlite_utils.Database(conn)
            self._lock = threading.RLock()
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _unusable(path, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _create_schema(self) -> None:
        db = self.db
        with self.transaction():
            db.table("apps").create({"name": str, "created_at": float}, pk="name", if_not_exists=True)
            db.table("app_versions").create(
                {
                    "app": str,
                    "version": int,
                    "sha256": str,
                    "size": int,
                    "exports": str,
                    "imports": str,
                    "source": str,
                    "loaded_at": float,
                },
                pk=("app", "version"),
                if_not_exists=True,
            )
            versions = db.table("app_versions")
            for column in ("kind", "language", "toolchain"):  # added with ABI v2 (components)
                if column not in versions.columns_dict:
                    versions.add_column(column, str)
            db.table("facets").create(
                {"app": str, "name": str, "created_at": float}, pk=("app", "name"), if_not_exists=True
            )
            db.table("quotas").create(
                {"scope": str, "key": str, "value": float}, pk=("scope", "key"), if_not_exists=True
            )
            db.table("logs").create(
                {
                    "id": int,
                    "time": float,
                    "app": str,
                    "facet": str,
                    "request_id": str,
                    "level": str,
                    "message": str,
                    "source": str,
                },
                pk="id",
                if_not_exists=True,
            )
            db.table("logs").create_index(["app", "facet", "id"], if_not_exists=True)
            db.table("logs").create_index(["time"], if_not_exists=True)
            db.table("usage").create(
                {
                    "app": str,
                    "facet": str,
                    "counters": str,
                    "updated_at": float,
                },
                pk=("app", "facet"),
                if_not_exists=True,
            )
            db.table("usage_series").create(
                {
                    "app": str,
                    "facet": str,
                    "resolution": int,
                    "bucket": int,
                    "values": str,
                },
                pk=("app", "facet", "resolution", "bucket"),
                if_not_exists=True,
            )
            facets = db.table("facets")
            if "version" not in facets.columns_dict:  # added with rollouts: the version it migrated to
                facets.add_column("version", int)
            # Supervision records (runtime.supervision): one row per faulting facet.
            db.table("health").create(
                {
                    "app": str,
                    "facet": str,
                    "state": str,
                    "faults": int,
                    "since": float,
                    "retry_at": float,
                    "last_faults": str,
                },
                pk=("app", "facet"),
                if_not_exists=True,
            )
            # Pending alarms (runtime.alarms): at most one per facet. ``due_ms`` is when it is
            # delivered next: ``at_ms``, or later for a retry (``attempt`` > 0).
            db.table("alarms").create(
                {"app": str, "facet": str, "at_ms": int, "due_ms": int, "attempt": int, "set_at": float},
                pk=("app", "facet"),
                if_not_exists=True,
            )
            # Rollouts (runtime.rollout): per app, the version everyone runs, and a canary.
            db.table("rollouts").create(
                {"app": str, "active": int, "pinned": int, "canary": int, "canary_percent": float},
                pk="app",
                if_not_exists=True,
            )
            # Requests and errors per app version: what a canary is judged by (Meters.by_version).
            db.table("version_usage").create(
                {"app": str, "version": int, "requests": int, "errors": int}, pk=("app", "version"), if_not_exists=True
            )
            db.table("facet_pins").create(
                {"app": str, "facet": str, "version": int}, pk=("app", "facet"), if_not_exists=True
            )
            db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
            db.table("meta").upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")

    # -- apps -----------------------------------------------------------------
    def app_versions(self, app: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self.db.table("app_versions").rows_where("app = ?", [app], order_by="version"))
        for row in rows:
            row["exports"] = json.loads(row["exports"])
            row["imports"] = json.loads(row["imports"])
        return rows

    def latest_version(self, app: str) -> dict[str, Any] | None:
        versions = self.app_versions(app)
        return versions[-1] if versions else None

    def app_names(self) -> list[str]:
        with self._lock:
            return [r["name"] for r in self.db.table("apps").rows_where(order_by="name")]

    def add_app_version(self, row: dict[str, Any]) -> None:
        with self.transaction():
            self.db.table("apps").insert({"name": row["app"], "created_at": row["loaded_at"]}, pk="name", ignore=True)
            self.db.table("app_versions").insert(
                {**row, "exports": json.dumps(row["exports"]), "imports": json.dumps(row["imports"])}
            )

    # -- facets ---------------------------------------------------------------
    def facet_rows(self, app: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if app is None:
                return list(self.db.table("facets").rows_where(order_by="app, name"))
            return list(self.db.table("facets").rows_where("app = ?", [app], order_by="name"))

    def add_facet(self, app: str, facet: str, created_at: float | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO facets(app, name, created_at) VALUES (?, ?, ?)",
                [app, facet, time.time() if created_at is None else created_at],
            )

    def remove_facet(self, app: str, facet: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM facets WHERE app = ? AND name = ?", [app, facet])
            conn.execute("DELETE FROM health WHERE app = ? AND facet = ?", [app, facet])
            conn.execute("DELETE FROM alarms WHERE app = ? AND facet = ?", [app, facet])
            conn.execute("DELETE FROM facet_pins WHERE app = ? AND facet = ?", [app, facet])
            conn.execute("DELETE FROM quotas WHERE scope = ?", [f"{app}/{facet}"])
            conn.execute("DELETE FROM usage WHERE app = ? AND facet = ?", [app, facet])
            conn.execute("DELETE FROM usage_series WHERE app = ? AND facet = ?", [app, facet])

    # -- quotas ---------------------------------------------------------------
    def quota_settings(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for row in self.db.table("quotas").rows:
                # As stored: QuotaBook checks (and converts) every value when it opens.
                out.setdefault(row["scope"], {})[row["key"]] = row["value"]
        return out

    def save_quotas(self, scope: str, sets: dict[str, Any], unsets: list[str]) -> None:
        with self.transaction() as conn:
            for key, value in sets.items():
                conn.execute("INSERT OR REPLACE INTO quotas(scope, key, value) VALUES (?, ?, ?)", [scope, key, value])
            for key in unsets:
                conn.execute("DELETE FROM quotas WHERE scope = ? AND key = ?", [scope, key])

    # -- logs -----------------------------------------------------------------
    def write_logs(self, batch: list[LogRecord]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO logs(time, app, facet, request_id, level, message, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.time, r.app, r.facet, r.request_id, r.level, r.message, r.source) for r in batch],
            )

    def read_logs(
        self,
        *,
        app: str | None = None,
        facet: str | None = None,
        level: str | None = None,
        since: float | None = None,
        until: float | None = None,
        search: str | None = None,
        limit: int = 100,
    ) -> list[LogRecord]:
        """The newest ``limit`` records matching every filter given, oldest first."""
        where: list[str] = []
        params: list[Any] = []
        if app is not None:
            where.append("app = ?")
            params.append(app)
        if facet is not None:
            where.append("facet = ?")
            params.append(facet)
        if level is not None:
            allowed = [name for name, rank in LEVEL_RANK.items() if rank >= LEVEL_RANK[level]]
            where.append(f"level IN ({', '.join('?' * len(allowed))})")
            params.extend(allowed)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if until is not None:
            where.append("time <= ?")
            params.append(until)
        if search:
            where.append("instr(message, ?) > 0")
            params.append(search)
        sql = "SELECT time, app, facet, request_id, level, message, source FROM logs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [LogRecord(*row) for row in reversed(rows)]

    def prune_logs(self, *, keep_per_facet: int, max_age_s: float) -> int:
        """Apply retention: drop records older than ``max_age_s`` and all but the newest
        ``keep_per_facet`` of each facet. Returns how many rows went."""
        with self.transaction() as conn:
            before = conn.total_changes
            conn.execute("DELETE FROM logs WHERE time < ?", [time.time() - max_age_s])
            conn.execute(
                """
                DELETE FROM logs WHERE id IN (
                  SELECT id FROM (
                    SELECT id, row_number() OVER (PARTITION BY app, facet ORDER BY id DESC) AS n
                    FROM logs) WHERE n > ?)""",
                [keep_per_facet],
            )
            return conn.total_changes - before

    # -- usage ------------------------------------------------------------------
    def save_usage(
        self,
        rows: list[tuple[str, str, dict[str, Any]]],
        series: list[tuple[str, str, int, int, list[float]]],
        versions: list[tuple[str, int, int, int]] | None = None,
    ) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO version_usage(app, version, requests, errors) VALUES (?, ?, ?, ?)",
                versions or [],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO usage(app, facet, counters, updated_at) VALUES (?, ?, ?, ?)",
                [(app, facet, json.dumps(counters), now) for app, facet, counters in rows],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO usage_series(app, facet, resolution, bucket, [values]) VALUES (?, ?, ?, ?, ?)",
                [(app, facet, res, bucket, json.dumps(values)) for app, facet, res, bucket, values in series],
            )

    def load_usage(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            return {(r["app"], r["facet"]): json.loads(r["counters"]) for r in self.db.table("usage").rows}

    def load_series(self, app: str, facet: str, resolution: int) -> list[tuple[int, list[float]]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT bucket, [values] FROM usage_series WHERE app = ? AND facet = ? AND resolution = ? "
                "ORDER BY bucket",
                [app, facet, resolution],
            ).fetchall()
        return [(bucket, json.loads(values)) for bucket, values in rows]

    def series_totals(
        self, app: str | None, facet: str | None, resolution: int, first_bucket: int
    ) -> dict[int, list[float]]:
        """Stored buckets from ``first_bucket`` on of one facet, an app (``facet`` None)
        or the fleet (both None), added up over facets."""
        sql = "SELECT bucket, [values] FROM usage_series WHERE resolution = ? AND bucket >= ?"
        params: list[Any] = [resolution, first_bucket]
        if app is not None:
            sql += " AND app = ?"
            params.append(app)
        if facet is not None:
            sql += " AND facet = ?"
            params.append(facet)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        totals: dict[int, list[float]] = {}
        for bucket, text in rows:
            values = json.loads(text)
            total = totals.setdefault(bucket, [0.0] * len(values))
            for i, value in enumerate(values):
                total[i] += value
        return totals

    def prune_series(self, retention: dict[int, int]) -> int:
        """Drop stored buckets beyond ``retention`` ({resolution: buckets kept})."""
        now = int(time.time())
        with self.transaction() as conn:
            before = conn.total_changes
            for resolution, kept in retention.items():
                conn.execute(
                    "DELETE FROM usage_series WHERE resolution = ? AND bucket < ?",
                    [resolution, now // resolution - kept],
                )
            return conn.total_changes - before

    # -- supervision, alarms, rollouts -------------------------------------------------
    def _has(self, table: str) -> bool:
        """Whether ``table`` exists: a read-only open of an older directory lacks the newer ones."""
        return self.db.table(table).exists()

    def health_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            if not self._has("health"):
                return []
            rows = list(self.db.table("health").rows)
        for row in rows:
            row["last_faults"] = json.loads(row["last_faults"] or "[]")
        return rows

    def save_health(self, app: str, facet: str, row: dict[str, Any] | None) -> None:
        """Store a facet's supervision record (None: it is healthy again)."""
        if self.readonly:
            return
        with self.transaction() as conn:
            if row is None:
                conn.execute("DELETE FROM health WHERE app = ? AND facet = ?", [app, facet])
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO health(app, facet, state, faults, since, retry_at, last_faults)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        app,
                        facet,
                        row["state"],
                        row["faults"],
                        row["since"],
                        row["retry_at"],
                        json.dumps(row["last_faults"]),
                    ],
                )

    def alarm_rows(self) -> list[tuple[str, str, int, int, int]]:
        """Every pending alarm: (app, facet, at_ms, due_ms, attempt)."""
        with self._lock:
            if not self._has("alarms"):
                return []
            return [tuple(r) for r in self._conn.execute("SELECT app, facet, at_ms, due_ms, attempt FROM alarms")]

    def save_alarm(self, app: str, facet: str, at_ms: int, due_ms: int, attempt: int) -> None:
        self.save_alarms([(app, facet, at_ms, due_ms, attempt)])

    def save_alarms(self, rows: list[tuple[str, str, int, int, int]]) -> None:
        """Many alarms in one transaction (a bulk set, a test or bench of 100,000)."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO alarms(app, facet, at_ms, due_ms, attempt, set_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(*row, now) for row in rows],
            )

    def delete_alarm(self, app: str, facet: str, at_ms: int | None = None) -> bool:
        """Remove the facet's alarm (only if it is still the one at ``at_ms``, when given)."""
        with self.transaction() as conn:
            if at_ms is None:
                cur = conn.execute("DELETE FROM alarms WHERE app = ? AND facet = ?", [app, facet])
            else:
                cur = conn.execute("DELETE FROM alarms WHERE app = ? AND facet = ? AND at_ms = ?", [app, facet, at_ms])
            return cur.rowcount > 0

    def rollout_rows(self) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
        """(per-app rollouts, facet pins as (app, facet, version))."""
        with self._lock:
            if not self._has("rollouts"):
                return [], []
            rollouts = list(self.db.table("rollouts").rows)
            pins = [tuple(r) for r in self._conn.execute("SELECT app, facet, version FROM facet_pins")]
        return rollouts, pins

    def save_rollout(self, app: str, active: int, pinned: bool, canary: int | None, canary_percent: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO rollouts(app, active, pinned, canary, canary_percent) VALUES (?, ?, ?, ?, ?)",
                [app, active, int(pinned), canary, canary_percent],
            )

    def save_pin(self, app: str, facet: str, version: int | None) -> None:
        with self.transaction() as conn:
            if version is None:
                conn.execute("DELETE FROM facet_pins WHERE app = ? AND facet = ?", [app, facet])
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO facet_pins(app, facet, version) VALUES (?, ?, ?)", [app, facet, version]
                )

    def version_usage(self) -> dict[tuple[str, int], list[int]]:
        with self._lock:
            if not self._has("version_usage"):
                return {}
            rows = self._conn.execute("SELECT app, version, requests, errors FROM version_usage")
            return {(app, version): [requests, errors] for app, version, requests, errors in rows}

    def facet_versions(self) -> dict[tuple[str, str], int]:
        """The version each facet last migrated to (its ``facet_init`` committed on it)."""
        with self._lock:
            if "version" not in self.db.table("facets").columns_dict:
                return {}
            rows = self._conn.execute("SELECT app, name, version FROM facets WHERE version IS NOT NULL")
            return {(app, name): version for app, name, version in rows}

    def set_facet_version(self, app: str, facet: str, version: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE facets SET version = ? WHERE app = ? AND name = ?", [version, app, facet])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _unusable(path: str, exc: sqlite3.DatabaseError) -> FacetsError:
    """A clear error for a control database SQLite refuses, classified by its result code."""
    primary = sqlite_code(exc)
    if primary == SQLITE_NOTADB:
        what = "is not a SQLite database"
    elif primary == SQLITE_CORRUPT:
        what = "is corrupted"
    else:
        return ControlDBError(
            f"control database {path} cannot be opened ({getattr(exc, 'sqlite_errorname', 'error')}: {exc})"
        )
    return ControlDBError(
        f"control database {path} {what} ({exc}); move it aside "
        f"(with its -wal and -shm files) to start fresh: the facets' own "
        f"databases are kept and registered again at the next start"
    )
