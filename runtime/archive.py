"""The WAL archive: every committed transaction of every facet, kept for its ``history_ms``
quota, from which a facet's data is rebuilt as it was at any moment (``runtime.history``).

Built as Litestream does, inside the process that owns the writer:

* **What is archived.** SQLite in WAL mode appends each transaction's pages to the
  facet's ``-wal`` file as *frames*; the last frame of a transaction (the commit frame)
  carries the database's size in pages. After each COMMIT the facet's thread reads the
  WAL-index header (``-shm``, 96 bytes, one ``pread``: ``mxFrame``, the last committed
  frame, and the WAL's salts) and notes ``(salt, mxFrame, time)``; that is all the request
  path pays. The archiver thread later copies the new frames from the ``-wal`` file into
  the facet's archive, one compressed block per pass, with each commit's own time.
* **Nothing is lost before it is copied.** Frames leave the ``-wal`` file only when a
  checkpoint has copied them into the database and the next writer restarts the WAL
  from its start. So the facet's connection never checkpoints by itself
  (``wal_autocheckpoint=0``) and never on close (``skip_checkpoint_on_close``); it
  checkpoints in ``FacetArchive.checkpoint``, after each ``CHECKPOINT_FRAMES`` frames (what
  SQLite's own autocheckpoint did, on the same thread: the same cost), and only after the
  archive has copied every frame and synced its log, under the archive's lock. A
  supervisor killed before the archiver's pass leaves the frames in the ``-wal`` file;
  the next ``attach`` copies them (with the ``-wal`` file's time: their own is lost).
* **Layout.** ``DATA/archive/APP/FACET/`` holds segments ``NNNNNNNN.log`` (blocks) and
  ``NNNNNNNN.base`` (a raw copy of the database at the segment's start), and
  ``snapshots/``. A segment starts where the previous one ended (``continues``: its base is
  the previous base with the previous log applied, built by compaction and optional) or
  at a break (a restore, an import, a WAL the archive cannot follow): then its base is
  required. A deleted facet's directory is renamed ``FACET@<ms>`` and pruned after the
  retention window.
* **Blocks** are ``magic, kind, length, crc32`` then a payload: ``START`` (JSON: the
  position and time a segment starts at), ``RECORDS`` (zlib: per commit its time, size in
  pages, last frame, salt and pages) or ``CHECKPOINT`` (JSON: a complete checkpoint at
  this position, after which the WAL may restart). A torn block at the end of the newest
  log (a kill mid-write) is cut off on attach; a bad block anywhere else makes a
  restore through it fail with ``ArchiveCorrupt``, before anything is replaced.

Thread rules: a ``FacetArchive``'s ``lock`` guards its pending commits, position and log
file. The facet's thread calls ``committed``/``checkpoint``/``attach``/``detach`` with the
facet's gate held, and takes the archive lock inside it; the archiver thread takes only
archive locks, never a gate. ``Archiver._lock`` (the facets it knows, the dirty set) is a
leaf, never held while an archive lock is taken.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .errors import ErrorCode, FacetsError
from .transfer import fsync_dir, fsync_file, temp_path

if TYPE_CHECKING:
    from .storage import FacetDB

#: Checkpoint after this many WAL frames: SQLite's default ``wal_autocheckpoint``.
CHECKPOINT_FRAMES = 1000
#: At most this many commits are copied on the facet's thread before a checkpoint;
#: with more pending it leaves them to the archiver thread and tries again later.
CHECKPOINT_DRAIN = 64
#: How often the archiver thread copies new frames (each facet's commits in one block).
PASS_INTERVAL_S = 0.2
#: A segment's log is compacted into a new base once it outgrows both this and its base:
#: the copy a compaction writes is then at most the log it replaces (a 100 MB facet is
#: rebuilt from at most ~2x its size), and small facets are not copied over and over.
COMPACT_MIN_BYTES = 16 * 1024 * 1024
#: How often retention is applied (it only deletes whole segments and deleted facets).
PRUNE_INTERVAL_S = 60.0

_WAL_HEADER = 32
_FRAME_HEADER = 24
_SHM_HEADER = 96  # two copies of the 48-byte WalIndexHdr (sqlite.org/walformat.html)
_BLOCK = struct.Struct("<4sBxxxII")
_MAGIC = b"FWAL"
START, RECORDS, CHECKPOINT = 0, 1, 2
#: A RECORDS block holds runs: WAL frames copied verbatim (headers and pages), one run per
#: WAL generation per pass, each with its commits' times. Copying verbatim keeps the
#: archiver's Python per commit to one tuple: parsing each frame there cost ~3 us of GIL
#: per commit, taken from the requests (12% of warm write throughput, bench/history).
_RUN = struct.Struct("<8sIII")  # salt, frame before the run, frames, commits
_COMMIT = struct.Struct("<dI")  # time, last frame of the commit
_FRAME = struct.Struct(">II8s")  # page number, size after commit (0: not a commit), salt
_NO_SALT = bytes(8)


class ArchiveCorrupt(FacetsError):
    """A block of a facet's archive failed its check; the live data is never touched."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.INTERNAL)


