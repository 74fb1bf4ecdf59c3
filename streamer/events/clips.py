"""Event clips: one H.264 mp4 per group of overlapping events of a camera, cut from a ring of
encoded packets (never raw frames held, never a recording read back).

    drawn frames (every frame, a Sink) ──▶ ClipRecorder's queue ──▶ its thread: H.264 encode
                                                                      (a keyframe at least every second)
                                                                      ──▶ PacketRing (pre-capture + 1 s)
    events ──▶ ClipOutput.stamp(): which clip, its path ─group─▶ ──▶ clip file: ring packets from a
                                                                      keyframe, then every new packet,
                                                                      until post-capture after the last end

Grouping (as Frigate's review items): an object's `new` event opens a clip for its camera unless
one is open; every object that appears while a clip is open joins it; when the last member ends,
the clip goes on for `post_capture` seconds, and an object that appears meanwhile extends it.
So one person with a dog is one clip. The clip starts at the oldest keyframe at most
`pre_capture` before the first event (keyframes come at least every second, so at least
`pre_capture` - 1 s is covered; 0 forces a keyframe at the event). Its path is in every event of
its members, the `end` event included (decided on the video path, before any output sends the
event). The file is written under a temporary name and renamed when complete.

Memory per camera: the ring (pre_capture + 1 s of H.264, capped at `MAX_RING_BYTES`) plus at most
`QUEUE` drawn frames waiting for the encoder. Live cameras drop frames the encoder cannot take
(counted); a file run waits for it (every frame of a file is in its clips).
"""

from __future__ import annotations

import io
import os
from collections import deque
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Deque, Dict, List, Optional, Set

import av
import cv2
import numpy as np

from ..frames import Detections, Frame
from .destinations import ClipSettings
from .queued import QueuedOutput, Say
from .ring import EPSILON, EncodedPacket, PacketRing
from .snapshots import UniqueNames, safe, time_label
from .types import Counts, Event, EventKind, OutputState, OutputStatus

KEYFRAME_S = 1.0  # at most this long between keyframes
QUEUE = 8  # drawn frames waiting for a camera's encoder (720p: 2.7 MB each)
GROUP_ROOM = 64  # clip updates queued beside the frames
FINISHED = 256  # keys of written clips a recorder remembers
MAX_RING_BYTES = 64 * 1024 * 1024
CRF = 23
PRESET = "ultrafast"  # 720p: ~13 ms a frame, ~3-5 MB of ring for 5 s (veryfast: ~22-34 ms, 1.4-3.3 MB)
FALLBACK_RATE = Fraction(25)


@dataclass(frozen=True)
class Group:
    """A clip as the video path decided it: its file, the time of its first event, and where it
    ends (None: members are still there)."""

    key: int
    path: Path
    start: float
    end: Optional[float] = None


@dataclass
class _OpenGroup:
    group: Group
    members: Set[str]


