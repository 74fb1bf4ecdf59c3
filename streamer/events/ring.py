"""A camera's recent video as encoded H.264 packets, bounded by time and by bytes.

    encoder ──packet──▶ PacketRing [keyframe ... keyframe ... newest]
                                     └ kept: from the newest keyframe at least `keep_s` before the newest packet

A clip that starts up to `keep_s` before now can begin at a keyframe inside the ring; older
packets are dropped a whole keyframe interval (GOP) at a time, so the ring always starts at a
keyframe. `max_bytes` caps it whatever the bitrate (oldest GOPs go first; the newest one stays).
Raw frames are never kept: at 720p one raw frame is 2.7 MB, five seconds of H.264 about 1-3 MB.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional

EPSILON = 1e-6  # seconds: times within this are equal (timestamps are rationals turned to floats)


@dataclass(frozen=True)
class EncodedPacket:
    """One encoded picture: its bytes, stamps in the encoder's time base, and its time in seconds
    on the source's clock (the same clock as events' source_time)."""

    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool
    time: float

    @property
    def size(self) -> int:
        return len(self.data)


class PacketRing:
    def __init__(self, keep_s: float, max_bytes: int = 64 * 1024 * 1024):
        if keep_s < 0 or max_bytes < 1:
            raise ValueError("a packet ring keeps 0 or more seconds and at least one byte")
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self._packets: Deque[EncodedPacket] = deque()
        self._keyframes: Deque[int] = deque()  # positions (absolute sequence numbers) of keyframes held
        self._first = 0  # absolute sequence number of _packets[0]
        self.nbytes = 0
        self.peak_bytes = 0
        self.dropped_waiting = 0  # packets refused because the ring had no keyframe yet

    def __len__(self) -> int:
        return len(self._packets)

    @property
    def seconds(self) -> float:
        """Time from the oldest packet to the newest."""
        if not self._packets:
            return 0.0
        return self._packets[-1].time - self._packets[0].time

    def append(self, packet: EncodedPacket) -> None:
        if not self._packets and not packet.keyframe:
            self.dropped_waiting += 1  # nothing decodes before the first keyframe
            return
        position = self._first + len(self._packets)
        self._packets.append(packet)
        if packet.keyframe:
            self._keyframes.append(position)
        self.nbytes += packet.size
        self.peak_bytes = max(self.peak_bytes, self.nbytes)
        self._trim()

    def _trim(self) -> None:
        newest = self._packets[-1].time
        while len(self._keyframes) >= 2:
            second = self._packets[self._keyframes[1] - self._first]
            too_old = second.time <= newest - self.keep_s + EPSILON
            if not (too_old or self.nbytes > self.max_bytes):
                break
            self._drop_until(self._keyframes[1])

    def _drop_until(self, position: int) -> None:
        while self._first < position:
            self.nbytes -= self._packets.popleft().size
            self._first += 1
        self._keyframes.popleft()

    def start_at_or_after(self, t: float) -> Optional[int]:
        """The oldest keyframe at or after time `t` (its absolute position), None when there is none
        yet. A `t` older than the ring gives the ring's first keyframe."""
        for position in self._keyframes:
            if self._packets[position - self._first].time >= t - EPSILON:
                return position
        return None

    def since(self, position: int) -> List[EncodedPacket]:
        """The packets from absolute `position` (a keyframe) to the newest."""
        start = max(0, position - self._first)
        return list(self._packets)[start:]

    @property
    def next_position(self) -> int:
        """The absolute position the next appended packet gets."""
        return self._first + len(self._packets)
