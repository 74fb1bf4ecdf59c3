"""System shared-memory regions on this host: named by their owner, sized to the frame.

The regions themselves (POSIX shared memory under /dev/shm) are made with
tritonclient's `shared_memory` utilities; registering them with a server is Triton's
protocol and lives in `transports`. This module only knows files and owners:

- A region's name carries its owner: `streamer-shm-<pid namespace>-<pid>-<start time>-<n>`.
  The pid namespace and the process start time keep a reused PID, or a client in another
  container sharing /dev/shm, from passing for the owner (or being taken for a dead one).
- `dead_owner(name)`: the region is ours (the prefix) and its owner is gone. Regions of a
  live owner, or of an owner we cannot see, are never touched.
- `RegionPool`: one region per request in flight. A request owns its slot from `acquire`
  until `release`; a free slot too small for the next frame is re-created bigger.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Hashable, List, Optional

import numpy as np
import tritonclient.utils.shared_memory as shm

from .errors import ShmUnavailable

SHM_DIR = Path("/dev/shm")
# <n> of a region's name, counted over the whole process: every client (one per server of a pool,
# the check before a run) makes its own regions, and two of them must never pick the same name
_REGION_NUMBERS = itertools.count(1)
PREFIX = "streamer-shm-"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-(\d+)-(\d+)-\d+$")


class RegionError(ShmUnavailable):
    """A region could not be created or written on this host (no /dev/shm, no space)."""


def _pid_namespace(pid: object = "self") -> Optional[int]:
    try:
        link = os.readlink(f"/proc/{pid}/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    digits = re.sub(r"\D", "", link)
    return int(digits) if digits else None


def _start_time(pid: object = "self") -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None when gone
    or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def owner_tag() -> str:
    """`<pid namespace>-<pid>-<start time>` of this process."""
    return f"{_pid_namespace() or 0}-{os.getpid()}-{_start_time() or 0}"


def dead_owner(name: str) -> bool:
    """True when `name` is one of our regions and its owner process no longer exists.

    Owners in another pid namespace are never judged (their PIDs mean nothing here)."""
    match = _NAME.match(name.lstrip("/"))
    if not match:
        return False
    namespace, pid, started = (int(g) for g in match.groups())
    if namespace != (_pid_namespace() or 0):
        return False
    if pid == os.getpid():
        return started != (_start_time() or 0)
    return _start_time(pid) != started


def remove_dead_files(directory: Path = SHM_DIR) -> List[str]:
    """Unlink the regions in /dev/shm whose owner is gone; their names."""
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for path in entries:
        if dead_owner(path.name):
            try:
                path.unlink()
                removed.append(path.name)
            except OSError:
                pass
    return removed


def free_bytes(directory: Path = SHM_DIR) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


@dataclass
class Slot:
    name: str  # the region's name on the server and its key (with a leading "/") on this host
    size: int
    handle: object  # tritonclient's SharedMemoryRegion

    @property
    def key(self) -> str:
        return "/" + self.name


# Called when a slot appears (register it) or before it goes away (unregister it).
Hook = Callable[[Slot], None]


class RegionPool:
    """Slots for requests in flight, each owned by one key (a request id) until released.

    `on_create` runs after a region is made (the transport registers it); `on_destroy`
    before one is unlinked (the transport unregisters it). Either may raise: the slot
    is then destroyed and the error passed on.
    """

    def __init__(self, on_create: Hook, on_destroy: Hook, min_size: int = 1 << 20,
                 directory: Path = SHM_DIR):
        self.on_create = on_create
        self.on_destroy = on_destroy
        self.min_size = min_size
        self.directory = directory
        self._tag = owner_tag()
        self._free: List[Slot] = []
        self._owned: Dict[Hashable, Slot] = {}
        self._lock = threading.Lock()

    @property
    def slots(self) -> List[Slot]:
        with self._lock:
            return list(self._owned.values()) + list(self._free)

    def owned(self, key: Hashable) -> Optional[Slot]:
        with self._lock:
            return self._owned.get(key)

    def acquire(self, key: Hashable, nbytes: int) -> Slot:
        """The slot `key` owns (kept as long as big enough), else a free one, else a new one."""
        with self._lock:
            slot = self._owned.pop(key, None)
            if slot is None and self._free:
                fitting = [s for s in self._free if s.size >= nbytes]
                slot = min(fitting, key=lambda s: s.size) if fitting else max(self._free, key=lambda s: s.size)
                self._free.remove(slot)
        if slot is not None and slot.size < nbytes:
            self._destroy(slot)  # too small for this frame: re-created bigger
            slot = None
        if slot is None:
            slot = self._create(max(nbytes, self.min_size))
        with self._lock:
            self._owned[key] = slot
        return slot

    def write(self, key: Hashable, data: np.ndarray) -> Slot:
        slot = self.acquire(key, data.nbytes)
        try:
            shm.set_shared_memory_region(slot.handle, [np.ascontiguousarray(data)])
        except shm.SharedMemoryException as err:
            self.release(key)
            raise RegionError(f"cannot write shared memory region {slot.name}: {err.__cause__ or err}") from err
        return slot

    def release(self, key: Hashable) -> None:
        with self._lock:
            slot = self._owned.pop(key, None)
            if slot is not None:
                self._free.append(slot)

    def release_all(self) -> None:
        with self._lock:
            self._free.extend(self._owned.values())
            self._owned.clear()

    def close(self) -> None:
        """Unregister and unlink every slot (owned ones too)."""
        with self._lock:
            slots = list(self._owned.values()) + self._free
            self._owned.clear()
            self._free = []
        for slot in slots:
            self._destroy(slot)

    def _create(self, size: int) -> Slot:
        name = f"{PREFIX}{self._tag}-{next(_REGION_NUMBERS)}"
        try:
            available = free_bytes(self.directory)
        except OSError as err:
            raise RegionError(f"no shared memory on this host ({self.directory}: {err.strerror})") from err
        if available < size:
            raise RegionError(f"{self.directory} is full: {available >> 20} MiB free, a frame needs "
                              f"{-(-size >> 20)} MiB (raise its size, e.g. docker --shm-size)")
        try:
            handle = shm.create_shared_memory_region(name, "/" + name, size, create_only=True)
        except shm.SharedMemoryException as err:
            raise RegionError(f"cannot create shared memory region {name}: {err.__cause__ or err}") from err
        slot = Slot(name, size, handle)
        try:
            self.on_create(slot)
        except BaseException:
            self._unlink(slot)
            raise
        return slot

    def _destroy(self, slot: Slot) -> None:
        try:
            self.on_destroy(slot)
        except Exception:  # the server may be gone: the region still goes
            pass
        finally:
            self._unlink(slot)

    @staticmethod
    def _unlink(slot: Slot) -> None:
        try:
            shm.destroy_shared_memory_region(slot.handle)
        except (shm.SharedMemoryException, OSError):
            pass