class _Clip:
    """One clip being written: an mp4 under a temporary name, packets muxed as they come."""

    def __init__(self, group: Group, template, time_base: Fraction):
        self.group = group
        self.path = Path(group.path)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}")
        self.container = av.open(str(self.tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream_from_template(template)
        self.stream.codec_context.extradata = template.codec_context.extradata
        self.stream.time_base = time_base
        self.time_base = time_base
        self.first: Optional[EncodedPacket] = None
        self.last_time: Optional[float] = None
        self.packets = 0

    def mux(self, packet: EncodedPacket) -> None:
        if self.first is None:
            self.first = packet
        out = av.Packet(packet.data)
        out.pts = packet.pts - self.first.pts
        out.dts = packet.dts - self.first.dts
        out.duration = packet.duration
        out.time_base = self.time_base
        out.stream = self.stream
        out.is_keyframe = packet.keyframe
        self.container.mux(out)
        self.last_time = packet.time
        self.packets += 1

    def finish(self) -> Path:
        self.container.close()
        if not self.packets:
            self.tmp.unlink(missing_ok=True)
            raise ValueError("no video reached the clip")
        os.replace(self.tmp, self.path)
        return self.path

    def abandon(self) -> None:
        try:
            self.container.close()
        except (av.FFmpegError, OSError, ValueError):
            pass
        self.tmp.unlink(missing_ok=True)


class ClipRecorder(QueuedOutput):
    """One camera's drawn frames -> H.264 ring -> clips. A Sink (every frame) whose work runs on
    its own thread; the ClipOutput hands it the groups its events form."""

    every_frame = True

    def __init__(self, camera: str, settings: ClipSettings, log: Say, lossless: bool = False,
                 capacity: int = QUEUE, max_ring_bytes: int = MAX_RING_BYTES, preset: str = PRESET):
        super().__init__(f"clips {camera}", capacity, log, lossless=lossless, drain_s=30.0)
        self.camera = camera
        self.settings = settings
        self.preset = preset
        self.ring = PacketRing(settings.pre_capture, max_ring_bytes)
        self.written: Deque[Path] = deque(maxlen=FINISHED)  # the clips it wrote, newest last (the recent ones)
        self._encoder_box = None  # an in-memory mp4 whose stream is the encoder (its codec data is the clips' template)
        self._stream = None
        self._size = None
        self._time_base: Optional[Fraction] = None
        self._rate: Optional[Fraction] = None
        self._last_key: Optional[float] = None
        self._force_key = False
        self._last_pts: Optional[int] = None
        self.offered_time: Optional[float] = None  # the newest frame handed to the recorder (its time)
        self._clips: Dict[int, _Clip] = {}
        self._finished: Deque[int] = deque(maxlen=FINISHED)  # keys of clips written (never opened again)
        self._waiting: Dict[int, Group] = {}  # groups waiting for a keyframe at or after their start
        self._durations: Dict[int, int] = {}
        self._times: Dict[int, float] = {}

    # -- the video path (a Sink) -------------------------------------------------------------
    def write(self, frame: Frame, image: np.ndarray, detections: Optional[Detections]) -> None:
        self.offered_time = self._time_of(frame)  # read by ClipOutput.stamp (the same thread)
        # the drawn picture is encoded; the frame's own is not held while it waits
        self.offer((frame.without_image(), image))  # a live camera's frame that does not fit is dropped and counted

    def group(self, group: Group) -> None:
        """A clip opened, or its end moved (from ClipOutput, on the video path)."""
        self.offer(group)

    def offer(self, item) -> bool:
        if isinstance(item, Group):  # small, and must not be lost to a full frame queue: room of its own
            with self._cond:
                if not self._closing and len(self._items) < self.capacity + GROUP_ROOM:
                    self._items.append(item)
                    self._cond.notify_all()
                    return True
                self._dropped += 1
            return False
        return super().offer(item)

    # -- the output's thread -------------------------------------------------------------------
    def begin(self) -> None:
        self.set_state(OutputState.CONNECTED)

    def handle(self, item) -> None:
        if isinstance(item, Group):
            self._on_group(item)
        else:
            self._encode(*item)

    def _open_encoder(self, frame: Frame, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        self._size = (width + width % 2, height + height % 2)
        self._time_base = frame.time_base or Fraction(1, 90000)
        rate = Fraction(1, 1) / (frame.duration * frame.time_base) if frame.duration and frame.time_base else None
        self._rate = rate if rate and 1 <= rate <= 240 else FALLBACK_RATE
        self._encoder_box = av.open(io.BytesIO(), mode="w", format="mp4")
        stream = self._encoder_box.add_stream("libx264", rate=self._rate)
        stream.width, stream.height = self._size
        stream.pix_fmt = "yuv420p"
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        # no B-frames (packets in order, pts == dts), IDR keyframes when asked, none on a long timer
        stream.options = {"crf": str(CRF), "preset": self.preset, "bf": "0", "forced-idr": "1",
                          "g": str(max(1, int(round(float(self._rate) * 10))))}
        self._stream = stream

    def _time_of(self, frame: Frame) -> float:
        return frame.time if frame.time is not None else frame.wall_time

    def _encode(self, frame: Frame, image: np.ndarray) -> None:
        if self._stream is None:
            self._open_encoder(frame, image)
        width, height = self._size
        if image.shape[1] != width or image.shape[0] != height:
            if (image.shape[1] + image.shape[1] % 2, image.shape[0] + image.shape[0] % 2) == self._size:
                image = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)), mode="edge")
            else:  # a camera that reconnected at another size
                image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        t = self._time_of(frame)
        pts = frame.pts if frame.pts is not None and frame.time_base == self._time_base \
            else int(round(t / self._time_base))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
        vframe.pts = pts
        vframe.time_base = self._time_base
        if self._force_key or self._last_key is None or t - self._last_key >= KEYFRAME_S - EPSILON:
            vframe.pict_type = av.video.frame.PictureType.I
            self._last_key = t
            self._force_key = False
        step = frame.duration or max(1, int(round(1 / (self._rate * self._time_base))))
        self._durations[pts] = step
        self._times[pts] = t
        self._take(self._stream.encode(vframe))

    def _take(self, packets) -> None:
        for packet in packets:
            pts = int(packet.pts)
            encoded = EncodedPacket(bytes(packet), pts, int(packet.dts if packet.dts is not None else pts),
                                    self._durations.pop(pts, 1), bool(packet.is_keyframe),
                                    self._times.pop(pts, float(pts * self._time_base)))
            self.ring.append(encoded)
            self._on_packet(encoded)

    def _on_packet(self, packet: EncodedPacket) -> None:
        for key, group in list(self._waiting.items()):
            if packet.keyframe and packet.time >= group.start - self.settings.pre_capture - EPSILON:
                del self._waiting[key]
                self._open(group, [])
        for key, clip in list(self._clips.items()):
            self._write(clip, packet)

    def _on_group(self, group: Group) -> None:
        clip = self._clips.get(group.key)
        if clip is not None:
            clip.group = group
            return
        if group.key in self._finished:  # never rewrite a clip (ClipOutput opens a new one instead)
            return
        if group.key in self._waiting:
            self._waiting[group.key] = group
            return
        position = self.ring.start_at_or_after(group.start - self.settings.pre_capture)
        if position is None:  # no keyframe that late yet: the next frame is one
            self._waiting[group.key] = group
            self._force_key = True
            return
        self._open(group, self.ring.since(position))

    def _open(self, group: Group, backlog: List[EncodedPacket]) -> None:
        try:
            clip = _Clip(group, self._stream, self._time_base)
        except (av.FFmpegError, OSError) as err:
            self._failed_clip(group, err)
            return
        self._clips[group.key] = clip
        for packet in backlog:
            self._write(clip, packet)

    def _write(self, clip: _Clip, packet: EncodedPacket) -> None:
        if clip.group.key not in self._clips:
            return
        try:
            clip.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as err:
            del self._clips[clip.group.key]
            clip.abandon()
            self._failed_clip(clip.group, err)
            return
        if clip.group.end is not None and packet.time >= clip.group.end - EPSILON:
            self._finish(clip)

    def _finish(self, clip: _Clip) -> None:
        self._clips.pop(clip.group.key, None)
        self._finished.append(clip.group.key)
        try:
            self.written.append(clip.finish())
        except (av.FFmpegError, OSError, ValueError) as err:
            clip.abandon()
            self._failed_clip(clip.group, err)
            return
        self.count(sent=1)
        self.set_state(OutputState.CONNECTED)

    def _failed_clip(self, group: Group, err: Exception) -> None:
        self.count(failed=1)
        reason = getattr(err, "strerror", None) or str(err)
        self.set_state(OutputState.GIVEN_UP, f"cannot write {Path(group.path).name}: {reason}")
        self.say_once("clip", f"WARNING: {self.name}: cannot write {group.path} ({reason})")

    def end(self) -> None:
        """The run ends: the encoder's last packets, then every clip is finished where the video ends."""
        if self._stream is not None:
            try:
                self._take(self._stream.encode(None))
            except (av.FFmpegError, ValueError):
                pass
        for clip in list(self._clips.values()):
            self._finish(clip)
        self._waiting.clear()
        if self._encoder_box is not None:
            try:
                self._encoder_box.close()
            except (av.FFmpegError, OSError, ValueError):
                pass

    def __enter__(self) -> "ClipRecorder":
        if self._thread is None:
            self.start()
        return self


