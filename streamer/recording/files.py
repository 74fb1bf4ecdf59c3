"""Partial files: where an output lives until it is finished, who owns it, and how bytes reach it.

Every output is written beside its target under a hidden partial name and moved into place when
finished, so a half-written file never carries the name asked for:

    .NAME.partial-RUNID.EXT      e.g. .rec.partial-20261206T064210-3fa9.mp4

RUNID is the run's start time and four random hex digits: two runs (even two at once, or one
after a crash with the same PID in a container) never pick the same name. The writer holds an
exclusive `flock` on its partial while it writes, so `streamer recover` and `--resume` can tell a
partial a live run is still writing (locked) from one a killed run left behind (the kernel drops the
lock with the process).

`DurableFile` is the file object the muxer and the JSON-lines writer write into: it gathers what one
mux call (or one record) produces and hands it to the OS in one `write`, so a kill leaves whole
fragments and whole records (at most a torn last piece, which readers drop). A write that fails
(disk full, file too large, read-only, the file or its folder deleted) is cut back to the last whole
piece and raised as `OutputFailed` naming the target.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..errors import SinkError

_RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{4}")
_PARTIAL = re.compile(r"^\.(?P<stem>.*)\.partial-(?P<run>\d{8}T\d{6}-[0-9a-f]{4})(?P<suffix>\.[^.]+)?$")


def new_run_id() -> str:
    """A run's id for its partial names: local start time and 4 random hex digits."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}"


def partial_path(target: Path, run_id: str, suffix: Optional[str] = None) -> Path:
    """Where `target` is written by run `run_id` (suffix: another extension, e.g. `.json`)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.partial-{run_id}{target.suffix if suffix is None else suffix}")


def finishing_path(partial: Path) -> Path:
    """Where a partial is copied into its finished form before it takes the target's name."""
    partial = Path(partial)
    return partial.with_name(f"{partial.stem}.finishing{partial.suffix}")


@dataclass(frozen=True)
class Partial:
    """A partial file found on disk: its path, the target it stands for, and the run that wrote it."""

    path: Path
    target: Path
    run_id: str


def parse_partial(path: Path) -> Optional[Partial]:
    """The partial `path` is (None: not a partial name)."""
    path = Path(path)
    match = _PARTIAL.match(path.name)
    if not match:
        return None
    target = path.with_name(match.group("stem") + (match.group("suffix") or ""))
    return Partial(path, target, match.group("run"))


def partials_in(folder: Path) -> List[Partial]:
    """Every partial in `folder` (none when it cannot be read)."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return [p for p in map(parse_partial, entries) if p is not None]


def partials_of(target: Path, suffix: Optional[str] = None) -> List[Partial]:
    """The partials beside `target` (with its extension, or `suffix`), oldest run first."""
    target = Path(target)
    ext = target.suffix if suffix is None else suffix
    found = [Partial(p.path, target, p.run_id) for p in partials_in(target.parent)
             if p.target.stem == target.stem and p.path.suffix == ext]
    return sorted(found, key=lambda p: p.run_id)


def is_locked(path: Path) -> bool:
    """True when a running process holds the writer's lock on `path` (False: free, or missing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the lock we may have taken
    return False


class OutputFailed(SinkError):
    """An output could not be written: `target` (the name asked for), `reason` (a few words: "No
    space left on device", "deleted while being written"), `partial` (where what was written is
    kept, whole pieces only; None when nothing is)."""

    def __init__(self, target: Path, reason: str, partial: Optional[Path] = None):
        super().__init__(f"cannot write {target}: {reason}")
        self.target = Path(target)
        self.reason = reason
        self.partial = partial


def reason_of(err: OSError) -> str:
    """An OSError in a few words (its strerror, or the errno's name)."""
    if err.strerror:
        return err.strerror
    return errno.errorcode.get(err.errno or 0, str(err))


class DurableFile:
    """A file object for PyAV's muxer and for JSON lines: `write` gathers, `commit` hands the gathered
    bytes to the OS in one write (whole, or cut back to where they started on failure).

    path: the partial file (created, or opened for appending with `append`); target: the name the
    user asked for (error messages name it). The writer's lock is taken at once."""

    def __init__(self, path: Path, target: Path, append: bool = False):
        self.path = Path(path)
        self.target = Path(target)
        # a new partial is made under a name no reader takes for a partial, locked, then renamed: a
        # partial on disk is always locked while its writer lives (`streamer recover`, or a recorder
        # finishing what a killed run left, never takes one that is being opened for a stale one)
        opening = self.path if append else self.path.with_name(self.path.name + ".opening")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            self._fd: Optional[int] = os.open(opening, flags, 0o644)
        except OSError as err:
            raise OutputFailed(self.target, reason_of(err)) from err
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if opening != self.path:
                os.rename(opening, self.path)
        except BlockingIOError as err:
            self._close_unopened(opening)
            raise OutputFailed(self.target, f"{self.path.name} is being written by another running streamer") from err
        except OSError as err:
            self._close_unopened(opening)
            raise OutputFailed(self.target, reason_of(err)) from err
        self._pending = bytearray()
        self.size = os.fstat(self._fd).st_size  # bytes handed to the OS so far (whole pieces)

    def _close_unopened(self, opening: Path) -> None:
        os.close(self._fd)
        self._fd = None
        if opening != self.path:
            Path(opening).unlink(missing_ok=True)

    # -- the file object PyAV writes into -------------------------------------------------------
    def write(self, data) -> int:
        self._pending += data
        return len(data)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR) + len(self._pending)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.commit()
        return os.lseek(self._fd, offset, whence)

    def flush(self) -> None:
        pass  # pieces are handed over by commit(), when they are whole

    # -- ours -------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._fd is None

    def commit(self) -> int:
        """Hand what was written since the last commit to the OS in one write; bytes handed over."""
        if not self._pending or self._fd is None:
            return 0
        data, self._pending = bytes(self._pending), bytearray()
        start = os.lseek(self._fd, 0, os.SEEK_CUR)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError as err:
            self._cut(start)
            raise OutputFailed(self.target, reason_of(err), self.path) from err
        if os.fstat(self._fd).st_nlink == 0:
            raise OutputFailed(self.target, f"{self.path.name} was deleted (or its folder removed) while being written")
        self.size = max(self.size, start + len(data))
        return len(data)

    def _cut(self, offset: int) -> None:
        """Drop a piece that was written only in part (a full disk takes what fits)."""
        try:
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError:
            pass

    def discard_pending(self) -> None:
        self._pending = bytearray()

    def sync(self) -> None:
        """What was committed reaches the disk (a power cut keeps it)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as err:
                raise OutputFailed(self.target, reason_of(err), self.path) from err

    def close(self) -> None:
        """Close without committing what is pending (commit first to keep it); drops the lock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