class ArchiveGap(Exception):
    """The WAL does not continue where the archive stands (a new segment must start)."""


@dataclass(slots=True)
class Position:
    """Where the archive stands in the facet's WAL: the last frame copied, of the WAL
    generation ``salt``; ``checkpointed``: a complete checkpoint happened at that frame, so
    the WAL may restart (a new salt, frames from 1) with nothing skipped."""

    salt: bytes = _NO_SALT
    frame: int = 0
    checkpointed: bool = True

    def as_json(self) -> dict[str, object]:
        return {"salt": self.salt.hex(), "frame": self.frame, "checkpointed": self.checkpointed}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Position:
        return cls(bytes.fromhex(str(data["salt"])), int(str(data["frame"])), bool(data["checkpointed"]))


@dataclass(slots=True)
class Record:
    """One committed transaction: its pages, the database's size after it, its time."""

    time: float
    pages_after: int
    frame: int
    salt: bytes
    pages: dict[int, bytes]


@dataclass
class Segment:
    number: int
    start_time: float
    continues: bool
    page_size: int
    base: Path | None
    log: Path
    log_bytes: int
    end_time: float


def _blocks(path: Path, *, tail_ok: bool) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, kind, payload)`` of each block; a torn or bad block raises
    ``ArchiveCorrupt``, except at the end of the newest log (``tail_ok``), where it ends."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        if len(data) - offset < _BLOCK.size:
            if tail_ok:
                return
            raise ArchiveCorrupt(f"{path.name}: a torn block at byte {offset}")
        magic, kind, length, crc = _BLOCK.unpack_from(data, offset)
        payload = data[offset + _BLOCK.size : offset + _BLOCK.size + length]
        if magic == _MAGIC and len(payload) != length and tail_ok:
            return  # the newest log's last write, cut short by a kill: not committed to it
        if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            raise ArchiveCorrupt(f"{path.name}: block at byte {offset} fails its check")
        yield offset, kind, payload
        offset += _BLOCK.size + length


def _decode_records(payload: bytes, page_size: int) -> list[Record]:
    """The commits of a RECORDS block: its runs of raw WAL frames, cut at each commit frame."""
    raw = zlib.decompress(payload)
    out: list[Record] = []
    size = _FRAME_HEADER + page_size
    offset = 0
    while offset < len(raw):
        salt, first, frames, commits = _RUN.unpack_from(raw, offset)
        offset += _RUN.size
        times = [_COMMIT.unpack_from(raw, offset + i * _COMMIT.size) for i in range(commits)]
        offset += commits * _COMMIT.size
        pages: dict[int, bytes] = {}
        next_time = 0
        for index in range(frames):
            at = offset + index * size
            pgno, pages_after, _ = _FRAME.unpack_from(raw, at)
            pages[pgno] = raw[at + _FRAME_HEADER : at + size]
            if pages_after:
                frame = first + index + 1
                while next_time < len(times) - 1 and times[next_time][1] < frame:
                    next_time += 1  # a noted commit covers every commit frame up to its last
                out.append(Record(times[next_time][0], pages_after, frame, salt, pages))
                pages = {}
        offset += frames * size
    return out


def _runs_end(raw: bytes, page_size: int) -> tuple[float, bytes, int]:
    """The last commit time, salt and frame of a decompressed RECORDS payload."""
    offset, when, salt, frame = 0, 0.0, _NO_SALT, 0
    while offset < len(raw):
        salt, first, frames, commits = _RUN.unpack_from(raw, offset)
        offset += _RUN.size
        if commits:
            when = _COMMIT.unpack_from(raw, offset + (commits - 1) * _COMMIT.size)[0]
        frame = first + frames
        offset += commits * _COMMIT.size + frames * (_FRAME_HEADER + page_size)
    return when, salt, frame


