"""One owner per data directory: an OS file lock, and a note saying who holds it.

Two processes that write one data directory lose data: each keeps its own meters and
flushes them over the other's (measured: 4,000 calls from two processes, 2,002 counted),
and a quota changed in one is never seen by the other. So the first ``Supervisor`` opened
on a directory (not read-only) takes ``DATA/owner.lock`` with ``flock(LOCK_EX | LOCK_NB)``
and holds it until ``close``; any other opener, in this process or another, is refused
with ``DataDirBusy`` (code ``refused``). The kernel drops the lock when the process dies,
``kill -9`` included, so a crash never leaves the directory locked.

``DATA/owner.json`` says who holds the lock (pid, role, since when, and where it can be
reached: its control socket, admin and public URLs), written atomically after the lock is
taken and updated by ``OwnerLock.publish`` once the owner serves. The file alone proves
nothing: after a crash it stays behind, and a free lock means there is no owner
(``owner_of``). A read-only open takes no lock: it writes nothing.

The lock file is never deleted: a process that opened the old file before it was unlinked
would lock an inode nobody else sees, and two owners would each hold "the" lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import DataDirBusy

LOCK_FILE = "owner.lock"
OWNER_FILE = "owner.json"

#: How long an opener retries a held lock whose holder has not said who it is: an owner
#: writes owner.json right after taking the lock (well under 1 ms), and ``owner_of`` holds
#: a shared lock for the instant of its probe. 0.5 s covers both with room for a loaded box.
ANONYMOUS_HOLD_WAIT = 0.5


@dataclass(frozen=True, slots=True)
class OwnerInfo:
    """Who owns a data directory, as ``owner.json`` says.

    Attributes:
        pid: the owner's process id.
        role: what it is: ``serve``, ``console``, ``run``, ``command``, ``python``...
        started_at: when it took the directory (epoch seconds).
        control: path of its control socket (``console.control_api``), or None while it
            serves none (a one-shot command, a Python program).
        admin_url: its admin listener (``http://host:port``), or None.
        public_url: its public HTTP listener, or None.
    """

    pid: int
    role: str
    started_at: float
    control: str | None = None
    admin_url: str | None = None
    public_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> OwnerInfo | None:
        """The info in ``data``, or None when it is not a well-formed owner note."""
        if not isinstance(data, dict):
            return None
        pid, role, started = data.get("pid"), data.get("role"), data.get("started_at")
        if type(pid) is not int or not isinstance(role, str) or not isinstance(started, int | float):
            return None
        urls = [data.get(key) for key in ("control", "admin_url", "public_url")]
        if any(url is not None and not isinstance(url, str) for url in urls):
            return None
        return cls(pid, role, float(started), *urls)

    def describe(self) -> str:
        """``facets run (pid 4711, since 2026-12-02 01:10:00 UTC)``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at))
        return f"{self.role} (pid {self.pid}, since {since})"


def read_owner_file(data_dir: Path) -> OwnerInfo | None:
    """What ``owner.json`` says, without checking the lock (None: missing or unreadable)."""
    try:
        return OwnerInfo.from_dict(json.loads((data_dir / OWNER_FILE).read_text("utf-8")))
    except (OSError, ValueError):
        return None


def owner_of(data_dir: str | os.PathLike[str]) -> OwnerInfo | None:
    """The owner of ``data_dir``, or None when nobody holds its lock (a stale ``owner.json``
    left by a crash names no owner). A lock held by a holder that has not written its note
    yet is reported as an owner of role ``unknown`` with pid 0."""
    data = Path(data_dir)
    try:
        fd = os.open(data / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:  # shared: conflicts only with an owner's exclusive lock
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_owner_file(data) or OwnerInfo(0, "unknown", time.time())
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class OwnerLock:
    """The held lock of a data directory (``acquire``), released by ``release`` or by the
    process's death."""

    def __init__(self, data_dir: Path, fd: int, info: OwnerInfo) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd
        self.info = info

    @classmethod
    def acquire(cls, data_dir: str | os.PathLike[str], role: str) -> OwnerLock:
        """Take ``data_dir``'s lock and write ``owner.json``; ``DataDirBusy`` if it is held."""
        data = Path(data_dir)
        fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + ANONYMOUS_HOLD_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = read_owner_file(data)
                if (holder is not None and _alive(holder.pid)) or time.monotonic() >= deadline:
                    os.close(fd)
                    raise busy(data, holder) from None
                time.sleep(0.005)  # a holder about to write its note, or a probe's instant
            except BaseException:
                os.close(fd)
                raise
        lock = cls(data, fd, OwnerInfo(os.getpid(), role, time.time()))
        try:
            lock._write()
        except BaseException:
            lock.release()
            raise
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def publish(self, **changes: str | None) -> None:
        """Record where the owner can be reached (``control``, ``admin_url``, ``public_url``)."""
        self.info = replace(self.info, **changes)  # type: ignore[arg-type]
        if self.held:
            self._write()

    def _write(self) -> None:
        """Write ``owner.json`` atomically: a reader sees the old note or the new, whole."""
        path = self.data_dir / OWNER_FILE
        temp = path.with_name(f".{OWNER_FILE}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(self.info.as_dict()), "utf-8")
        os.replace(temp, path)

    def release(self) -> None:
        """Remove the note and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):  # the note is advisory: a free lock already says "no owner"
            (self.data_dir / OWNER_FILE).unlink()
        os.close(fd)  # closing the descriptor drops the flock


def busy(data_dir: Path, holder: OwnerInfo | None, *, waited: float | None = None) -> DataDirBusy:
    """The refusal of a second opener, naming the owner and what to do instead; ``waited``:
    the seconds a command waited for an owner that serves no control socket."""
    who = holder.describe() if holder is not None else "another process (it has not said which yet)"
    if waited is None:
        advice = (
            "Stop that process, or let it run your commands: `facets COMMAND` and `facets run` send them to an "
            "owner that serves its control socket; or open the directory read-only"
        )
    else:
        advice = (
            f"It serves no control socket to send commands to (waited {waited:g} s). Stop it or wait for it "
            "to finish, or run the command with --readonly"
        )
    error = DataDirBusy(
        f"the data directory {data_dir} is in use by {who}; one process owns a data directory at a time. {advice}"
    )
    error.owner = holder
    return error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