class ClipOutput:
    """--clips DIR: the EventOutput that groups each camera's events into clips; each camera's
    frames reach its ClipRecorder (a Sink: `recorder(camera)`)."""

    def __init__(self, settings: ClipSettings, log: Say):
        self.settings = settings
        self.folder = Path(settings.folder)
        self.name = f"clips {self.folder}"
        self._log = log
        self._recorders: Dict[str, ClipRecorder] = {}
        self._open: Dict[str, _OpenGroup] = {}  # camera -> its clip being decided
        self._forwarded: Dict[str, Group] = {}  # camera -> the group as its recorder last heard it
        self.names = UniqueNames(FINISHED)  # clip names handed out (the recent ones: bounded)
        self._keys = 0

    def frame_sink(self, camera: str, lossless: bool = False) -> ClipRecorder:
        """The Sink that takes `camera`'s drawn frames (one per camera): its ClipRecorder."""
        found = self._recorders.get(camera)
        if found is None:
            found = self._recorders[camera] = ClipRecorder(camera, self.settings, self._log, lossless=lossless)
        return found

    # -- the video path ----------------------------------------------------------------------
    def stamp(self, event: Event) -> Event:
        """Decide the event's clip (open, join, extend, leave) and put its path in the event."""
        camera = event.camera
        if camera not in self._recorders:
            return event
        key = event.after.id
        t = event.after.source_time if event.after.source_time is not None else 0.0
        current = self._open.get(camera)
        if event.kind is EventKind.NEW and (current is None or key not in current.members):
            if current is None or self._closed(current, t, self._recorders[camera].offered_time):
                current = self._open[camera] = _OpenGroup(Group(self._next_key(), self._path(event), t), set())
            current.members.add(key)
            current.group = replace(current.group, end=None)
        if current is None or key not in current.members:
            return event
        if event.kind is EventKind.END:
            current.members.discard(key)
            if not current.members:
                current.group = replace(current.group, end=t + self.settings.post_capture)
        return replace(event, after=replace(event.after, clip=str(current.group.path)))

    @staticmethod
    def _closed(current: _OpenGroup, t: float, offered: Optional[float]) -> bool:
        """A clip no object can join any more: its members are gone and its end has passed, by the
        event's time or by the frames its recorder was handed (a live event can come late, for a
        frame shown a moment ago; the recorder may already be writing the clip's last packets)."""
        if current.members or current.group.end is None:
            return False
        newest = t if offered is None else max(t, offered)
        return newest > current.group.end + EPSILON

    def _next_key(self) -> int:
        self._keys += 1
        return self._keys

    def _path(self, event: Event) -> Path:
        return self.names.take(self.folder / f"{safe(event.camera)}-{time_label(event.after)}.mp4")

    def publish(self, event: Event) -> None:
        camera = event.camera
        current = self._open.get(camera)
        if current is None or camera not in self._recorders:
            return
        if self._forwarded.get(camera) != current.group:
            self._forwarded[camera] = current.group
            self._recorders[camera].group(current.group)

    def counts(self, counts: Counts) -> None:
        pass

    # -- what it says ------------------------------------------------------------------------
    def status(self) -> OutputStatus:
        found = [r.status() for r in list(self._recorders.values())]  # read by the metrics thread too
        down = [s for s in found if s.state is OutputState.GIVEN_UP]
        if down:
            state, reason = OutputState.GIVEN_UP, down[0].reason
        elif found and all(s.state is OutputState.CLOSED for s in found):
            state, reason = OutputState.CLOSED, None
        else:
            state, reason = OutputState.CONNECTED, None
        return OutputStatus(name=self.name, state=state, sent=sum(s.sent for s in found),
                            dropped=sum(s.dropped for s in found), failed=sum(s.failed for s in found),
                            reason=reason)

    @property
    def written(self) -> List[Path]:
        """The clips written (each camera's recent ones)."""
        return [path for r in self._recorders.values() for path in r.written]

    def __enter__(self) -> "ClipOutput":
        return self

    def __exit__(self, *exc) -> None:
        for recorder in self._recorders.values():
            recorder.close()