def _block(kind: int, payload: bytes) -> bytes:
    return _BLOCK.pack(_MAGIC, kind, len(payload), zlib.crc32(payload)) + payload


def read_segments(directory: Path) -> list[Segment]:
    """The archive's segments, oldest first (without reading their records)."""
    segments = []
    logs = sorted(directory.glob("*.log"))
    for index, log in enumerate(logs):
        newest = index == len(logs) - 1
        start = None
        end_time = 0.0
        for _, kind, payload in _blocks(log, tail_ok=newest):
            if kind == START:
                start = json.loads(payload)
                end_time = float(start["time"])
            elif kind == RECORDS:
                raw = zlib.decompress(payload)
                end_time = max(end_time, _runs_end(raw, int(start["page_size"]) if start else 4096)[0])
        if start is None:
            if newest:
                continue  # killed while starting it: nothing in it
            raise ArchiveCorrupt(f"{log.name}: no start block")
        base = log.with_suffix(".base")
        segments.append(
            Segment(
                number=int(log.stem),
                start_time=float(start["time"]),
                continues=bool(start["continues"]),
                page_size=int(start["page_size"]),
                base=base if base.exists() else None,
                log=log,
                log_bytes=log.stat().st_size,
                end_time=end_time,
            )
        )
    return segments


def segment_records(segment: Segment) -> Iterator[Record]:
    newest = True  # a torn tail is only ever in the newest log; read_segments checked the others
    for _, kind, payload in _blocks(segment.log, tail_ok=newest):
        if kind == RECORDS:
            yield from _decode_records(payload, segment.page_size)


def rebuild(
    directory: Path, dest: Path, until: float | None, *, before_segment: int | None = None
) -> tuple[float | None, int]:
    """Write at ``dest`` the facet's database as it was after its last commit at or before
    ``until`` (None: the newest), from the segments numbered below ``before_segment`` (all:
    None). Returns that commit's time (the base's when no commit qualifies) and the number
    of commits applied. ``ArchiveCorrupt`` on a bad block, a missing base, or a moment
    before the archive starts."""
    segments = [s for s in read_segments(directory) if before_segment is None or s.number < before_segment]
    if not segments:
        raise ArchiveCorrupt("the facet has no archive")
    start_index = None
    for index, segment in enumerate(segments):
        if until is not None and segment.start_time > until:
            break
        if segment.base is not None:
            start_index = index
        elif not segment.continues:
            start_index = None  # a break without its base: nothing before it applies after it
    if start_index is None:
        if until is not None and segments[0].start_time > until:
            raise ArchiveCorrupt("that moment is before the archive starts")
        raise ArchiveCorrupt("no base to rebuild from (a segment's base is missing)")
    first = segments[start_index]
    assert first.base is not None
    shutil.copyfile(first.base, dest)
    reached: float | None = first.start_time
    applied = 0
    with open(dest, "r+b") as out:
        for segment in segments[start_index:]:
            if segment is not first and not segment.continues:
                break
            # No cut at a continuing segment's start time: a commit noted just before a
            # compaction may be copied into the next log; each record's own time decides.
            for record in segment_records(segment):
                if until is not None and record.time > until:
                    break
                for pgno, page in record.pages.items():
                    out.seek((pgno - 1) * segment.page_size)
                    out.write(page)
                out.truncate(record.pages_after * segment.page_size)
                reached = record.time
                applied += 1
        out.flush()
        os.fsync(out.fileno())
    return reached, applied


