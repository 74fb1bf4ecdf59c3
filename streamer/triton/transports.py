"""Transports: how a request's input reaches the server.

- `GrpcTransport`: inside the gRPC message.
- `ShmTransport`: through system shared-memory regions (`shm.RegionPool`) registered with the
  server; one region per request in flight.

Both take the raw tritonclient client from the TritonClient that owns them; their calls'
errors come out as the types of `errors` (ShmRefused, RegionInUse, ServerUnreachable...).
"""

from __future__ import annotations

import time
from typing import Hashable, List

import numpy as np
import tritonclient.grpc as grpcclient

from ..states import Transport
from . import shm
from .errors import Call, RegionAlreadyRegistered, RegionInUse, ServerUnreachable, mapped


class GrpcTransport:
    """Frames travel inside the gRPC message."""

    name = Transport.GRPC
    describe = "gRPC (tensors in the message)"

    def set(self, key: Hashable, tensor: grpcclient.InferInput, data: np.ndarray) -> None:
        tensor.set_data_from_numpy(data)

    def release(self, key: Hashable) -> None:
        pass

    def reregister(self) -> None:
        pass

    def close(self) -> None:
        pass


class ShmTransport:
    """Frames travel through system shared-memory regions registered with the server.

    One region per request in flight: a request owns its slot until its answer arrives
    (a slot rewritten while its request waits would give that request another frame's
    boxes). Outputs stay in the gRPC answer.
    """

    name = Transport.SHM
    describe = "system shared memory (frames in /dev/shm, answers over gRPC)"

    def __init__(self, raw, timeout: float):
        self._raw = raw
        self._timeout = timeout
        self._server_gone = False
        self.pool = shm.RegionPool(self._register, self._unregister)

    def _register(self, slot: shm.Slot) -> None:
        with mapped(Call.SHM):
            self._raw.register_system_shared_memory(slot.name, slot.key, slot.size, client_timeout=self._timeout)
        self._server_gone = False

    def _unregister(self, slot: shm.Slot) -> None:
        self._unregister_name(slot.name)

    def _unregister_name(self, name: str) -> bool:
        """Unregister a region; while requests queued on the server still read it (RegionInUse),
        retry for up to the timeout. False when it stays in use."""
        if self._server_gone:
            return False  # the regions go with the server; do not wait for each one
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                with mapped(Call.SHM):
                    self._raw.unregister_system_shared_memory(name, client_timeout=self._timeout)
                return True
            except ServerUnreachable:
                self._server_gone = True
                raise
            except RegionInUse:
                if time.monotonic() > deadline:
                    return False
            time.sleep(0.1)

    def remove_dead(self) -> List[str]:
        """Regions of clients that died: unlinked here, unregistered on the server.

        A dead client's requests may still be queued on the server, which then refuses to
        unregister their region (in use): retried for a while, else left to the next run."""
        gone = set(shm.remove_dead_files())
        with mapped(Call.SHM):
            status = self._raw.get_system_shared_memory_status(client_timeout=self._timeout)
        for name in status.regions:
            if shm.dead_owner(name) and self._unregister_name(name):
                gone.add(name)
        return sorted(gone)

    def probe(self) -> None:
        """Create and register a first region: raises where the server or host refuses."""
        self.pool.acquire(_PROBE, 0)
        self.pool.release(_PROBE)

    def set(self, key: Hashable, tensor: grpcclient.InferInput, data: np.ndarray) -> None:
        slot = self.pool.write(key, data)
        tensor.set_shared_memory(slot.name, data.nbytes)

    def release(self, key: Hashable) -> None:
        self.pool.release(key)

    def reregister(self) -> None:
        """After a server restart: every region again, before anything is resent."""
        for slot in self.pool.slots:
            try:
                self._register(slot)
            except RegionAlreadyRegistered:  # the same server after a broken stream still knows it
                pass

    def close(self) -> None:
        self.pool.close()


_PROBE = object()
