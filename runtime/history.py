"""Getting data back: snapshots, restores (from a snapshot or any moment of the WAL
archive), forks into a new facet, and undelete.

* A **snapshot** is a consistent copy made online with SQLite's backup API through a
  read-only connection (WAL: it blocks no request), kept in
  ``DATA/archive/APP/FACET/snapshots/NAME.sqlite3`` with ``NAME.json`` beside it, until it
  is deleted or, with a deleted facet, past the retention window.
* A **restore** first builds the replacement in a temporary file beside the facet's
  database (a snapshot's copy, or ``archive.rebuild`` to the last commit at or before the
  moment) and checks it with ``PRAGMA integrity_check``; nothing live is touched before
  that passes. It then snapshots the current state (``before-restore``: a restore can be
  undone), and with the facet's gate held (requests wait there) drops the warm instance,
  closes the database, removes its WAL, renames the replacement into place and starts a
  new archive segment from it.
* A **fork** builds the same way into a new facet of the same app, created through the
  registry: the app's policy (``max_facets``) and the new facet's storage quota apply.
* **Undelete** rebuilds a deleted facet from the history its deletion kept.

Thread-safety: no lock of its own; the swap runs under the facet's gate (``Residency.close``),
archive files under the archive's lock. Runs on the operator's thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from . import archive as wal_archive
from .abi import is_valid_name
from .errors import BadRequest, ErrorCode, FacetsError, NotFound
from .faults import failure_code
from .registry import parse_facet_target
from .transfer import copy_database, discard, fsync_dir, publish, temp_path
from .types import HistoryInfo, RestoreInfo, SnapshotInfo

if TYPE_CHECKING:
    from .archive import Archiver
    from .quotas import QuotaBook
    from .registry import FacetRegistry, Log
    from .residency import Residency
    from .storage import FacetReader

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(s|m|min|h|d)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_when(text: str | float | int, now: float | None = None) -> float:
    """A moment as epoch seconds: ISO 8601 (``2026-12-01T14:05:00Z``; no zone is UTC),
    relative (``-15m``, ``-2h``, ``-1d``) or epoch seconds. ``BadRequest`` otherwise."""
    now = time.time() if now is None else now
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        raw = text.strip()
        match = _RELATIVE.match(raw)
        if match:
            value = now - float(match.group(1)) * _UNITS[match.group(2)]
        elif re.fullmatch(r"\d{1,12}(\.\d+)?", raw):
            value = float(raw)
        else:
            try:
                parsed = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise BadRequest(f"bad moment {text[:40]!r}: use 2026-12-01T14:05:00Z, -15m or epoch seconds") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            value = parsed.timestamp()
    else:
        raise BadRequest("a moment is a string or epoch seconds")
    if not (0 < value < 1e11):
        raise BadRequest(f"moment {text!r} is out of range")
    return value


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class History:
    """Snapshots, restores, forks and undelete, for the supervisor (see its methods)."""

    def __init__(
        self,
        root: Path,
        registry: FacetRegistry,
        residency: Residency,
        quota_book: QuotaBook,
        archiver: Archiver | None,
        reader: Callable[[str], FacetReader],
        log: Log,
    ) -> None:
        self._root = root
        self._registry = registry
        self._residency = residency
        self._quota_book = quota_book
        self._archiver = archiver
        self._reader = reader
        self._log = log

    def directory(self, app: str, facet: str) -> Path:
        return self._root / app / facet

    # -- snapshots --------------------------------------------------------------
    def snapshot(self, target: str, name: str | None = None, *, reason: str = "manual") -> SnapshotInfo:
        app, facet = self._registry.known(target)
        folder = self.directory(app, facet) / "snapshots"
        if name is None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            name = f"{reason}-{stamp}" if reason != "manual" else stamp
            taken = {p.stem for p in folder.glob("*.sqlite3")} if folder.is_dir() else set()
            base, counter = name, 2
            while name in taken:
                name, counter = f"{base}-{counter}", counter + 1
        if not is_valid_name(name):
            raise BadRequest(f"bad snapshot name {name!r}: names match [a-z0-9][a-z0-9_-]{{0,62}}")
        final = folder / f"{name}.sqlite3"
        if final.exists():
            raise BadRequest(f"{target} already has a snapshot named {name!r}")
        folder.mkdir(parents=True, exist_ok=True)
        temp = temp_path(final, "snapshot")
        try:
            with self._reader(target) as reader:
                size = copy_database(reader.backup, temp, wal=False)
            info = SnapshotInfo(name=name, created_at=time.time(), size=size, reason=reason)
            meta = final.with_suffix(".json")
            meta.write_text(json.dumps(info.as_dict()))
            publish(temp, final)
        except FileExistsError:
            raise BadRequest(f"{target} already has a snapshot named {name!r}") from None
        except (sqlite3.Error, OSError) as exc:
            raise FacetsError(f"cannot snapshot {target}: {type(exc).__name__}: {exc}", failure_code(exc)) from None
        finally:
            discard(temp)
        self._count_snapshots(app, facet)
        self._log(app, facet, "info", f"snapshot {name} taken ({size} bytes)")
        return info

    def snapshots(self, target: str) -> list[SnapshotInfo]:
        app, facet = parse_facet_target(target)
        folder = self._history_dir(app, facet) / "snapshots"
        return self._snapshots_in(folder)

    @staticmethod
    def _snapshots_in(folder: Path) -> list[SnapshotInfo]:
        out = []
        if folder.is_dir():
            for path in folder.glob("*.sqlite3"):
                try:
                    meta = json.loads(path.with_suffix(".json").read_text())
                    info = SnapshotInfo(
                        name=path.stem,
                        created_at=float(meta["created_at"]),
                        size=path.stat().st_size,
                        reason=str(meta.get("reason", "manual")),
                    )
                except (OSError, ValueError, KeyError):
                    info = SnapshotInfo(path.stem, path.stat().st_mtime, path.stat().st_size, "manual")
                out.append(info)
        return sorted(out, key=lambda s: s.created_at, reverse=True)

    def delete_snapshot(self, target: str, name: str) -> None:
        app, facet = parse_facet_target(target)
        path = self._snapshot_path(app, facet, name)
        path.unlink()
        path.with_suffix(".json").unlink(missing_ok=True)
        self._count_snapshots(app, facet)
        self._log(app, facet, "info", f"snapshot {name} deleted")

    def _count_snapshots(self, app: str, facet: str) -> None:
        """Bill the snapshots with the database: the storage gauge adds them at its next reading."""
        if (app, facet) in self._registry.created:
            folder = self.directory(app, facet) / "snapshots"
            self._registry.slot(app, facet).snapshot_bytes = sum(s.size for s in self._snapshots_in(folder))

    def _snapshot_path(self, app: str, facet: str, name: str) -> Path:
        if not isinstance(name, str) or not is_valid_name(name):
            raise BadRequest(f"bad snapshot name {str(name)[:40]!r}")
        path = self._history_dir(app, facet) / "snapshots" / f"{name}.sqlite3"
        if not path.is_file():
            raise NotFound(f"{app}/{facet} has no snapshot named {name!r}")
        return path

    def _history_dir(self, app: str, facet: str) -> Path:
        """The live facet's history, or the newest kept by its deletion."""
        live = self.directory(app, facet)
        if (app, facet) in self._registry.created or self._archiver is None:
            return live
        retired = self._archiver.retired(app, facet)
        return retired[0] if retired else live

    # -- what can be got back -----------------------------------------------------
    def info(self, target: str) -> HistoryInfo:
        app, facet = parse_facet_target(target)
        exists = (app, facet) in self._registry.created
        directory = self._history_dir(app, facet)
        if not exists and directory == self.directory(app, facet):
            raise NotFound(f"no facet {target}, and no history kept of one")
        if exists:
            self._catch_up(app, facet)
        start, end = wal_archive.window(directory)
        snapshots = self._snapshots_in(directory / "snapshots")
        return HistoryInfo(
            target=target,
            window_start=start,
            window_end=end,
            archive_bytes=wal_archive.archive_bytes(directory),
            snapshot_bytes=sum(s.size for s in snapshots),
            retention_s=self._quota_book.effective(app, facet).history_ms / 1000,
            snapshots=snapshots,
            deleted=not exists,
        )

    def _catch_up(self, app: str, facet: str) -> None:
        """Archive every commit the facet's WAL holds. A facet not opened since a restart
        (or a kill) may hold commits the archive has not seen: its database is opened
        (``attach`` copies them) and closed again, under its gate."""
        slot = self._registry.slot(app, facet)
        if slot.archive is None:
            return
        with slot.gate.held():
            opened = slot.db is None and self._registry.db_path(app, facet).exists()
            if opened:
                slot.open_db(self._quota_book.effective(app, facet))
            slot.archive.drain()
            if opened:
                slot.close_db()

    # -- building a replacement -----------------------------------------------------
    def _build(
        self, app: str, facet: str, dest: Path, *, snapshot: str | None, at: str | float | None, live: bool
    ) -> tuple[str, float | None]:
        """Write the chosen data at ``dest`` (a temporary name) and check it; return a
        description of the source and the time of its last commit (archive only)."""
        if snapshot is not None and at is not None:
            raise BadRequest("give a snapshot or a moment, not both")
        directory = self._history_dir(app, facet)
        reached: float | None = None
        if snapshot is not None:
            shutil.copyfile(self._snapshot_path(app, facet, snapshot), dest)
            source = f"snapshot {snapshot}"
        elif at is not None or not live:
            when = None if at is None else parse_when(at)
            if live:
                self._catch_up(app, facet)
            if not directory.is_dir() or not any(directory.glob("*.log")):
                raise NotFound(f"{app}/{facet} has no archived history")
            start, _ = wal_archive.window(directory)
            if when is not None and start is not None and when < start:
                raise BadRequest(f"{iso(when)} is before the restorable window, which starts at {iso(start)}")
            reached, _ = wal_archive.rebuild(directory, dest, when)
            source = iso(when) if when is not None else "the last archived commit"
        else:
            with self._reader(f"{app}/{facet}") as reader:
                copy_database(reader.backup, dest, wal=True)
            source = "current data"
        _check(dest)
        return source, reached

    # -- restore, fork, undelete ------------------------------------------------------
    def restore(self, target: str, *, snapshot: str | None = None, at: str | float | None = None) -> RestoreInfo:
        app, facet = self._registry.known(target)
        if snapshot is None and at is None:
            raise BadRequest("restore needs a snapshot name or at=WHEN")
        db_path = self._registry.db_path(app, facet)
        temp = temp_path(db_path, "restore")
        try:
            source, reached = self._build(app, facet, temp, snapshot=snapshot, at=at, live=True)
            undo = self.snapshot(target, reason="before-restore").name if db_path.exists() else None
            slot = self._registry.slot(app, facet)
            archive = slot.archive

            def swap() -> None:
                for suffix in ("-wal", "-shm", "-journal"):
                    Path(f"{db_path}{suffix}").unlink(missing_ok=True)
                os.replace(temp, db_path)
                fsync_dir(db_path.parent)
                if archive is not None:
                    archive.restart_from(db_path)

            self._residency.close(slot, then=swap)
            size = db_path.stat().st_size
        except (sqlite3.Error, OSError) as exc:
            raise FacetsError(f"cannot restore {target}: {type(exc).__name__}: {exc}", failure_code(exc)) from None
        finally:
            discard(temp)
        self._log(app, facet, "warn", f"restored from {source}; the state before is snapshot {undo}")
        return RestoreInfo(target=target, source=source, restored_to=reached, undo_snapshot=undo, size=size)

    def fork(
        self, target: str, new_target: str, *, snapshot: str | None = None, at: str | float | None = None
    ) -> RestoreInfo:
        app, facet = parse_facet_target(target)
        new_app, new_facet = parse_facet_target(new_target)
        if new_app != app:
            raise BadRequest(f"a fork stays in its app: fork {target} as {app}/NAME")
        live = (app, facet) in self._registry.created
        if not live and self._history_dir(app, facet) == self.directory(app, facet):
            raise NotFound(f"no facet {target}, and no history kept of one")
        return self._create_from(app, facet, new_facet, snapshot=snapshot, at=at, live=live, what="forked from")

    def undelete(self, target: str) -> RestoreInfo:
        app, facet = parse_facet_target(target)
        if (app, facet) in self._registry.created:
            raise BadRequest(f"facet {target} exists; undelete brings back a deleted one")
        if self._archiver is None or not self._archiver.retired(app, facet):
            raise NotFound(f"no history of a deleted {target} is kept (past its retention, or never archived)")
        retired = self._archiver.retired(app, facet)[0]
        temp = temp_path(self._registry.db_path(app, facet), "undelete")
        try:
            self._registry.db_path(app, facet).parent.mkdir(parents=True, exist_ok=True)
            reached, _ = wal_archive.rebuild(retired, temp, None)
            _check(temp)
            # The history is the facet's again before the facet exists: a first request
            # then continues it, and no new one can begin in its place.
            live_dir = self.directory(app, facet)
            if live_dir.exists():
                self._archiver.retire(app, facet)  # a stray one stays a deleted history of its own
            os.rename(retired, live_dir)
            try:
                refused = self._registry.create(app, facet, move_from=temp, keep_history=True)
                if refused is not None:
                    raise FacetsError(refused.message, refused.error)
            except BaseException:
                if live_dir.exists() and not retired.exists():
                    os.rename(live_dir, retired)  # still a deleted facet's history
                raise
        except (sqlite3.Error, OSError) as exc:
            raise FacetsError(f"cannot undelete {target}: {type(exc).__name__}: {exc}", failure_code(exc)) from None
        finally:
            discard(temp)
        self._residency.touch((app, facet))
        size = self._registry.db_path(app, facet).stat().st_size
        self._log(app, facet, "info", f"facet {target} undeleted from its kept history")
        return RestoreInfo(target, "the last archived commit", reached, None, size)

    def _create_from(
        self,
        app: str,
        facet: str,
        new_facet: str,
        *,
        snapshot: str | None,
        at: str | float | None,
        live: bool,
        what: str,
    ) -> RestoreInfo:
        dest = self._registry.db_path(app, new_facet)
        if (app, new_facet) in self._registry.created:
            raise BadRequest(f"facet {app}/{new_facet} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(dest, "fork")
        try:
            source, reached = self._build(app, facet, temp, snapshot=snapshot, at=at, live=live)
            size = temp.stat().st_size
            storage = self._quota_book.effective(app, new_facet).storage
            if size > storage:
                raise BadRequest(f"the data is {size} bytes, more than {app}/{new_facet}'s storage quota of {storage}")
            refused = self._registry.create(app, new_facet, move_from=temp)
            if refused is not None:
                raise FacetsError(refused.message, refused.error)
        except (sqlite3.Error, OSError) as exc:
            message = f"cannot create {app}/{new_facet}: {type(exc).__name__}: {exc}"
            raise FacetsError(message, failure_code(exc)) from None
        finally:
            discard(temp)
        self._residency.touch((app, new_facet))
        self._log(app, new_facet, "info", f"facet {app}/{new_facet} {what} {app}/{facet} ({source})")
        return RestoreInfo(f"{app}/{new_facet}", source, reached, None, size)


def _check(path: Path) -> None:
    """``PRAGMA integrity_check`` of a rebuilt database; ``FacetsError`` if it fails."""
    try:
        conn = sqlite3.connect(path)  # read-write: the copy is in WAL mode and has no -wal yet
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise FacetsError(f"the rebuilt data is not a database: {exc}", ErrorCode.INTERNAL) from None
    if problems != ["ok"]:
        raise FacetsError(f"the rebuilt data fails its integrity check: {'; '.join(problems[:3])}", ErrorCode.INTERNAL)