@dataclass
class FacetArchive:
    """One facet's archive (see the module docstring for its thread rules)."""

    directory: Path
    db_path: Path
    log: Callable[[str, str], None]
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: ``(salt, last frame, time)`` of each commit not yet copied (appended by the facet's thread).
    pending: list[tuple[bytes, int, float]] = field(default_factory=list)
    position: Position | None = None
    page_size: int = 4096
    segment: int = 0
    _log_file: BinaryIO | None = None
    _log_bytes: int = 0
    _base_bytes: int = 0
    _shm: int | None = None
    _last: tuple[bytes, int] = (_NO_SALT, -1)
    _checkpoint_after: tuple[bytes, int] = (_NO_SALT, CHECKPOINT_FRAMES)
    #: Sync the log before each checkpoint (``full`` durability: the archive then survives
    #: power loss as the commits do). With ``process`` durability one more disk sync per
    #: checkpoint would cost ~5-10 us per commit, and a killed process loses nothing flushed.
    durable: bool = True
    #: The segment's base and start are not synced yet (``checkpoint`` syncs them).
    _unsynced: bool = False
    #: Wakes the archiver thread (``Archiver.wake``).
    wake: Callable[[], None] | None = None
    #: The archive could not follow the WAL: no copying until the next attach.
    broken: bool = False

    # -- the facet's thread (gate held) ---------------------------------------
    def attach(self, db: FacetDB) -> None:
        """Start archiving ``db`` (just opened): copy what the WAL holds past the archive's
        position, or start a new segment from a complete checkpoint if the WAL does not
        continue the archive."""
        with self.lock:
            self.page_size = db.page_size
            db.query_platform("SELECT count(*) FROM sqlite_master")  # builds the WAL index
            if self._shm is not None:  # a failed attach before this one left it open
                os.close(self._shm)
            self._shm = os.open(f"{self.db_path}-shm", os.O_RDONLY | os.O_CLOEXEC)
            salt, frame = self._header()
            if self.position is None:
                self._load()
            position = self.position
            wal = Path(f"{self.db_path}-wal")
            continues = position is not None and (
                (salt == position.salt and frame >= position.frame) or (position.checkpointed and salt != position.salt)
            )
            if continues and not self.broken:
                if (salt, frame) != (position.salt, position.frame) and frame > 0:  # type: ignore[union-attr]
                    self.pending.append((salt, frame, wal.stat().st_mtime if wal.exists() else time.time()))
                    self._drain()
                self._last = (salt, frame)
            else:
                self._new_segment(db, continues_previous=False)
            self.broken = False

    def committed(self, db: FacetDB) -> None:
        """After a COMMIT: note the new frames and their time (~1 us: one ``pread``)."""
        try:
            salt, frame = self._header()
        except OSError:
            return
        if (salt, frame) == self._last:
            return  # a read-only transaction: no frames
        self._last = (salt, frame)
        self.pending.append((salt, frame, time.time()))
        after_salt, after_frame = self._checkpoint_after
        if frame >= CHECKPOINT_FRAMES and (salt != after_salt or frame >= after_frame):
            if len(self.pending) > CHECKPOINT_DRAIN:
                # Copying ~1,000 commits here would stall this request for milliseconds:
                # the archiver thread copies them now, and a later commit checkpoints.
                self._checkpoint_after = (salt, frame + CHECKPOINT_DRAIN)
                if self.wake is not None:
                    self.wake()
                return
            self.checkpoint(db)

    def checkpoint(self, db: FacetDB) -> None:
        """Copy every frame, sync the log, then checkpoint: the WAL may restart after it."""
        with self.lock:
            if self.broken or self._drain() is False:
                db.checkpoint()  # not archived: the WAL must not grow without end
                return
            if self._unsynced and self.durable:  # a new segment's base and start: synced once, here
                base = self.directory / f"{self.segment:08d}.base"
                if base.exists():
                    fsync_file(base)
                fsync_dir(self.directory)
                self._unsynced = False
            if self._log_file is not None:
                self._log_file.flush()
                if self.durable:  # power loss; a killed process loses nothing flushed
                    os.fsync(self._log_file.fileno())
            busy, wal_frames, copied = db.checkpoint()
            salt, frame = self._header()
            self._checkpoint_after = (salt, frame + CHECKPOINT_FRAMES)
            if not busy and wal_frames == copied and self.position is not None and frame == self.position.frame:
                self.position.checkpointed = True
                self._write(CHECKPOINT, json.dumps(self.position.as_json()).encode())

    def detach(self) -> None:
        """The facet's database is closing: copy what is left, close the files."""
        with self.lock:
            self._drain()
            if self._shm is not None:
                os.close(self._shm)
                self._shm = None
            self._close_log()

    def restart_from(self, db_file: Path) -> None:
        """The facet's database was replaced by ``db_file``'s content (a restore, an
        import): start a segment whose base is it; the next WAL starts afresh."""
        with self.lock:
            self.pending.clear()
            self._close_log()
            self.directory.mkdir(parents=True, exist_ok=True)
            self.segment = self._next_number()
            base = self.directory / f"{self.segment:08d}.base"
            temp = temp_path(base, "base")
            shutil.copyfile(db_file, temp)
            fsync_file(temp)
            os.replace(temp, base)
            self._base_bytes = base.stat().st_size
            self.position = Position(_NO_SALT, 0, True)
            self._start_log(continues=False)
            self.checkpoint_sync()
            self._last = (_NO_SALT, -1)

    def checkpoint_sync(self) -> None:
        """Sync the new segment now (a restore: rare, and what it replaced is gone)."""
        assert self._log_file is not None
        self._log_file.flush()
        os.fsync(self._log_file.fileno())
        fsync_dir(self.directory)
        self._unsynced = False

    # -- the archiver thread ----------------------------------------------------
    def drain(self) -> None:
        with self.lock:
            self._drain()

    def compact_if_due(self) -> None:
        """Start a new segment whose base is this one's with its log applied, once the
        log outgrows ``COMPACT_MIN_BYTES`` and the base. The log is sealed under the lock
        (a new one opened at the same position); the base is built outside it."""
        with self.lock:
            if self.broken or self.position is None or self._log_file is None:
                return
            if self._log_bytes < max(COMPACT_MIN_BYTES, self._base_bytes):
                return
            self._drain()  # every commit noted so far goes into the sealed log
            self._close_log()
            self.segment = self._next_number()
            self._start_log(continues=True)
            number = self.segment
        base = self.directory / f"{number:08d}.base"
        temp = temp_path(base, "base")
        try:
            rebuild(self.directory, temp, None, before_segment=number)
            fsync_file(temp)
            os.replace(temp, base)
            fsync_dir(self.directory)
        except (OSError, ArchiveCorrupt) as exc:
            self.log("error", f"archive compaction failed: {exc}")
        finally:
            Path(temp).unlink(missing_ok=True)
        with self.lock:
            if self.segment == number:
                self._base_bytes = base.stat().st_size if base.exists() else 0

    # -- inside the lock --------------------------------------------------------
    def _header(self) -> tuple[bytes, int]:
        assert self._shm is not None
        header = os.pread(self._shm, _SHM_HEADER, 0)
        if len(header) < _SHM_HEADER or header[:48] != header[48:]:
            raise OSError("the WAL index is being written")
        (frame,) = struct.unpack_from("=I", header, 16)
        return header[32:40], frame

    def _drain(self) -> bool:
        """Copy the frames of the pending commits; False if the archive is broken."""
        if not self.pending or self.position is None:
            return not self.broken
        # Taken and removed by count, never by swapping the list: an append by the facet's
        # thread between a swap's read and its assignment would land on the old list.
        count = len(self.pending)
        pending = self.pending[:count]
        del self.pending[:count]
        try:
            payload, salt, frame = self._read(pending)
        except (ArchiveGap, OSError) as exc:
            self.broken = True
            self.log("error", f"archive stopped: {exc}; a new segment starts when the facet is next opened")
            return False
        if payload:
            # Level 1: a fraction of level 6's CPU; the call releases the GIL.
            self._write(RECORDS, zlib.compress(payload, 1))
            self.position = Position(salt, frame, False)
        return True

    def _read(self, pending: list[tuple[bytes, int, float]]) -> tuple[bytes, bytes, int]:
        """The pending commits' frames as RECORDS runs, and the position after them."""
        position = self.position
        assert position is not None
        salt, frame = position.salt, position.frame
        checkpointed = position.checkpointed
        size = _FRAME_HEADER + self.page_size
        parts: list[bytes] = []
        fd = os.open(f"{self.db_path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        try:
            index = 0
            while index < len(pending):
                run_salt = pending[index][0]
                if run_salt != salt:
                    if not checkpointed:
                        raise ArchiveGap("the WAL restarted at frames the archive had not copied")
                    salt, frame = run_salt, 0
                commits: list[bytes] = []
                first = frame
                while index < len(pending) and pending[index][0] == salt:
                    _, last, when = pending[index]
                    if last > frame:
                        commits.append(_COMMIT.pack(when, last))
                        frame = last
                    index += 1
                if frame == first:
                    continue
                length = (frame - first) * size
                data = os.pread(fd, length, _WAL_HEADER + first * size)
                if len(data) != length:
                    raise ArchiveGap("the WAL is shorter than its index says")
                for at in (0, length - size):  # the run is one generation: its ends say so
                    if _FRAME.unpack_from(data, at)[2] != salt:
                        raise ArchiveGap(f"frames after {first} belong to another WAL generation")
                parts.append(_RUN.pack(salt, first, frame - first, len(commits)))
                parts.extend(commits)
                parts.append(data)
                checkpointed = False
        finally:
            os.close(fd)
        return b"".join(parts), salt, frame

    def _write(self, kind: int, payload: bytes) -> None:
        if self._log_file is None:
            self._log_file = open(self.directory / f"{self.segment:08d}.log", "ab")  # noqa: SIM115
        block = _block(kind, payload)
        self._log_file.write(block)
        self._log_file.flush()  # in the page cache: a kill -9 keeps it
        self._log_bytes += len(block)

    def _start_log(self, *, continues: bool) -> None:
        assert self.position is not None
        start = {
            "time": time.time(),
            "continues": continues,
            "page_size": self.page_size,
            **self.position.as_json(),
        }
        self._log_bytes = 0
        self._write(START, json.dumps(start).encode())
        # Not synced here: until the first checkpoint the WAL and the database hold all of
        # it, and a new facet would pay three disk syncs (~30 ms here) at its first request.
        self._unsynced = True

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _next_number(self) -> int:
        numbers = [int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit()]
        return max(numbers, default=0) + 1

    def _new_segment(self, db: FacetDB, *, continues_previous: bool) -> None:
        """Checkpoint completely, then copy the database file as the new segment's base
        (with the facet's gate held: only when the archive cannot follow the WAL — a new
        facet, a first open since archiving began, a WAL changed behind its back)."""
        self.pending.clear()
        busy, wal_frames, copied = db.checkpoint()
        if busy or wal_frames != copied:
            self.broken = True
            self.log("warn", "archive not started: a reader held the WAL; it starts when the facet is next opened")
            return
        self._close_log()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment = self._next_number()
        base = self.directory / f"{self.segment:08d}.base"
        temp = temp_path(base, "base")
        shutil.copyfile(self.db_path, temp)
        os.replace(temp, base)  # synced at the first checkpoint (see _start_log)
        self._base_bytes = base.stat().st_size
        salt, frame = self._header()
        self.position = Position(salt, frame, True)
        self._start_log(continues=continues_previous)
        self._last = (salt, frame)

    def _load(self) -> None:
        """The position the newest segment's log ends at (a torn tail is cut off)."""
        if not self.directory.is_dir():
            return
        logs = sorted(self.directory.glob("*.log"))
        if not logs:
            return
        log = logs[-1]
        position: Position | None = None
        end = 0
        page_size = 4096
        try:
            for offset, kind, payload in _blocks(log, tail_ok=True):
                end = offset + _BLOCK.size + len(payload)
                if kind in (START, CHECKPOINT):
                    data = json.loads(payload)
                    position = Position.from_json(data)
                    page_size = int(data.get("page_size", page_size))
                elif kind == RECORDS:
                    _, salt, frame = _runs_end(zlib.decompress(payload), page_size)
                    position = Position(salt, frame, False)
        except (ArchiveCorrupt, ValueError, KeyError, zlib.error) as exc:
            self.log("error", f"archive log {log.name} unreadable ({exc}); a new segment starts")
            return
        if log.stat().st_size > end:
            with open(log, "r+b") as handle:  # the torn tail of a killed write
                handle.truncate(end)
        self.position = position
        self.segment = int(log.stem)
        self._log_bytes = end
        base = log.with_suffix(".base")
        self._base_bytes = base.stat().st_size if base.exists() else 0


def archive_bytes(directory: Path) -> int:
    """Bytes of the archive's segments (bases and logs)."""
    if not directory.is_dir():
        return 0
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix in (".log", ".base") and p.is_file())


def window(directory: Path) -> tuple[float | None, float | None]:
    """The oldest and newest moments a restore reaches."""
    try:
        segments = read_segments(directory) if directory.is_dir() else []
    except ArchiveCorrupt:
        return None, None
    start = None
    for segment in segments:
        if segment.base is not None and start is None:
            start = segment.start_time
        elif segment.base is None and not segment.continues:
            start = None
    if not segments:
        return None, None
    return start, max(s.end_time for s in segments)


def prune(directory: Path, keep_after: float) -> int:
    """Delete the segments no moment after ``keep_after`` needs: those before the newest
    segment with a base that starts at or before ``keep_after``. Returns bytes freed."""
    segments = read_segments(directory)
    keep_from = 0
    for index, segment in enumerate(segments):
        if segment.start_time <= keep_after and segment.base is not None:
            keep_from = index
    freed = 0
    for segment in segments[:keep_from]:
        for path in (segment.log, segment.log.with_suffix(".base")):
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
    return freed


class Archiver:
    """Every facet's ``FacetArchive``, and the thread that copies their new frames,
    compacts their logs and applies retention."""

    def __init__(
        self,
        root: Path,
        log: Callable[[str, str, str, str], None],
        retention: Callable[[str, str], float],
    ) -> None:
        self.root = root
        self._log = log
        self._retention = retention
        self._lock = threading.Lock()
        self._archives: dict[tuple[str, str], FacetArchive] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def directory(self, app: str, facet: str) -> Path:
        return self.root / app / facet

    def archive(self, app: str, facet: str, db_path: Path) -> FacetArchive:
        key = (app, facet)
        with self._lock:
            archive = self._archives.get(key)
            if archive is None:
                archive = self._archives[key] = FacetArchive(
                    self.directory(app, facet), db_path, lambda level, message: self._log(app, facet, level, message)
                )
                archive.wake = self._wake.set
            return archive

    def snapshot_bytes(self, app: str, facet: str) -> int:
        folder = self.directory(app, facet) / "snapshots"
        return sum(p.stat().st_size for p in folder.glob("*.sqlite3")) if folder.is_dir() else 0

    def retire(self, app: str, facet: str) -> Path | None:
        """A deleted facet (its database closed, so its archive drained): keep its history
        as ``FACET@<ms>`` for the retention window. Returns where it went."""
        with self._lock:
            self._archives.pop((app, facet), None)
        directory = self.directory(app, facet)
        if not directory.is_dir():
            return None
        retired = directory.with_name(f"{facet}@{int(time.time() * 1000)}")
        os.rename(directory, retired)
        fsync_dir(directory.parent)
        return retired

    def retired(self, app: str, facet: str) -> list[Path]:
        """The kept histories of deleted facets named ``app/facet``, newest first."""
        app_dir = self.root / app
        if not app_dir.is_dir():
            return []
        found = [p for p in app_dir.glob(f"{facet}@*") if p.name.partition("@")[2].isdigit()]
        return sorted(found, key=lambda p: int(p.name.partition("@")[2]), reverse=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facets-archiver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.drain_all()

    def drain_all(self) -> None:
        with self._lock:
            archives = list(self._archives.values())
        for archive in archives:
            if archive.pending:
                archive.drain()

    def _run(self) -> None:
        while True:
            self._wake.wait(PASS_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.drain_all()
                with self._lock:
                    archives = list(self._archives.values())
                for archive in archives:
                    archive.compact_if_due()
                if time.monotonic() - self._last_prune > PRUNE_INTERVAL_S:
                    self._last_prune = time.monotonic()
                    self.prune_all()
            except Exception as exc:  # the archiver never dies of one facet's trouble
                self._log("", "", "error", f"archiver pass failed: {type(exc).__name__}: {exc}")

    def prune_all(self, now: float | None = None) -> int:
        """Apply each facet's retention: old segments, and deleted facets' whole history."""
        now = time.time() if now is None else now
        freed = 0
        if not self.root.is_dir():
            return 0
        for app_dir in self.root.iterdir():
            if not app_dir.is_dir():
                continue
            for directory in app_dir.iterdir():
                name, sep, deleted_ms = directory.name.partition("@")
                try:
                    retention = self._retention(app_dir.name, name)
                    if sep:
                        if deleted_ms.isdigit() and int(deleted_ms) / 1000 < now - retention:
                            freed += sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
                            shutil.rmtree(directory)
                            self._log(app_dir.name, name, "info", "deleted facet's history pruned past its retention")
                    elif directory.is_dir():
                        freed += prune(directory, now - retention)
                except Exception as exc:  # one directory's trouble never stops the others' retention
                    self._log(app_dir.name, name, "error", f"retention failed: {type(exc).__name__}: {exc}")
        return freed
